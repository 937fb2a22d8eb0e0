import t from 'tap'
import Fastify from 'fastify'
import originGuard from '../src/index.js'
import type { AuditEvent } from '@portcullis/policy'
import { guardApp } from './helpers.js'
import { listen, rawUpgrade, wsOpen } from '../../../test/helpers/index.js'

t.test('a wrong plugin option fails startup with a message that names it', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ allow: ['https://app.example.com/'] }, /allow\[0\]: "https:\/\/app\.example\.com\/" is not an origin: a path is not allowed in an origin \(drop the trailing "\/"\)/],
    [{ allow: ['https://app.example.com', 'https://u@x.example'] }, /allow\[1\]: .*userinfo/],
    [{ allow: ['https://*.com'] }, /allow\[0\]: .*two labels/],
    [{ allow: ['https://a*.example.com'] }, /allow\[0\]: .*whole first label/],
    [{ allow: ['https://example.com.'] }, /allow\[0\]: .*empty label/],
    [{ allow: ['https://app.example.com?x'] }, /allow\[0\]: .*query/],
    [{ allow: ['*'] }, /allow\[0\]: .*every site/],
    [{ allow: 'https://app.example.com' }, /allow must be an array/],
    [{ missing: 'maybe' }, /missing must be 'deny' or 'allow'/],
    [{ fetchMetadata: 'yes' }, /fetchMetadata must be a boolean/],
    [{ reportOnly: 1 }, /reportOnly must be a boolean/],
    [{ cors: { maxAge: -1 } }, /cors\.maxAge/],
    [{ cors: { origin: '*' } }, /unknown cors option "origin"/],
    [{ allowList: [] }, /unknown option "allowList"/]
  ]
  for (const [opts, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close().catch(() => {}))
    await app.register((await import('@portcullis/policy')).default)
    await t.rejects(async () => app.register(originGuard, opts as never), { code: 'PORTCULLIS_ORIGIN_INVALID_OPTION', message }, JSON.stringify(opts))
  }
})

t.test('registering without the core fails with a clear dependency error', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close().catch(() => {}))
  await t.rejects(async () => app.register(originGuard), /@portcullis\/policy/)
})

t.test('a wrong route option fails startup naming the route', async (t) => {
  const app = await guardApp(t)
  const handler = (): void => {}
  t.throws(() => app.get('/chat', { websocket: true, wsPolicy: { origin: { allow: ['https://x.example/path'] } } }, handler),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /\/chat.*origin: allow\[0\]: "https:\/\/x\.example\/path" is not an origin: a path/ })
  t.throws(() => app.get('/a', { websocket: true, wsPolicy: { origin: { alow: [] } as never } }, handler),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /\/a.*unknown key "alow"/ })
  t.throws(() => app.get('/b', { websocket: true, wsPolicy: { origin: true as never } }, handler),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /\/b.*must be false \(opt out\) or an object/ })
  t.throws(() => app.get('/c', { websocket: true, wsPolicy: { origin: { missing: 'sometimes' as never } } }, handler),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /\/c.*missing must be 'deny' or 'allow'/ })
})

t.test('a route overrides the app-wide list, and other routes keep it', async (t) => {
  const app = await guardApp(t, { allow: ['https://app.example.com'] })
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  app.get('/admin', { websocket: true, wsPolicy: { origin: { allow: ['https://admin.example.com'] } } }, (socket) => socket.close())
  const { port } = await listen(app)
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'https://app.example.com' })).status, 101)
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'https://admin.example.com' })).status, 403)
  t.equal((await rawUpgrade(port, '/admin', { Origin: 'https://admin.example.com' })).status, 101)
  const r = await rawUpgrade(port, '/admin', { Origin: 'https://app.example.com' })
  t.equal(r.status, 403)
  t.equal(JSON.parse(r.body).code, 'PORTCULLIS_ORIGIN_NOT_ALLOWED')
})

