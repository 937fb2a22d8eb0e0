/**
 * Portcullis next to what users combine it with: their own @fastify/websocket, routes declared in
 * the wrong order, encapsulated contexts with prefixes, @fastify/rate-limit and @fastify/helmet —
 * on both doors.
 */
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import rateLimit from '@fastify/rate-limit'
import helmet from '@fastify/helmet'
import portcullis from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import fallback from '@portcullis/fallback'
import { captureLogs, closed, listen, wsOpen } from './helpers/index.js'

const FALLBACK = { 'x-portcullis-fallback': '1', 'content-type': 'application/json' }

t.test('an app that registers @fastify/websocket itself is refused at startup with what to do', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyWebsocket)
  await t.rejects(async () => { await app.register(portcullis) }, {
    code: 'PORTCULLIS_WEBSOCKET_ALREADY_REGISTERED',
    message: /remove that registration and pass its options as the "websocket" option of @portcullis\/policy/
  })
})

t.test('registering the policy twice on one server is refused naming the first context', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await t.rejects(async () => { await app.register(async (child) => { await child.register(portcullis) }, { prefix: '/b' }) }, {
    code: 'PORTCULLIS_DUPLICATE_POLICY',
    message: /already registered on this server \(context "\/"/
  })
})

t.test('a WebSocket route declared before the plugins is refused and logged once with the fix', async (t) => {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(() => app.close())
  app.get('/early', { websocket: true } as never, () => 'never upgraded')
  await app.register(portcullis)
  await app.register(originGuard)
  const { ws, origin } = await listen(app)
  for (let i = 0; i < 3; i++) {
    const r = await wsOpen(`${ws}/early`, { origin })
    t.equal(r.status, 400, `attempt ${i + 1} is refused before any handshake`)
    t.match(JSON.parse(r.body ?? '{}'), { code: 'PORTCULLIS_NOT_A_WEBSOCKET_ROUTE' })
  }
  const warnings = logs.lines.filter(l => l.portcullis?.route === '/early' && l.level === 40)
  t.equal(warnings.length, 1, 'one warning for the route, not one per attempt')
  t.match(warnings[0].msg, /declared before @portcullis\/policy was registered.*register the Portcullis plugins before your routes/)
})

t.test('a stage plugin registered in an encapsulated context fails startup naming that context', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await t.rejects(async () => {
    await app.register(async (a) => {
      await a.register(originGuard, { allow: ['https://a.example'] })
      a.get('/ws', { websocket: true }, () => {})
    }, { prefix: '/a' })
  }, {
    code: 'PORTCULLIS_SCOPED_REGISTRATION',
    message: /stage "origin" was added from the encapsulated context "\/a".*registered in the context "\/".*route options \(wsPolicy\)/
  })
})

t.test('two sibling contexts each with their own origin guard fail with the scoping error, not a late-registration one', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.register(async (a) => { await a.register(originGuard, { allow: ['https://a.example'] }) }, { prefix: '/a' })
  app.register(async (b) => { await b.register(originGuard, { allow: ['https://b.example'] }) }, { prefix: '/b' })
  await t.rejects(async () => { await app.ready() }, { code: 'PORTCULLIS_SCOPED_REGISTRATION', message: /context "\/a"/ })
})

t.test('routes of sibling contexts with prefixes share the root policy and keep their own route options', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(originGuard, { allow: ['https://a.example', 'https://b.example'] })
  app.register(async (a) => {
    a.get('/ws', { websocket: true, wsPolicy: { origin: { allow: ['https://a.example'] } } }, (socket) => { socket.send('a') })
  }, { prefix: '/a' })
  app.register(async (b) => {
    b.get('/ws', { websocket: true, wsPolicy: { origin: { allow: ['https://b.example'] } } }, (socket) => { socket.send('b') })
  }, { prefix: '/b' })
  const { ws } = await listen(app)
  t.same(app.wsPolicy.describe().map(r => r.route).sort(), ['/a/ws', '/b/ws'])
  for (const [path, good, bad] of [['/a/ws', 'https://a.example', 'https://b.example'], ['/b/ws', 'https://b.example', 'https://a.example']]) {
    const ok = await wsOpen(`${ws}${path}`, { origin: good })
    t.ok(ok.ws, `${path} opens for ${good}`)
    ok.ws?.close()
    const no = await wsOpen(`${ws}${path}`, { origin: bad })
    t.equal(no.status, 403, `${path} refuses its sibling's origin ${bad}`)
  }
})

t.test('a policy registered inside a prefixed context guards its routes and reads the same from the child', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  let inner: FastifyInstance | undefined
  app.register(async (api) => {
    await api.register(portcullis)
    await api.register(originGuard, { allow: ['https://a.example'] })
    api.register(async (child) => {
      inner = child
      child.get('/ws', { websocket: true }, (socket) => { socket.send('hi') })
    })
  }, { prefix: '/api' })
  const { ws } = await listen(app)
  t.same(inner?.wsPolicy.stages(), ['origin'], 'a child reads the one policy')
  const ok = await wsOpen(`${ws}/api/ws`, { origin: 'https://a.example' })
  t.ok(ok.ws)
  ok.ws?.close()
  t.equal((await wsOpen(`${ws}/api/ws`, { origin: 'https://evil.example' })).status, 403)
})

