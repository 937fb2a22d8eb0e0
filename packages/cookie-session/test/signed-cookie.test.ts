import t from 'tap'
import { randomUUID } from 'node:crypto'
import fastifyCookie, { sign } from '@fastify/cookie'
import type { FastifyInstance } from 'fastify'
import type { PortcullisIdentity } from '@portcullis/policy'
import { captureLogs, closed, listen, nextMessages, rawUpgrade, wsOpen } from '../../../test/helpers/index.js'
import { cookiePair, flipChar, sessionApp, type TestLike } from './helpers.js'

const NEW_SECRET = 'new-secret-0123456789-abcdefghijklmnop'
const OLD_SECRET = 'old-secret-0123456789-abcdefghijklmnop'
const RETIRED_SECRET = 'retired-secret-0123456789-abcdefghijk'

interface Store { sessions: Map<string, PortcullisIdentity>, loads: number }

/** An app with a login route that issues a signed `sid` cookie and a /ws route. */
async function app (t: TestLike, opts: { secret?: string | string[], logs?: ReturnType<typeof captureLogs>, cacheSize?: number, signer?: object } = {}): Promise<{ app: FastifyInstance, store: Store }> {
  const store: Store = { sessions: new Map(), loads: 0 }
  const a = await sessionApp(t, (app) => app.register(fastifyCookie, { secret: (opts.signer ?? opts.secret ?? [NEW_SECRET, OLD_SECRET]) as string }), {
    signedCookie: {
      cookieName: 'sid',
      cacheSize: opts.cacheSize,
      load: async (sessionId) => {
        store.loads++
        return store.sessions.get(sessionId) ?? null
      }
    }
  }, opts.logs)
  a.post('/login', async (_request, reply) => {
    const sid = randomUUID()
    store.sessions.set(sid, { id: 'alice', data: { name: 'Alice' } })
    reply.setCookie('sid', sid, { signed: true, path: '/', httpOnly: true, sameSite: 'strict' })
    return { ok: true }
  })
  a.get('/ws', { websocket: true }, (socket, request) => {
    socket.send(JSON.stringify(request.portcullis?.state.identity ?? null))
  })
  a.get('/open', { websocket: true, wsPolicy: { session: 'optional' } }, (socket, request) => {
    socket.send(JSON.stringify(request.portcullis?.state.identity ?? null))
  })
  a.get('/public', { websocket: true, wsPolicy: { session: false } }, (socket, request) => {
    socket.send(JSON.stringify(request.portcullis?.state.identity ?? null))
  })
  return { app: a, store }
}

async function login (a: FastifyInstance): Promise<string> {
  const res = await a.inject({ method: 'POST', url: '/login' })
  return cookiePair(res.headers['set-cookie'], 'sid')
}

t.test('login, then the WebSocket opens with the session\'s identity and no second login', async (t) => {
  const { app: a } = await app(t)
  const cookie = await login(a)
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.ok(r.ws, 'opened')
  const [identity] = await nextMessages(r.ws!)
  const sid = decodeURIComponent(cookie.slice(4)).split('.')[0]
  t.same(JSON.parse(identity), { id: 'alice', sessionId: sid, data: { name: 'Alice' } })
  r.ws!.close()
})

t.test('no cookie is denied with 401 PORTCULLIS_SESSION_REQUIRED before the handshake', async (t) => {
  const { app: a } = await app(t)
  const { ws, port } = await listen(a)
  const r = await wsOpen(`${ws}/ws`)
  t.equal(r.status, 401)
  t.same(JSON.parse(r.body!), { code: 'PORTCULLIS_SESSION_REQUIRED', message: 'A session is required' })
  const raw = await rawUpgrade(port, '/ws')
  t.equal(raw.status, 401)
  t.notOk(raw.raw.includes(' 101 '), 'never a 101')
})

