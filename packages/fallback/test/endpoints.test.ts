import t from 'tap'
import type { FastifyRequest } from 'fastify'
import type { PortcullisSocket } from '@portcullis/policy'
import { APP_ORIGIN, Inbox, LpClient, lpApp, start, http } from './helpers.js'
import { rawUpgrade } from '../../../test/helpers/index.js'

t.test('the same handler serves the long-poll twin: open, welcome, echo text and binary, close', async (t) => {
  const app = await lpApp(t)
  const inbox = new Inbox<{ data: Buffer, isBinary: boolean }>()
  const closes = new Inbox<{ code: number, reason: string }>()
  let seen: FastifyRequest['portcullis'] = null
  let socketSeen: PortcullisSocket | undefined
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true, lpIdentity: true, lpProtocols: ['chat.v1'] } }, (socket, request) => {
    seen = request.portcullis
    socketSeen = socket
    socket.send('welcome')
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      inbox.push({ data, isBinary })
      socket.send(data, { binary: isBinary } as never)
    })
    socket.on('close', (code: number, reason: Buffer) => closes.push({ code, reason: String(reason) }))
  })
  const port = await start(app)
  const c = new LpClient(port, '/chat', { origin: APP_ORIGIN, cookie: 'auth=alice.s1' })

  const opened = await c.open(['chat.v0', 'chat.v1'])
  t.equal(opened.status, 200)
  t.equal(opened.body.v, 1)
  t.equal(opened.body.protocol, 'chat.v1')
  t.match(opened.body.sid, /^[A-Za-z0-9_-]{32}$/)
  t.equal(opened.headers['cache-control'], 'no-store')
  t.equal(opened.headers['x-content-type-options'], 'nosniff')
  t.match(opened.headers['content-type'], /^application\/json/)
  t.same(seen, { transport: 'long-poll', state: { identity: { id: 'alice', sessionId: 's1' }, protocol: 'chat.v1' } })
  t.equal(socketSeen?.protocol, 'chat.v1')
  t.equal(socketSeen?.readyState, 1)

  t.same(await c.receive(1), ['welcome'])

  const sent = await c.send('hello', Buffer.from([0, 1, 2, 255]))
  t.equal(sent.status, 200)
  t.same(sent.body, { ack: 2 })
  const got = await inbox.take(2)
  t.ok(Buffer.isBuffer(got[0].data), 'text arrives as a Buffer, as ws emits it')
  t.equal(String(got[0].data), 'hello')
  t.equal(got[0].isBinary, false)
  t.same([...got[1].data], [0, 1, 2, 255])
  t.equal(got[1].isBinary, true)

  const echoed = await c.receive(2)
  t.equal(echoed[0], 'hello')
  t.same([...(echoed[1] as Buffer)], [0, 1, 2, 255])

  const closed = await c.close(4000, 'bye')
  t.equal(closed.status, 200)
  t.same(closed.body, { close: { code: 4000, reason: 'bye' } })
  t.same(await closes.take(1), [{ code: 4000, reason: 'bye' }])
  t.equal(socketSeen?.readyState, 3)
  t.same(await c.closed(), { code: 4000, reason: 'bye' }, 'a poll after the close repeats it')
  t.equal(app.wsPolicy.stats().connections, 0, 'the core no longer tracks the socket')
})

t.test('a server close reaches the client after the messages sent before it', async (t) => {
  const app = await lpApp(t)
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.send('one')
    socket.send('two')
    socket.close(4321, 'done here')
    socket.on('close', (code: number) => closes.push(code))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  t.equal((await c.open()).status, 200)
  const r = await c.poll()
  t.same(r.messages, ['one', 'two'])
  t.same(r.close, { code: 4321, reason: 'done here' })
  t.same(await closes.take(1), [4321])
})

t.test('close without a code gives the handler 1005, as an empty close frame does', async (t) => {
  const app = await lpApp(t)
  const closes = new Inbox<[number, string]>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', (code: number, reason: Buffer) => closes.push([code, String(reason)]))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin: APP_ORIGIN })
  await c.open()
  const r = await c.close()
  t.same(r.body, { close: { code: 1005, reason: '' } })
  t.same(await closes.take(1), [[1005, '']])
})

t.test('describe() lists the long-poll endpoints of the route', async (t) => {
  const app = await lpApp(t)
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  app.get('/plain', { websocket: true }, () => {})
  await app.ready()
  const rows = app.wsPolicy.describe()
  t.same(rows.find(r => r.route === '/chat')?.transports, ['websocket', 'long-poll /chat/_lp/{open,poll,send,close,stream}'])
  t.same(rows.find(r => r.route === '/plain')?.transports, ['websocket'])
})

