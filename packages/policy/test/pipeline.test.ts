import t from 'tap'
import Fastify from 'fastify'
import portcullis from '../src/index.js'
import type { AuditEvent, StageDefinition } from '../src/index.js'
import { coreApp, testOriginStage } from './helpers.js'
import { listen, wsOpen, captureLogs } from '../../../test/helpers/index.js'

function recorder (name: string, phase: StageDefinition['phase'], log: string[], result?: () => unknown): StageDefinition {
  return {
    name,
    phase,
    evaluate () {
      log.push(name)
      return result?.() as undefined
    }
  }
}

t.test('stages run by phase, then registration order, whatever order plugins added them', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  const log: string[] = []
  app.wsPolicy.addStage(recorder('custom-a', 'custom', log))
  app.wsPolicy.addStage(recorder('proto', 'subprotocol', log))
  app.wsPolicy.addStage(recorder('who', 'identity', log))
  app.wsPolicy.addStage(recorder('custom-b', 'custom', log))
  app.wsPolicy.addStage(recorder('origin', 'origin', log))
  t.same(app.wsPolicy.stages(), ['origin', 'who', 'proto', 'custom-a', 'custom-b'])
  app.get('/ws', { websocket: true }, (socket) => socket.close())
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.ok(r.ws)
  t.same(log, ['origin', 'who', 'proto', 'custom-a', 'custom-b'])
  r.ws!.close()
})

t.test('the first denial stops the pipeline: later stages never run', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  const log: string[] = []
  app.wsPolicy.addStage(recorder('origin', 'origin', log))
  app.wsPolicy.addStage(recorder('who', 'identity', log, () => ({ status: 401, code: 'NOPE', reason: 'no session' })))
  app.wsPolicy.addStage(recorder('proto', 'subprotocol', log))
  app.get('/ws', { websocket: true }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.equal(r.status, 401)
  t.same(JSON.parse(r.body!), { code: 'NOPE', message: 'no session' })
  t.same(log, ['origin', 'who'])
})

t.test('an async stage is awaited and its state reaches the handler', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({ name: 'origin', phase: 'origin', evaluate: () => undefined })
  app.wsPolicy.addStage({
    name: 'who',
    phase: 'identity',
    async evaluate (ctx) {
      await new Promise(resolve => setTimeout(resolve, 5))
      ctx.state.identity = { id: 'alice', sessionId: 's1' }
    }
  })
  let identity: unknown
  app.get('/ws', { websocket: true }, (socket, request) => {
    identity = request.portcullis?.state.identity
    socket.close()
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.ok(r.ws)
  await new Promise(resolve => r.ws!.once('close', resolve))
  t.same(identity, { id: 'alice', sessionId: 's1' })
})

t.test('a stage that throws fails closed with 500 and a stable code, and its message is not sent', async (t) => {
  const app = Fastify({ logger: { level: 'error', stream: captureLogs().stream } })
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({ name: 'origin', phase: 'origin', evaluate: () => { throw new Error('db password is hunter2') } })
  app.get('/ws', { websocket: true }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.equal(r.status, 500)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_STAGE_FAILED')
  t.notMatch(r.body!, /hunter2/)
})

t.test('a rejected async stage fails closed too', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({ name: 'origin', phase: 'origin', evaluate: async () => { throw new Error('boom') } })
  app.get('/ws', { websocket: true }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.equal(r.status, 500)
})

t.test('report-only on a route logs and audits the would-be denial and lets the connection through', async (t) => {
  const logs = captureLogs()
  const events: AuditEvent[] = []
  const app = await coreApp(t, { audit: (e) => events.push(e) }, { logger: { level: 'info', stream: logs.stream } })
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: ['https://app.example.com'], reportOnly: true } }, (socket) => socket.close())
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://evil.example' })
  t.ok(r.ws, 'connection allowed')
  t.equal(events.length, 1)
  t.equal(events[0].action, 'report')
  t.equal(events[0].code, 'TEST_ORIGIN_DENIED')
  t.equal(events[0].origin, 'https://evil.example')
  t.ok(logs.lines.some(l => l.portcullis?.action === 'report' && l.portcullis.code === 'TEST_ORIGIN_DENIED'))
  t.same(app.wsPolicy.stats().routes['/ws'].reported, { TEST_ORIGIN_DENIED: 1 })
  r.ws!.close()
})

t.test('report-only can name single stages; the others still deny', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage(testOriginStage)
  app.wsPolicy.addStage({ name: 'who', phase: 'identity', evaluate: () => ({ status: 401, code: 'WHO', reason: 'who are you' }) })
  app.get('/a', { websocket: true, wsPolicy: { reportOnly: ['test-origin'] } }, (s) => s.close())
  app.get('/b', { websocket: true, wsPolicy: { reportOnly: ['test-origin', 'who'] } }, (s) => s.close())
  const { ws } = await listen(app)
  const a = await wsOpen(`${ws}/a`, { origin: 'https://evil.example' })
  t.equal(a.status, 401, 'origin only reported, identity enforced')
  const b = await wsOpen(`${ws}/b`, { origin: 'https://evil.example' })
  t.ok(b.ws, 'both reported')
  b.ws!.close()
})

