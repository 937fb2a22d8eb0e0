import t, { type Test } from 'tap'
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import { protoApp } from './helpers.js'
import subprotocols, { json } from '../src/index.js'
import { listen, wsOpen, rawUpgrade, nextMessages } from '../../../test/helpers/index.js'

const registry = () => ({ 'chat.v1': json(), 'chat.v0': json(), 'v12.stomp': {} })

/** An app with one route accepting chat.v1 then chat.v0; the handler reports the negotiated name. */
async function chatApp (t: Test, route: unknown = ['chat.v1', 'chat.v0']) {
  const app = await protoApp(t, { protocols: registry() })
  const handled: string[] = []
  app.get('/chat', { websocket: true, wsPolicy: { protocols: route as string[] } }, (socket, request) => {
    handled.push(`${socket.protocol}|${request.portcullis?.state.protocol}`)
    socket.send(`protocol=${socket.protocol}`)
  })
  return { app, handled, ...await listen(app) }
}

t.test('a real ws client gets the route\'s preferred protocol, not its own first', async (t) => {
  const { ws, handled } = await chatApp(t)
  const r = await wsOpen(`${ws}/chat`, { protocols: ['chat.v0', 'chat.v1'] })
  t.ok(r.ws, 'opened')
  t.equal(r.ws!.protocol, 'chat.v1', 'the 101 names the server\'s choice')
  t.same(await nextMessages(r.ws!), ['protocol=chat.v1'])
  t.same(handled, ['chat.v1|chat.v1'], 'socket.protocol and request.portcullis agree')
  r.ws!.close()
})

t.test('negotiation matrix on the WebSocket door', async (t) => {
  const { ws } = await chatApp(t)
  const cases: Array<[string[], string | number]> = [
    [['chat.v1'], 'chat.v1'],
    [['chat.v0'], 'chat.v0'],
    [['unknown', 'chat.v0'], 'chat.v0'],
    [['chat.v0', 'chat.v1', 'other'], 'chat.v1'],
    [['v12.stomp'], 400], // registered, but not accepted on this route
    [['CHAT.V1'], 400], // case-sensitive
    [['unknown'], 400],
    [[], 400] // required by default: no offer, no connection
  ]
  for (const [offered, expected] of cases) {
    const r = await wsOpen(`${ws}/chat`, { protocols: offered })
    if (typeof expected === 'string') {
      t.equal(r.ws?.protocol, expected, `${offered.join(',')} → ${expected}`)
      r.ws?.close()
    } else {
      t.equal(r.status, expected, `${offered.join(',') || '(none)'} → ${expected}`)
      t.same(JSON.parse(r.body!), { code: 'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED', message: 'None of the offered subprotocols is supported on this route' })
    }
  }
})

t.test('an optional protocol: no offer opens without a protocol, a match still negotiates', async (t) => {
  const { ws, port } = await chatApp(t, { accept: ['chat.v1'], required: false })
  const none = await wsOpen(`${ws}/chat`)
  t.equal(none.ws?.protocol, '', 'no Sec-WebSocket-Protocol in the 101')
  t.same(await nextMessages(none.ws!), ['protocol='])
  none.ws!.close()
  const other = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': 'unknown' })
  t.equal(other.status, 101, 'an unknown offer is not refused...')
  t.equal(other.headers['sec-websocket-protocol'], undefined, '...and not chosen')
  const match = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'] })
  t.equal(match.ws?.protocol, 'chat.v1')
  match.ws!.close()
})

t.test('several Sec-WebSocket-Protocol lines are one list', async (t) => {
  const { port } = await chatApp(t)
  const r = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': ['other', 'chat.v0, chat.v1'] })
  t.equal(r.status, 101)
  t.equal(r.headers['sec-websocket-protocol'], 'chat.v1')
  const dup = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': ['chat.v1', 'chat.v1'] })
  t.equal(dup.status, 400, 'the same name on two lines is a duplicate')
  t.equal(JSON.parse(dup.body).code, 'PORTCULLIS_SUBPROTOCOL_DUPLICATE')
})

