/**
 * Parity with the real session bridge: @fastify/cookie signed cookies resolved by
 * @portcullis/cookie-session. The same cookies through the WebSocket door and the long-poll door
 * get the same status and code before the connection; revocation and expiry close both doors
 * with the same close code; a fallback session opened with one login is useless with another.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyCookie, { sign } from '@fastify/cookie'
import portcullis from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import fallback from '@portcullis/fallback'
import { closed, listen, rawHttp, rawUpgrade, wsOpen } from './helpers/index.js'
import { LpClient } from '../packages/fallback/test/helpers.js'

const APP = 'https://app.example.com'
const SECRET = 'parity-session-secret-0123456789abcdef'

interface SessionApp {
  app: FastifyInstance
  sessions: Map<string, { userId: string, expiresAt: number }>
  login: (userId: string, ttlMs?: number) => { sid: string, cookie: string }
}

async function sessionApp (t: { teardown: (fn: () => unknown) => void }, pollTimeoutMs = 200): Promise<SessionApp> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis)
  await app.register(originGuard, { allow: [APP] })
  const sessions = new Map<string, { userId: string, expiresAt: number }>()
  await app.register(cookieSession, {
    signedCookie: {
      cookieName: 'sid',
      load: (sid: string) => {
        const s = sessions.get(sid)
        return s === undefined ? null : { id: s.userId, expiresAt: s.expiresAt }
      }
    }
  })
  await app.register(fallback, { pollTimeoutMs, idleTimeoutMs: 10_000 })
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true } }, (socket, request) => {
    socket.send(`hello ${request.portcullis?.state.identity?.id}`)
  })
  const login = (userId: string, ttlMs = 3_600_000): { sid: string, cookie: string } => {
    const sid = randomUUID()
    sessions.set(sid, { userId, expiresAt: Date.now() + ttlMs })
    return { sid, cookie: `sid=${encodeURIComponent(sign(sid, SECRET))}` }
  }
  return { app, sessions, login }
}

type Outcome = { status: 'open' } | { status: number, code: string }

async function wsDoor (port: number, cookie: string | undefined): Promise<Outcome> {
  const res = await rawUpgrade(port, '/chat', { Origin: APP, ...(cookie === undefined ? {} : { Cookie: cookie }) })
  return res.status === 101 ? { status: 'open' } : { status: res.status, code: JSON.parse(res.body).code }
}

async function lpDoor (port: number, cookie: string | undefined): Promise<Outcome> {
  const lines = ['POST /chat/_lp/open HTTP/1.1', `Host: 127.0.0.1:${port}`, `Origin: ${APP}`, 'X-Portcullis-Fallback: 1', 'Content-Type: application/json', 'Content-Length: 2', 'Connection: close']
  if (cookie !== undefined) lines.push(`Cookie: ${cookie}`)
  const res = await rawHttp(port, lines.join('\r\n') + '\r\n\r\n{}')
  return res.status === 200 ? { status: 'open' } : { status: res.status, code: JSON.parse(res.body).code }
}

t.test('the same cookies get the same answer through both doors', async (t) => {
  const { app, login } = await sessionApp(t)
  const { port } = await listen(app)
  const alice = login('alice')
  const expired = login('old', -1000)
  const forged = `sid=${encodeURIComponent(sign(alice.sid, 'another-secret-0123456789abcdefghij'))}`
  const rows: Array<[string, string | undefined, Outcome]> = [
    ['no cookie', undefined, { status: 401, code: 'PORTCULLIS_SESSION_REQUIRED' }],
    ['a valid signed cookie', alice.cookie, { status: 'open' }],
    ['a cookie signed with another secret', forged, { status: 401, code: 'PORTCULLIS_SESSION_INVALID' }],
    ['an unsigned session id', `sid=${alice.sid}`, { status: 401, code: 'PORTCULLIS_SESSION_INVALID' }],
    ['a session the store no longer has', `sid=${encodeURIComponent(sign(randomUUID(), SECRET))}`, { status: 401, code: 'PORTCULLIS_SESSION_EXPIRED' }],
    ['an expired session', expired.cookie, { status: 401, code: 'PORTCULLIS_SESSION_EXPIRED' }],
    ['two session cookies (cookie tossing)', `${alice.cookie}; ${forged}`, { status: 401, code: 'PORTCULLIS_SESSION_AMBIGUOUS' }]
  ]
  for (const [name, cookie, expected] of rows) {
    const ws = await wsDoor(port, cookie)
    t.match(ws, expected.status === 'open' ? { status: 'open' } : { status: expected.status }, `${name} (WebSocket)`)
    t.same(await lpDoor(port, cookie), ws, `${name} (long-poll answers the same: ${JSON.stringify(ws)})`)
  }
})

t.test('revoking the login closes both doors with 4001, and the fallback id dies with it', async (t) => {
  const { app, login, sessions } = await sessionApp(t)
  const { port, ws: base } = await listen(app)
  const alice = login('alice')
  const r = await wsOpen(`${base}/chat`, { origin: APP, headers: { cookie: alice.cookie } })
  t.ok(r.ws, 'WebSocket open')
  const wsClosed = closed(r.ws!)
  const lp = new LpClient(port, '/chat', { origin: APP, cookie: alice.cookie })
  t.equal((await lp.open()).status, 200)
  t.same(await lp.receive(1), ['hello alice'])
  // a long-poll client always has a poll waiting: that poll, already admitted, carries the close
  const waiting = lp.pollRaw()
  await new Promise(resolve => setTimeout(resolve, 50))
  sessions.delete(alice.sid)
  ;(app as unknown as { portcullisSessions: { revoke: (sid: string) => unknown } }).portcullisSessions.revoke(alice.sid)
  t.same(await wsClosed, { code: 4001, reason: 'session revoked' })
  t.same((await waiting).body.close, { code: 4001, reason: 'session revoked' })
  const after = await lp.pollRaw()
  t.equal(after.status, 401, 'a later poll with the revoked cookie fails the policy (the client reads 4401)')
  t.equal(after.body.code, 'PORTCULLIS_SESSION_EXPIRED')
})

t.test('a session that expires while connected closes both doors with the same code', async (t) => {
  const { app, login } = await sessionApp(t, 3000)
  const { port, ws: base } = await listen(app)
  const bob = login('bob', 1500)
  const r = await wsOpen(`${base}/chat`, { origin: APP, headers: { cookie: bob.cookie } })
  const wsClosed = closed(r.ws!)
  const lp = new LpClient(port, '/chat', { origin: APP, cookie: bob.cookie })
  t.equal((await lp.open()).status, 200)
  t.same(await lp.receive(1), ['hello bob'])
  const waiting = lp.pollRaw()
  const ws = await wsClosed
  t.equal(ws.code, 4002, 'the WebSocket closes as expired')
  t.same((await waiting).body.close, ws, 'the waiting poll carries the same close')
})

t.test('a fallback id opened by one login is useless with another login of the same user', async (t) => {
  const { app, login } = await sessionApp(t)
  const { port } = await listen(app)
  const first = login('carol')
  const second = login('carol')
  const mallory = login('mallory')
  const owner = new LpClient(port, '/chat', { origin: APP, cookie: first.cookie })
  await owner.open()
  for (const cookie of [second.cookie, mallory.cookie]) {
    const thief = new LpClient(port, '/chat', { origin: APP, cookie })
    thief.sid = owner.sid
    const r = await thief.pollRaw(0)
    t.equal(r.status, 404)
    t.equal(r.body.code, 'PORTCULLIS_FALLBACK_UNKNOWN_SESSION')
  }
  t.same(await owner.receive(1), ['hello carol'], 'the owner still reads its session')
})
