import t from 'tap'
import { APP_ORIGIN, Inbox, LpClient, lpApp, start } from './helpers.js'
import { FaultyStore, logSink } from './faulty-store.js'

const origin = APP_ORIGIN

/** Error-level log lines that name the route. */
function routeErrors (lines: ReturnType<typeof logSink>['lines'], route: string): unknown[] {
  return lines.filter(l => l.level === 50 && l.portcullis?.route === route)
}

t.test('a handler that throws closes its session with 1011, logged at error once with the route', async (t) => {
  const log = logSink()
  const app = await lpApp(t, {}, {}, { logger: { level: 'info', stream: log.stream } })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => { throw new Error('boom') })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  t.equal((await c.open()).status, 200, 'the open is answered: the handler runs after the policy, as after a 101')
  t.same(await c.closed(), { code: 1011, reason: 'internal error' })
  t.equal(routeErrors(log.lines, '/ws').length, 1)
})

t.test('a handler that rejects closes its session with 1011, logged at error once with the route', async (t) => {
  const log = logSink()
  const app = await lpApp(t, {}, {}, { logger: { level: 'info', stream: log.stream } })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, async () => { throw new Error('boom') })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same(await c.closed(), { code: 1011, reason: 'internal error' })
  t.equal(routeErrors(log.lines, '/ws').length, 1)
})

for (const kind of ['throws', 'rejects'] as const) {
  t.test(`a message listener that ${kind} closes its session with 1011, logged once, and the server keeps serving`, async (t) => {
    const log = logSink()
    const app = await lpApp(t, {}, {}, { logger: { level: 'info', stream: log.stream } })
    app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
      socket.on('message', kind === 'throws'
        ? () => { throw new Error('listener broke') }
        : async () => { throw new Error('listener broke') })
    })
    const port = await start(app)
    const c = new LpClient(port, '/ws', { origin })
    await c.open()
    t.equal((await c.send('a', 'b', 'c')).status, 200)
    t.same(await c.closed(), { code: 1011, reason: 'internal error' })
    t.equal(routeErrors(log.lines, '/ws').length, 1, 'three messages, one failure logged')
    const again = new LpClient(port, '/ws', { origin })
    t.equal((await again.open()).status, 200, 'the next session opens')
  })
}

