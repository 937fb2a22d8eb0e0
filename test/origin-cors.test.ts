/**
 * The origin guard's CORS answers on the real long-poll fallback's endpoints: preflights and
 * credentialed cross-origin requests are answered only for origins the route's origin policy
 * allows, from the same compiled list that guards the WebSocket door.
 */
import t from 'tap'
import Fastify, { type FastifyInstance, type InjectOptions } from 'fastify'
import portcullis from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import fallback from '@portcullis/fallback'
import { listen, rawUpgrade } from './helpers/index.js'

const APP = 'https://app.example.com'
const HEADERS = 'content-type, x-portcullis-fallback, x-portcullis-sid, x-portcullis-ack, x-portcullis-protocol'

async function app (t: { teardown: (fn: () => unknown) => void }): Promise<FastifyInstance> {
  const a = Fastify()
  t.teardown(() => a.close())
  await a.register(portcullis)
  await a.register(originGuard, { allow: [APP, 'https://*.example.org'] })
  await a.register(fallback)
  a.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => { socket.on('message', (m: Buffer) => socket.send(m)) })
  a.get('/admin', { websocket: true, wsPolicy: { fallback: true, origin: { allow: ['https://admin.example.com'] } } }, () => {})
  return a
}

const preflight = (origin: string, url: string, method = 'POST'): InjectOptions => ({
  method: 'OPTIONS',
  url,
  headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': HEADERS }
})

function acHeaders (h: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(h).filter(([k]) => k.startsWith('access-control-')))
}

t.test('every fallback endpoint answers a preflight from an allowed origin', async (t) => {
  const a = await app(t)
  for (const [kind, method] of [['open', 'POST'], ['poll', 'GET'], ['send', 'POST'], ['close', 'POST']]) {
    const res = await a.inject(preflight(APP, `/ws/_lp/${kind}`, method))
    t.equal(res.statusCode, 204, kind)
    t.same(acHeaders(res.headers), {
      'access-control-allow-origin': APP,
      'access-control-allow-credentials': 'true',
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': HEADERS,
      'access-control-max-age': '600'
    }, `${kind}: the fallback's request headers are allowed, with credentials`)
    t.match(res.headers.vary, /Origin/, kind)
  }
})

t.test('a preflight from a denied origin reaches the fallback and gets no CORS headers', async (t) => {
  const a = await app(t)
  for (const origin of ['https://evil.example', 'https://app.example.com.evil.net', 'https://evil-example.org', 'null', 'https://APP.example.com']) {
    const res = await a.inject(preflight(origin, '/ws/_lp/send'))
    t.same(acHeaders(res.headers), {}, origin)
  }
  const other = await a.inject(preflight(APP, '/admin/_lp/open'))
  t.same(acHeaders(other.headers), {}, 'another route\'s list is its own')
  t.equal((await a.inject(preflight('https://admin.example.com', '/admin/_lp/open'))).headers['access-control-allow-origin'], 'https://admin.example.com')
})

t.test('a credentialed cross-origin open gets CORS headers only when the origin is allowed, and the same verdict as the upgrade', async (t) => {
  const a = await app(t)
  const { port } = await listen(a)
  const open = (origin: string): InjectOptions => ({
    method: 'POST',
    url: '/ws/_lp/open',
    headers: { origin, 'content-type': 'application/json', 'x-portcullis-fallback': '1' },
    payload: '{}'
  })
  const ok = await a.inject(open('https://a.example.org'))
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['access-control-allow-origin'], 'https://a.example.org')
  t.equal(ok.headers['access-control-allow-credentials'], 'true')
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'https://a.example.org' })).status, 101, 'the upgrade agrees')

  const denied = await a.inject(open('https://example.org'))
  t.equal(denied.statusCode, 403)
  t.equal(denied.json().code, 'PORTCULLIS_ORIGIN_NOT_ALLOWED')
  t.same(acHeaders(denied.headers), {})
  const up = await rawUpgrade(port, '/ws', { Origin: 'https://example.org' })
  t.equal(up.status, 403, 'the upgrade agrees')
  t.equal(JSON.parse(up.body).code, 'PORTCULLIS_ORIGIN_NOT_ALLOWED')
})

t.test('the stream endpoint answers CORS like the others, and a v2 stream from an allowed origin carries it', async (t) => {
  const a = await app(t)
  const pre = await a.inject(preflight(APP, '/ws/_lp/stream', 'GET'))
  t.equal(pre.statusCode, 204)
  t.equal(pre.headers['access-control-allow-origin'], APP)
  t.equal(pre.headers['access-control-allow-headers'], HEADERS)
  t.same(acHeaders((await a.inject(preflight('https://evil.example', '/ws/_lp/stream', 'GET'))).headers), {})
  const { port } = await listen(a)
  const opened = await fetch(`http://127.0.0.1:${port}/ws/_lp/open`, { method: 'POST', headers: { origin: APP, 'content-type': 'application/json', 'x-portcullis-fallback': '1' }, body: '{"versions":[2,1]}' })
  const { sid } = await opened.json() as { sid: string }
  const ac = new AbortController()
  t.teardown(() => ac.abort())
  const res = await fetch(`http://127.0.0.1:${port}/ws/_lp/stream`, { headers: { origin: APP, 'x-portcullis-fallback': '1', 'x-portcullis-sid': sid, 'x-portcullis-ack': '0' }, signal: ac.signal })
  t.equal(res.status, 200)
  t.equal(res.headers.get('access-control-allow-origin'), APP)
  t.equal(res.headers.get('access-control-allow-credentials'), 'true')
  t.match(res.headers.get('vary'), /Origin/)
})

t.test('a WebSocket upgrade from an allowed origin gets no CORS headers (no CORS work on upgrades)', async (t) => {
  const a = await app(t)
  const { port } = await listen(a)
  const up = await rawUpgrade(port, '/ws', { Origin: APP })
  t.equal(up.status, 101)
  t.same(acHeaders(up.headers as Record<string, unknown>), {})
  t.notMatch(String(up.headers.vary ?? ''), /Origin/)
})

t.test('a preflight from an allowed origin without Access-Control-Request-Method is refused as before (strict preflight)', async (t) => {
  const a = await app(t)
  const res = await a.inject({ method: 'OPTIONS', url: '/ws/_lp/send', headers: { origin: APP } })
  t.equal(res.statusCode, 400)
  t.equal(res.body, 'Invalid Preflight Request')
})

t.test('the same allowed origin is judged on every request: cached CORS headers never outlive a denial', async (t) => {
  const a = await app(t)
  const open = (origin: string | string[]): InjectOptions => ({ method: 'POST', url: '/ws/_lp/open', headers: { origin: origin as string, 'content-type': 'application/json', 'x-portcullis-fallback': '1' }, payload: '{}' })
  t.equal((await a.inject(open(APP))).headers['access-control-allow-origin'], APP, 'headers computed and kept for this origin')
  const twice = await a.inject(open([APP, APP]))
  t.equal(twice.statusCode, 403, 'two Origin lines: the decision, not the cache, answers')
  t.same(acHeaders(twice.headers), {})
  const cross = await a.inject({ ...open(APP), headers: { ...open(APP).headers, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' } })
  t.same(acHeaders(cross.headers), {}, 'a no-cors request from the same origin string gets nothing')
})