t.test('missing: allow lets Origin-less clients through on that route only', async (t) => {
  const app = await guardApp(t)
  app.get('/browser', { websocket: true }, (socket) => socket.close())
  app.get('/device', { websocket: true, wsPolicy: { origin: { missing: 'allow' } } }, (socket) => socket.close())
  const { port } = await listen(app)
  t.equal((await rawUpgrade(port, '/device', {})).status, 101, 'no Origin, non-browser client: allowed')
  const denied = await rawUpgrade(port, '/browser', {})
  t.equal(denied.status, 403)
  t.equal(JSON.parse(denied.body).code, 'PORTCULLIS_ORIGIN_MISSING')
  const nav = await rawUpgrade(port, '/device', { 'Sec-Fetch-Site': 'cross-site' })
  t.equal(nav.status, 403, 'a browser request without Origin is not a non-browser client')
  t.equal(JSON.parse(nav.body).code, 'PORTCULLIS_ORIGIN_MISSING')
  t.equal((await rawUpgrade(port, '/device', { Origin: 'https://evil.example' })).status, 403, 'a present Origin is still checked')
})

t.test('missing: allow as the app-wide default applies to every route', async (t) => {
  const app = await guardApp(t, { missing: 'allow' })
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.ok(r.ws, 'a Node client without Origin opens')
  r.ws?.terminate()
})

t.test('fetchMetadata: false skips the Fetch Metadata cross-check', async (t) => {
  const app = await guardApp(t, { fetchMetadata: false })
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { port, origin } = await listen(app)
  t.equal((await rawUpgrade(port, '/ws', { Origin: origin, 'Sec-Fetch-Site': 'cross-site' })).status, 101)
  const r = await rawUpgrade(port, '/ws', { 'Sec-Fetch-Site': 'same-origin' })
  t.equal(r.status, 403, 'nor is Sec-Fetch-Site trusted in place of Origin')
  t.equal(JSON.parse(r.body).code, 'PORTCULLIS_ORIGIN_MISSING')
})

t.test('an option set to undefined keeps its default (Fetch Metadata stays on, self stays the list)', async (t) => {
  const app = await guardApp(t, { allow: undefined, missing: undefined, fetchMetadata: undefined, reportOnly: undefined, cors: undefined })
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { port, origin } = await listen(app)
  t.equal((await rawUpgrade(port, '/ws', { Origin: origin })).status, 101, 'self is allowed')
  const cross = await rawUpgrade(port, '/ws', { Origin: origin, 'Sec-Fetch-Site': 'cross-site' })
  t.equal(cross.status, 403)
  t.equal(JSON.parse(cross.body).code, 'PORTCULLIS_ORIGIN_CROSS_SITE', 'Fetch Metadata is checked')
  t.equal(JSON.parse((await rawUpgrade(port, '/ws', {})).body).code, 'PORTCULLIS_ORIGIN_MISSING')
})

t.test('the null origin is allowed only when listed literally', async (t) => {
  const app = await guardApp(t, { allow: ['null'] })
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { port } = await listen(app)
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'null' })).status, 101)
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'Null' })).status, 403)
})

t.test('report-only lets a denied origin through and reports it', async (t) => {
  const events: AuditEvent[] = []
  const app = await guardApp(t, { allow: ['https://app.example.com'], reportOnly: true }, { audit: (e) => events.push(e) })
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { port } = await listen(app)
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'https://evil.example' })).status, 101)
  t.equal(events.length, 1)
  t.match(events[0], { action: 'report', code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', stage: 'origin', origin: 'https://evil.example' })
  t.same(app.wsPolicy.stats().routes['/ws'].reported, { PORTCULLIS_ORIGIN_NOT_ALLOWED: 1 })
  t.same(app.wsPolicy.describe()[0].reportOnly, ['origin'])
})

