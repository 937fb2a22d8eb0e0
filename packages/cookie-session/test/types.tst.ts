import { expect, test } from 'tstyche'
import Fastify from 'fastify'
import portcullis, { type PortcullisIdentity } from '@portcullis/policy'
import cookieSession, { type PortcullisSessions, type RevokeEvent, type SessionRequirement } from '@portcullis/cookie-session'

const app = Fastify()
app.register(portcullis, { defaults: { session: 'optional' } })
app.register(cookieSession, { signedCookie: { cookieName: 'sid', load: async (sid) => ({ id: sid }) } })

test('wsPolicy.session is required, optional or false', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { session: 'required' } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { session: 'optional' } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { session: false } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { session: 'maybe' } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { session: true } }, () => {})).type.toRaiseError()
  expect<SessionRequirement>().type.toBe<'required' | 'optional' | false>()
})

test('plugin options are checked', () => {
  expect(app.register(cookieSession, { session: 'maybe' })).type.toRaiseError()
  expect(app.register(cookieSession, { signedCookie: { cookieName: 'sid' } })).type.toRaiseError()
  expect(app.register(cookieSession, { authenticate: () => false })).type.not.toRaiseError()
  expect(app.register(cookieSession, { authenticate: () => 'alice' })).type.toRaiseError()
  expect(app.register(cookieSession, { fastifySession: { identify: (data) => ({ id: String(data.user) }) } })).type.not.toRaiseError()
})

test('the handler reads the identity on request.portcullis.state.identity', () => {
  app.get('/ws', { websocket: true }, (_socket, request) => {
    expect(request.portcullis?.state.identity).type.toBe<PortcullisIdentity | undefined>()
  })
})

test('fastify.portcullisSessions is typed', () => {
  expect(app.portcullisSessions).type.toBe<PortcullisSessions>()
  expect(app.portcullisSessions.revoke('sid')).type.toBe<number>()
  expect(app.portcullisSessions.revoke('sid', 'logged out')).type.toBe<number>()
  expect(app.portcullisSessions.onRevoke((e) => { expect(e).type.toBe<RevokeEvent>() })).type.toBe<() => void>()
  expect(app.portcullisSessions.revoke(42)).type.toRaiseError()
})
