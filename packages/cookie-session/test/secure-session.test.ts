import t from 'tap'
import { randomBytes, randomUUID } from 'node:crypto'
import fastifySecureSession from '@fastify/secure-session'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { captureLogs, closed, listen, nextMessages, wsOpen, type LogCapture } from '../../../test/helpers/index.js'
import { cookiePair, flipChar, sessionApp, type TestLike } from './helpers.js'

const NEW_KEY = randomBytes(32)
const OLD_KEY = randomBytes(32)
const RETIRED_KEY = randomBytes(32)

/**
 * `request.session` as @fastify/secure-session makes it. Typed locally: @fastify/session (tested
 * beside this file, same TypeScript program) declares `request.session` with its own type.
 */
interface SecureSession {
  get: (key: string) => unknown
  set: (key: string, value: unknown) => void
  delete: () => void
}
const secure = (request: FastifyRequest): SecureSession => (request as unknown as { session: SecureSession }).session

/** @fastify/secure-session (it registers @fastify/cookie itself); /login stores user + a revocable sid. */
async function app (t: TestLike, opts: { keys?: Buffer[], expiry?: number, logs?: LogCapture } = {}): Promise<FastifyInstance> {
  const a = await sessionApp(t, (app) => app.register(fastifySecureSession, {
    key: opts.keys ?? [NEW_KEY, OLD_KEY],
    expiry: opts.expiry,
    cookie: { path: '/', httpOnly: true, sameSite: 'strict' }
  }), {
    secureSession: {
      expiry: opts.expiry,
      identify: (data) => typeof data.user === 'string' ? { id: data.user, sessionId: data.sid } : null
    }
  }, opts.logs)
  a.post<{ Body: { user: string } }>('/login', async (request) => {
    secure(request).set('user', request.body.user)
    secure(request).set('sid', randomUUID())
    return { ok: true }
  })
  a.post('/logout', async (request) => {
    const sid = secure(request).get('sid') as string
    secure(request).delete()
    // stateless: the cookie is gone from this browser, a copy elsewhere is still decodable until
    // it expires — revoking closes every connection it opened
    return { closed: a.portcullisSessions.revoke(sid) }
  })
  a.get('/ws', { websocket: true }, (socket, request) => {
    socket.send(JSON.stringify(request.portcullis?.state.identity ?? null))
  })
  return a
}

async function login (a: FastifyInstance, user: string): Promise<string> {
  const res = await a.inject({ method: 'POST', url: '/login', payload: { user } })
  return cookiePair(res.headers['set-cookie'], 'session')
}

t.test('login with @fastify/secure-session, then the WebSocket opens as that user', async (t) => {
  const a = await app(t)
  const cookie = await login(a, 'alice')
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.ok(r.ws)
  const identity = JSON.parse((await nextMessages(r.ws!))[0])
  t.equal(identity.id, 'alice')
  t.match(identity.sessionId, /^[0-9a-f-]{36}$/)
  t.ok(identity.expiresAt > Date.now() + 86_000_000, 'expiresAt from the cookie\'s timestamp + expiry')
  r.ws!.close()
})

t.test('a missing, tampered, tossed or retired-key cookie is denied before the handshake', async (t) => {
  const logs = captureLogs()
  const a = await app(t, { logs })
  const cookie = await login(a, 'alice')
  const bob = await login(a, 'bob')
  const value = decodeURIComponent(cookie.slice('session='.length))
  // an app that has since retired RETIRED_KEY issued this one
  const old = await app(t, { keys: [RETIRED_KEY] })
  const retired = await login(old, 'carol')
  const { ws } = await listen(a)
  const cases: Array<[string, string | undefined, string]> = [
    ['no cookie', undefined, 'PORTCULLIS_SESSION_REQUIRED'],
    ['tampered ciphertext', 'session=' + encodeURIComponent(flipChar(value, 5)), 'PORTCULLIS_SESSION_INVALID'],
    ['garbage', 'session=not-a-session', 'PORTCULLIS_SESSION_INVALID'],
    ['a retired key', retired, 'PORTCULLIS_SESSION_INVALID'],
    ['two session cookies', `${bob}; ${cookie}`, 'PORTCULLIS_SESSION_AMBIGUOUS']
  ]
  for (const [what, c, code] of cases) {
    const r = await wsOpen(`${ws}/ws`, { headers: c === undefined ? {} : { cookie: c } })
    t.equal(r.status, 401, what)
    t.equal(JSON.parse(r.body!).code, code, what)
  }
  const text = logs.text()
  for (const secret of [value, cookie.slice(8), bob.slice(8)]) t.notOk(text.includes(secret), 'no cookie value in the logs')
})

t.test('key rotation: a cookie encrypted with the previous key still opens', async (t) => {
  const before = await app(t, { keys: [OLD_KEY] })
  const cookie = await login(before, 'dave')
  const a = await app(t, { keys: [NEW_KEY, OLD_KEY] })
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.ok(r.ws)
  t.equal(JSON.parse((await nextMessages(r.ws!))[0]).id, 'dave')
  r.ws!.close()
})

t.test('logout revokes the stored sid: live connections close with 4001', async (t) => {
  const a = await app(t)
  const cookie = await login(a, 'alice')
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie } })).ws!
  await nextMessages(s)
  const res = await a.inject({ method: 'POST', url: '/logout', headers: { cookie } })
  t.same(res.json(), { closed: 1 })
  t.same(await closed(s), { code: 4001, reason: 'session revoked' })
})

t.test('the connection closes with 4002 when the cookie\'s validity (expiry) ends', async (t) => {
  const a = await app(t, { expiry: 2 })
  const cookie = await login(a, 'alice')
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie } })).ws!
  const identity = JSON.parse((await nextMessages(s))[0])
  t.same(await closed(s), { code: 4002, reason: 'session expired' })
  t.ok(Date.now() - identity.expiresAt < 1000, 'within a second of the expiry')
})