t.test('hostile Sec-WebSocket-Protocol headers over raw TCP are refused before the handshake', async (t) => {
  const { port, handled } = await chatApp(t)
  const MARK = 'XSSMARK<script>'
  const cases: Array<[string, string | string[], string]> = [
    ['an 8 KB header', 'chat.v1, ' + 'a'.repeat(8 * 1024), 'PORTCULLIS_SUBPROTOCOL_TOO_LONG'],
    ['1,000 values', Array.from({ length: 1000 }, (_, i) => i.toString(36)).join(','), 'PORTCULLIS_SUBPROTOCOL_TOO_MANY'],
    // (1,000 lines exceed Node's 16 KB header limit: Node itself answers 431 before any hook)
    ['300 header lines', Array.from({ length: 300 }, (_, i) => `p${i}`), 'PORTCULLIS_SUBPROTOCOL_TOO_MANY'],
    ['a duplicate', 'chat.v1, chat.v0, chat.v1', 'PORTCULLIS_SUBPROTOCOL_DUPLICATE'],
    ['an empty element', 'chat.v1,,chat.v0', 'PORTCULLIS_SUBPROTOCOL_MALFORMED'],
    ['a trailing comma', 'chat.v1,', 'PORTCULLIS_SUBPROTOCOL_MALFORMED'],
    ['an empty value', '', 'PORTCULLIS_SUBPROTOCOL_MALFORMED'],
    ['a quoted value', '"chat.v1"', 'PORTCULLIS_SUBPROTOCOL_MALFORMED'],
    ['a value with a space', 'chat v1', 'PORTCULLIS_SUBPROTOCOL_MALFORMED'],
    ['markup in a value', `chat.v1, ${MARK}`, 'PORTCULLIS_SUBPROTOCOL_MALFORMED'],
    ['a non-ASCII value', 'chat.v1, ch\u00e4t', 'PORTCULLIS_SUBPROTOCOL_MALFORMED']
  ]
  for (const [what, header, code] of cases) {
    const r = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': header })
    t.equal(r.status, 400, `${what}: 400`)
    t.equal(JSON.parse(r.body).code, code, `${what}: ${code}`)
    t.notOk(r.raw.includes('101 Switching'), `${what}: never a 101`)
    t.notOk(r.raw.includes('XSSMARK') || r.raw.includes('aaaaaaaa') || r.raw.includes('p299') || r.raw.includes(',rr,'), `${what}: the answer echoes nothing`)
  }
  t.same(handled, [], 'the handler never ran')
})

t.test('the 101 names a registered protocol, never the client\'s bytes', async (t) => {
  const { port } = await chatApp(t)
  for (const offer of ['chat.v1', ' chat.v1 ', 'x, chat.v1', 'chat.v0,\tchat.v1']) {
    const r = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': offer })
    t.equal(r.status, 101, JSON.stringify(offer))
    t.equal(r.headers['sec-websocket-protocol'], 'chat.v1')
  }
})

t.test('a route without `protocols` still refuses a malformed offer and selects nothing', async (t) => {
  const app = await protoApp(t, { protocols: registry() })
  app.get('/plain', { websocket: true }, (socket) => { socket.send(`protocol=${socket.protocol}`) })
  const { ws, port } = await listen(app)
  const r = await wsOpen(`${ws}/plain`, { protocols: ['chat.v1'] })
  t.ok(r.error, 'ws fails the connection: it offered a protocol and got none back (RFC 6455 §4.1)')
  const raw = await rawUpgrade(port, '/plain', { 'Sec-WebSocket-Protocol': 'chat.v1' })
  t.equal(raw.status, 101)
  t.equal(raw.headers['sec-websocket-protocol'], undefined, 'no protocol selected')
  const bad = await rawUpgrade(port, '/plain', { 'Sec-WebSocket-Protocol': 'a,,b' })
  t.equal(bad.status, 400)
  const none = await wsOpen(`${ws}/plain`)
  t.same(await nextMessages(none.ws!), ['protocol='])
  none.ws!.close()
})

