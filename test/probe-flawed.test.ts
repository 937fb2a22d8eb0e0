/**
 * portcullis-probe against the holes people ship, in servers written here without Portcullis
 * (test/helpers/probe-servers.ts): each check fails where its hole is and passes where the
 * same server closes it. probe-chat.test.ts shows every check passing on the sound app; the
 * last test here shows every check that can fail failing somewhere.
 */
import t, { type Test } from 'tap'
import { checkDefinitions, probe, type Check } from '@portcullis/probe'
import { APP_COOKIE, APP_ORIGIN, APP_PROTOCOL, APP_SID, fallbackServer, handRolled, wsServer, type Running } from './helpers/probe-servers.js'

const key = (id: string, door: string): string => `${id}@${door}`
const failedSomewhere = new Set<string>()

async function probed (tt: Test, start: () => Promise<Running>, fallback = false, timeoutMs = 1000): Promise<Map<string, Check>> {
  const server = await start()
  tt.teardown(() => server.close())
  const report = await probe({ url: server.url, origin: APP_ORIGIN, cookie: APP_COOKIE, protocol: APP_PROTOCOL, fallback, timeoutMs, ratePerSecond: 50 })
  tt.notOk(JSON.stringify(report).includes(APP_SID), 'the cookie is redacted from every detail')
  tt.equal(report.findings, report.checks.filter((c) => c.result === 'fail').length, 'findings counts the failures')
  const byKey = new Map(report.checks.map((c) => [key(c.id, c.door), c]))
  for (const c of report.checks) if (c.result === 'fail') failedSomewhere.add(key(c.id, c.door))
  return byKey
}

function expect (tt: Test, checks: Map<string, Check>, result: Check['result'], keys: string[]): void {
  for (const k of keys) {
    const c = checks.get(k)
    tt.equal(c?.result, result, `${k}: ${result}${c === undefined ? '' : ` (${c.detail})`}`)
  }
}

const ws = (ids: string[]): string[] => ids.map((id) => key(id, 'websocket'))
const lp = (ids: string[]): string[] => ids.map((id) => key(id, 'long-poll'))
const ORIGIN_IDS = ['origin.cross-site', 'origin.suffix', 'origin.prefix', 'origin.userinfo', 'origin.list', 'origin.trailing-dot',
  'origin.null', 'origin.missing', 'origin.scheme', 'origin.port', 'origin.case', 'origin.duplicate']
const FRAMING_IDS = ['framing.unmasked', 'framing.rsv1', 'framing.rsv2-rsv3', 'framing.invalid-utf8', 'framing.control-too-long',
  'framing.fragmented-control', 'framing.reserved-opcode', 'framing.orphan-continuation', 'framing.bad-close-code']
const LIMITS_IDS = ['limits.declared-100mib', 'limits.endless-fragments', 'limits.empty-fragments']
const LP_ALL = checkDefinitions.filter((d) => d.door === 'long-poll').map((d) => key(d.id, d.door))

t.test('a plain ws route with no origin check fails every origin check, and ws\'s defaults fail the limits', async (tt) => {
  const checks = await probed(tt, () => wsServer(), true)
  expect(tt, checks, 'fail', ws([...ORIGIN_IDS, 'subprotocol.unregistered', 'subprotocol.preference', 'subprotocol.many-values',
    'handshake.version-8', 'handshake.other-path', ...LIMITS_IDS]))
  // ws itself parses frames and the protocol header strictly
  expect(tt, checks, 'pass', ws([...FRAMING_IDS, 'subprotocol.empty-element', 'subprotocol.bad-token', 'subprotocol.duplicate',
    'handshake.bad-key', 'handshake.duplicate-key', 'handshake.missing-key', 'handshake.post']))
  for (const id of ['session.no-cookie', 'session.tampered', 'session.forged', 'session.tossed-first', 'session.tossed-last']) {
    tt.match(checks.get(key(id, 'websocket')), { result: 'skip', detail: /does not need one/ }, `${id} is skipped: the route does not need the cookie`)
  }
  for (const k of LP_ALL) {
    tt.match(checks.get(k), { result: 'skip', detail: 'no long-poll door at /chat/_lp/open (404)' }, `${k} is skipped: --fallback, but no long-poll door`)
  }
})

t.test('a naive endsWith origin check fails the suffix, scheme and duplicated-header lookalikes and passes the others', async (tt) => {
  const checks = await probed(tt, () => wsServer({
    origin: (o) => o !== undefined && o.endsWith('app.test'),
    session: 'exact',
    echoProtocol: false,
    path: '/chat',
    maxPayload: 64 * 1024,
    maxFragments: 1000,
    echoRefusal: true
  }))
  expect(tt, checks, 'fail', ws(['origin.suffix', 'origin.scheme', 'origin.duplicate', 'handshake.refusal-echo', 'session.tossed-first']))
  expect(tt, checks, 'pass', ws(['origin.cross-site', 'origin.prefix', 'origin.userinfo', 'origin.list', 'origin.trailing-dot', 'origin.null',
    'origin.missing', 'origin.port', 'origin.case', 'session.no-cookie', 'session.tampered', 'session.forged', 'session.tossed-last',
    'subprotocol.unregistered', 'subprotocol.preference', 'handshake.other-path', ...LIMITS_IDS]))
})