async function ecosystemApp (t: { teardown: (fn: () => unknown) => void }, max: number): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(helmet)
  await app.register(rateLimit, { max, timeWindow: 60_000 })
  await app.register(portcullis)
  await app.register(originGuard, { allow: ['https://app.example'] })
  await app.register(fallback)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('message', (m: Buffer) => socket.send(m.toString()))
  })
  return app
}

t.test('@fastify/rate-limit answers 429 with Retry-After on the upgrade', async (t) => {
  const app = await ecosystemApp(t, 2)
  const { ws } = await listen(app)
  for (let i = 0; i < 2; i++) {
    const r = await wsOpen(`${ws}/ws`, { origin: 'https://app.example' })
    t.ok(r.ws, `upgrade ${i + 1} is under the limit`)
    r.ws?.close()
    if (r.ws !== undefined) await closed(r.ws)
  }
  const limited = await wsOpen(`${ws}/ws`, { origin: 'https://app.example' })
  t.equal(limited.status, 429)
  t.ok(limited.headers?.['retry-after'], 'Retry-After is kept')
})

t.test('@fastify/rate-limit keeps its 429, body and Retry-After on the fallback instead of a fallback 400', async (t) => {
  const app = await ecosystemApp(t, 1)
  const headers = { ...FALLBACK, origin: 'https://app.example' }
  const first = await app.inject({ method: 'POST', url: '/ws/_lp/open', headers, payload: {} })
  t.equal(first.statusCode, 200)
  const second = await app.inject({ method: 'POST', url: '/ws/_lp/open', headers, payload: {} })
  t.equal(second.statusCode, 429)
  t.ok(second.headers['retry-after'], 'Retry-After is kept')
  t.equal(second.headers['cache-control'], 'no-store')
  t.equal(second.json().statusCode, 429, 'the body is the rate limiter\'s own')
  t.not(second.json().code, 'PORTCULLIS_FALLBACK_BAD_REQUEST')
})

t.test('another plugin\'s 401 and 403 pass through the fallback with their own status and headers', async (t) => {
  for (const status of [401, 403]) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(portcullis)
    await app.register(originGuard, { allow: ['https://app.example'] })
    await app.register(fallback)
    app.addHook('onRequest', async function appAuth (request, reply) {
      if (request.headers.authorization !== 'Bearer ok') {
        reply.header('www-authenticate', 'Bearer')
        throw Object.assign(new Error('app says no'), { statusCode: status, code: 'APP_AUTH' })
      }
    })
    app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, () => {})
    const res = await app.inject({ method: 'POST', url: '/ws/_lp/open', headers: { ...FALLBACK, origin: 'https://app.example' }, payload: {} })
    t.equal(res.statusCode, status)
    t.equal(res.json().code, 'APP_AUTH')
    t.equal(res.headers['www-authenticate'], 'Bearer')
  }
})

t.test('the fallback\'s own malformed JSON is still its 400 code', async (t) => {
  const app = await ecosystemApp(t, 100)
  const res = await app.inject({ method: 'POST', url: '/ws/_lp/open', headers: { ...FALLBACK, origin: 'https://app.example' }, payload: '{"offer":' })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'PORTCULLIS_FALLBACK_BAD_REQUEST')
})

t.test('a fallback open carrying Sec-WebSocket-Protocol is refused with 400', async (t) => {
  const app = await ecosystemApp(t, 100)
  const res = await app.inject({ method: 'POST', url: '/ws/_lp/open', headers: { ...FALLBACK, origin: 'https://app.example', 'sec-websocket-protocol': 'chat.v1' }, payload: {} })
  t.equal(res.statusCode, 400)
  t.match(res.json(), { code: 'PORTCULLIS_FALLBACK_BAD_REQUEST', message: /Sec-WebSocket-Protocol/ })
})

t.test('@fastify/helmet headers sit beside the fallback\'s own on every endpoint, and the WebSocket door still opens', async (t) => {
  const app = await ecosystemApp(t, 100)
  const { ws, http } = await listen(app)
  const headers = { ...FALLBACK, origin: 'https://app.example' }
  const open = await fetch(`${http}/ws/_lp/open`, { method: 'POST', headers, body: '{}' })
  t.equal(open.status, 200)
  const { sid } = await open.json() as { sid: string }
  const send = await fetch(`${http}/ws/_lp/send`, { method: 'POST', headers: { ...headers, 'x-portcullis-sid': sid }, body: JSON.stringify({ seq: 1, messages: [{ text: 'hi' }] }) })
  t.equal(send.status, 200)
  const poll = await fetch(`${http}/ws/_lp/poll`, { headers: { ...headers, 'x-portcullis-sid': sid, 'x-portcullis-ack': '0' } })
  t.equal(poll.status, 200)
  t.match(await poll.json(), { messages: [{ seq: 1, text: 'hi' }] })
  for (const [name, res] of [['open', open], ['send', send], ['poll', poll]] as const) {
    t.equal(res.headers.get('cache-control'), 'no-store', `${name}: no-store`)
    t.equal(res.headers.get('x-content-type-options'), 'nosniff', `${name}: nosniff`)
    t.ok(res.headers.get('content-security-policy'), `${name}: helmet's CSP`)
    t.ok(res.headers.get('strict-transport-security'), `${name}: helmet's HSTS`)
  }
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://app.example' })
  t.ok(r.ws, 'the upgrade is not broken by helmet')
  r.ws?.send('x')
  r.ws?.close()
  t.equal((await wsOpen(`${ws}/ws`, { origin: 'https://evil.example' })).status, 403, 'and still guarded')
})
