import t from 'tap'
import type { PortcullisSocket } from '@portcullis/policy'
import { APP_ORIGIN, Inbox, LpClient, lpApp, start } from './helpers.js'

const origin = APP_ORIGIN

t.test('a lost poll answer is redelivered with the same seqs, and acked messages are gone', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 300, idleTimeoutMs: 5000 })
  let sock!: PortcullisSocket
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    sock = socket
    socket.send('a')
    socket.send('b')
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const first = await c.pollRaw(0)
  t.same(first.body.messages, [{ seq: 1, text: 'a' }, { seq: 2, text: 'b' }])
  const again = await c.pollRaw(0)
  t.same(again.body.messages, first.body.messages, 'the same messages, the same seqs')
  const partial = await c.pollRaw(1)
  t.same(partial.body.messages, [{ seq: 2, text: 'b' }], 'ack 1 drops seq 1 only')
  const stale = await c.pollRaw(0)
  t.same(stale.body.messages, [{ seq: 2, text: 'b' }], 'an older ack cannot bring back a dropped message')
  const waiting = c.pollRaw(2)
  setTimeout(() => sock.send('c'), 50)
  t.same((await waiting).body.messages, [{ seq: 3, text: 'c' }])
})

t.test('a retried send is delivered to the handler once, in order', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 200, idleTimeoutMs: 5000 })
  const inbox = new Inbox<string>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('message', (d: Buffer) => inbox.push(String(d)))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same((await c.sendRaw(1, [{ text: 'x' }])).body, { ack: 1 })
  t.same((await c.sendRaw(1, [{ text: 'x' }])).body, { ack: 1 }, 'a retry is acked, not delivered')
  t.same((await c.sendRaw(1, [{ text: 'x' }, { text: 'y' }, { text: 'z' }])).body, { ack: 3 })
  t.same(await inbox.take(3), ['x', 'y', 'z'])
  const gap = await c.sendRaw(5, [{ text: 'lost-one-before-me' }])
  t.equal(gap.status, 409)
  t.same(gap.body, { code: 'PORTCULLIS_FALLBACK_SEQUENCE_GAP', message: 'Message sequence gap: resend from ack + 1', ack: 3 })
  t.equal(gap.headers['cache-control'], 'no-store')
  t.same((await c.sendRaw(4, [{ text: 'w' }])).body, { ack: 4 })
  t.same(await inbox.take(1), ['w'])
  t.equal(inbox.items.length, 0, 'nothing delivered twice')
  const polled = await c.pollRaw(0)
  t.equal(polled.body.ack, 4, 'polls report the client ack too')
})

t.test('a second poll supersedes the waiting one, which is answered empty at once', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 3000, idleTimeoutMs: 10000 })
  let sock!: PortcullisSocket
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => { sock = socket })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const started = Date.now()
  const older = c.pollRaw(0)
  await new Promise(resolve => setTimeout(resolve, 100))
  const newer = c.pollRaw(0)
  const o = await older
  t.equal(o.status, 200)
  t.same(o.body, { messages: [], ack: 0 })
  t.ok(Date.now() - started < 2000, 'answered without waiting for the timeout')
  sock.send('for the newer poll')
  t.same((await newer).body.messages, [{ seq: 1, text: 'for the newer poll' }])
})

t.test('a poll is held up to pollTimeoutMs, then answered empty', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 300, idleTimeoutMs: 5000 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const started = Date.now()
  const r = await c.pollRaw(0)
  const held = Date.now() - started
  t.same(r.body, { messages: [], ack: 0 })
  t.ok(held >= 250 && held < 2000, `held ${held} ms`)
})

t.test('a route can override the plugin limits', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 5000, idleTimeoutMs: 20000 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: { pollTimeoutMs: 200, maxMessagesPerRequest: 2 } } }, (socket) => {
    for (let i = 0; i < 5; i++) socket.send(String(i))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  const o = await c.open()
  t.equal(o.body.pollTimeoutMs, 200)
  t.equal(o.body.maxMessagesPerRequest, 2)
  t.equal(o.body.idleTimeoutMs, 20000)
  t.same((await c.poll()).messages, ['0', '1'], 'at most maxMessagesPerRequest per answer')
  t.same(await c.receive(3), ['2', '3', '4'])
  t.equal((await c.sendRaw(1, [{ text: 'a' }, { text: 'b' }, { text: 'c' }])).status, 400, 'and per send')
})

t.test('a session that stops polling is closed with 4010 and the handler gets close', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 100, idleTimeoutMs: 300, closeLingerMs: 2000 })
  const closes = new Inbox<[number, string]>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', (code: number, reason: Buffer) => closes.push([code, String(reason)]))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same(await closes.take(1, 3000), [[4010, 'idle timeout']])
  t.same(await c.closed(), { code: 4010, reason: 'idle timeout' }, 'a late poll still learns why')
  t.equal(app.wsFallback.sessions(), 0)
})