t.test('a close listener that throws is logged, and the core still forgets the connection', async (t) => {
  const log = logSink()
  const app = await lpApp(t, {}, {}, { logger: { level: 'info', stream: log.stream } })
  const after = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', () => { throw new Error('close listener broke') })
    socket.on('close', (code: number) => after.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.equal(app.wsPolicy.stats().connections, 1)
  await c.close(1000, 'bye')
  t.same(await after.take(1), [1000], 'the listener after the throwing one ran')
  t.equal(app.wsPolicy.stats().connections, 0, 'the registry released the connection')
  t.ok(log.lines.some(l => l.level === 50 && l.msg.includes('close listener')), 'the throw is logged at error')
})

t.test('a store whose watch() throws answers 500 and frees the waiting-poll slot', async (t) => {
  const store = new FaultyStore()
  const app = await lpApp(t, { store, maxPendingPollsPerIp: 1 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  store.fail.watch = 'throw'
  for (let i = 0; i < 3; i++) t.equal((await c.pollRaw()).status, 500, `poll ${i + 1} fails`)
  t.equal(store.failures.watch, 3, 'each poll reached the store: none was refused by a leaked slot')
  store.heal()
  const ac = new AbortController()
  const held = c.pollRaw(0, { signal: ac.signal }).then(r => r.status, () => 'held')
  setTimeout(() => ac.abort(), 150)
  t.equal(await held, 'held', 'a healthy poll is held again, not refused with 429')
})

t.test('a store whose readOutbound() rejects answers 500 and frees the slot', async (t) => {
  const store = new FaultyStore()
  const app = await lpApp(t, { store, maxPendingPollsPerIp: 1 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => { setTimeout(() => socket.send('later'), 200) })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  store.fail.readOutbound = 'reject'
  t.equal((await c.pollRaw()).status, 500)
  t.equal((await c.pollRaw()).status, 500, 'not 429: the first poll gave its slot back')
  store.heal()
  t.same(await c.receive(1), ['later'])
})

t.test('a poll whose client aborts is answered, frees its slot at once, and loses nothing', async (t) => {
  const app = await lpApp(t, { maxPendingPollsPerIp: 1 })
  const answers: string[] = []
  app.addHook('onSend', async (request, _reply, payload) => {
    if (request.url.endsWith('/_lp/poll') && request.raw.socket?.destroyed === true) answers.push(String(payload))
    return payload
  })
  let sock: { send: (s: string) => void } | undefined
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => { sock = socket })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const ac = new AbortController()
  const held = c.pollRaw(0, { signal: ac.signal }).then(() => 'answered', () => 'aborted')
  await new Promise(resolve => setTimeout(resolve, 100))
  ac.abort()
  t.equal(await held, 'aborted')
  await waitFor(() => answers.length > 0)
  t.same(JSON.parse(answers[0]), { messages: [], ack: 0 }, 'the aborted poll got a well-formed empty answer, not an unsent reply')
  sock!.send('kept')
  const next = await c.pollRaw()
  t.equal(next.status, 200, 'the next poll is not refused with 429: the slot was freed')
  t.same(next.body.messages.map((m: { text: string }) => m.text), ['kept'])
})

t.test('a poll aborted during the gate never waits and never leaks its slot', async (t) => {
  const app = await lpApp(t, { maxPendingPollsPerIp: 1 }, {}, {})
  // a slow custom stage holds the gate while the client goes away
  let slow = false
  app.wsPolicy.addStage({ name: 'slow', phase: 'custom', evaluate: async () => { if (slow) await new Promise(resolve => setTimeout(resolve, 200)) } })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  slow = true
  const ac = new AbortController()
  const held = c.pollRaw(0, { signal: ac.signal }).then(() => 'answered', () => 'aborted')
  setTimeout(() => ac.abort(), 50)
  t.equal(await held, 'aborted')
  await new Promise(resolve => setTimeout(resolve, 300))
  slow = false
  const started = Date.now()
  const ac2 = new AbortController()
  const second = c.pollRaw(0, { signal: ac2.signal }).then(r => r.status, () => 'aborted')
  await new Promise(resolve => setTimeout(resolve, 150))
  ac2.abort()
  t.equal(await second, 'aborted', 'the second poll was held (not refused with 429)')
  t.ok(Date.now() - started >= 100)
})

t.test('the per-IP waiting-poll bound is checked before the policy runs the identity lookup', async (t) => {
  const app = await lpApp(t, { maxPendingPollsPerIp: 1 })
  let lookups = 0
  app.wsPolicy.addStage({ name: 'count-lookups', phase: 'identity', evaluate () { lookups++ } })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const ac = new AbortController()
  const held = c.pollRaw(0, { signal: ac.signal }).catch(() => undefined)
  await waitFor(() => lookups >= 2)
  await new Promise(resolve => setTimeout(resolve, 50))
  const before = lookups
  const other = new LpClient(port, '/ws', { origin })
  other.sid = c.sid
  for (let i = 0; i < 5; i++) {
    const r = await other.pollRaw()
    t.equal(r.status, 429)
    t.equal(r.body.code, 'PORTCULLIS_FALLBACK_TOO_MANY_POLLS')
  }
  t.equal(lookups, before, 'five refused polls, no identity lookup')
  ac.abort()
  await held
})

t.test('a hung store fails closed: 503 PORTCULLIS_STORE_UNAVAILABLE with Retry-After within storeTimeoutMs', async (t) => {
  const store = new FaultyStore()
  const app = await lpApp(t, { store, storeTimeoutMs: 300 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  for (const [method, call] of [['get', () => c.pollRaw()], ['pushInbound', () => c.send('x')], ['create', () => new LpClient(port, '/ws', { origin }).open()]] as const) {
    store.fail[method] = 'hang'
    const started = Date.now()
    const r = await call()
    const took = Date.now() - started
    t.equal(r.status, 503, `${method} hung: 503`)
    t.equal(r.body.code, 'PORTCULLIS_STORE_UNAVAILABLE')
    t.equal(r.headers['retry-after'], '1')
    t.ok(took >= 250 && took < 2000, `answered after the timeout (${took} ms)`)
    t.notMatch(r.text, /did not answer|hang|broke/, 'no detail of the store in the body')
    store.heal()
  }
})

t.test('fastify.close() finishes within a bound when the store hangs', async (t) => {
  const store = new FaultyStore()
  const app = await lpApp(t, { store, storeTimeoutMs: 300 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => { socket.send('hi') })
  const port = await start(app)
  const clients = [new LpClient(port, '/ws', { origin }), new LpClient(port, '/ws', { origin })]
  for (const c of clients) await c.open()
  await clients[0].receive(1)
  const ac = new AbortController()
  const held = clients[0].pollRaw(clients[0].lastIn, { signal: ac.signal }).catch(() => undefined)
  await new Promise(resolve => setTimeout(resolve, 50))
  for (const m of ['closeOutbound', 'pushOutbound', 'readOutbound', 'stop', 'get'] as const) store.fail[m] = 'hang'
  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  t.ok(took < 1500, `closed in ${took} ms (storeTimeoutMs 300)`)
  ac.abort()
  await held
})

t.test('a session failed by the store is closed in the store too: the client hears 1011 and its sends are not acked', async (t) => {
  const store = new FaultyStore()
  const log = logSink()
  const app = await lpApp(t, { store }, {}, { logger: { level: 'info', stream: log.stream } })
  const seen = new Inbox<string>()
  const closes = new Inbox<number>()
  let sock: { send: (s: string) => void } | undefined
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    sock = socket
    socket.on('message', (m: Buffer) => seen.push(String(m)))
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  // the owner's writes fail for a while: its push fails the socket, and so does its close
  store.fail.pushOutbound = 'reject'
  store.fail.closeOutbound = 'reject'
  sock!.send('lost')
  t.same(await closes.take(1), [1011], 'the handler hears 1011')
  t.equal(app.wsFallback.sessions(), 0, 'the socket is gone on this node')
  store.heal()
  const sent = await c.send('after the failure')
  t.equal(sent.status, 200)
  t.equal(sent.body.ack, 0, 'the message is not acknowledged')
  const poll = await c.poll()
  t.same(poll.close, { code: 1011, reason: 'internal error' }, 'the next poll carries the close')
  t.equal(seen.items.length, 0, 'nothing reached a handler')
  t.ok(log.lines.some(l => l.portcullis?.code === 'PORTCULLIS_FALLBACK_LOST_SESSION'), 'the repair is logged')
})

t.test('when only the push fails, the socket closes the record itself: the next poll gets 1011 at once', async (t) => {
  const store = new FaultyStore()
  const app = await lpApp(t, { store })
  let sock: { send: (s: string) => void } | undefined
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    sock = socket
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  store.fail.pushOutbound = 'reject'
  sock!.send('lost')
  await closes.take(1)
  await new Promise(resolve => setTimeout(resolve, 20))
  const rec = await store.get(c.sid)
  t.same(rec?.closed, { code: 1011, reason: 'internal error' }, 'closed in the store, not only locally')
  store.heal()
  t.same(await c.closed(), { code: 1011, reason: 'internal error' })
})

t.test('storeTimeoutMs is validated at startup', async (t) => {
  for (const bad of [0, -1, 1.5, '10', 2 ** 31]) {
    await t.rejects(lpApp(t, { storeTimeoutMs: bad as number }), { code: 'PORTCULLIS_FALLBACK_INVALID_OPTION', message: /storeTimeoutMs/ })
  }
})

async function waitFor (fn: () => boolean | number, ms = 3000): Promise<void> {
  const until = Date.now() + ms
  while (!fn()) {
    if (Date.now() > until) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