t.test('a stage registered report-only app-wide reports on every route', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({ ...testOriginStage, reportOnly: true })
  app.get('/ws', { websocket: true }, (s) => s.close())
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://evil.example' })
  t.ok(r.ws)
  t.same(app.wsPolicy.describe()[0].reportOnly, ['test-origin'])
  r.ws!.close()
})

t.test('a denial is logged once and audited without cookie or token values', async (t) => {
  const logs = captureLogs()
  const events: AuditEvent[] = []
  const app = await coreApp(t, { audit: (e) => events.push(e) }, { logger: { level: 'info', stream: logs.stream } })
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: [] } }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, {
    origin: 'https://evil.example',
    headers: { cookie: 'sid=s%3Asupersecretcookievalue.sig', authorization: 'Bearer topsecrettoken' }
  })
  t.equal(r.status, 403)
  const denials = logs.lines.filter(l => l.portcullis?.action === 'deny')
  t.equal(denials.length, 1, 'logged once')
  t.match(denials[0].portcullis, { code: 'TEST_ORIGIN_DENIED', stage: 'test-origin', route: '/ws', transport: 'websocket', origin: 'https://evil.example' })
  t.equal(events.length, 1)
  t.match(events[0], { action: 'deny', code: 'TEST_ORIGIN_DENIED', status: 403, stage: 'test-origin', route: '/ws', transport: 'websocket' })
  const everything = logs.text() + JSON.stringify(events) + r.body
  t.notMatch(everything, /supersecretcookievalue/)
  t.notMatch(everything, /topsecrettoken/)
})

t.test('an audit hook that throws does not break the denial', async (t) => {
  const app = await coreApp(t, { audit: () => { throw new Error('sink down') } })
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: [] } }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://evil.example' })
  t.equal(r.status, 403)
})

t.test('stats count allowed connections and denials per route and code', async (t) => {
  const app = await coreApp(t)
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: ['https://ok.example'] } }, () => {})
  const { ws } = await listen(app)
  const ok = await wsOpen(`${ws}/ws`, { origin: 'https://ok.example' })
  await wsOpen(`${ws}/ws`, { origin: 'https://evil.example' })
  await wsOpen(`${ws}/ws`, { origin: 'https://evil2.example' })
  const s = app.wsPolicy.stats()
  t.same(s.routes['/ws'], {
    allowed: 1,
    denied: { TEST_ORIGIN_DENIED: 2 },
    reported: {},
    transports: { websocket: { allowed: 1, denied: { TEST_ORIGIN_DENIED: 2 }, reported: {} } }
  }, 'totals, and the WebSocket door on its own')
  t.same(s.connectionsByTransport, { websocket: 1 })
  t.equal(s.connections, 1)
  ok.ws!.close()
})

t.test('describe() lists protected routes with each stage and shows an origin opt-out loudly', async (t) => {
  const app = await coreApp(t)
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: ['https://a.example'] } }, () => {})
  app.get('/open', { websocket: true, wsPolicy: { origin: false } }, () => {})
  await app.ready()
  const rows = app.wsPolicy.describe()
  t.same(rows.map(r => r.route), ['/ws', '/open'])
  t.same(rows[0].stages, { 'test-origin': 'allow https://a.example' })
  t.match(rows[1].stages.origin, /DISABLED/)
  t.match(rows[1].warnings[0], /ORIGIN CHECK DISABLED/)
  const table = app.wsPolicy.describeTable()
  t.match(table, /\/ws\s+websocket\s+test-origin: allow https:\/\/a.example/)
  t.match(table, /!! ORIGIN CHECK DISABLED/)
})

t.test('app-wide defaults apply to routes, and route keys override them', async (t) => {
  const app = await coreApp(t, { defaults: { testOrigins: ['https://default.example'] } })
  app.get('/a', { websocket: true }, (s) => s.close())
  app.get('/b', { websocket: true, wsPolicy: { testOrigins: ['https://b.example'] } }, (s) => s.close())
  const { ws } = await listen(app)
  const a = await wsOpen(`${ws}/a`, { origin: 'https://default.example' })
  t.ok(a.ws)
  a.ws!.close()
  const b = await wsOpen(`${ws}/b`, { origin: 'https://default.example' })
  t.equal(b.status, 403)
})

t.test('the extra headers of a denial are sent with it, e.g. WWW-Authenticate on a 401', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({ name: 'origin', phase: 'origin', evaluate: () => undefined })
  app.wsPolicy.addStage({
    name: 'who',
    phase: 'identity',
    evaluate: () => ({ status: 401, code: 'AUTH', reason: 'log in', headers: { 'www-authenticate': 'Bearer realm="chat"' } })
  })
  app.get('/ws', { websocket: true }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.equal(r.status, 401)
  t.equal(r.headers!['www-authenticate'], 'Bearer realm="chat"')
})