t.test('a polling session stays open past the idle timeout', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 100, idleTimeoutMs: 400 })
  let closed = false
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', () => { closed = true })
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const until = Date.now() + 1000
  while (Date.now() < until) t.equal((await c.pollRaw()).status, 200)
  t.notOk(closed, 'still open after 2.5 idle timeouts of polling')
})

t.test('a slow consumer is closed with 4009 and its queue stays bounded', async (t) => {
  const app = await lpApp(t, { maxQueuedMessages: 10, maxQueuedBytes: 1000 })
  const closes = new Inbox<number>()
  let sock!: PortcullisSocket
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    sock = socket
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  for (let i = 0; i < 5; i++) sock.send('x'.repeat(10))
  await new Promise(resolve => setImmediate(resolve))
  for (let i = 0; i < 1000 && sock.readyState === 1; i++) {
    sock.send('y'.repeat(10))
    if (i % 3 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  t.same(await closes.take(1), [4009])
  const store = app.wsFallback.store as unknown as { queuedBytes: number }
  t.ok(store.queuedBytes <= 2 * 1000, `queued ${store.queuedBytes} bytes`)
  const got = await c.receive(100)
  t.ok(got.length <= 20, `${got.length} messages queued at most`)
  t.same(await c.closed(), { code: 4009, reason: 'slow consumer' })
})

t.test('a handler sending in a tight loop cannot grow the queue past the bound', async (t) => {
  const app = await lpApp(t, { maxQueuedMessages: 50 })
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', (code: number) => closes.push(code))
    for (let i = 0; i < 100_000; i++) socket.send('flood')
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same(await closes.take(1), [4009])
  const store = app.wsFallback.store as unknown as { queuedBytes: number }
  t.ok(store.queuedBytes <= 50 * 5, `queued ${store.queuedBytes} bytes`)
})

t.test('fastify.close() answers a waiting poll with 1001 and the handler gets 1001', async (t) => {
  const app = await lpApp(t, { pollTimeoutMs: 10000, idleTimeoutMs: 20000 })
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const waiting = c.pollRaw(0)
  await new Promise(resolve => setTimeout(resolve, 100))
  const started = Date.now()
  await app.close()
  const r = await waiting
  t.equal(r.status, 200)
  t.same(r.body.close, { code: 1001, reason: 'server shutting down' })
  t.same(await closes.take(1), [1001])
  t.ok(Date.now() - started < 3000, 'shutdown did not wait for the poll timeout')
})

t.test('an ack beyond the last message sent is refused', async (t) => {
  const app = await lpApp(t)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => socket.send('one'))
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const r = await c.pollRaw(2)
  t.equal(r.status, 400)
  t.equal(r.body.code, 'PORTCULLIS_FALLBACK_BAD_ACK')
  for (const bad of ['-1', '1.0', 'x', '1234567890123456']) {
    const res = await LpClientPoll(c, bad)
    t.equal(res.status, 400, `ack ${bad}`)
  }
})

function LpClientPoll (c: LpClient, ack: string): ReturnType<LpClient['pollRaw']> {
  return import('./helpers.js').then(h => h.http(c.port, 'GET', '/ws/_lp/poll', c.headers({ 'x-portcullis-ack': ack }, false)))
}

t.test('an inbound message over maxPayload closes with 1009; invalid UTF-8 text with 1007', async (t) => {
  const app = await lpApp(t, { maxPayload: 16 })
  const closes = new Inbox<number>()
  const inbox = new Inbox<string>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('message', (d: Buffer) => inbox.push(String(d)))
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const big = new LpClient(port, '/ws', { origin })
  await big.open()
  await big.send('x'.repeat(16), 'y'.repeat(17), 'never')
  t.same(await inbox.take(1), ['x'.repeat(16)])
  t.same(await closes.take(1), [1009])
  t.same(await big.closed(), { code: 1009, reason: 'message too big' })
  t.equal(inbox.items.length, 0, 'nothing after the violation')

  const bin = new LpClient(port, '/ws', { origin })
  await bin.open()
  await bin.send(Buffer.alloc(17))
  t.same(await closes.take(1), [1009])

  const bad = new LpClient(port, '/ws', { origin })
  await bad.open()
  const r = await bad.send('\ud800')
  t.equal(r.status, 200)
  t.same(await closes.take(1), [1007])
})

t.test('sessions are bounded per identity, per IP and in total', async (t) => {
  const app = await lpApp(t, { maxSessionsPerIdentity: 2, maxSessionsPerIp: 3, maxSessions: 4 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true, lpIdentity: true } }, () => {})
  const port = await start(app)
  const alice = (): LpClient => new LpClient(port, '/ws', { origin, cookie: 'auth=alice.a' })
  t.equal((await alice().open()).status, 200)
  t.equal((await alice().open()).status, 200)
  const third = await alice().open()
  t.equal(third.status, 429)
  t.same(third.body, { code: 'PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS', message: 'Too many fallback sessions' })
  t.equal((await new LpClient(port, '/ws', { origin, cookie: 'auth=bob.b' }).open()).status, 200)
  t.equal((await new LpClient(port, '/ws', { origin, cookie: 'auth=carol.c' }).open()).status, 429, 'per IP')
})

