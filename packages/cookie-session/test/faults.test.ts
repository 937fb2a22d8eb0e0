import t from 'tap'
import { EventEmitter } from 'node:events'
import fastifyCookie, { sign } from '@fastify/cookie'
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { type PortcullisIdentity, type PortcullisSocket } from '@portcullis/policy'
import cookieSession, { type CookieSessionOptions } from '../src/index.js'
import { SessionClock } from '../src/clock.js'
import { closed, listen, nextMessages, wsOpen } from '../../../test/helpers/index.js'
import type { TestLike } from './helpers.js'

/**
 * A session store that throws, rejects or never answers never keeps a connection open past its
 * expiry, never crashes the process, and never holds a handshake (issue 19).
 */

const SECRET = 'faults-secret-0123456789-abcdefghijkl'
const cookieFor = (sid: string): string => 'sid=' + encodeURIComponent(sign(sid, SECRET))
const never = <T>(): Promise<T> => new Promise<T>(() => {})

type Load = (sid: string) => PortcullisIdentity | null | Promise<PortcullisIdentity | null>

async function app (t: TestLike, load: Load, extra: Partial<CookieSessionOptions> = {}, stageTimeoutMs = 5000): Promise<FastifyInstance> {
  const a = Fastify()
  t.teardown(() => a.close())
  await a.register(fastifyCookie, { secret: SECRET })
  await a.register(portcullis, { defaults: { origin: false }, stageTimeoutMs })
  await a.register(cookieSession, { signedCookie: { cookieName: 'sid', load }, ...extra })
  a.get('/ws', { websocket: true }, (socket) => { socket.send('ready') })
  return a
}

t.test('a loader that never answers at expiry closes the connection with 4002 once recheckTimeoutMs has passed, not never', async (t) => {
  let expiresAt: number | undefined
  let loads = 0
  const a = await app(t, (sid) => {
    if (sid !== 's1') return null
    if (loads++ === 0) return { id: 'alice', expiresAt: (expiresAt = Date.now() + 300) }
    return never() // the store hangs at the expiry re-check
  }, { recheckTimeoutMs: 200 })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  const c = await closed(s)
  const late = Date.now() - expiresAt!
  t.same(c, { code: 4002, reason: 'session expired' })
  t.equal(loads, 2, 'asked once at expiry')
  t.ok(late >= 190 && late < 1000, `closed ${late} ms after its expiry (recheckTimeoutMs 200)`)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(a.portcullisSessions.tracked, 0, 'dropped from the clock')
})

t.test('a loader that rejects at expiry closes with 4002 at once', async (t) => {
  let expiresAt: number | undefined
  let loads = 0
  const a = await app(t, () => {
    if (loads++ === 0) return { id: 'alice', expiresAt: (expiresAt = Date.now() + 300) }
    return Promise.reject(new Error('store down'))
  }, { recheckTimeoutMs: 2000 })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  t.same(await closed(s), { code: 4002, reason: 'session expired' })
  const late = Date.now() - expiresAt!
  t.ok(late < 1000, `closed ${late} ms after its expiry, without waiting for the 2 s timeout`)
})

t.test('a re-validation that never answers closes the connection with 4003 after recheckTimeoutMs', async (t) => {
  let revalidations = 0
  const a = await app(t, () => ({ id: 'alice' }), {
    revalidateMs: 100,
    recheckTimeoutMs: 200,
    revalidate: () => { revalidations++; return never() }
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  const opened = Date.now()
  const c = await closed(s)
  const took = Date.now() - opened
  t.same(c, { code: 4003, reason: 'session invalid' })
  t.equal(revalidations, 1, 'one re-check in flight at a time')
  t.ok(took >= 280 && took < 1500, `closed ${took} ms after opening (re-validation at 100 ms + 200 ms timeout)`)
})

t.test('a loader that never answers at the handshake is denied with 503 PORTCULLIS_STAGE_TIMEOUT', async (t) => {
  const a = await app(t, () => never(), {}, 200)
  const { ws } = await listen(a)
  const started = Date.now()
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })
  const took = Date.now() - started
  t.equal(r.status, 503)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_STAGE_TIMEOUT')
  t.ok(took < 1500, `answered in ${took} ms`)
})