t.test('a route without fallback has no long-poll endpoints', async (t) => {
  const app = await lpApp(t)
  app.get('/plain', { websocket: true }, () => {})
  const port = await start(app)
  const r = await http(port, 'POST', '/plain/_lp/open', { 'x-portcullis-fallback': '1', 'content-type': 'application/json', origin: APP_ORIGIN }, {})
  t.equal(r.status, 404)
})

t.test('routes under a prefix get their endpoints under the same prefix', async (t) => {
  const app = await lpApp(t)
  await app.register(async (child) => {
    child.get('/room', { websocket: true, wsPolicy: { fallback: true } }, (socket) => { socket.send('in room') })
  }, { prefix: '/v1' })
  const port = await start(app)
  const c = new LpClient(port, '/v1/room', { origin: APP_ORIGIN })
  t.equal((await c.open()).status, 200)
  t.same(await c.receive(1), ['in room'])
})

t.test('an OPTIONS request reaches an explicit route carrying the route marker', async (t) => {
  const app = await lpApp(t)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
  const port = await start(app)
  for (const kind of ['open', 'poll', 'send', 'close']) {
    const r = await http(port, 'OPTIONS', `/ws/_lp/${kind}`, { origin: 'https://evil.example', 'access-control-request-method': 'POST' })
    t.equal(r.status, 204, kind)
    t.equal(r.headers['access-control-allow-origin'], undefined, 'no CORS without the origin guard')
  }
})

t.test('invalid route options fail at startup, naming the route', async (t) => {
  const app = await lpApp(t)
  t.throws(() => app.get('/a', { websocket: true, wsPolicy: { fallback: { pollTimeoutMs: 0 } } }, () => {}), /\/a.*pollTimeoutMs/)
  t.throws(() => app.get('/b', { websocket: true, wsPolicy: { fallback: { nope: 1 } as never } }, () => {}), /unknown limit "nope"/)
  t.throws(() => app.get('/c', { websocket: true, wsPolicy: { fallback: { pollTimeoutMs: 5000, idleTimeoutMs: 4000 } } }, () => {}), /idleTimeoutMs/)
  t.throws(() => app.get('/d', { websocket: true, wsPolicy: { fallback: 'yes' as never } }, () => {}), /fallback/)
})

t.test('invalid plugin options throw a named error', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: portcullis } = await import('@portcullis/policy')
  const { default: fallback } = await import('../src/index.js')
  for (const [opts, re] of [
    [{ pollTimeoutMs: -1 }, /pollTimeoutMs/],
    [{ maxPendingPollsPerIp: 0 }, /maxPendingPollsPerIp/],
    [{ store: {} }, /FallbackStore/],
    [{ idleTimeoutMs: 1000, pollTimeoutMs: 2000 }, /idleTimeoutMs/],
    [{ bogus: true }, /unknown limit "bogus"/]
  ] as const) {
    const app = Fastify()
    await app.register(portcullis)
    await t.rejects(async () => { await app.register(fallback, opts as never); await app.ready() }, { code: 'PORTCULLIS_FALLBACK_INVALID_OPTION', message: re })
    await app.close().catch(() => {})
  }
})

t.test('a WebSocket upgrade sent to a long-poll endpoint is refused with 400 and never upgraded', async (t) => {
  const app = await lpApp(t)
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true, lpIdentity: true, lpProtocols: ['chat.v1'] } }, (socket) => { socket.send('welcome') })
  const port = await start(app)
  for (const path of ['/chat/_lp/poll', '/chat/_lp/stream']) {
    const r = await rawUpgrade(port, path, { Origin: APP_ORIGIN, Cookie: 'auth=alice.s1', 'Sec-WebSocket-Protocol': 'chat.v1' })
    t.equal(r.status, 400, `${path}: 400`)
    t.match(r.body, /PORTCULLIS_NOT_A_WEBSOCKET_ROUTE/, `${path}: the stable code`)
    t.notOk(r.raw.includes(' 101 '), `${path}: no 101`)
  }
  // the WebSocket route itself still upgrades
  const ok = await rawUpgrade(port, '/chat', { Origin: APP_ORIGIN, Cookie: 'auth=alice.s1', 'Sec-WebSocket-Protocol': 'chat.v1' })
  t.equal(ok.status, 101)
})