t.test('closed sessions free their slot after the linger', async (t) => {
  const app = await lpApp(t, { maxSessions: 1, closeLingerMs: 200 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const a = new LpClient(port, '/ws', { origin })
  await a.open()
  await a.close(1000)
  t.equal((await new LpClient(port, '/ws', { origin }).open()).status, 429, 'still lingering')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal((await new LpClient(port, '/ws', { origin }).open()).status, 200)
})

t.test('waiting polls are bounded per IP', async (t) => {
  const app = await lpApp(t, { maxPendingPollsPerIp: 2, pollTimeoutMs: 2000, idleTimeoutMs: 5000 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const clients = [0, 1, 2].map(() => new LpClient(port, '/ws', { origin }))
  for (const c of clients) await c.open()
  const ctl = new AbortController()
  const held = [clients[0].pollRaw(0, { signal: ctl.signal }), clients[1].pollRaw(0, { signal: ctl.signal })]
  for (const h of held) h.catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 100))
  const third = await clients[2].pollRaw(0)
  t.equal(third.status, 429)
  t.equal(third.body.code, 'PORTCULLIS_FALLBACK_TOO_MANY_POLLS')
  ctl.abort()
  await new Promise(resolve => setTimeout(resolve, 100))
  // only our own abort counts as "held": a refused connection or any other failure is a failure
  const heldNow = await clients[2].pollRaw(0, { signal: AbortSignal.timeout(200) }).then(
    (r) => `answered ${r.status}`,
    (err: Error) => (err.name === 'AbortError' || err.name === 'TimeoutError' ? 'held' : `failed: ${err.message}`)
  )
  t.equal(heldNow, 'held', 'a slot frees when a client goes away: this poll is held, not refused')
})

t.test('revoking the auth session closes the fallback session on both APIs', async (t) => {
  const app = await lpApp(t)
  const closes = new Inbox<[number, string]>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true, lpIdentity: true } }, (socket) => {
    socket.on('close', (code: number, reason: Buffer) => closes.push([code, String(reason)]))
  })
  const port = await start(app)
  const a = new LpClient(port, '/ws', { origin, cookie: 'auth=alice.s1' })
  const b = new LpClient(port, '/ws', { origin, cookie: 'auth=alice.s2' })
  await a.open()
  await b.open()
  t.equal(app.wsPolicy.closeSession('s1', 4001, 'session revoked'), 1)
  t.same(await closes.take(1), [[4001, 'session revoked']])
  t.same(await a.closed(), { code: 4001, reason: 'session revoked' })
  await app.wsFallback.closeSession('s2', 4001, 'session revoked')
  t.same(await closes.take(1), [[4001, 'session revoked']])
  t.same(await b.closed(), { code: 4001, reason: 'session revoked' })
})

t.test('terminate drops the session: the client finds no session', async (t) => {
  const app = await lpApp(t)
  const closes = new Inbox<number>()
  let sock!: PortcullisSocket
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    sock = socket
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  sock.terminate()
  t.same(await closes.take(1), [1006])
  t.equal((await c.pollRaw()).status, 404)
})

t.test('message guards from the policy run on fallback messages too', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: portcullis } = await import('@portcullis/policy')
  const { default: fallback } = await import('../src/index.js')
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({
    name: 'no-bad-words',
    phase: 'custom',
    evaluate (ctx) {
      (ctx.state.guards ??= []).push(() => ({ message: (d) => String(d) === 'bad' ? { code: 1008, reason: 'bad word' } : undefined }))
    }
  })
  await app.register(fallback)
  const inbox = new Inbox<string>()
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { origin: false, fallback: true } }, (socket) => {
    socket.on('message', (d: Buffer) => inbox.push(String(d)))
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws')
  await c.open()
  await c.send('good', 'bad', 'after')
  t.same(await inbox.take(1), ['good'])
  t.same(await closes.take(1), [1008])
  t.same(await c.closed(), { code: 1008, reason: 'bad word' })
  t.equal(inbox.items.length, 0)
})

t.test('a message listener that throws closes that session with 1011, the server keeps running', async (t) => {
  const app = await lpApp(t)
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('message', () => { throw new Error('boom') })
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.equal((await c.send('x')).status, 200)
  t.same(await closes.take(1), [1011])
  t.equal((await new LpClient(port, '/ws', { origin }).open()).status, 200)
})

t.test('an async handler that rejects closes the session with 1011', async (t) => {
  const app = await lpApp(t)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, async () => { throw new Error('boom') })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  t.equal((await c.open()).status, 200)
  t.same(await c.closed(), { code: 1011, reason: 'internal error' })
})
