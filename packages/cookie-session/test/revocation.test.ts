import t from 'tap'
import fastifyCookie, { sign } from '@fastify/cookie'
import type { FastifyInstance } from 'fastify'
import type { PortcullisIdentity } from '@portcullis/policy'
import { closed, listen, nextMessages, waitFor, wsOpen } from '../../../test/helpers/index.js'
import { sessionApp, type TestLike } from './helpers.js'
import type { CookieSessionOptions, RevokeEvent } from '../src/index.js'

const SECRET = 'revocation-secret-0123456789-abcdefgh'

function cookieFor (sid: string): string {
  return 'sid=' + encodeURIComponent(sign(sid, SECRET))
}

async function app (t: TestLike, sessions: Map<string, PortcullisIdentity>, extra: Partial<CookieSessionOptions> = {}, load?: (sid: string) => Promise<PortcullisIdentity | null>): Promise<FastifyInstance> {
  const a = await sessionApp(t, (app) => app.register(fastifyCookie, { secret: SECRET }), {
    signedCookie: { cookieName: 'sid', load: load ?? (async (sid) => sessions.get(sid) ?? null) },
    ...extra
  })
  a.get('/ws', { websocket: true }, (socket) => { socket.send('ready') })
  a.post<{ Body: { sid: string } }>('/logout', async (request) => {
    const sid = request.body.sid
    sessions.delete(sid)
    return { closed: a.portcullisSessions.revoke(sid) }
  })
  return a
}

t.test('logout revokes the session: its live connections close with 4001 within a second, others stay', async (t) => {
  const sessions = new Map<string, PortcullisIdentity>([['s1', { id: 'alice' }], ['s2', { id: 'bob' }]])
  const a = await app(t, sessions)
  const { ws } = await listen(a)
  const tab1 = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  const tab2 = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  const other = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s2') } })).ws!
  await Promise.all([nextMessages(tab1), nextMessages(tab2), nextMessages(other)])

  const started = Date.now()
  const res = await a.inject({ method: 'POST', url: '/logout', payload: { sid: 's1' } })
  t.same(res.json(), { closed: 2 })
  const [c1, c2] = await Promise.all([closed(tab1), closed(tab2)])
  t.ok(Date.now() - started < 1000, 'closed within a second')
  t.same(c1, { code: 4001, reason: 'session revoked' })
  t.same(c2, { code: 4001, reason: 'session revoked' })
  t.equal(other.readyState, other.OPEN, 'another session is untouched')

  const again = await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })
  t.equal(again.status, 401, 'the ended session cannot reconnect')
  t.equal(JSON.parse(again.body!).code, 'PORTCULLIS_SESSION_EXPIRED')
  other.close()
})

t.test('onRevoke listeners hear revoke() (for a multi-node broadcast) but not revokeLocal()', async (t) => {
  const sessions = new Map<string, PortcullisIdentity>([['s1', { id: 'alice' }], ['s2', { id: 'bob' }]])
  const fromOption: RevokeEvent[] = []
  const a = await app(t, sessions, { onRevoke: (e) => fromOption.push(e) })
  const subscribed: RevokeEvent[] = []
  const unsubscribe = a.portcullisSessions.onRevoke((e) => subscribed.push(e))
  const { ws } = await listen(a)
  const s1 = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  const s2 = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s2') } })).ws!
  await Promise.all([nextMessages(s1), nextMessages(s2)])

  t.equal(a.portcullisSessions.revoke('s1', 'logged out elsewhere'), 1)
  t.same(await closed(s1), { code: 4001, reason: 'logged out elsewhere' })
  t.same(fromOption, [{ sessionId: 's1', reason: 'logged out elsewhere', closed: 1 }])
  t.same(subscribed, fromOption)

  // a revocation received from another node is applied locally and not echoed back
  t.equal(a.portcullisSessions.revokeLocal('s2'), 1)
  t.same(await closed(s2), { code: 4001, reason: 'session revoked' })
  t.equal(fromOption.length, 1, 'revokeLocal does not notify')

  unsubscribe()
  a.portcullisSessions.revoke('nobody')
  t.equal(subscribed.length, 1, 'unsubscribed')
  t.equal(fromOption.length, 2, 'the option listener still hears')
  t.throws(() => a.portcullisSessions.revoke(''), TypeError)
})

t.test('a long close reason is cut to the 123 bytes a close frame can carry', async (t) => {
  const sessions = new Map<string, PortcullisIdentity>([['s1', { id: 'alice' }]])
  const a = await app(t, sessions)
  const { ws } = await listen(a)
  const s1 = (await wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })).ws!
  await nextMessages(s1)
  a.portcullisSessions.revoke('s1', 'é'.repeat(100))
  const c = await closed(s1)
  t.equal(c.code, 4001)
  t.ok(Buffer.byteLength(c.reason) <= 123)
})

t.test('a huge close reason is cut to a whole-character prefix of at most 123 bytes', async (t) => {
  const a = await app(t, new Map())
  const events: RevokeEvent[] = []
  a.portcullisSessions.onRevoke((e) => { events.push(e) })
  for (const reason of ['é'.repeat(100_000), 'a' + '😀'.repeat(100_000), 'ab' + '😀'.repeat(60), 'x'.repeat(123), 'short']) {
    a.portcullisSessions.revoke('nobody', reason)
    const cut = events[events.length - 1].reason
    if (Buffer.byteLength(reason) <= 123) {
      t.equal(cut, reason, 'a reason that fits is kept whole')
      continue
    }
    t.ok(Buffer.byteLength(cut) <= 123 && Buffer.byteLength(cut) > 119, `${Buffer.byteLength(cut)} bytes: as much as fits`)
    t.ok(reason.startsWith(cut), 'a prefix of the reason')
    t.notOk(cut.includes('\uFFFD') || /[\ud800-\udbff]$/.test(cut), 'no broken character at the cut')
  }
})

t.test('a revocation during the handshake still closes the connection that was being opened', async (t) => {
  const sessions = new Map<string, PortcullisIdentity>([['s1', { id: 'alice' }]])
  let release!: () => void
  let loading = false
  const gate = new Promise<void>((resolve) => { release = resolve })
  const a = await app(t, sessions, {}, async (sid) => {
    loading = true
    const identity = sessions.get(sid) ?? null
    await gate
    return identity
  })
  const { ws } = await listen(a)
  const opening = wsOpen(`${ws}/ws`, { headers: { cookie: cookieFor('s1') } })
  await waitFor(() => loading, 2000, 'the loader to run')
  t.equal(a.portcullisSessions.revoke('s1'), 0, 'nothing open yet')
  release()
  const r = await opening
  t.ok(r.ws, 'the handshake had already passed its check')
  t.same(await closed(r.ws!), { code: 4001, reason: 'session revoked' })
})