t.test('report-only for one route through the core\'s wsPolicy.reportOnly', async (t) => {
  const events: AuditEvent[] = []
  const app = await guardApp(t, { allow: ['https://app.example.com'] }, { audit: (e) => events.push(e) })
  app.get('/rollout', { websocket: true, wsPolicy: { reportOnly: ['origin'] } }, (socket) => socket.close())
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { port } = await listen(app)
  t.equal((await rawUpgrade(port, '/rollout', { Origin: 'https://evil.example' })).status, 101)
  t.equal((await rawUpgrade(port, '/ws', { Origin: 'https://evil.example' })).status, 403)
  t.same(events.map(e => [e.route, e.action, e.code]), [
    ['/rollout', 'report', 'PORTCULLIS_ORIGIN_NOT_ALLOWED'],
    ['/ws', 'deny', 'PORTCULLIS_ORIGIN_NOT_ALLOWED']
  ])
})

t.test('same-origin default follows trustProxy: forwarded headers count only when trusted', async (t) => {
  const forwarded = { Origin: 'https://chat.example.com', 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'chat.example.com' }

  const trusted = await guardApp(t, {}, {}, { trustProxy: true })
  trusted.get('/ws', { websocket: true }, (socket) => socket.close())
  const a = await listen(trusted)
  t.equal((await rawUpgrade(a.port, '/ws', forwarded)).status, 101, 'behind a trusted proxy, the public origin is self')
  t.equal((await rawUpgrade(a.port, '/ws', { Origin: 'https://chat.example.com' })).status, 403, 'without the forwarded headers it is not')

  const untrusted = await guardApp(t)
  untrusted.get('/ws', { websocket: true }, (socket) => socket.close())
  const b = await listen(untrusted)
  const r = await rawUpgrade(b.port, '/ws', forwarded)
  t.equal(r.status, 403, 'forwarded headers from an untrusted peer are ignored')
  t.equal(JSON.parse(r.body).code, 'PORTCULLIS_ORIGIN_NOT_ALLOWED')
  t.equal((await rawUpgrade(b.port, '/ws', { ...forwarded, Origin: b.origin })).status, 101, 'the socket\'s own origin still is self')
})

t.test('describe() shows the effective origin policy, and an opt-out loudly', async (t) => {
  const app = await guardApp(t, { allow: ['self', 'https://a.example', 'https://*.b.example', 'https://c.example'] })
  app.get('/ws', { websocket: true }, () => {})
  app.get('/open', { websocket: true, wsPolicy: { origin: false } }, () => {})
  app.get('/strict', { websocket: true, wsPolicy: { origin: { allow: [], fetchMetadata: false } } }, () => {})
  await app.ready()
  const rows = Object.fromEntries(app.wsPolicy.describe().map(r => [r.route, r]))
  t.equal(rows['/ws'].stages.origin, 'allow self, https://a.example, https://*.b.example (+1); missing Origin: deny; fetch metadata: on')
  t.equal(rows['/strict'].stages.origin, 'allow nothing; missing Origin: deny; fetch metadata: off')
  t.match(rows['/open'].stages.origin, /DISABLED/)
  t.match(app.wsPolicy.describeTable(), /ORIGIN CHECK DISABLED/)
})

t.test('routes without an override share the app-wide compiled policy', async (t) => {
  const app = await guardApp(t, { allow: ['https://a.example'] })
  app.get('/one', { websocket: true }, () => {})
  app.get('/two', { websocket: true, wsPolicy: { origin: { missing: 'deny' } } }, () => {})
  app.get('/three', { websocket: true, wsPolicy: { origin: { missing: 'allow' } } }, () => {})
  const one = app.wsPolicy.route('/one')!.compiled('origin')
  t.ok(one !== undefined)
  t.equal(app.wsPolicy.route('/two')!.compiled('origin'), one, 'same options: same object')
  const three = app.wsPolicy.route('/three')!.compiled('origin') as { matcher: unknown }
  t.not(three, one)
  t.equal(three.matcher, (one as { matcher: unknown }).matcher, 'the matcher is shared')
})
