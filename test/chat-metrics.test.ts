/**
 * The chat's telemetry as an operator meets it: a real scrape of the Prometheus endpoint on its
 * own listener after denials on both doors, a message-guard close, a logout and an expiry; the
 * public port never serves /metrics; the JSON-lines audit file holds every security event and
 * no secret.
 */
import t from 'tap'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildChat } from '../examples/chat/src/app.js'
import { jsonLinesAudit, startMetricsServer } from '../examples/chat/src/telemetry.js'
import { closed, listen, waitFor, wsOpen } from './helpers/index.js'

const SECRET = 'chat-metrics-test-secret-0123456789abcdef'

t.test('the metrics endpoint reports denials on both doors, guard closes, logouts and expiries; the public port has no /metrics', async (t) => {
  const metrics = await startMetricsServer(0)
  t.teardown(() => metrics.close())
  const auditPath = join(mkdtempSync(join(tmpdir(), 'portcullis-audit-')), 'audit.jsonl')
  const audit = jsonLinesAudit(auditPath)
  const app = await buildChat({ sessionSecret: SECRET, logger: false, clientBundle: Buffer.from(''), sessionTtlMs: 2500, meterProvider: metrics.meterProvider, audit: audit.sink })
  t.teardown(() => app.close())
  const { http, ws, origin } = await listen(app)

  async function login (user: string): Promise<string> {
    const res = await fetch(`${http}/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin }, body: JSON.stringify({ user, password: 'demo' }) })
    t.equal(res.status, 200, `${user} logs in`)
    return (res.headers.get('set-cookie') ?? '').split(';')[0]
  }
  const alice = await login('alice')
  const bob = await login('bob')
  const open = (cookie: string, from = origin): ReturnType<typeof wsOpen> => wsOpen(`${ws}/chat`, { origin: from, protocols: 'chat.v1', headers: { cookie } })

  // denials, on both doors
  t.equal((await open(alice, 'https://evil.example')).status, 403)
  const lp = await fetch(`${http}/chat/_lp/open`, { method: 'POST', headers: { 'x-portcullis-fallback': '1', 'content-type': 'application/json', origin: 'https://evil.example', cookie: alice }, body: '{"protocols":["chat.v1"]}' })
  t.equal(lp.status, 403)
  // a message-guard close: a message that breaks the chat.v1 schema
  const bad = await open(alice)
  bad.ws?.send(JSON.stringify({ type: 'shout', text: 'hi' }))
  t.equal((await closed(bad.ws!)).code, 1008)
  // a logout closes alice's live socket with 4001
  const live = await open(alice)
  t.ok(live.ws)
  const out = await fetch(`${http}/logout`, { method: 'POST', headers: { origin, cookie: alice } })
  t.equal(out.status, 200)
  t.equal((await closed(live.ws!)).code, 4001)
  // bob's session expires while his socket is open
  const expiring = await open(bob)
  t.equal((await closed(expiring.ws!)).code, 4002)
  await waitFor(() => app.wsPolicy.stats().connections === 0, 3000, 'every close seen by the server')

  const scrape = await (await fetch(metrics.url)).text()
  t.match(scrape, /portcullis_decisions_total\{[^}]*route="\/chat",transport="websocket",outcome="denied",code="PORTCULLIS_ORIGIN_NOT_ALLOWED",stage="origin"[^}]*\} 1/)
  t.match(scrape, /portcullis_decisions_total\{[^}]*route="\/chat",transport="long-poll",outcome="denied",code="PORTCULLIS_ORIGIN_NOT_ALLOWED",stage="origin"[^}]*\} 1/)
  t.match(scrape, /portcullis_closes_total\{[^}]*route="\/chat",transport="websocket",code="1008"[^}]*\} 1/)
  t.match(scrape, /portcullis_closes_total\{[^}]*route="\/chat",transport="websocket",code="4001"[^}]*\} 1/)
  t.match(scrape, /portcullis_closes_total\{[^}]*route="\/chat",transport="websocket",code="4002"[^}]*\} 1/)
  t.match(scrape, /portcullis_revocations_total\{[^}]*\} 1/)
  t.match(scrape, /portcullis_connections\{[^}]*route="\/chat",transport="websocket"[^}]*\} 0/)
  t.match(scrape, /portcullis_decision_duration_seconds_count\{[^}]*route="\/chat",transport="websocket"[^}]*\} [1-9]/)
  t.notOk(scrape.includes('evil.example'), 'no origin in any label')

  t.equal((await fetch(`${http}/metrics`)).status, 404, 'the public port never serves /metrics')
  t.equal((await fetch(metrics.url.replace('/metrics', '/other'))).status, 404)

  await audit.close()
  const lines = readFileSync(auditPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { action: string, code: string, closeCode?: number })
  t.ok(lines.some(e => e.action === 'deny'), 'denials in the audit file')
  t.ok(lines.some(e => e.action === 'close' && e.closeCode === 1008), 'the guard close')
  t.ok(lines.some(e => e.action === 'revoke'), 'the logout')
  t.ok(lines.some(e => e.action === 'close' && e.closeCode === 4002), 'the expiry')
  const text = readFileSync(auditPath, 'utf8')
  for (const cookie of [alice, bob]) t.notOk(text.includes(cookie.split('=')[1].slice(0, 20)), 'no cookie value in the audit file')
  t.equal(audit.dropped(), 0)
})
