/**
 * Security telemetry on both doors: audit sinks that throw, reject or hang never crash the
 * process nor change a decision; every security event is audited (deny, report, close, revoke)
 * without secrets; the OpenTelemetry metrics read as a real Prometheus scrape.
 */
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import portcullis, { type AuditEvent, type PortcullisOptions } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import subprotocols, { json } from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'
import { captureLogs, closed, listen, waitFor, wsOpen, type LogCapture } from './helpers/index.js'

const APP = 'https://app.example'
const EVIL = 'https://evil.example'
const SECRET = 'telemetry-test-cookie-secret-0123456789'
const FALLBACK = { 'x-portcullis-fallback': '1', 'content-type': 'application/json' }

const unhandled: unknown[] = []
process.on('unhandledRejection', (err) => { unhandled.push(err) })

interface Setup {
  app: FastifyInstance
  ws: string
  http: string
  /** A Cookie header for a fresh logged-in session, and its session id. */
  login: (ttlMs?: number) => Promise<{ cookie: string, sid: string }>
}

async function secureApp (t: { teardown: (fn: () => unknown) => void }, opts: PortcullisOptions, logs?: LogCapture): Promise<Setup> {
  const app = Fastify({ logger: logs === undefined ? false : { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis, opts)
  await app.register(originGuard, { allow: [APP] })
  const sessions = new Map<string, { id: string, expiresAt: number }>()
  await app.register(cookieSession, {
    signedCookie: { cookieName: 'sid', load: async (sid) => sessions.get(sid) ?? null }
  })
  await app.register(subprotocols, {
    protocols: { 'chat.v1': json({ schemas: { say: { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string' } }, required: ['type', 'text'] } }, limits: { maxMessageBytes: 64 } }) }
  })
  await app.register(fallback)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true, protocols: ['chat.v1'] } }, (socket) => {
    socket.on('message', (m: Buffer) => socket.send(m.toString()))
  })
  app.get('/ro', { websocket: true, wsPolicy: { session: false, reportOnly: ['origin'] } }, (socket) => { socket.close(1000) })
  let n = 0
  const { ws, http } = await listen(app)
  return {
    app,
    ws,
    http,
    login: async (ttlMs = 60_000) => {
      const sid = `session-${++n}-${Math.random().toString(36).slice(2)}`
      sessions.set(sid, { id: `user-${n}`, expiresAt: Date.now() + ttlMs })
      return { cookie: `sid=${app.signCookie(sid)}`, sid }
    }
  }
}

function openWs (s: Setup, cookie: string, origin = APP): ReturnType<typeof wsOpen> {
  return wsOpen(`${s.ws}/ws`, { origin, protocols: 'chat.v1', headers: { cookie } })
}

async function openLongPoll (s: Setup, cookie: string, origin = APP): Promise<Response> {
  return await fetch(`${s.http}/ws/_lp/open`, { method: 'POST', headers: { ...FALLBACK, origin, cookie }, body: JSON.stringify({ protocols: ['chat.v1'] }) })
}

t.test('an async audit sink that rejects changes no decision, crashes nothing, and logs once per interval', async (t) => {
  const logs = captureLogs()
  const s = await secureApp(t, { audit: async () => { throw new Error('SIEM unreachable') } }, logs)
  const { cookie } = await s.login()
  for (let i = 0; i < 20; i++) t.equal((await openWs(s, cookie, EVIL)).status, 403, `denial ${i + 1} still answered`)
  const ok = await openWs(s, cookie)
  t.ok(ok.ws, 'an allowed client still opens')
  ok.ws?.close()
  await waitFor(() => s.app.wsPolicy.stats().audit.failed === 20)
  t.same(s.app.wsPolicy.stats().audit, { delivered: 0, failed: 20, dropped: 0, inFlight: 0 })
  const lines = logs.lines.filter(l => /audit sink failed/.test(l.msg))
  t.equal(lines.length, 1, 'one error line, not twenty')
  t.equal(lines[0].level, 50)
  t.same(unhandled, [], 'no unhandled rejection reached the process')
})

t.test('an audit sink that throws synchronously leaves the denial as it was', async (t) => {
  const s = await secureApp(t, { audit: () => { throw new Error('boom') } })
  const { cookie } = await s.login()
  const r = await openWs(s, cookie, EVIL)
  t.equal(r.status, 403)
  t.match(JSON.parse(r.body ?? '{}'), { code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' })
  t.equal(s.app.wsPolicy.stats().audit.failed, 1)
})

t.test('a hanging audit sink never delays a decision; past auditMaxInFlight events are dropped and counted, and slots free after auditTimeoutMs', async (t) => {
  const s = await secureApp(t, { audit: () => new Promise(() => {}), auditMaxInFlight: 3, auditTimeoutMs: 300 })
  const { cookie } = await s.login()
  const started = Date.now()
  for (let i = 0; i < 10; i++) t.equal((await openWs(s, cookie, EVIL)).status, 403)
  t.ok(Date.now() - started < 2000, 'ten denials answered without waiting on the sink')
  t.same(s.app.wsPolicy.stats().audit, { delivered: 0, failed: 0, dropped: 7, inFlight: 3 })
  await waitFor(() => s.app.wsPolicy.stats().audit.inFlight === 0, 3000)
  t.same(s.app.wsPolicy.stats().audit, { delivered: 0, failed: 3, dropped: 7, inFlight: 0 }, 'timed-out calls count as failed')
  t.equal((await openWs(s, cookie, EVIL)).status, 403)
  t.equal(s.app.wsPolicy.stats().audit.inFlight, 1, 'a freed slot takes the next event')
})

t.test('every security event is audited with one shape on both doors and no secret in any of them', async (t) => {
  const events: AuditEvent[] = []
  const s = await secureApp(t, { audit: async (e) => { events.push(e) } })
  const alice = await s.login()
  const bob = await s.login(600)

  // deny, on both doors
  t.equal((await openWs(s, alice.cookie, EVIL)).status, 403)
  t.equal((await openLongPoll(s, alice.cookie, EVIL)).status, 403)
  // report (report-only origin on /ro)
  const ro = await wsOpen(`${s.ws}/ro`, { origin: EVIL })
  if (ro.ws !== undefined) await closed(ro.ws)
  // close by a message guard (1009 on the WebSocket door)
  const big = await openWs(s, alice.cookie)
  big.ws?.send(JSON.stringify({ type: 'say', text: 'x'.repeat(200) }))
  t.equal((await closed(big.ws!)).code, 1009)
  // close by a message guard on the long-poll door (schema: 1008)
  const lp = await openLongPoll(s, alice.cookie)
  t.equal(lp.status, 200)
  const { sid: lpSid } = await lp.json() as { sid: string }
  const lpHeaders = { ...FALLBACK, origin: APP, cookie: alice.cookie, 'x-portcullis-sid': lpSid, 'x-portcullis-protocol': 'chat.v1' }
  await fetch(`${s.http}/ws/_lp/send`, { method: 'POST', headers: lpHeaders, body: JSON.stringify({ seq: 1, messages: [{ text: '{"type":"shout"}' }] }) })
  // revocation: a live socket of alice closes with 4001
  const live = await openWs(s, alice.cookie)
  await waitFor(() => events.some(e => e.action === 'close' && e.transport === 'long-poll'))
  ;(s.app as unknown as { portcullisSessions: { revoke: (id: string) => void } }).portcullisSessions.revoke(alice.sid)
  t.equal((await closed(live.ws!)).code, 4001)
  // expiry: bob's session ends after 600 ms
  const exp = await openWs(s, bob.cookie)
  t.equal((await closed(exp.ws!)).code, 4002)
  await waitFor(() => events.some(e => e.code === 'PORTCULLIS_CLOSE_SESSION_EXPIRED'))

  const byAction = (a: string): AuditEvent[] => events.filter(e => e.action === a)
  t.same(byAction('deny').map(e => [e.transport, e.code, e.status, e.stage]).sort(), [
    ['long-poll', 'PORTCULLIS_ORIGIN_NOT_ALLOWED', 403, 'origin'],
    ['websocket', 'PORTCULLIS_ORIGIN_NOT_ALLOWED', 403, 'origin']
  ], 'deny: same shape on both doors')
  t.match(byAction('report'), [{ code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', route: '/ro', transport: 'websocket' }])
  const closes = byAction('close').map(e => [e.transport, e.closeCode, e.code, e.route])
  t.match(closes, [
    ['websocket', 1009, 'PORTCULLIS_CLOSE_MESSAGE_TOO_BIG', '/ws'],
    ['long-poll', 1008, 'PORTCULLIS_CLOSE_POLICY_VIOLATION', '/ws']
  ])
  t.ok(closes.some(c => c[0] === 'websocket' && c[1] === 4001 && c[2] === 'PORTCULLIS_CLOSE_SESSION_REVOKED'), 'revoked connections are audited as closes')
  t.ok(closes.some(c => c[1] === 4002 && c[2] === 'PORTCULLIS_CLOSE_SESSION_EXPIRED'), 'expired connections are audited as closes')
  // the reason the server closed with, as text (the socket keeps it raw until the close event)
  for (const e of byAction('close')) t.ok(typeof e.reason === 'string' && e.reason.length > 0, `close ${e.closeCode} has its reason as text`)
  t.match(byAction('revoke'), [{ code: 'PORTCULLIS_SESSION_REVOKED', closeCode: 4001, stage: 'session' }])
  t.ok((byAction('revoke')[0].connections ?? 0) >= 1, 'the revocation says how many connections it closed')
  t.notOk(events.some(e => e.action === 'close' && e.closeCode === 1000), 'an ordinary close is not a security event')

  const text = JSON.stringify(events)
  for (const secret of [alice.sid, bob.sid, alice.cookie, bob.cookie, lpSid, SECRET]) {
    t.notOk(text.includes(secret), 'no cookie, session id or fallback id in any audit event')
  }
})

t.test('the metrics read as a Prometheus scrape with the fixed names, door labels and no client values', async (t) => {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ readers: [exporter] })
  t.teardown(() => meterProvider.shutdown())
  const s = await secureApp(t, { meterProvider })
  const { cookie, sid } = await s.login()
  t.equal((await openWs(s, cookie, EVIL)).status, 403)
  t.equal((await openLongPoll(s, cookie, EVIL)).status, 403)
  const a = await openWs(s, cookie)
  const lp = await openLongPoll(s, cookie)
  t.equal(lp.status, 200)
  const big = await openWs(s, cookie)
  big.ws?.send('x'.repeat(200))
  t.equal((await closed(big.ws!)).code, 1009)
  ;(s.app as unknown as { portcullisSessions: { revoke: (id: string) => void } }).portcullisSessions.revoke(sid)
  t.equal((await closed(a.ws!)).code, 4001)
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'the server side saw every close')

  const { resourceMetrics } = await exporter.collect()
  const { PrometheusSerializer } = await import('@opentelemetry/exporter-prometheus')
  const scrape = new PrometheusSerializer(undefined, false, undefined, true, true).serialize(resourceMetrics)
  t.match(scrape, /portcullis_decisions_total\{route="\/ws",transport="websocket",outcome="denied",code="PORTCULLIS_ORIGIN_NOT_ALLOWED",stage="origin"\} 1/)
  t.match(scrape, /portcullis_decisions_total\{route="\/ws",transport="long-poll",outcome="denied",code="PORTCULLIS_ORIGIN_NOT_ALLOWED",stage="origin"\} 1/)
  t.match(scrape, /portcullis_decisions_total\{route="\/ws",transport="websocket",outcome="allowed",code="",stage=""\} 2/)
  t.match(scrape, /portcullis_closes_total\{route="\/ws",transport="websocket",code="1009"\} 1/)
  t.match(scrape, /portcullis_closes_total\{route="\/ws",transport="websocket",code="4001"\} 1/)
  t.match(scrape, /portcullis_closes_total\{route="\/ws",transport="long-poll",code="4001"\} 1/, 'the revocation closed the long-poll session too')
  t.match(scrape, /# TYPE portcullis_connections gauge/)
  t.match(scrape, /portcullis_connections\{route="\/ws",transport="websocket"\} 0/)
  t.match(scrape, /portcullis_revocations_total 1/)
  t.match(scrape, /portcullis_decision_duration_seconds_bucket\{route="\/ws",transport="websocket",le="0\.00001"\}/)
  t.match(scrape, /portcullis_decision_duration_seconds_count\{route="\/ws",transport="long-poll"\} [1-9]/)
  for (const value of ['evil.example', 'app.example', '127.0.0.1', sid, cookie]) t.notOk(scrape.includes(value), `no client value in labels (${value.slice(0, 12)})`)
})

t.test('close codes a peer chooses are folded into their range, so labels stay bounded', async (t) => {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ readers: [exporter] })
  t.teardown(() => meterProvider.shutdown())
  const s = await secureApp(t, { meterProvider })
  const { cookie } = await s.login()
  for (const code of [4321, 4322, 3999]) {
    const r = await openWs(s, cookie)
    r.ws?.close(code)
    await closed(r.ws!)
  }
  await waitFor(() => s.app.wsPolicy.stats().connections === 0)
  const { resourceMetrics } = await exporter.collect()
  const { PrometheusSerializer } = await import('@opentelemetry/exporter-prometheus')
  const scrape = new PrometheusSerializer(undefined, false, undefined, true, true).serialize(resourceMetrics)
  t.match(scrape, /portcullis_closes_total\{route="\/ws",transport="websocket",code="4xxx"\} 2/)
  t.match(scrape, /portcullis_closes_total\{route="\/ws",transport="websocket",code="3xxx"\} 1/)
  t.notOk(scrape.includes('4321'), 'no label per client code')
})

t.test('metrics: false records nothing, and bad telemetry options fail at startup', async (t) => {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ readers: [exporter] })
  t.teardown(() => meterProvider.shutdown())
  const s = await secureApp(t, { meterProvider, metrics: false })
  const { cookie } = await s.login()
  t.equal((await openWs(s, cookie, EVIL)).status, 403)
  const { resourceMetrics } = await exporter.collect()
  t.equal(resourceMetrics.scopeMetrics.length, 0)
  for (const [opts, msg] of [
    [{ auditMaxInFlight: 0 }, /auditMaxInFlight must be an integer/],
    [{ auditTimeoutMs: 1.5 }, /auditTimeoutMs must be an integer/],
    [{ metrics: 'yes' }, /metrics must be a boolean/],
    [{ meterProvider: {} }, /meterProvider must be an OpenTelemetry MeterProvider/]
  ] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(portcullis, opts as never) }, { code: 'PORTCULLIS_INVALID_OPTION', message: msg })
  }
})
