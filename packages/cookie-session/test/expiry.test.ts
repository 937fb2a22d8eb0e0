import t from 'tap'
import { EventEmitter } from 'node:events'
import fastifyCookie, { sign } from '@fastify/cookie'
import type { FastifyInstance } from 'fastify'
import type { PortcullisIdentity, PortcullisSocket } from '@portcullis/policy'
import { closed, listen, nextMessages, wsOpen } from '../../../test/helpers/index.js'
import { sessionApp, type TestLike } from './helpers.js'
import { SessionClock } from '../src/clock.js'
import type { CookieSessionOptions } from '../src/index.js'

const SECRET = 'expiry-secret-0123456789-abcdefghijkl'
const cookieFor = (sid: string): string => 'sid=' + encodeURIComponent(sign(sid, SECRET))

async function app (t: TestLike, load: (sid: string) => PortcullisIdentity | null | Promise<PortcullisIdentity | null>, extra: Partial<CookieSessionOptions> = {}): Promise<FastifyInstance> {
  const a = await sessionApp(t, (app) => app.register(fastifyCookie, { secret: SECRET }), {
    signedCookie: { cookieName: 'sid', load },
    ...extra
  })
  a.get('/ws', { websocket: true }, (socket) => { socket.send('ready') })
  return a
}

t.test('a session that expires closes its live connection with 4002 when expiresAt passes', async (t) => {
  // the clock starts at the first load (the handshake), so a slow machine cannot expire it early
  let expiresAt: number | undefined
  const a = await app(t, (sid) => sid === 's1' ? { id: 'alice', expiresAt: (expiresAt ??= Date.now() + 400) } : null)
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  t.equal(a.portcullisSessions.tracked, 1, 'on the clock')
  const c = await closed(s)
  const late = Date.now() - expiresAt!
  t.same(c, { code: 4002, reason: 'session expired' })
  t.ok(late >= -5 && late < 1000, `closed ${late} ms after expiry (within a second)`)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(a.portcullisSessions.tracked, 0, 'dropped from the clock once closed')
})

t.test('a rolling session that was extended since the connection opened stays connected', async (t) => {
  let expiresAt = 0
  let loads = 0
  const a = await app(t, () => {
    if (loads++ === 0) expiresAt = Date.now() + 500
    return { id: 'alice', expiresAt }
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  const firstExpiry = expiresAt
  expiresAt += 500 // the app's store extended the session (activity over HTTP)
  const c = await closed(s)
  t.equal(c.code, 4002)
  t.ok(Date.now() >= firstExpiry + 450, 'kept past its first expiry')
  t.equal(loads, 3, 'the loader was asked at each expiry: connect, extended, expired')
})

t.test('periodic re-validation closes a session the store no longer knows with 4003', async (t) => {
  let valid = true
  const a = await app(t, () => valid ? { id: 'alice' } : null, { revalidateMs: 100 })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  await new Promise(resolve => setTimeout(resolve, 250))
  t.equal(s.readyState, s.OPEN, 'still valid after two re-validations')
  valid = false
  const started = Date.now()
  t.same(await closed(s), { code: 4003, reason: 'session invalid' })
  t.ok(Date.now() - started < 1000)
})

t.test('re-validation with the app\'s revalidate(): a changed owner closes; a failing check keeps the connection', async (t) => {
  let answer: () => unknown = () => true
  const a = await app(t, () => ({ id: 'alice' }), {
    revalidateMs: 80,
    revalidate: async () => answer() as PortcullisIdentity | boolean
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  answer = () => { throw new Error('store down') }
  await new Promise(resolve => setTimeout(resolve, 250))
  t.equal(s.readyState, s.OPEN, 'a failed re-check does not drop the connection')
  answer = () => ({ id: 'mallory' })
  t.same(await closed(s), { code: 4003, reason: 'session invalid' })
})

t.test('closing Fastify drops every session from the clock', async (t) => {
  const a = await app(t, () => ({ id: 'alice', expiresAt: Date.now() + 60_000 }))
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s)
  t.equal(a.portcullisSessions.tracked, 1)
  await a.close()
  t.equal(a.portcullisSessions.tracked, 0)
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

t.test('one timer for many sessions: each closes at its own expiry, in order', async (t) => {
  const clock = new SessionClock({ revalidateMs: 0, log: silent })
  t.teardown(() => clock.stop())
  const order: number[] = []
  const sockets: FakeSocket[] = []
  const base = Date.now() + 50
  for (let i = 0; i < 200; i++) {
    const s = new FakeSocket()
    const at = base + ((i * 37) % 200) // shuffled expiries
    s.close = (code, reason) => { s.closedWith = [code, reason]; s.readyState = 3; order.push(at); unwatchers[i]() }
    sockets.push(s)
  }
  const unwatchers = sockets.map((s, i) => clock.watch({ id: 'u' + i, sessionId: 's' + i, expiresAt: base + ((i * 37) % 200) }, s as unknown as PortcullisSocket, undefined))
  t.equal(clock.size, 200)
  t.ok(clock.armed, 'one timer armed')
  await new Promise(resolve => setTimeout(resolve, 400))
  t.equal(order.length, 200, 'all closed')
  t.same(order, [...order].sort((x, y) => x - y), 'in expiry order')
  t.ok(sockets.every(s => s.closedWith?.[0] === 4002))
  t.equal(clock.size, 0)
  t.notOk(clock.armed, 'no timer once nothing is watched')
})

t.test('connections of one session share one entry; the heap stays bounded under churn', async (t) => {
  const clock = new SessionClock({ revalidateMs: 0, log: silent })
  t.teardown(() => clock.stop())
  const far = Date.now() + 3_600_000
  const a = clock.watch({ id: 'u', sessionId: 's', expiresAt: far }, new FakeSocket() as unknown as PortcullisSocket, undefined)
  const b = clock.watch({ id: 'u', sessionId: 's', expiresAt: far }, new FakeSocket() as unknown as PortcullisSocket, undefined)
  t.equal(clock.size, 1, 'one entry per session')
  t.equal(clock.heapSize, 1, 'same expiry: no second heap node')
  a()
  t.equal(clock.size, 1)
  b()
  t.equal(clock.size, 0)
  for (let i = 0; i < 5000; i++) {
    const keep = clock.watch({ id: 'u', sessionId: 'keep', expiresAt: far + 1 }, new FakeSocket() as unknown as PortcullisSocket, undefined)
    const un = clock.watch({ id: 'v', sessionId: 'c' + i, expiresAt: far + i }, new FakeSocket() as unknown as PortcullisSocket, undefined)
    un()
    if (i % 2 === 0) keep()
  }
  t.ok(clock.heapSize < 300, `heap compacted (${clock.heapSize} nodes for ${clock.size} live)`)
  clock.stop()
  t.notOk(clock.armed)
  t.equal(clock.size, 0)
})
