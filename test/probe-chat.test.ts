/**
 * portcullis-probe against the sound app: the chat example, in-process on 127.0.0.1, probed
 * with its own origin, a logged-in cookie and chat.v1 on both doors. Every check passes, the
 * report holds no secret, the bounds hold, and the chat serves a fresh client afterwards.
 */
import t, { type Test } from 'tap'
import { request as httpsRequest } from 'node:https'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { buildChat } from '../examples/chat/src/app.js'
import { checkDefinitions, probe, type Report } from '@portcullis/probe'
import { testTls } from './helpers/index.js'

const ORIGIN = 'http://chat.test'

interface Chat { app: FastifyInstance, http: string, ws: string, cookie: string, connections: number[] }

async function chat (tt: Test): Promise<Chat> {
  const app = await buildChat({ sessionSecret: 'probe-test-secret-0123456789abcdefghij', logger: false, clientBundle: Buffer.from(''), allowedOrigins: [ORIGIN] })
  tt.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const connections: number[] = []
  app.server.on('connection', () => connections.push(Date.now()))
  const http = `http://127.0.0.1:${port}`
  const res = await fetch(http + '/login', { method: 'POST', headers: { 'content-type': 'application/json', origin: ORIGIN }, body: JSON.stringify({ user: 'alice', password: 'demo' }) })
  tt.equal(res.status, 200, 'logged in through the chat\'s own /login')
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0]
  return { app, http, ws: `ws://127.0.0.1:${port}/chat`, cookie, connections }
}

/** A fresh, well-behaved client says something and hears it back. */
function sayAndHear (c: Chat): Promise<{ type: string, user: string, text: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(c.ws, 'chat.v1', { origin: ORIGIN, headers: { cookie: c.cookie } })
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('no answer from the chat')) }, 5000)
    ws.on('open', () => ws.send(JSON.stringify({ type: 'say', text: 'still here' })))
    ws.on('message', (data) => {
      const m = JSON.parse(String(data))
      if (m.type !== 'said') return
      clearTimeout(timer)
      ws.close()
      resolve(m)
    })
    ws.on('error', reject)
  })
}

const secretsOf = (cookie: string): string[] => {
  const value = cookie.slice(cookie.indexOf('=') + 1)
  return [cookie, value, ...value.split('.'), encodeURIComponent(value)].filter((s) => s.length >= 8)
}

t.test('the chat probed on both doors with its own origin, cookie and chat.v1 passes every check, and serves a fresh client after', async (tt) => {
  const c = await chat(tt)
  const report: Report = await probe({ url: c.ws, origin: ORIGIN, cookie: c.cookie, protocol: 'chat.v1', fallback: true })
  tt.equal(report.findings, 0, 'no finding')
  tt.equal(report.target, c.ws)
  tt.ok(report.checks.length >= 30, `${report.checks.length} checks, at least 30`)
  tt.equal(report.checks.length, checkDefinitions.length, 'every known check ran')
  const notPassed = report.checks.filter((ch) => ch.result !== 'pass')
  tt.same(notPassed, [], 'every check passes: none failed, none was skipped')
  tt.same([...new Set(report.checks.map((ch) => ch.category))].sort(), ['fallback', 'framing', 'handshake', 'limits', 'origin', 'session', 'subprotocol'])
  tt.same([...new Set(report.checks.map((ch) => ch.door))].sort(), ['long-poll', 'websocket'])
  for (const ch of report.checks) {
    tt.match(ch, { id: /^[a-z]+\.[a-z0-9.-]+$/, detail: /\S/, remedy: /\S/ }, `${ch.id} (${ch.door}) has a detail and a remedy`)
    tt.notMatch(ch.detail + ch.remedy, /[\r\n]/, `${ch.id} (${ch.door}) is one line each`)
  }
  const text = JSON.stringify(report)
  for (const s of secretsOf(c.cookie)) tt.notOk(text.includes(s), 'the report never contains the cookie or a part of it')

  const said = await sayAndHear(c)
  tt.match(said, { type: 'said', user: 'alice', text: 'still here' }, 'a fresh WebSocket client is served')
  const open = await fetch(c.http + '/chat/_lp/open', {
    method: 'POST',
    headers: { 'content-type': 'application/json', origin: ORIGIN, cookie: c.cookie, 'x-portcullis-fallback': '1' },
    body: JSON.stringify({ protocols: ['chat.v1'] })
  })
  tt.equal(open.status, 200, 'a fresh long-poll client is served')
  tt.equal((await open.json()).protocol, 'chat.v1')
})