t.test('a loader that throws at the handshake fails closed with 500 and the server keeps serving', async (t) => {
  let broken = true
  const a = await app(t, () => { if (broken) throw new Error('store bug'); return { id: 'alice' } })
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })
  t.equal(r.status, 500)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_STAGE_FAILED')
  broken = false
  const ok = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  t.same(await nextMessages(ok), ['ready'])
  ok.close()
})

class FakeSocket extends EventEmitter {
  readyState: 0 | 1 | 2 | 3 = 1
  closedWith: [number, string] | undefined
  close (code: number, reason: string): void {
    this.closedWith = [code, reason]
    this.readyState = 3
  }
}
const silent = { error () {}, warn () {}, info () {}, debug () {} } as never

t.test('a hung re-check survives heap compaction: its connection still closes at the deadline', async (t) => {
  const clock = new SessionClock({ revalidateMs: 0, recheckTimeoutMs: 150, log: silent })
  t.teardown(() => clock.stop())
  const hung = new FakeSocket()
  const expiresAt = Date.now() + 50
  clock.watch({ id: 'alice', sessionId: 'hung', expiresAt }, hung as unknown as PortcullisSocket, () => never())
  await new Promise(resolve => setTimeout(resolve, 80)) // the re-check is now in flight
  t.equal(hung.closedWith, undefined, 'waiting for the store')
  // churn: many sessions come and go, so the heap is rebuilt while the re-check hangs
  const far = Date.now() + 3_600_000
  for (let i = 0; i < 2000; i++) {
    clock.watch({ id: 'v', sessionId: 'c' + i, expiresAt: far + i }, new FakeSocket() as unknown as PortcullisSocket, undefined)()
  }
  await new Promise(resolve => setTimeout(resolve, 200))
  t.same(hung.closedWith, [4002, 'session expired'], 'closed once the re-check timed out')
})

t.test('an answer that arrives after the timeout changes nothing', async (t) => {
  const clock = new SessionClock({ revalidateMs: 0, recheckTimeoutMs: 60, log: silent })
  t.teardown(() => clock.stop())
  const s = new FakeSocket()
  let answer: (v: PortcullisIdentity) => void = () => {}
  clock.watch({ id: 'alice', sessionId: 's', expiresAt: Date.now() + 20 }, s as unknown as PortcullisSocket, () => new Promise(resolve => { answer = resolve }))
  await new Promise(resolve => setTimeout(resolve, 150))
  t.same(s.closedWith, [4002, 'session expired'])
  s.readyState = 1 // pretend the close has not gone through yet
  s.closedWith = undefined
  answer({ id: 'alice', sessionId: 's', expiresAt: Date.now() + 60_000 }) // the store wakes up: too late
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(s.closedWith, undefined, 'not reopened, not rescheduled, not closed twice')
  t.notOk(clock.armed, 'nothing left on the timer')
})

t.test('recheckTimeoutMs is validated at startup', async (t) => {
  for (const bad of [0, -5, 1.5, Infinity, '100', 2 ** 31]) {
    const a = Fastify()
    await a.register(fastifyCookie, { secret: SECRET })
    await a.register(portcullis, { defaults: { origin: false } })
    await t.rejects(async () => {
      await a.register(cookieSession, { signedCookie: { cookieName: 'sid', load: () => null }, recheckTimeoutMs: bad as number })
    }, { code: 'PORTCULLIS_COOKIE_SESSION_INVALID_OPTION', message: /recheckTimeoutMs/ }, String(bad))
    await a.close()
  }
})
