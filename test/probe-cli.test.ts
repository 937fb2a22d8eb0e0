/**
 * The `portcullis-probe` command, spawned as users run it (the workspace bin, which runs the
 * TypeScript source when there is no build): exit 0 with no finding, 1 with findings, 2 on a
 * usage error, an unreachable target or a refused baseline. The cookie is never printed.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { buildChat } from '../examples/chat/src/app.js'
import { probe } from '@portcullis/probe'
import { APP_COOKIE, APP_ORIGIN, APP_SID, wsServer } from './helpers/probe-servers.js'

const BIN = fileURLToPath(new URL('../packages/probe/bin/portcullis-probe.js', import.meta.url))
const ORIGIN = 'http://chat.test'

interface Ran { code: number | null, stdout: string, stderr: string }

function run (args: string[]): Promise<Ran> {
  return new Promise((resolve, reject) => {
    // no --conditions here: the bin must find its own way to the source
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += String(c) })
    child.stderr.on('data', (c: Buffer) => { stderr += String(c) })
    const timer = setTimeout(() => { child.kill(); reject(new Error('the probe did not exit within 90 s')) }, 90_000)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

async function chat (tt: Test): Promise<{ app: FastifyInstance, url: string, cookie: string }> {
  const app = await buildChat({ sessionSecret: 'probe-cli-secret-0123456789abcdefghijkl', logger: false, clientBundle: Buffer.from(''), allowedOrigins: [ORIGIN] })
  tt.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const res = await fetch(`http://127.0.0.1:${port}/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: ORIGIN }, body: JSON.stringify({ user: 'bob', password: 'demo' }) })
  return { app, url: `ws://127.0.0.1:${port}/chat`, cookie: (res.headers.get('set-cookie') ?? '').split(';')[0] }
}

async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const { port } = s.address() as { port: number }
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

t.test('exits 0 against the chat on both doors, with a plain table, a summary line and the plan stated first', async (tt) => {
  const c = await chat(tt)
  const r = await run([c.url, '--origin', ORIGIN, '--cookie', c.cookie, '--protocol', 'chat.v1', '--fallback'])
  tt.equal(r.code, 0, r.stderr)
  tt.match(r.stderr, /probing ws:\/\/127\.0\.0\.1:\d+\/chat and its long-poll door/, 'says where it will send')
  tt.match(r.stderr, /at most 200 connections, at most 20 per second/, 'says how much')
  tt.match(r.stderr, /Cookie \[redacted/, 'names the cookie without showing it')
  tt.match(r.stdout, /^RESULT\s+CHECK\s+DOOR\s+DETAIL/)
  tt.match(r.stdout, /pass\s+origin\.suffix\s+websocket/)
  tt.match(r.stdout, /pass\s+fallback\.evil-origin-poll\s+long-poll/)
  tt.match(r.stdout, /: \d+ checks, \d+ pass, 0 fail, 0 skip: no findings\n$/)
  tt.notOk(r.stdout.includes('\u001b['), 'no colour codes when stdout is not a TTY')
  const value = c.cookie.slice(c.cookie.indexOf('=') + 1)
  for (const s of [value, ...value.split('.')]) tt.notOk((r.stdout + r.stderr).includes(s), 'the cookie is never printed')
})

t.test('--json prints { target, checks, findings } and exits 1 against a route with findings', async (tt) => {
  const server = await wsServer()
  tt.teardown(() => server.close())
  const r = await run([server.url, '--origin', APP_ORIGIN, '--cookie', APP_COOKIE, '--protocol', 'chat.v1', '--json', '--timeout-ms', '1000', '--rate', '50'])
  tt.equal(r.code, 1)
  const report = JSON.parse(r.stdout)
  tt.same(Object.keys(report).sort(), ['checks', 'findings', 'target'])
  tt.equal(report.target, server.url)
  tt.ok(report.findings > 0)
  tt.equal(report.findings, report.checks.filter((c: { result: string }) => c.result === 'fail').length)
  tt.match(report.checks.find((c: { id: string }) => c.id === 'origin.cross-site'), { category: 'origin', door: 'websocket', result: 'fail', remedy: /Origin/ })
  tt.notOk((r.stdout + r.stderr).includes(APP_SID), 'the cookie is never printed')
})

t.test('exits 2 on usage errors, and says what is wrong', async (tt) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /URL of the route is required/],
    [['ws://127.0.0.1:1/chat'], /--origin is required/],
    [['http://127.0.0.1:1/chat', '--origin', ORIGIN], /ws:\/\/ or wss:\/\//],
    [['ws://127.0.0.1:1/chat', '--origin', 'http://chat.test/'], /serialized origin/],
    [['ws://127.0.0.1:1/chat', '--origin', ORIGIN, '--max-requests', '5000'], /maxRequests must be an integer from 1 to 1000/],
    [['ws://127.0.0.1:1/chat', '--origin', ORIGIN, '--flood'], /unknown option --flood/]
  ]
  for (const [args, message] of cases) {
    const r = await run(args)
    tt.equal(r.code, 2, `exit 2 for ${JSON.stringify(args)}`)
    tt.match(r.stderr, message)
    tt.match(r.stderr, /usage: portcullis-probe/)
  }
})

t.test('exits 2 when the target is unreachable or refuses the well-formed handshake', async (tt) => {
  const port = await freePort()
  const down = await run([`ws://127.0.0.1:${port}/chat`, '--origin', ORIGIN])
  tt.equal(down.code, 2)
  tt.match(down.stderr, /PORTCULLIS_PROBE_UNREACHABLE/)
  const c = await chat(tt)
  const refused = await run([c.url, '--origin', 'http://not-allowed.test', '--cookie', c.cookie, '--protocol', 'chat.v1'])
  tt.equal(refused.code, 2)
  tt.match(refused.stderr, /PORTCULLIS_PROBE_BASELINE_REFUSED.*403/)
  tt.notOk(refused.stderr.includes(c.cookie.slice(c.cookie.indexOf('=') + 1)), 'the cookie is never printed')
})

t.test('the API refuses bad options with PORTCULLIS_PROBE_BAD_OPTION before sending anything', async (tt) => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ url: 'ws://127.0.0.1:1/', origin: 'chat.test' }, /serialized origin/],
    [{ url: 'ws://127.0.0.1:1/', origin: ORIGIN, protocol: 'a b' }, /one subprotocol token/],
    [{ url: 'ws://127.0.0.1:1/', origin: ORIGIN, cookie: 'a=b\r\nX-Evil: 1' }, /one line/],
    [{ url: 'ws://127.0.0.1:1/', origin: ORIGIN, ratePerSecond: 1000 }, /ratePerSecond must be an integer from 1 to 100/],
    [{ url: 'ws://127.0.0.1:1/', origin: ORIGIN, timeoutMs: 10 }, /timeoutMs must be an integer from 100 to 60000/]
  ]
  for (const [opts, message] of bad) {
    await tt.rejects(probe(opts as never), { code: 'PORTCULLIS_PROBE_BAD_OPTION', message })
  }
})