t.test('without --fallback the long-poll checks are skipped with the reason, and the WebSocket door still passes', async (tt) => {
  const c = await chat(tt)
  const report = await probe({ url: c.ws, origin: ORIGIN, cookie: c.cookie, protocol: 'chat.v1', timeoutMs: 3000 })
  tt.equal(report.findings, 0)
  const lp = report.checks.filter((ch) => ch.door === 'long-poll')
  tt.ok(lp.length > 0)
  tt.ok(lp.every((ch) => ch.result === 'skip' && ch.detail === 'not probed (pass --fallback)'), 'every long-poll check says why it was skipped')
  tt.ok(report.checks.filter((ch) => ch.door === 'websocket').every((ch) => ch.result === 'pass'))
})

t.test('the chat needs its cookie: without one the probe refuses to report, since every refusal would prove nothing', async (tt) => {
  const c = await chat(tt)
  await tt.rejects(probe({ url: c.ws, origin: ORIGIN, protocol: 'chat.v1' }), { code: 'PORTCULLIS_PROBE_BASELINE_REFUSED', message: /401/ })
  await tt.rejects(probe({ url: c.ws, origin: 'http://other.test', cookie: c.cookie, protocol: 'chat.v1' }), { code: 'PORTCULLIS_PROBE_BASELINE_REFUSED', message: /403/ })
  await tt.rejects(probe({ url: c.ws, origin: ORIGIN, cookie: c.cookie, protocol: 'chat.v2' }), { code: 'PORTCULLIS_PROBE_BASELINE_REFUSED' })
})

t.test('the request budget and the rate bound hold: past --max-requests the rest is skipped, never sent', async (tt) => {
  const c = await chat(tt)
  const before = c.connections.length
  const report = await probe({ url: c.ws, origin: ORIGIN, cookie: c.cookie, protocol: 'chat.v1', fallback: true, maxRequests: 12, ratePerSecond: 10 })
  const seen = c.connections.slice(before)
  tt.ok(seen.length <= 12, `the server saw ${seen.length} connections, at most 12`)
  tt.ok(seen[seen.length - 1] - seen[0] >= 11 * 100 * 0.9, 'at most 10 connections per second')
  const spent = report.checks.filter((ch) => ch.result === 'skip' && /request budget/.test(ch.detail))
  tt.ok(spent.length > 0, 'the checks past the budget are skipped and say so')
  tt.equal(report.findings, 0, 'a spent budget is not a finding')
  tt.equal((await sayAndHear(c)).text, 'still here')
})

t.test('a wss:// route over TLS (a private CA given as ca) passes every check on both doors', async (tt) => {
  const { key, cert } = testTls()
  const app = await buildChat({ sessionSecret: 'probe-tls-secret-0123456789abcdefghijkl', logger: false, clientBundle: Buffer.from(''), allowedOrigins: ['https://chat.test'], https: { key, cert } })
  tt.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const cookie = await new Promise<string>((resolve, reject) => {
    const body = JSON.stringify({ user: 'alice', password: 'demo' })
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/login', method: 'POST', ca: cert, headers: { 'content-type': 'application/json', origin: 'https://chat.test', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume()
      resolve(String(res.headers['set-cookie']?.[0] ?? '').split(';')[0])
    })
    req.on('error', reject)
    req.end(body)
  })
  tt.match(cookie, /^__Host-chat=/, 'logged in over https')
  const report = await probe({ url: `wss://127.0.0.1:${port}/chat`, origin: 'https://chat.test', cookie, protocol: 'chat.v1', fallback: true, ca: cert })
  tt.equal(report.findings, 0)
  tt.same(report.checks.filter((ch) => ch.result !== 'pass'), [], 'every check passes over TLS too')
  await tt.rejects(probe({ url: `wss://127.0.0.1:${port}/chat`, origin: 'https://chat.test', cookie, protocol: 'chat.v1' }),
    { code: 'PORTCULLIS_PROBE_UNREACHABLE' }, 'without the CA, the certificate is not trusted and nothing is probed')
})