t.test('a session check that only looks for a cookie fails the tampered, forged and tossed cookies', async (tt) => {
  const checks = await probed(tt, () => wsServer({ origin: (o) => o === APP_ORIGIN, session: 'presence', echoProtocol: false, path: '/chat', maxPayload: 64 * 1024, maxFragments: 1000 }))
  expect(tt, checks, 'fail', ws(['session.tampered', 'session.forged', 'session.tossed-first', 'session.tossed-last']))
  expect(tt, checks, 'pass', ws(['session.no-cookie', ...ORIGIN_IDS, 'handshake.refusal-echo', 'handshake.other-path', ...LIMITS_IDS]))
})

t.test('a hand-rolled upgrade that never parses frames fails every handshake, protocol-parsing, framing and limits check', async (tt) => {
  // it never answers a ping: each framing and limits check waits out the timeout twice
  const checks = await probed(tt, handRolled, false, 500)
  expect(tt, checks, 'fail', ws(['handshake.version-8', 'handshake.http-1.0', 'handshake.bad-key', 'handshake.duplicate-key', 'handshake.missing-key',
    'handshake.post', 'handshake.missing-host', 'handshake.other-path', 'subprotocol.unregistered', 'subprotocol.preference',
    'subprotocol.empty-element', 'subprotocol.bad-token', 'subprotocol.duplicate', 'subprotocol.many-values', ...FRAMING_IDS, ...LIMITS_IDS]))
  tt.match(checks.get('framing.unmasked@websocket'), { detail: /stayed open/ })
})

t.test('a fallback without the marker-header check fails the three marker checks and passes every other long-poll check', async (tt) => {
  const checks = await probed(tt, () => fallbackServer({ noMarker: true }), true)
  const marker = lp(['fallback.no-marker-open', 'fallback.no-marker-poll', 'fallback.no-marker-send'])
  expect(tt, checks, 'fail', marker)
  expect(tt, checks, 'pass', LP_ALL.filter((k) => !marker.includes(k)))
})

t.test('a fallback answering CORS with * fails both CORS checks and passes every other long-poll check', async (tt) => {
  const checks = await probed(tt, () => fallbackServer({ corsStar: true }), true)
  const cors = lp(['fallback.cors-preflight', 'fallback.cors-responses'])
  expect(tt, checks, 'fail', cors)
  expect(tt, checks, 'pass', LP_ALL.filter((k) => !cors.includes(k)))
})

t.test('a lax fallback (checks at open only, any body, JSONP, counter ids, no no-store) fails each of those checks', async (tt) => {
  const checks = await probed(tt, () => fallbackServer({ lax: true }), true)
  expect(tt, checks, 'fail', lp(['origin.cross-site', 'origin.suffix', 'origin.null', 'session.tampered', 'subprotocol.unregistered',
    'fallback.text-plain-open', 'fallback.text-plain-send', 'fallback.form-send', 'fallback.multipart-send', 'fallback.evil-origin-poll',
    'fallback.evil-origin-send', 'fallback.guessed-sid', 'fallback.sid-strength', 'fallback.query-string', 'fallback.jsonp',
    'fallback.sid-without-cookie', 'fallback.sid-other-cookie', 'fallback.cache-headers']))
  expect(tt, checks, 'pass', lp(['session.no-cookie', 'fallback.no-marker-open', 'fallback.no-marker-poll', 'fallback.no-marker-send',
    'fallback.cors-preflight', 'fallback.cors-responses']))
})

t.test('a server that ends every accepted connection at once gets framing and limits checks skipped, never passed', async (tt) => {
  const checks = await probed(tt, () => wsServer({ origin: (o) => o === APP_ORIGIN, echoProtocol: false, path: '/chat', closeOnConnect: true }))
  for (const k of ws([...FRAMING_IDS, ...LIMITS_IDS])) {
    tt.match(checks.get(k), { result: 'skip', detail: /ends an accepted connection before any bad frame \(close 1008\)/ }, `${k} is skipped with the reason`)
  }
})

t.test('a route behind a rate limiter that answers 429 gets its checks skipped, never passed', async (tt) => {
  const checks = await probed(tt, () => wsServer({ limitAfter: 1 }))
  for (const k of ws([...ORIGIN_IDS, 'subprotocol.unregistered', 'handshake.version-8'])) {
    tt.match(checks.get(k), { result: 'skip', detail: /answered 429 \(rate limit or overload\), which proves nothing/ }, `${k} is skipped`)
  }
  tt.same([...checks.values()].filter((c) => c.door === 'websocket' && c.result !== 'skip'), [], 'nothing passes or fails on 429s')
})

t.test('every check fails against at least one flawed server (session.no-cookie, by design, skips instead)', async (tt) => {
  const never = checkDefinitions.map((d) => key(d.id, d.door)).filter((k) => !failedSomewhere.has(k))
  tt.same(never.sort(), ['session.no-cookie@long-poll', 'session.no-cookie@websocket'])
})
