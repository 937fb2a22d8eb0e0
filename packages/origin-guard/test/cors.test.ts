import t from 'tap'
import type { FastifyInstance, InjectOptions } from 'fastify'
import Fastify from 'fastify'
import fastifyCors from '@fastify/cors'
import portcullis, { kProtectedRoute } from '@portcullis/policy'
import originGuard, { corsOptionsFor } from '../src/index.js'
import { guardApp } from './helpers.js'

/**
 * A stand-in for @portcullis/fallback's endpoints: registered the way it registers them (a
 * transport, routes carrying the protected-route marker, an explicit OPTIONS route per path).
 */
function dummyFallback (app: FastifyInstance): void {
  app.wsPolicy.addTransport({
    name: 'dummy-long-poll',
    route (route, _compiled, { instance, path }) {
      const config = { [kProtectedRoute]: route }
      for (const [method, name] of [['GET', 'poll'], ['POST', 'send']] as const) {
        instance.route({ method, url: `${path}/_lp/${name}`, config, handler: async () => ({ ok: true }) })
        instance.route({ method: 'OPTIONS', url: `${path}/_lp/${name}`, config, handler: async (_req, reply) => reply.code(403).send({ code: 'NO_PREFLIGHT' }) })
      }
    }
  })
}

const preflight = (origin: string, url = '/ws/_lp/send'): InjectOptions => ({
  method: 'OPTIONS',
  url,
  headers: {
    origin,
    'access-control-request-method': 'POST',
    'access-control-request-headers': 'content-type,x-portcullis-fallback,x-portcullis-sid'
  }
})

function corsHeaders (headers: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.startsWith('access-control-')))
}

t.test('a preflight from an allowed origin gets the CORS answer from the same list', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  const res = await app.inject(preflight('https://app.example.com'))
  t.equal(res.statusCode, 204)
  t.same(corsHeaders(res.headers), {
    'access-control-allow-origin': 'https://app.example.com',
    'access-control-allow-credentials': 'true',
    'access-control-allow-methods': 'GET, POST',
    'access-control-allow-headers': 'content-type, x-portcullis-fallback, x-portcullis-sid, x-portcullis-ack, x-portcullis-protocol',
    'access-control-max-age': '600'
  })
  t.match(res.headers.vary, /Origin/)
})

t.test('an actual request from an allowed origin gets credentials and Vary: Origin', async (t) => {
  const app = await guardApp(t, { allow: ['https://*.example.com'] })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  const res = await app.inject({ method: 'POST', url: '/ws/_lp/send', headers: { origin: 'https://a.example.com', 'content-type': 'application/json' }, payload: '{}' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['access-control-allow-origin'], 'https://a.example.com')
  t.equal(res.headers['access-control-allow-credentials'], 'true')
  t.match(res.headers.vary, /Origin/)
  const poll = await app.inject({ method: 'GET', url: '/ws/_lp/poll', headers: { origin: 'https://b.example.com' } })
  t.equal(poll.headers['access-control-allow-origin'], 'https://b.example.com')
})

t.test('a denied origin gets no CORS headers at all, preflight or not', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com', 'https://*.example.org'] })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  const denied = [
    'https://evil.example', 'https://app.example.com.evil.net', 'https://evil-example.org', 'https://example.org',
    'HTTPS://APP.EXAMPLE.COM', 'https://app.example.com:443', 'https://app.example.com/', 'null', 'http://app.example.com'
  ]
  for (const origin of denied) {
    const pre = await app.inject(preflight(origin))
    t.same(corsHeaders(pre.headers), {}, `preflight from ${origin}`)
    t.equal(pre.statusCode, 403, `${origin}: the endpoint's own OPTIONS handler answered`)
    const post = await app.inject({ method: 'POST', url: '/ws/_lp/send', headers: { origin, 'content-type': 'application/json' }, payload: '{}' })
    t.same(corsHeaders(post.headers), {}, `request from ${origin}`)
  }
  const twice = await app.inject({ method: 'POST', url: '/ws/_lp/send', headers: { origin: ['https://app.example.com', 'https://app.example.com'] as never }, payload: '{}' })
  t.same(corsHeaders(twice.headers), {}, 'two Origin values')
})

