import t from 'tap'
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import type { FastifyInstance } from 'fastify'
import { captureLogs, closed, listen, nextMessages, wsOpen, type LogCapture } from '../../../test/helpers/index.js'
import { cookiePair, flipChar, sessionApp, type TestLike } from './helpers.js'

const SECRET = 'fastify-session-secret-0123456789-abcdefghijkl'

declare module 'fastify' {
  interface Session {
    user?: string
    visits?: number
  }
}

/** @fastify/session with its memory store; /login sets `user`, /logout destroys, /relogin regenerates. */
async function app (t: TestLike, opts: { maxAge?: number, logs?: LogCapture } = {}): Promise<FastifyInstance> {
  const a = await sessionApp(t, async (app) => {
    await app.register(fastifyCookie)
    await app.register(fastifySession, {
      secret: SECRET,
      cookieName: 'sid',
      saveUninitialized: false,
      cookie: { secure: false, httpOnly: true, sameSite: 'strict', maxAge: opts.maxAge }
    })
  }, {
    fastifySession: {
      cookieName: 'sid',
      identify: (data) => typeof data.user === 'string' ? { id: data.user } : null
    }
  }, opts.logs)
  a.post<{ Body: { user: string } }>('/login', async (request) => {
    // session fixation defence: a new id at login, the old one's connections close
    await request.session.regenerate()
    request.session.user = request.body.user
    return { ok: true }
  })
  a.post('/logout', async (request) => {
    await request.session.destroy()
    return { ok: true }
  })
  a.post('/anonymous', async (request) => {
    request.session.set('visits', 1)
    return { ok: true }
  })
  a.get('/ws', { websocket: true }, (socket, request) => {
    socket.send(JSON.stringify(request.portcullis?.state.identity ?? null))
  })
  return a
}

async function login (a: FastifyInstance, user: string, cookie?: string): Promise<string> {
  const res = await a.inject({ method: 'POST', url: '/login', payload: { user }, headers: cookie === undefined ? {} : { cookie } })
  return cookiePair(res.headers['set-cookie'], 'sid')
}

t.test('login with @fastify/session, then the WebSocket opens as that user', async (t) => {
  const a = await app(t)
  const cookie = await login(a, 'alice')
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.ok(r.ws)
  const identity = JSON.parse((await nextMessages(r.ws!))[0])
  t.equal(identity.id, 'alice')
  t.equal(identity.sessionId, decodeURIComponent(cookie.slice(4)).split('.')[0], 'the store\'s session id')
  r.ws!.close()
})

t.test('no cookie, an anonymous session, a tampered or tossed cookie are denied before the handshake', async (t) => {
  const logs = captureLogs()
  const a = await app(t, { logs })
  const cookie = await login(a, 'alice')
  const other = await login(a, 'bob')
  const anon = cookiePair((await a.inject({ method: 'POST', url: '/anonymous' })).headers['set-cookie'], 'sid')
  const { ws } = await listen(a)
  const value = decodeURIComponent(cookie.slice(4))
  const cases: Array<[string, string | undefined, string]> = [
    ['no cookie', undefined, 'PORTCULLIS_SESSION_REQUIRED'],
    ['a session nobody logged into', anon, 'PORTCULLIS_SESSION_REQUIRED'],
    ['a tampered id', 'sid=' + encodeURIComponent(flipChar(value, 2)), 'PORTCULLIS_SESSION_INVALID'],
    ['a tampered signature', 'sid=' + encodeURIComponent(flipChar(value, value.length - 3)), 'PORTCULLIS_SESSION_INVALID'],
    ['an unknown but well-formed id', 'sid=unknown-id', 'PORTCULLIS_SESSION_INVALID'],
    ['two session cookies', `${other}; ${cookie}`, 'PORTCULLIS_SESSION_AMBIGUOUS']
  ]
  for (const [what, c, code] of cases) {
    const r = await wsOpen(`${ws}/ws`, { headers: c === undefined ? {} : { cookie: c } })
    t.equal(r.status, 401, what)
    t.equal(JSON.parse(r.body!).code, code, what)
  }
  const text = logs.text()
  for (const secret of [value, cookie.slice(4), other.slice(4), SECRET]) t.notOk(text.includes(secret), 'no cookie value in the logs')
})

t.test('session.destroy() (logout) closes the session\'s live connections with 4001', async (t) => {
  const a = await app(t)
  const cookie = await login(a, 'alice')
  const bob = await login(a, 'bob')
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie } })).ws!
  const b = (await wsOpen(`${ws}/ws`, { headers: { cookie: bob } })).ws!
  await Promise.all([nextMessages(s), nextMessages(b)])
  const started = Date.now()
  await a.inject({ method: 'POST', url: '/logout', headers: { cookie } })
  t.same(await closed(s), { code: 4001, reason: 'session revoked' })
  t.ok(Date.now() - started < 1000, 'within a second')
  t.equal(b.readyState, b.OPEN, 'other sessions stay')
  const again = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.equal(again.status, 401, 'the destroyed session cannot reconnect')
  b.close()
})

t.test('a failing revocation never stops session.destroy() from ending the session', async (t) => {
  const a = await app(t)
  let store: { [k: symbol]: Set<(id: string) => void> } | undefined
  a.get('/store', async (request) => { store = (request as unknown as { sessionStore: typeof store }).sessionStore; return {} })
  const cookie = await login(a, 'alice')
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie } })).ws!
  await nextMessages(s)
  await a.inject('/store')
  const revokers = store![Symbol.for('portcullis.cookie-session.store-revokers')]
  t.ok(revokers instanceof Set, 'the store is hooked')
  revokers.add(() => { throw new Error('revoker bug') })
  const out = await a.inject({ method: 'POST', url: '/logout', headers: { cookie } })
  t.equal(out.statusCode, 200, 'logout succeeds')
  t.same(await closed(s), { code: 4001, reason: 'session revoked' }, 'the other revokers still ran')
  const again = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.equal(again.status, 401, 'the session really ended')
})

t.test('session.regenerate() (login again, fixation defence) closes the old session\'s connections', async (t) => {
  const a = await app(t)
  const cookie = await login(a, 'alice')
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie } })).ws!
  await nextMessages(s)
  const fresh = await login(a, 'alice', cookie)
  t.not(fresh, cookie, 'a new session id')
  t.same(await closed(s), { code: 4001, reason: 'session revoked' })
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie: fresh } })
  t.ok(r.ws, 'the new session connects')
  r.ws!.close()
})

t.test('a session cookie with maxAge closes the connection with 4002 when the session expires', async (t) => {
  const a = await app(t, { maxAge: 1500 })
  const cookie = await login(a, 'alice')
  const loggedInAt = Date.now()
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie } })).ws!
  const identity = JSON.parse((await nextMessages(s))[0])
  t.ok(identity.expiresAt > loggedInAt && identity.expiresAt <= loggedInAt + 1600, 'expiresAt is the stored session\'s expiry')
  t.same(await closed(s), { code: 4002, reason: 'session expired' })
  t.ok(Date.now() - identity.expiresAt < 1000, 'within a second of the expiry')
})
