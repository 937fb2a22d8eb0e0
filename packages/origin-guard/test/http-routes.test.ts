import t from 'tap'
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import { checkOrigin, requireAllowedOrigin } from '../src/index.js'
import { guardApp } from './helpers.js'
import { rawHttp, rawUpgrade } from '../../../test/helpers/index.js'

const HOST = 'app.example.com'

/** A POST /login guarded by the hook, and a GET /check answering checkOrigin's verdict. */
async function loginApp (t: Parameters<typeof guardApp>[0], plugin: Parameters<typeof guardApp>[1] = {}, hook: Parameters<typeof requireAllowedOrigin>[0] = {}) {
  const app = await guardApp(t, plugin)
  let ran = 0
  app.post('/login', { preHandler: requireAllowedOrigin(hook) }, async function login () {
    ran++
    return { ok: true }
  })
  app.get('/check', async function check (request) {
    return { denial: checkOrigin(request) ?? null }
  })
  app.get('/chat', { websocket: true }, (socket) => socket.close(1000, 'bye'))
  return { app, ran: () => ran }
}

function post (origin: string | undefined, extra: Record<string, string> = {}) {
  return {
    method: 'POST' as const,
    url: '/login',
    headers: { host: HOST, 'content-type': 'application/json', ...(origin === undefined ? {} : { origin }), ...extra },
    payload: '{}'
  }
}

t.test('a POST from an allowed origin reaches the route handler', async (t) => {
  const { app, ran } = await loginApp(t, { allow: ['self', 'https://friend.example'] })
  t.equal((await app.inject(post('http://app.example.com'))).statusCode, 200, 'self')
  t.equal((await app.inject(post('https://friend.example'))).statusCode, 200, 'listed')
  t.equal(ran(), 2)
})

t.test('a POST from another origin is refused with the same 403 and code as the WebSocket door', async (t) => {
  const { app, ran } = await loginApp(t, { allow: ['self'] })
  const res = await app.inject(post('https://evil.example'))
  t.equal(res.statusCode, 403)
  t.same(res.json(), { code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' })
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.equal(ran(), 0, 'the handler never ran')

  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const up = await rawUpgrade(port, '/chat', { Origin: 'https://evil.example', 'Sec-WebSocket-Protocol': null })
  t.equal(up.status, 403, 'the upgrade from that origin is refused too')
  t.match(up.body, /PORTCULLIS_ORIGIN_NOT_ALLOWED/, 'with the same code')
})

t.test('lookalike, malformed and duplicated origins are refused on HTTP routes as on the sockets', async (t) => {
  const { app } = await loginApp(t, { allow: ['http://app.example.com'] })
  const cases: Array<[string, string]> = [
    ['https://app.example.com.evil.net', 'PORTCULLIS_ORIGIN_NOT_ALLOWED'],
    ['https://evil-app.example.com', 'PORTCULLIS_ORIGIN_NOT_ALLOWED'],
    ['HTTPS://APP.EXAMPLE.COM', 'PORTCULLIS_ORIGIN_MALFORMED'],
    ['https://app.example.com:443', 'PORTCULLIS_ORIGIN_MALFORMED'],
    ['null', 'PORTCULLIS_ORIGIN_NOT_ALLOWED']
  ]
  for (const [origin, code] of cases) {
    const res = await app.inject(post(origin))
    t.equal(res.statusCode, 403, origin)
    t.equal(res.json().code, code, `${origin}: ${code}`)
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  // two Origin lines cannot be sent through inject: a raw request
  const raw = await rawHttp(port, 'POST /login HTTP/1.1\r\nHost: app.example.com\r\nOrigin: https://app.example.com\r\nOrigin: https://evil.example\r\n' +
    'Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}')
  t.equal(raw.status, 403, 'two Origin lines: 403')
  t.match(raw.body, /PORTCULLIS_ORIGIN_MALFORMED/)
})

t.test('a request without Origin follows missing: denied by default, allowed when the hook says so', async (t) => {
  const strict = await loginApp(t)
  const res = await strict.app.inject(post(undefined))
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'PORTCULLIS_ORIGIN_MISSING')

  const lenient = await loginApp(t, {}, { missing: 'allow' })
  t.equal((await lenient.app.inject(post(undefined))).statusCode, 200, 'curl without Origin logs in')
  const browserless = await lenient.app.inject(post(undefined, { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }))
  t.equal(browserless.statusCode, 403, 'but a cross-site browser request without Origin does not')
  t.equal(browserless.json().code, 'PORTCULLIS_ORIGIN_MISSING')
})

t.test('Fetch Metadata refuses a cross-site form post even when Host makes the origin look like self', async (t) => {
  const { app } = await loginApp(t, { allow: ['self'] })
  const res = await app.inject(post('http://app.example.com', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }))
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'PORTCULLIS_ORIGIN_CROSS_SITE')
})