t.test('a forged, unsigned or tampered cookie is denied with 401 PORTCULLIS_SESSION_INVALID', async (t) => {
  const { app: a, store } = await app(t)
  const good = await login(a)
  const value = decodeURIComponent(good.slice(4))
  const [sid, mac] = [value.slice(0, value.lastIndexOf('.')), value.slice(value.lastIndexOf('.') + 1)]
  const { ws } = await listen(a)
  const bad = {
    'unsigned id': sid,
    'missing signature': sid + '.',
    'forged signature': sid + '.' + 'A'.repeat(mac.length),
    'tampered id': flipChar(sid, 0) + '.' + mac,
    'tampered signature': sid + '.' + flipChar(mac, 3),
    'signed elsewhere': sign(sid, 'some-other-secret-0123456789abcdef')
  }
  const loadsBefore = store.loads
  for (const [what, v] of Object.entries(bad)) {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie: 'sid=' + encodeURIComponent(v) } })
    t.equal(r.status, 401, what)
    t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_SESSION_INVALID', what)
  }
  const undecodable = await wsOpen(`${ws}/ws`, { headers: { cookie: `sid=${sid}.%E0%A4%A` } })
  t.equal(JSON.parse(undecodable.body!).code, 'PORTCULLIS_SESSION_INVALID', 'a malformed percent-escape')
  t.equal(store.loads, loadsBefore, 'the loader is never asked about an unverified id')
})

t.test('two cookies with the session name (cookie tossing) are no session, logged without values', async (t) => {
  const logs = captureLogs()
  const { app: a } = await app(t, { logs })
  const mine = await login(a)
  const planted = 'sid=' + encodeURIComponent(sign('attacker-session', NEW_SECRET))
  const { ws } = await listen(a)
  for (const cookie of [`${planted}; ${mine}`, `${mine}; ${planted}`, `${mine}; ${mine}`]) {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
    t.equal(r.status, 401)
    t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_SESSION_AMBIGUOUS')
  }
  // on an optional route the tossed cookies are ignored: anonymous, not either session
  const r = await wsOpen(`${ws}/open`, { headers: { cookie: `${planted}; ${mine}` } })
  t.ok(r.ws)
  t.same(await nextMessages(r.ws!), ['null'])
  r.ws!.close()
  const warned = logs.lines.filter(l => l.msg?.includes('cookie tossing'))
  t.equal(warned.length, 4, 'every tossing attempt is logged')
  t.same(warned[0].portcullis.cookie, 'sid')
  t.equal(warned[0].portcullis.count, 2)
  const text = logs.text()
  for (const secret of [mine.slice(4), decodeURIComponent(mine.slice(4)), planted.slice(4), 'attacker-session', NEW_SECRET, OLD_SECRET]) {
    t.notOk(text.includes(secret), 'no cookie value or secret in the logs')
  }
})

t.test('tossing hidden behind 200 padding pairs is still seen: the whole Cookie header is read', async (t) => {
  const { app: a } = await app(t)
  const planted = await login(a) // the attacker's own, validly signed session
  const mine = await login(a)
  const { ws } = await listen(a)
  const named = Array.from({ length: 200 }, (_, i) => `pad${i}=x`).join('; ')
  const nameless = Array.from({ length: 200 }, () => 'x').join('; ')
  for (const padding of [named, nameless]) {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie: `${planted}; ${padding}; ${mine}` } })
    t.equal(r.status, 401)
    t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_SESSION_AMBIGUOUS')
  }
  const alone = await wsOpen(`${ws}/ws`, { headers: { cookie: `${named}; ${mine}` } })
  t.ok(alone.ws, 'one session cookie behind 200 other pairs is still found')
  t.equal(JSON.parse((await nextMessages(alone.ws!))[0]).id, 'alice')
  alone.ws!.close()
})

t.test('secret rotation: old secrets verify, only the newest signs, a retired secret is refused', async (t) => {
  const { app: a, store } = await app(t, { secret: [NEW_SECRET, OLD_SECRET] })
  const { ws } = await listen(a)
  const issued = decodeURIComponent((await login(a)).slice(4))
  const sid = issued.split('.')[0]
  t.equal(issued, sign(sid, NEW_SECRET), 'the login cookie is signed with the newest secret')

  store.sessions.set('s-old', { id: 'bob' })
  store.sessions.set('s-retired', { id: 'carol' })
  const old = await wsOpen(`${ws}/ws`, { headers: { cookie: 'sid=' + encodeURIComponent(sign('s-old', OLD_SECRET)) } })
  t.ok(old.ws, 'a cookie signed with the previous secret still verifies')
  t.same(JSON.parse((await nextMessages(old.ws!))[0]).id, 'bob')
  old.ws!.close()

  const retired = await wsOpen(`${ws}/ws`, { headers: { cookie: 'sid=' + encodeURIComponent(sign('s-retired', RETIRED_SECRET)) } })
  t.equal(retired.status, 401, 'a cookie signed with a retired secret is refused')
  t.equal(JSON.parse(retired.body!).code, 'PORTCULLIS_SESSION_INVALID')
})

