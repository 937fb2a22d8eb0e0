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