t.test('the header caps are configurable', async (t) => {
  const app = await protoApp(t, { protocols: registry(), header: { maxCount: 2, maxLength: 64 } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket) => { socket.close() })
  const { port } = await listen(app)
  t.equal(JSON.parse((await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': 'a, b, chat.v1' })).body).code, 'PORTCULLIS_SUBPROTOCOL_TOO_MANY')
  t.equal(JSON.parse((await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': 'chat.v1, ' + 'b'.repeat(60) })).body).code, 'PORTCULLIS_SUBPROTOCOL_TOO_LONG')
  t.equal((await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': 'a, chat.v1' })).status, 101)
})

t.test('the fallback\'s open goes through the same function with its offered protocols', async (t) => {
  const app = await protoApp(t, { protocols: registry() })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1', 'chat.v0'] } }, () => {})
  // stands in for @portcullis/fallback's open endpoint: it evaluates the twin route with its offer
  app.get('/open', async (request, reply) => {
    const d = await app.wsPolicy.route('/chat')!.evaluate(request, 'long-poll', String(request.headers['x-protocols']))
    return d.allowed ? { protocol: d.state.protocol, guards: d.state.guards?.length } : reply.code(d.denial.status).send({ code: d.denial.code })
  })
  await app.ready()
  const ok = await app.inject({ url: '/open', headers: { 'x-protocols': 'chat.v0, chat.v1' } })
  t.same(ok.json(), { protocol: 'chat.v1', guards: 1 })
  const bad = await app.inject({ url: '/open', headers: { 'x-protocols': 'chat.v1, chat.v1' } })
  t.equal(bad.statusCode, 400)
  t.same(bad.json(), { code: 'PORTCULLIS_SUBPROTOCOL_DUPLICATE' })
  const none = await app.inject({ url: '/open', headers: { 'x-protocols': 'nope' } })
  t.same(none.json(), { code: 'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED' })
})

t.test('describe() shows each route\'s protocols and limits', async (t) => {
  const app = await protoApp(t, { protocols: registry() })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], required: false, limits: { rate: { messagesPerSecond: 5 } } } } }, () => {})
  await app.ready()
  const row = app.wsPolicy.describe().find(r => r.route === '/chat')!
  t.equal(row.stages.subprotocol, 'accept chat.v1 [json, <= 65536 B, 5/s burst 5], none [<= 65536 B, 5/s burst 5]')
})

t.test('startup fails on a route naming an unregistered protocol, naming the route', async (t) => {
  const app = await protoApp(t, { protocols: registry() })
  t.throws(() => app.get('/room', { websocket: true, wsPolicy: { protocols: ['chat.v2'] } }, () => {}), /\/room.*chat\.v2.*not registered/)
  t.throws(() => app.get('/a', { websocket: true, wsPolicy: { protocols: [] } }, () => {}), /\/a.*non-empty/)
  t.throws(() => app.get('/b', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], requird: true } as never } }, () => {}), /\/b.*unknown key "requird"/)
  t.throws(() => app.get('/c', { websocket: true, wsPolicy: { protocols: ['chat.v1', 'chat.v1'] } }, () => {}), /\/c.*twice/)
  t.throws(() => app.get('/d', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], limits: { maxMessageBytes: 0 } } } }, () => {}), /\/d.*maxMessageBytes/)
  t.throws(() => app.get('/e', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], required: 'yes' as never } } }, () => {}), /\/e.*required must be a boolean/)
})

t.test('registry names must be RFC 7230 tokens, checked at startup', async (t) => {
  for (const name of ['', 'chat v1', 'chat/1', 'chät', '"x"', 'a,b', 'x'.repeat(257)]) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(portcullis, { defaults: { origin: false } })
    await t.rejects(async () => { await app.register(subprotocols, { protocols: { [name]: json() } }); await app.ready() }, { code: 'PORTCULLIS_SUBPROTOCOL_INVALID_NAME' }, JSON.stringify(name.slice(0, 20)))
  }
})

t.test('the registry API registers before routes and locks at ready', async (t) => {
  const app = await protoApp(t)
  app.portcullisProtocols.register('echo.v1', { dataTypes: 'both' })
  t.ok(app.portcullisProtocols.has('echo.v1'))
  t.same(app.portcullisProtocols.names(), ['echo.v1'])
  t.equal(app.portcullisProtocols.get('echo.v1')?.dataTypes, 'both')
  t.throws(() => app.portcullisProtocols.register('echo.v1', {}), { code: 'PORTCULLIS_SUBPROTOCOL_DUPLICATE_NAME' })
  t.throws(() => app.portcullisProtocols.register('bad name', {}), { code: 'PORTCULLIS_SUBPROTOCOL_INVALID_NAME' })
  t.throws(() => app.portcullisProtocols.register('x', { dataTypes: 'json' as never }), { code: 'PORTCULLIS_SUBPROTOCOL_INVALID_OPTION' })
  t.throws(() => app.portcullisProtocols.register('y', { limits: { rate: { messagesPerSecond: -1 } } }), /messagesPerSecond/)
  app.get('/echo', { websocket: true, wsPolicy: { protocols: ['echo.v1'] } }, (socket) => { socket.close() })
  await app.ready()
  t.throws(() => app.portcullisProtocols.register('late.v1', {}), { code: 'PORTCULLIS_SUBPROTOCOL_LATE_REGISTRATION' })
})

t.test('bad plugin options fail registration with a named error', async (t) => {
  const bad: unknown[] = [
    { protocols: [] },
    { limits: { maxMessageBytes: -1 } },
    { limits: { rate: { messagesPerSecond: 10, burst: 0 } } },
    { limits: { maxConnections: 3 } },
    { header: { maxCount: 0 } },
    { header: { maxCount: 257 } },
    { header: { maxLenght: 100 } },
    { protocol: { 'chat.v1': {} } },
    { protocols: { 'chat.v1': null } }
  ]
  for (const opts of bad) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(portcullis, { defaults: { origin: false } })
    await t.rejects(async () => { await app.register(subprotocols, opts as never); await app.ready() }, { code: 'PORTCULLIS_SUBPROTOCOL_INVALID_OPTION' }, JSON.stringify(opts))
  }
  const alone = Fastify()
  t.teardown(() => alone.close())
  await t.rejects(async () => { await alone.register(subprotocols); await alone.ready() }, /@portcullis\/policy/, 'needs the core first')
})