t.test('same-origin requests and Origin-less requests get no CORS headers', async (t) => {
  const app = await guardApp(t, { allow: ['self', 'http://localhost'] })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  // inject's Host is localhost:80, so the request's own origin is http://localhost
  const same = await app.inject({ method: 'POST', url: '/ws/_lp/send', headers: { origin: 'http://localhost', 'content-type': 'application/json' }, payload: '{}' })
  t.equal(same.statusCode, 200)
  t.same(corsHeaders(same.headers), {})
  const none = await app.inject({ method: 'GET', url: '/ws/_lp/poll', headers: { 'sec-fetch-site': 'same-origin' } })
  t.same(corsHeaders(none.headers), {})
})

t.test('Fetch Metadata applies to CORS too: no answer for a cross-site no-cors request', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  const res = await app.inject({ method: 'GET', url: '/ws/_lp/poll', headers: { origin: 'https://app.example.com', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' } })
  t.same(corsHeaders(res.headers), {})
})

t.test('each endpoint answers CORS with its own route\'s list', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  app.get('/admin', { websocket: true, wsPolicy: { origin: { allow: ['https://admin.example.com'] } } }, () => {})
  app.get('/open', { websocket: true, wsPolicy: { origin: false } }, () => {})
  t.equal((await app.inject(preflight('https://admin.example.com', '/admin/_lp/send'))).headers['access-control-allow-origin'], 'https://admin.example.com')
  t.equal((await app.inject(preflight('https://app.example.com', '/admin/_lp/send'))).headers['access-control-allow-origin'], undefined)
  t.equal((await app.inject(preflight('https://admin.example.com', '/ws/_lp/send'))).headers['access-control-allow-origin'], undefined)
  const open = await app.inject(preflight('https://app.example.com', '/open/_lp/send'))
  t.same(corsHeaders(open.headers), {}, 'origin: false vouches for nobody cross-origin')
})

t.test('routes without the Portcullis marker never get CORS headers', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  app.post('/api', async () => ({ ok: true }))
  app.get('/ws', { websocket: true }, () => {})
  const post = await app.inject({ method: 'POST', url: '/api', headers: { origin: 'https://app.example.com' }, payload: {} })
  t.equal(post.statusCode, 200)
  t.same(corsHeaders(post.headers), {})
  const pre = await app.inject(preflight('https://app.example.com', '/api'))
  t.same(corsHeaders(pre.headers), {})
  t.equal(pre.statusCode, 404)
})

t.test('the preflight max age is configurable', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'], cors: { maxAge: 60 } })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  t.equal((await app.inject(preflight('https://app.example.com'))).headers['access-control-max-age'], '60')
})

t.test('cors: false registers no CORS, and corsOptionsFor serves an app\'s own @fastify/cors', async (t) => {
  const off = await guardApp(t, { allow: ['https://app.example.com'], cors: false })
  dummyFallback(off)
  off.get('/ws', { websocket: true }, () => {})
  t.same(corsHeaders((await off.inject(preflight('https://app.example.com'))).headers), {})

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(originGuard, { allow: ['https://app.example.com'], cors: false })
  await app.register(fastifyCors, {
    delegator: (request, cb) => cb(null, corsOptionsFor(request) ?? { origin: request.url.startsWith('/api') ? 'https://partner.example' : false })
  })
  dummyFallback(app)
  app.get('/ws', { websocket: true }, () => {})
  app.post('/api', async () => ({ ok: true }))
  t.equal((await app.inject(preflight('https://app.example.com'))).headers['access-control-allow-origin'], 'https://app.example.com')
  t.equal((await app.inject(preflight('https://evil.example'))).headers['access-control-allow-origin'], undefined)
  t.equal((await app.inject({ method: 'POST', url: '/api', headers: { origin: 'https://partner.example' }, payload: {} })).headers['access-control-allow-origin'], 'https://partner.example')
})

t.test('an app that already registered @fastify/cors is told to use cors: false', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close().catch(() => {}))
  await app.register(portcullis)
  await app.register(fastifyCors, { origin: false })
  await t.rejects(async () => app.register(originGuard), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message: /cors: false.*corsOptionsFor/ })
})
