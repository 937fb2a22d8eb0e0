import { expect, test } from 'tstyche'
import Fastify from 'fastify'
import portcullis, { type PortcullisOriginPolicy } from '@portcullis/policy'
import originGuard, { checkOrigin, corsOptionsFor, parseOrigin, requireAllowedOrigin, type OriginGuardOptions, type ParsedOrigin } from '@portcullis/origin-guard'
import type { Denial } from '@portcullis/policy'

const app = Fastify()
app.register(portcullis)
app.register(originGuard, { allow: ['https://app.example.com'], missing: 'deny', fetchMetadata: true, cors: { maxAge: 60 } })

test('the origin route option is typed by declaration merging', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: { allow: ['https://a.example'], missing: 'allow', fetchMetadata: false } } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => {})).type.not.toRaiseError()
  expect<PortcullisOriginPolicy>().type.toBeAssignableFrom({ allow: ['self'] as const })
  expect<PortcullisOriginPolicy['missing']>().type.toBe<'deny' | 'allow' | undefined>()
  expect<PortcullisOriginPolicy['allow']>().type.toBe<readonly string[] | undefined>()
})

test('a wrong origin route option fails to compile', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: { allow: 'https://a.example' } } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: { missing: 'sometimes' } } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: { alow: ['https://a.example'] } } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: true } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: { fetchMetadata: 'on' } } }, () => {})).type.toRaiseError()
})

test('plugin options are checked', () => {
  expect(app.register(originGuard, { missing: 'never' })).type.toRaiseError()
  expect(app.register(originGuard, { cors: { origin: '*' } })).type.toRaiseError()
  expect(app.register(originGuard, { allowList: [] })).type.toRaiseError()
  expect<OriginGuardOptions>().type.toBeAssignableFrom({ allow: ['self'], reportOnly: true, cors: false })
})

test('the pure helpers are typed', () => {
  expect(parseOrigin('https://a.example')).type.toBe<ParsedOrigin>()
  app.get('/x', (request) => {
    expect(corsOptionsFor(request)?.credentials).type.toBe<boolean | undefined>()
  })
})

test('requireAllowedOrigin is a preHandler for ordinary routes, and checkOrigin returns a denial value', () => {
  expect(app.post('/login', { preHandler: requireAllowedOrigin({ missing: 'allow' }) }, async () => ({}))).type.not.toRaiseError()
  expect(requireAllowedOrigin({ missing: 'sometimes' })).type.toRaiseError()
  expect(requireAllowedOrigin({ allow: 'self' })).type.toRaiseError()
  app.post('/x', async (request) => {
    expect(checkOrigin(request)).type.toBe<Denial | undefined>()
  })
})