t.test('the hook\'s own allow replaces the app\'s list for its routes only', async (t) => {
  const app = await guardApp(t, { allow: ['https://a.example'] })
  app.post('/admin', { preHandler: requireAllowedOrigin({ allow: ['https://admin.example'] }) }, async () => ({ ok: true }))
  app.post('/login', { preHandler: requireAllowedOrigin() }, async () => ({ ok: true }))
  const at = (url: string, origin: string) => app.inject({ ...post(origin), url })
  t.equal((await at('/admin', 'https://admin.example')).statusCode, 200)
  t.equal((await at('/admin', 'https://a.example')).statusCode, 403)
  t.equal((await at('/login', 'https://a.example')).statusCode, 200)
  t.equal((await at('/login', 'https://admin.example')).statusCode, 403)
})

t.test('checkOrigin returns the denial value, or undefined when allowed', async (t) => {
  const { app } = await loginApp(t, { allow: ['self'] })
  const allowed = await app.inject({ url: '/check', headers: { host: HOST, origin: 'http://app.example.com' } })
  t.same(allowed.json(), { denial: null })
  const denied = await app.inject({ url: '/check', headers: { host: HOST, origin: 'https://evil.example' } })
  t.match(denied.json().denial, { status: 403, code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', reason: 'Origin not allowed' })
})

t.test('the hook works on routes registered in an encapsulated child context', async (t) => {
  const app = await guardApp(t, { allow: ['self'] })
  await app.register(async function child (scope) {
    scope.post('/logout', { preHandler: requireAllowedOrigin() }, async () => ({ ok: true }))
  }, { prefix: '/account' })
  t.equal((await app.inject({ ...post('http://app.example.com'), url: '/account/logout' })).statusCode, 200)
  t.equal((await app.inject({ ...post('https://evil.example'), url: '/account/logout' })).statusCode, 403)
})

t.test('report-only logs a would-be denial and lets the request through', async (t) => {
  const logs: Array<Record<string, any>> = []
  const stream = { write: (line: string) => { logs.push(JSON.parse(line)) } }
  const app = Fastify({ logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register((await import('../src/index.js')).default, { reportOnly: true })
  app.post('/login', { preHandler: requireAllowedOrigin() }, async () => ({ ok: true }))
  const res = await app.inject(post('https://evil.example'))
  t.equal(res.statusCode, 200, 'let through')
  const entry = logs.find((l) => l.portcullis !== undefined)
  t.match(entry, { level: 30, portcullis: { action: 'report', code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', stage: 'origin', route: '/login', transport: 'http' } })
})

t.test('a denial is logged at warn without echoing more than 256 characters of the Origin', async (t) => {
  const logs: Array<Record<string, any>> = []
  const stream = { write: (line: string) => { logs.push(JSON.parse(line)) } }
  const app = Fastify({ logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register((await import('../src/index.js')).default)
  app.post('/login', { preHandler: requireAllowedOrigin() }, async () => ({ ok: true }))
  const long = 'https://' + 'a'.repeat(400) + '.example'
  t.equal((await app.inject(post(long))).statusCode, 403)
  const entry = logs.find((l) => l.portcullis !== undefined)
  t.match(entry, { level: 40, portcullis: { action: 'deny', code: 'PORTCULLIS_ORIGIN_MALFORMED' } })
  t.equal(entry?.portcullis.origin.length, 256)
})

t.test('wrong hook options fail when the hook is created, naming what is allowed', async (t) => {
  t.throws(() => requireAllowedOrigin({ alow: ['self'] } as never), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message: /unknown requireAllowedOrigin option "alow"/ })
  t.throws(() => requireAllowedOrigin({ allow: 'self' } as never), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message: /allow must be an array/ })
  t.throws(() => requireAllowedOrigin({ allow: ['https://a.example/'] }), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message: /path/ })
  t.throws(() => requireAllowedOrigin({ missing: 'maybe' } as never), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message: /missing must be 'deny' or 'allow'/ })
  t.throws(() => requireAllowedOrigin({ fetchMetadata: 'yes' } as never), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message: /fetchMetadata must be a boolean/ })
  t.throws(() => requireAllowedOrigin(null as never), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION' })
})

t.test('without the plugin registered the route fails closed with a 500, never unchecked', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  let ran = false
  app.post('/login', { preHandler: requireAllowedOrigin() }, async () => { ran = true; return { ok: true } })
  const res = await app.inject(post('http://app.example.com'))
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'PORTCULLIS_ORIGIN_NOT_REGISTERED')
  t.notOk(ran, 'the handler never ran')
  const bare = Fastify()
  t.teardown(() => bare.close())
  bare.get('/check', async (request) => checkOrigin(request) ?? 'allowed')
  t.equal((await bare.inject({ url: '/check', headers: { origin: 'https://a.example' } })).json().code, 'PORTCULLIS_ORIGIN_NOT_REGISTERED', 'without the core too')
})