t.test('a verified cookie whose session has ended is denied with PORTCULLIS_SESSION_EXPIRED', async (t) => {
  const { app: a, store } = await app(t)
  const cookie = await login(a)
  store.sessions.clear()
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
  t.equal(r.status, 401)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_SESSION_EXPIRED')
  store.sessions.set('past', { id: 'dave', expiresAt: Date.now() - 1 })
  const past = await wsOpen(`${ws}/ws`, { headers: { cookie: 'sid=' + encodeURIComponent(sign('past', NEW_SECRET)) } })
  t.equal(JSON.parse(past.body!).code, 'PORTCULLIS_SESSION_EXPIRED', 'an identity already past its expiresAt')
})

t.test('optional routes are anonymous without a cookie; session: false routes never look', async (t) => {
  const { app: a, store } = await app(t)
  const cookie = await login(a)
  const { ws } = await listen(a)
  const anon = await wsOpen(`${ws}/open`)
  t.same(await nextMessages(anon.ws!), ['null'])
  anon.ws!.close()
  const known = await wsOpen(`${ws}/open`, { headers: { cookie } })
  t.equal(JSON.parse((await nextMessages(known.ws!))[0]).id, 'alice')
  known.ws!.close()
  const forged = await wsOpen(`${ws}/open`, { headers: { cookie: 'sid=forged.value' } })
  t.same(await nextMessages(forged.ws!), ['null'], 'a forged cookie on an optional route is anonymous, not an error')
  forged.ws!.close()
  const loads = store.loads
  const pub = await wsOpen(`${ws}/public`, { headers: { cookie } })
  t.same(await nextMessages(pub.ws!), ['null'])
  pub.ws!.close()
  t.equal(store.loads, loads, 'session: false does not load the session')
})

t.test('a verified signed value is cached: reconnecting does not verify the HMAC again', async (t) => {
  let unsigned = 0
  const inner = { sign: (v: string) => sign(v, NEW_SECRET), unsign: (v: string) => { unsigned++; return realUnsign(v) } }
  const { app: a } = await app(t, { signer: inner })
  const cookie = await login(a)
  const { ws } = await listen(a)
  for (let i = 0; i < 3; i++) {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
    t.ok(r.ws)
    r.ws!.close()
    await closed(r.ws!)
  }
  t.equal(unsigned, 1, 'one HMAC verification for three handshakes')
  const forged = await wsOpen(`${ws}/ws`, { headers: { cookie: cookie.slice(0, -2) + 'xx' } })
  t.equal(forged.status, 401)
  t.equal(unsigned, 2, 'a value that never verified is never served from the cache')
})

t.test('cacheSize: 0 verifies every time', async (t) => {
  let unsigned = 0
  const inner = { sign: (v: string) => sign(v, NEW_SECRET), unsign: (v: string) => { unsigned++; return realUnsign(v) } }
  const { app: a } = await app(t, { signer: inner, cacheSize: 0 })
  const cookie = await login(a)
  const { ws } = await listen(a)
  for (let i = 0; i < 2; i++) {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
    r.ws!.close()
  }
  t.equal(unsigned, 2)
})

function realUnsign (v: string): { valid: boolean, renew: boolean, value: string | null } {
  const i = v.lastIndexOf('.')
  const value = v.slice(0, i)
  return i > 0 && sign(value, NEW_SECRET) === v ? { valid: true, renew: false, value } : { valid: false, renew: false, value: null }
}

t.test('the cache is bounded: the least recently used value is evicted first', async (t) => {
  let unsigned = 0
  const inner = { sign: (v: string) => sign(v, NEW_SECRET), unsign: (v: string) => { unsigned++; return realUnsign(v) } }
  const { app: a } = await app(t, { signer: inner, cacheSize: 2 })
  const [c1, c2, c3] = [await login(a), await login(a), await login(a)]
  const { ws } = await listen(a)
  const connect = async (cookie: string): Promise<void> => {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
    t.ok(r.ws)
    r.ws!.close()
  }
  await connect(c1)
  await connect(c2)
  await connect(c1) // c1 is now the most recently used
  t.equal(unsigned, 2)
  await connect(c3) // evicts c2
  await connect(c1)
  t.equal(unsigned, 3, 'c1 stayed cached')
  await connect(c2)
  t.equal(unsigned, 4, 'c2 was evicted and verified again')
})
