/**
 * One fault rule for both doors (issue 19): each case runs on the WebSocket upgrade and on the
 * long-poll fallback of the same route, and must give the same close code and reason, or the
 * same HTTP status and code — and never crash the process.
 *
 * - a handler that throws                 → 1011 'internal error', logged at error once with the route
 * - a message listener that throws        → 1011 'internal error', logged at error once with the route
 * - a session store that fails            → the same denial at the handshake, 4002 at expiry
 * - a stage that never settles            → 503 PORTCULLIS_STAGE_TIMEOUT (core `stageTimeoutMs`)
 * - a session loader that hangs at expiry → 4002 once `recheckTimeoutMs` has passed (cookie-session)
 */
import t from 'tap'
import fastifyCookie, { sign } from '@fastify/cookie'
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { type PortcullisIdentity, type PortcullisSocket } from '@portcullis/policy'
import cookieSession from '@portcullis/cookie-session'
import fallback from '@portcullis/fallback'
import { closed, listen, wsOpen } from './helpers/index.js'
import { LpClient } from '../packages/fallback/test/helpers.js'
import { logSink, type LogLine } from '../packages/fallback/test/faulty-store.js'

const SECRET = 'parity-faults-secret-0123456789-abcdef'
const cookieFor = (sid: string): string => 'sid=' + encodeURIComponent(sign(sid, SECRET))
const never = <T>(): Promise<T> => new Promise<T>(() => {})

type Load = (sid: string) => PortcullisIdentity | null | Promise<PortcullisIdentity | null>
type Handler = (socket: PortcullisSocket) => void | Promise<void>

interface Setup {
  app: FastifyInstance
  port: number
  ws: string
  log: LogLine[]
}

async function setup (t: { teardown: (fn: () => unknown) => void }, o: { load?: Load, handler?: Handler, stageTimeoutMs?: number, recheckTimeoutMs?: number, hangStage?: () => boolean } = {}): Promise<Setup> {
  const sink = logSink()
  const app = Fastify({ logger: { level: 'info', stream: sink.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis, { defaults: { origin: false }, ...(o.stageTimeoutMs === undefined ? {} : { stageTimeoutMs: o.stageTimeoutMs }) })
  await app.register(cookieSession, {
    signedCookie: { cookieName: 'sid', load: o.load ?? ((sid) => ({ id: sid, sessionId: sid })) },
    ...(o.recheckTimeoutMs === undefined ? {} : { recheckTimeoutMs: o.recheckTimeoutMs })
  })
  if (o.hangStage !== undefined) {
    const hang = o.hangStage
    app.wsPolicy.addStage({ name: 'hangs', phase: 'custom', evaluate: () => hang() ? never() : undefined })
  }
  await app.register(fallback)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => (o.handler ?? ((s: PortcullisSocket) => s.send('ready')))(socket))
  const { port, ws } = await listen(app)
  return { app, port, ws, log: sink.lines }
}

/** What the WebSocket door gives: the close of an opened socket, or the refusal's status and code. */
async function viaWebSocket (s: Setup, sid: string, send?: string): Promise<{ close?: { code: number, reason: string }, status?: number, code?: string }> {
  const r = await wsOpen(`${s.ws}/ws`, { headers: { cookie: cookieFor(sid) } })
  if (r.ws === undefined) return { status: r.status, code: r.body === undefined ? undefined : JSON.parse(r.body).code }
  if (send !== undefined) r.ws.send(send)
  return { close: await closed(r.ws) }
}

/** What the long-poll door gives, in the same shape. */
async function viaLongPoll (s: Setup, sid: string, send?: string): Promise<{ close?: { code: number, reason: string }, status?: number, code?: string }> {
  const c = new LpClient(s.port, '/ws', { cookie: cookieFor(sid) })
  const r = await c.open()
  if (r.status !== 200) return { status: r.status, code: r.body?.code }
  if (send !== undefined) await c.send(send)
  return { close: await c.closed(200) }
}

/** Error-level lines naming the route, per door. */
function routeErrors (log: LogLine[]): LogLine[] {
  return log.filter(l => l.level === 50 && l.portcullis?.route === '/ws')
}

t.test('a handler that throws: 1011 "internal error" on both doors, one error line with the route each', async (t) => {
  const s = await setup(t, { handler: () => { throw new Error('handler broke') } })
  const ws = await viaWebSocket(s, 'a')
  t.same(ws, { close: { code: 1011, reason: 'internal error' } })
  t.equal(routeErrors(s.log).length, 1, 'WebSocket door: logged once')
  const lp = await viaLongPoll(s, 'b')
  t.same(lp, ws, 'the long-poll door gives the same close')
  t.equal(routeErrors(s.log).length, 2, 'long-poll door: logged once')
})

t.test('a handler that rejects: the same close on both doors', async (t) => {
  const s = await setup(t, { handler: async () => { throw new Error('handler broke') } })
  const ws = await viaWebSocket(s, 'a')
  t.same(ws, { close: { code: 1011, reason: 'internal error' } })
  t.same(await viaLongPoll(s, 'b'), ws)
  t.equal(routeErrors(s.log).length, 2, 'one line per door')
})

t.test('an async message listener that rejects: 1011 "internal error" on both doors, no unhandled rejection', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => { unhandled.push(err) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.removeListener('unhandledRejection', onUnhandled) })
  const s = await setup(t, { handler: (socket) => { socket.on('message', async () => { throw new Error('async listener broke') }) } })
  const ws = await viaWebSocket(s, 'a', 'hello')
  t.same(ws, { close: { code: 1011, reason: 'internal error' } })
  t.same(await viaLongPoll(s, 'b', 'hello'), ws)
  t.equal(routeErrors(s.log).length, 2, 'one line per door')
  await new Promise(resolve => setImmediate(resolve))
  t.same(unhandled, [], 'the rejection never reached the process')
})

