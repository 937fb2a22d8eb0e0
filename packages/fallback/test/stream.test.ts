/**
 * The stream transport, `GET <path>/_lp/stream` (PROTOCOL.md §13): SSE framing read with fetch
 * and a ReadableStream, prelude, acks, reopen, supersede, revocation, refusals as a poll, bounds.
 * Real servers on 127.0.0.1; raw TCP where the bytes on the wire are the point.
 */
import t from 'tap'
import { connect } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { PortcullisSocket } from '@portcullis/policy'
import { APP_ORIGIN, Inbox, LpClient, http, lpApp, revoked, start } from './helpers.js'
import { openStream } from './sse.js'
import { STREAM_PRELUDE } from '../src/stream.js'

interface Opened { app: FastifyInstance, port: number, c: LpClient, sockets: Inbox<PortcullisSocket> }

async function setup (t: Parameters<typeof lpApp>[0] & { equal: (a: unknown, b: unknown) => void }, opts: Record<string, unknown> = {}, routeOpts: Record<string, unknown> = {}): Promise<Opened> {
  // undici may leave a connection that never carried a request after an aborted body; Node's
  // close waits for it until headersTimeout, so the tests close every connection at teardown
  const app = await lpApp(t, { pollTimeoutMs: 1000, idleTimeoutMs: 5000, ...opts }, {}, { forceCloseConnections: true })
  const sockets = new Inbox<PortcullisSocket>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true, ...routeOpts } }, (socket) => {
    sockets.push(socket)
    socket.on('message', (m: Buffer) => socket.send(m.toString()))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN, cookie: routeOpts.lpIdentity === true ? 'auth=ann.s1' : undefined })
  const r = await http(port, 'POST', '/ws/_lp/open', c.headers(), { versions: [2, 1] })
  t.equal(r.status, 200)
  c.sid = r.body.sid
  return { app, port, c, sockets }
}

const streamHeaders = (c: LpClient, ack = 0): Record<string, string> => c.headers({ 'x-portcullis-ack': String(ack) }, false)

