/**
 * Wire protocol v2 (PROTOCOL.md §12): versions negotiated at open, send answers that carry the
 * handler's replies (one round trip per request/response), ack-only sends; v1 unchanged.
 * Real servers on 127.0.0.1, real HTTP.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { APP_ORIGIN, LpClient, http, lpApp, start, type HttpResult } from './helpers.js'

async function echoApp (t: Parameters<typeof lpApp>[0], opts = {}): Promise<FastifyInstance> {
  const app = await lpApp(t, { pollTimeoutMs: 1500, idleTimeoutMs: 5000, ...opts })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('message', (m: Buffer) => {
      const text = m.toString()
      if (text === 'later') setTimeout(() => socket.send('late'), 50)
      else if (text !== 'quiet') socket.send(text)
    })
  })
  return app
}

async function openV2 (c: LpClient, versions: unknown = [2, 1]): Promise<HttpResult> {
  const r = await http(c.port, 'POST', '/ws/_lp/open', c.headers(), { versions })
  if (r.status === 200) c.sid = r.body.sid
  return r
}

function sendV2 (c: LpClient, seq: number, texts: string[], ack: number): Promise<HttpResult> {
  return http(c.port, 'POST', '/ws/_lp/send', c.headers({ 'x-portcullis-ack': String(ack) }), { seq, messages: texts.map(text => ({ text })) })
}

t.test('open negotiates the highest version both speak, and a v1 open is answered as before', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const v2 = await openV2(new LpClient(port, '/ws', { origin: APP_ORIGIN }))
  t.equal(v2.status, 200)
  t.equal(v2.body.v, 2)
  t.equal(v2.body.stream, true, 'the stream endpoint exists')
  t.equal((await openV2(new LpClient(port, '/ws', { origin: APP_ORIGIN }), [1, 7])).body.v, 1, 'only 1 in common')
  const v1 = await new LpClient(port, '/ws', { origin: APP_ORIGIN }).open()
  t.equal(v1.body.v, 1)
  t.same(Object.keys(v1.body).sort(), ['idleTimeoutMs', 'maxBodyBytes', 'maxMessagesPerRequest', 'maxPayload', 'pollTimeoutMs', 'protocol', 'sid', 'v'], 'the v1 answer has exactly its v1 keys')
})

t.test('unknown or garbage version offers get 400 PORTCULLIS_FALLBACK_BAD_REQUEST', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const offers: unknown[] = ['2', 2, [], [3], [9, 10], [1.5], [null], ['1'], {}, new Array(9).fill(1), [2 ** 53]]
  for (const offer of offers) {
    const r = await openV2(new LpClient(port, '/ws', { origin: APP_ORIGIN }), offer)
    t.equal(r.status, 400, JSON.stringify(offer))
    t.equal(r.body.code, 'PORTCULLIS_FALLBACK_BAD_REQUEST', JSON.stringify(offer))
    t.equal(r.headers['cache-control'], 'no-store')
  }
})

t.test('a v2 send answer carries the handler\'s replies, and a poll held meanwhile is not woken for them', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await openV2(c)
  const t0 = Date.now()
  let pollDone = 0
  const poll = c.pollRaw(0).then((r) => { pollDone = Date.now(); return r })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const a = await sendV2(c, 1, ['hello', 'world'], 0)
  t.equal(a.status, 200)
  t.same(a.body, { ack: 2, messages: [{ seq: 1, text: 'hello' }, { seq: 2, text: 'world' }] }, 'both replies in the answer')
  t.equal(a.headers['cache-control'], 'no-store')
  const b = await sendV2(c, 3, ['again'], 2)
  t.same(b.body, { ack: 3, messages: [{ seq: 3, text: 'again' }] }, 'the ack header dropped seq 1 and 2')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(pollDone, 0, 'the held poll was not answered for messages the send answers carried')
  const p = await poll
  t.ok(pollDone - t0 >= 1400, `the poll ended at its timeout (${pollDone - t0} ms)`)
  t.same(p.body.messages.map((m: { seq: number }) => m.seq), [3], 'what it carries is unacked only (the client drops seq 3 as seen)')
})

t.test('a message beyond the send answer still wakes the held poll at once', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await openV2(c)
  const poll = c.pollRaw(0)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const t0 = Date.now()
  const a = await sendV2(c, 1, ['later'], 0)
  t.same(a.body, { ack: 1, messages: [] }, 'nothing was ready in the tick')
  const p = await poll
  t.ok(Date.now() - t0 < 1000, 'woken by the late message, not by its timeout')
  t.same(p.body.messages, [{ seq: 1, text: 'late' }])
})

t.test('a lost send answer\'s replies are redelivered by the next poll, in order', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await openV2(c)
  await sendV2(c, 1, ['one', 'two'], 0) // its answer "lost": the client never read it
  const p = await c.pollRaw(0)
  t.same(p.body.messages, [{ seq: 1, text: 'one' }, { seq: 2, text: 'two' }])
  const retried = await sendV2(c, 1, ['one', 'two'], 2)
  t.same(retried.body, { ack: 2, messages: [] }, 'a retried send is not delivered to the handler twice')
})

t.test('an ack-only v2 send applies the ack and answers what is queued; a v1 session still refuses an empty send', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await openV2(c)
  await sendV2(c, 1, ['a', 'b', 'c'], 0)
  const ackOnly = await sendV2(c, 4, [], 2)
  t.equal(ackOnly.status, 200)
  t.same(ackOnly.body, { ack: 3, messages: [{ seq: 3, text: 'c' }] })
  const tooFar = await sendV2(c, 4, [], 9)
  t.equal(tooFar.status, 400)
  t.equal(tooFar.body.code, 'PORTCULLIS_FALLBACK_BAD_ACK')
  const badAck = await sendV2(c, 4, [], -1)
  t.equal(badAck.body.code, 'PORTCULLIS_FALLBACK_BAD_REQUEST')

  const v1 = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await v1.open()
  const empty = await v1.sendRaw(1, [])
  t.equal(empty.status, 400)
  t.equal(empty.body.code, 'PORTCULLIS_FALLBACK_BAD_REQUEST')
})

t.test('a v1 send is answered with its ack only and wakes the held poll, as before', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await c.open()
  const poll = c.pollRaw(0)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const t0 = Date.now()
  const s = await c.send('ping')
  t.same(s.body, { ack: 1 })
  const p = await poll
  t.ok(Date.now() - t0 < 1000)
  t.same(p.body.messages, [{ seq: 1, text: 'ping' }])
})

t.test('the v2 send is refused exactly as v1 for another origin or an unknown session', async (t) => {
  const app = await echoApp(t)
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await openV2(c)
  const other = await http(port, 'POST', '/ws/_lp/send', { ...c.headers({ 'x-portcullis-ack': '0' }), origin: 'https://evil.example' }, { seq: 1, messages: [{ text: 'x' }] })
  t.equal(other.status, 403)
  const unknown = await http(port, 'POST', '/ws/_lp/send', { ...c.headers({ 'x-portcullis-ack': '0' }), 'x-portcullis-sid': 'A'.repeat(32) }, { seq: 1, messages: [] })
  t.equal(unknown.status, 404)
  t.equal(unknown.body.code, 'PORTCULLIS_FALLBACK_UNKNOWN_SESSION')
})
