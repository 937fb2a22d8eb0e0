import { expect, test } from 'tstyche'
import Fastify from 'fastify'
import portcullis, { type PortcullisSocket } from '@portcullis/policy'
import fallback, { LongPollSocket, MemoryStore, type FallbackDecorator, type FallbackOptions, type FallbackStore } from '@portcullis/fallback'

const app = Fastify()
app.register(portcullis)
app.register(fallback, { pollTimeoutMs: 20_000, maxQueuedBytes: 1 << 20, store: new MemoryStore() })

test('the fallback route option is typed by declaration merging', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: false } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: { pollTimeoutMs: 10_000, maxMessagesPerRequest: 8 } } }, () => {})).type.not.toRaiseError()
})

test('a wrong fallback route option fails to compile', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: 'yes' } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: { pollTimeout: 10 } } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: { maxPayload: '1mb' } } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: { store: new MemoryStore() } } }, () => {})).type.toRaiseError()
})

test('plugin options are checked', () => {
  expect(app.register(fallback, { pollTimeoutMs: '25s' })).type.toRaiseError()
  expect(app.register(fallback, { store: {} })).type.toRaiseError()
  expect<FallbackOptions>().type.toBeAssignableFrom({ maxPendingPollsPerIp: 10, maxSessions: 0 })
  expect<FallbackOptions>().type.toBeAssignableFrom({ storeTimeoutMs: 2000, querystringParser: (q: string) => ({ q }) })
  expect(app.register(fallback, { storeTimeoutMs: '2s' })).type.toRaiseError()
  expect(app.register(fallback, { querystringParser: 'qs' })).type.toRaiseError()
})

test('storeTimeoutMs and querystringParser are plugin-wide, not route limits', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { fallback: { storeTimeoutMs: 100 } } }, () => {})).type.toRaiseError()
})

test('the long-poll socket is a PortcullisSocket, so one handler serves both doors', () => {
  expect<LongPollSocket>().type.toBeAssignableTo<PortcullisSocket>()
  expect<MemoryStore>().type.toBeAssignableTo<FallbackStore>()
  expect(app.wsFallback).type.toBe<FallbackDecorator>()
  expect(app.wsFallback.closeSession('s', 4001, 'revoked')).type.toBe<Promise<void>>()
})