t.test('a message listener that throws: 1011 "internal error" on both doors, the process keeps serving', async (t) => {
  const s = await setup(t, { handler: (socket) => { socket.on('message', () => { throw new Error('listener broke') }) } })
  const ws = await viaWebSocket(s, 'a', 'hello')
  t.same(ws, { close: { code: 1011, reason: 'internal error' } })
  t.same(await viaLongPoll(s, 'b', 'hello'), ws)
  t.equal(routeErrors(s.log).length, 2, 'one line per door')
  const again = await wsOpen(`${s.ws}/ws`, { headers: { cookie: cookieFor('c') } })
  t.ok(again.ws !== undefined, 'still serving')
  again.ws?.close()
})

t.test('a session store that fails at the handshake: the same status and code on both doors', async (t) => {
  const s = await setup(t, { load: () => Promise.reject(new Error('store down')) })
  const ws = await viaWebSocket(s, 'a')
  t.equal(ws.status, 500)
  t.equal(ws.code, 'PORTCULLIS_STAGE_FAILED')
  t.same(await viaLongPoll(s, 'a'), ws)
})

/**
 * A loader that answers until the session's expiry (300 ms after its first lookup), then fails as
 * `after` says. The long-poll door looks the session up on every request, so the failure must
 * come at the clock's re-check, not at a poll's handshake: the poll waiting at the expiry was
 * admitted before it, and carries the close (PROTOCOL.md §6).
 */
function failingAtExpiry (after: () => Promise<never>): { load: Load, expiries: Map<string, number> } {
  const expiries = new Map<string, number>()
  return {
    expiries,
    load: (sid) => {
      let at = expiries.get(sid)
      if (at === undefined) expiries.set(sid, (at = Date.now() + 300))
      return Date.now() < at ? { id: sid, sessionId: sid, expiresAt: at } : after()
    }
  }
}

t.test('a session store that fails at expiry: 4002 on both doors, at once', async (t) => {
  const { load } = failingAtExpiry(() => Promise.reject(new Error('store down')))
  const s = await setup(t, { recheckTimeoutMs: 2000, load })
  const started = Date.now()
  const [ws, lp] = await Promise.all([viaWebSocket(s, 'a'), viaLongPoll(s, 'b')])
  t.same(ws, { close: { code: 4002, reason: 'session expired' } })
  t.same(lp, ws)
  t.ok(Date.now() - started < 1800, 'not held until the re-check timeout')
})

t.test('a stage that never settles: 503 PORTCULLIS_STAGE_TIMEOUT on both doors after stageTimeoutMs', async (t) => {
  const s = await setup(t, { stageTimeoutMs: 200, hangStage: () => true })
  const started = Date.now()
  const ws = await viaWebSocket(s, 'a')
  const took = Date.now() - started
  t.same(ws, { status: 503, code: 'PORTCULLIS_STAGE_TIMEOUT' })
  t.ok(took >= 180 && took < 2000, `WebSocket door answered in ${took} ms`)
  t.same(await viaLongPoll(s, 'a'), ws)
})

t.test('a stage that hangs on a later poll: the same 503 there, and the session is not lost', async (t) => {
  let hang = false
  const s = await setup(t, { stageTimeoutMs: 200, hangStage: () => hang })
  const c = new LpClient(s.port, '/ws', { cookie: cookieFor('a') })
  t.equal((await c.open()).status, 200)
  hang = true
  const r = await c.pollRaw()
  t.equal(r.status, 503)
  t.equal(r.body.code, 'PORTCULLIS_STAGE_TIMEOUT')
  hang = false
  t.same(await c.receive(1), ['ready'], 'the next poll gets what was queued')
})

t.test('a session loader that hangs at expiry: 4002 on both doors once recheckTimeoutMs has passed, never later', async (t) => {
  const { load, expiries } = failingAtExpiry(never)
  const s = await setup(t, { recheckTimeoutMs: 200, load })
  const [ws, lp] = await Promise.all([viaWebSocket(s, 'a'), viaLongPoll(s, 'b')])
  const late = Date.now() - Math.min(...expiries.values())
  t.same(ws, { close: { code: 4002, reason: 'session expired' } })
  t.same(lp, ws)
  t.ok(late < 1500, `both closed within ${late} ms of the expiry (recheckTimeoutMs 200)`)
})