t.test('a stream answers text/event-stream, no-store, nosniff, unbuffered, and writes the prelude at once', async (t) => {
  const { port, c } = await setup(t)
  // raw TCP: the first bytes after the header block are exactly the prelude
  const sock = connect(port, '127.0.0.1')
  t.teardown(() => sock.destroy())
  const h = streamHeaders(c)
  sock.write(`GET /ws/_lp/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
  let text = ''
  await new Promise<void>((resolve) => {
    sock.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (text.includes('\r\n\r\n') && text.length - text.indexOf('\r\n\r\n') > STREAM_PRELUDE.length + 10) resolve()
    })
  })
  const [head, body] = text.split('\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 200/)
  t.match(head, /\r\ncontent-type: text\/event-stream; charset=utf-8\r\n/i)
  t.match(head, /\r\ncache-control: no-store\r\n/i)
  t.match(head, /\r\nx-content-type-options: nosniff\r\n/i)
  t.match(head, /\r\nx-accel-buffering: no\r\n/i)
  t.match(head, /\r\ntransfer-encoding: chunked(\r\n|$)/i)
  // de-chunk the first chunk: size line, then the prelude
  const nl = body.indexOf('\r\n')
  const first = body.slice(nl + 2, nl + 2 + parseInt(body.slice(0, nl), 16))
  t.equal(first, STREAM_PRELUDE, 'the first chunk is the prelude: a comment and 2 KiB of padding')
  t.equal(STREAM_PRELUDE, `: portcullis v2\n\n: ${' '.repeat(2048)}\n\n`)
})

t.test('server messages arrive on one held stream as they are sent, with seq, and client acks as events', async (t) => {
  const { port, c, sockets } = await setup(t)
  const s = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  t.teardown(() => s.abort())
  t.equal(s.status, 200)
  t.same(await s.next(), { event: 'ack', data: { ack: 0 } }, 'the current ack first')
  const [socket] = await sockets.take()
  socket.send('one')
  t.same(await s.next(), { event: 'message', data: { seq: 1, text: 'one' } })
  socket.send(Buffer.from([0, 1, 2]))
  t.same(await s.next(), { event: 'message', data: { seq: 2, binary: 'AAEC' } })
  const sent = await http(port, 'POST', '/ws/_lp/send', c.headers({ 'x-portcullis-ack': '2' }), { seq: 1, messages: [{ text: 'echo me' }] })
  t.same(sent.body, { ack: 1, messages: [] }, 'with a stream held here, the send answer carries no copy')
  const events = [await s.next(), await s.next()]
  t.same(events.find(e => e?.event === 'message'), { event: 'message', data: { seq: 3, text: 'echo me' } }, 'the reply came down the stream')
  t.same(events.find(e => e?.event === 'ack'), { event: 'ack', data: { ack: 1 } }, 'the server\'s ack of the client message')
})

t.test('a stream ends with event: reopen after pollTimeoutMs, and the next one resumes after the ack', async (t) => {
  const { port, c, sockets } = await setup(t)
  const [socket] = await Promise.all([sockets.take().then(([s]) => s), Promise.resolve()])
  socket.send('a')
  const s1 = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  const got = []
  for (let e = await s1.next(2500); e !== null; e = await s1.next(2500)) got.push(e)
  t.same(got.map(e => e.event), ['message', 'ack', 'reopen'], 'message, ack, then reopen and the end')
  socket.send('b')
  const s2 = await openStream(port, '/ws/_lp/stream', streamHeaders(c, 1))
  t.teardown(() => s2.abort())
  t.same(await s2.next(), { event: 'message', data: { seq: 2, text: 'b' } }, 'seq 1 was acked: not written again')
})

t.test('a dropped stream loses nothing: unacked messages are written again, in order, exactly once after the ack', async (t) => {
  const { port, c, sockets } = await setup(t)
  const [socket] = await sockets.take()
  const s1 = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  await s1.next()
  for (const m of ['1', '2', '3']) socket.send(m)
  const seen = [(await s1.next())!.data.seq, (await s1.next())!.data.seq]
  t.same(seen, [1, 2])
  s1.abort() // the client saw 1 and 2, then the connection broke
  const s2 = await openStream(port, '/ws/_lp/stream', streamHeaders(c, 2))
  t.teardown(() => s2.abort())
  t.same(await s2.next(), { event: 'message', data: { seq: 3, text: '3' } })
})

t.test('a second stream supersedes the first, which ends cleanly with event: reopen', async (t) => {
  const { port, c } = await setup(t, { pollTimeoutMs: 20_000, idleTimeoutMs: 30_000 })
  const s1 = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  await s1.next()
  const s2 = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  t.teardown(() => s2.abort())
  t.same(await s1.next(), { event: 'reopen', data: {} })
  t.equal(await s1.next(), null, 'then the response ended')
  t.same(await s2.next(), { event: 'ack', data: { ack: 0 } }, 'the new one is live')
})

t.test('revocation ends the stream at once with the close record 4001', async (t) => {
  const { app, port, c } = await setup(t, { pollTimeoutMs: 20_000, idleTimeoutMs: 30_000 }, { lpIdentity: true })
  const s = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  await s.next()
  const t0 = Date.now()
  app.wsPolicy.closeSession('s1', 4001, 'session revoked')
  t.same(await s.next(), { event: 'close', data: { code: 4001, reason: 'session revoked' } })
  t.equal(await s.next(), null)
  t.ok(Date.now() - t0 < 1000, 'at once')
  revoked.add('s1')
  t.teardown(() => revoked.delete('s1'))
  const again = await http(port, 'GET', '/ws/_lp/stream', streamHeaders(c))
  t.equal(again.status, 401, 'the next stream runs the full policy')
})

t.test('a stream is refused exactly as a poll is: query string, marker, origin, cookie, unknown id, bad ack', async (t) => {
  const { port, c } = await setup(t, {}, { lpIdentity: true })
  const h = streamHeaders(c)
  const cases: Array<[string, string, Record<string, string>]> = [
    ['a query string', '?sid=x', h],
    ['no marker', '', { ...h, 'x-portcullis-fallback': '0' }],
    ['another origin', '', { ...h, origin: 'https://evil.example' }],
    ['another cookie', '', { ...h, cookie: 'auth=bob.s9' }],
    ['no cookie', '', Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'cookie'))],
    ['an unknown id', '', { ...h, 'x-portcullis-sid': 'B'.repeat(32) }],
    ['a malformed ack', '', { ...h, 'x-portcullis-ack': '1x' }],
    ['an ack beyond the queue', '', { ...h, 'x-portcullis-ack': '5' }]
  ]
  for (const [what, query, headers] of cases) {
    const poll = await http(port, 'GET', `/ws/_lp/poll${query}`, headers)
    const stream = await http(port, 'GET', `/ws/_lp/stream${query}`, headers)
    t.equal(stream.status, poll.status, `${what}: same status (${poll.status})`)
    t.equal(stream.body?.code, poll.body?.code, `${what}: same code (${String(poll.body?.code)})`)
    t.not(stream.status, 200, what)
    t.notMatch(String(stream.headers['content-type']), /event-stream|javascript/, `${what}: never a stream, never JSONP`)
  }
})

t.test('stream: false serves no stream endpoint and the v2 open says so', async (t) => {
  const { port, c } = await setup(t, { stream: false })
  const r = await http(port, 'POST', '/ws/_lp/open', c.headers(), { versions: [2] })
  t.equal(r.body.stream, false)
  t.equal((await http(port, 'GET', '/ws/_lp/stream', streamHeaders(c))).status, 404)
})

t.test('a stream counts against the per-IP cap of held requests', async (t) => {
  const { port, c } = await setup(t, { maxPendingPollsPerIp: 1, pollTimeoutMs: 20_000, idleTimeoutMs: 30_000 })
  const s = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  t.teardown(() => s.abort())
  await s.next()
  const poll = await http(port, 'GET', '/ws/_lp/poll', streamHeaders(c))
  t.equal(poll.status, 429)
  t.equal(poll.body.code, 'PORTCULLIS_FALLBACK_TOO_MANY_POLLS')
})

t.test('a stream client that never acks is a slow consumer: the close record 4009 ends its stream', async (t) => {
  const { port, c, sockets } = await setup(t, { maxQueuedMessages: 4, pollTimeoutMs: 20_000, idleTimeoutMs: 30_000 })
  const [socket] = await sockets.take()
  const s = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  await s.next()
  for (let i = 0; i < 6; i++) {
    socket.send(`m${i}`)
    await new Promise((resolve) => setImmediate(resolve))
  }
  const events = []
  for (let e = await s.next(); e !== null; e = await s.next()) events.push(e)
  t.same(events.at(-1), { event: 'close', data: { code: 4009, reason: 'slow consumer' } })
  const seqs = events.filter(e => e.event === 'message').map(e => e.data.seq)
  t.same(seqs, seqs.map((_, i) => i + 1), 'what was written came in order, each once')
})

t.test('the policy sees stream requests as transport "stream" (stats and metrics key by it)', async (t) => {
  const { app, port, c } = await setup(t)
  const s = await openStream(port, '/ws/_lp/stream', streamHeaders(c))
  t.teardown(() => s.abort())
  await s.next()
  await http(port, 'GET', '/ws/_lp/stream', { ...streamHeaders(c), origin: 'https://evil.example' })
  const stats = app.wsPolicy.stats().routes['/ws'].transports
  t.same(stats.stream, { allowed: 0, denied: { LP_ORIGIN_DENIED: 1 }, reported: {} }, 'a resumed stream is no new admission; its denial counts under stream')
  t.equal(stats['long-poll']?.allowed, 1, 'the open was the one admission')
})
