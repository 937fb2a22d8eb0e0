/**
 * The probe's own parts, alone: the lookalikes it derives from an origin, the altered cookies,
 * redaction, the entropy estimate, the frame builder, the HTTP answer reader over a raw TCP
 * server, the argument parser and the table. The cross-package runs are in test/probe-*.test.ts.
 */
import t, { type Test } from 'tap'
import { createServer, type Socket } from 'node:net'
import { lookalikes } from '../src/checks-websocket.js'
import { entropyBits } from '../src/checks-fallback.js'
import { Budget, BudgetSpent, Context, cookiePairs, describe, forge, joinCookies, tamper } from '../src/context.js'
import { exchange, frame, head, Op, WireError, type Target } from '../src/wire.js'
import { parseArgs } from '../src/cli.js'
import { formatReport, summary } from '../src/report.js'
import type { Report } from '../src/types.js'

t.test('lookalikes are built from the given origin, keeping its port', async (t) => {
  t.same(lookalikes('https://app.example.com'), {
    allowed: 'https://app.example.com',
    crossSite: 'https://portcullis-probe.invalid',
    suffix: 'https://evil-app.example.com',
    prefix: 'https://app.example.com.portcullis-probe.invalid',
    userinfo: 'https://app.example.com@portcullis-probe.invalid',
    list: 'https://app.example.com https://portcullis-probe.invalid',
    trailingDot: 'https://app.example.com.',
    scheme: 'http://app.example.com',
    port: 'https://app.example.com:8443',
    upper: 'HTTPS://APP.EXAMPLE.COM'
  })
  const l = lookalikes('http://127.0.0.1:8443')
  t.equal(l.trailingDot, 'http://127.0.0.1.:8443')
  t.equal(l.port, 'http://127.0.0.1:8444', 'another port than the allowed one')
  t.equal(l.suffix, 'http://evil-127.0.0.1:8443')
})

t.test('a tampered cookie differs in exactly one character of the same class; a forged one keeps the length', async (t) => {
  for (const v of ['abc.DEF123', 's%3Aabcdef.XYZ', 'zzzz', '9999', 'Z', '%%%']) {
    const x = tamper(v)
    t.not(x, v, `${v} is changed`)
    if (/[A-Za-z0-9]/.test(v)) {
      t.equal(x.length, v.length)
      const diff = [...v].filter((c, i) => c !== x[i])
      t.equal(diff.length, 1, `${v}: one character changed`)
    }
  }
  t.equal(tamper('s%3Aabc'), 's%3Abbc', 'the percent-encoding is left alone while a letter is found')
  t.equal(forge('x'.repeat(43)).length, 43)
  t.match(forge('x'.repeat(43)), /^[A-Za-z0-9_-]+$/)
})

t.test('a Cookie header splits into its pairs and joins back', async (t) => {
  t.same(cookiePairs('a=1; b=two=2;c=3;  ; flag'), [['a', '1'], ['b', 'two=2'], ['c', '3'], ['', 'flag']])
  t.equal(joinCookies(cookiePairs('a=1; b=2; flag')), 'a=1; b=2; flag')
})

t.test('redaction removes the cookie, each of its values and their URL-encoded forms', async (t) => {
  const ctx = new Context({
    target: { secure: false, hostname: '127.0.0.1', port: 1, host: '127.0.0.1:1', path: '/' },
    shown: 'ws://127.0.0.1:1/',
    origin: 'http://a.test',
    cookie: 'sid=s:abc.def/+; theme=dark',
    timeoutMs: 1000,
    budget: new Budget(1, 1)
  })
  const out = ctx.redact('got sid=s:abc.def/+ and s%3Aabc.def%2F%2B and dark mode and theme=dark')
  t.notMatch(out, /abc|dark/)
  t.match(out, /\[redacted\]/)
  ctx.secret('sessionid-xyz')
  t.equal(ctx.redact('id sessionid-xyz'), 'id [redacted]', 'secrets learned during the run too')
})

t.test('the entropy estimate reads the alphabet and the length of an id', async (t) => {
  const cases: Array<[string, number]> = [
    ['1', 3],
    ['12345', 16],
    ['f'.repeat(32), 128],
    ['0f8fad5b-d9cb-469f-a165-70867728950e', 128],
    ['kX2f'.repeat(8), 190],
    ['aZ'.repeat(10) + 'q', 125]
  ]
  for (const [id, bits] of cases) t.equal(entropyBits(id), bits, id)
})

t.test('frames are masked by default, with 7-, 16- and 64-bit lengths, and may declare a length they do not carry', async (t) => {
  const small = frame({ opcode: Op.TEXT, payload: 'hi' })
  t.equal(small[0], 0x81)
  t.equal(small[1], 0x80 | 2, 'mask bit and length')
  t.equal(small.length, 2 + 4 + 2)
  const key = small.subarray(2, 6)
  t.equal(String.fromCharCode(small[6] ^ key[0], small[7] ^ key[1]), 'hi', 'the payload is masked with the key')
  const unmasked = frame({ opcode: Op.TEXT, payload: 'hi', mask: false, fin: false, rsv: 4 })
  t.same([...unmasked], [0x41, 2, 0x68, 0x69])
  const mid = frame({ opcode: Op.BINARY, payload: Buffer.alloc(300) })
  t.same([mid[1], mid.readUInt16BE(2)], [0x80 | 126, 300])
  const big = frame({ opcode: Op.BINARY, payload: Buffer.alloc(16), declaredLength: 100 * 1024 * 1024 })
  t.equal(big[1], 0x80 | 127)
  t.equal(big.readBigUInt64BE(2), 104857600n)
  t.equal(big.length, 10 + 4 + 16, 'only the header declares 100 MiB: 16 bytes go out')
})

/** A raw TCP server that answers every connection with `answer` (or nothing). */
async function rawServer (t: Test, answer: (socket: Socket) => void): Promise<Target> {
  const server = createServer((socket) => { socket.on('error', () => {}); socket.once('data', () => answer(socket)) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sockets = new Set<Socket>()
  server.on('connection', (s) => { sockets.add(s) })
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  const { port } = server.address() as { port: number }
  return { secure: false, hostname: '127.0.0.1', port, host: `127.0.0.1:${port}`, path: '/' }
}

const GET = head('GET', '/', '1.1', [['Host', 'x']])

t.test('the answer reader handles Content-Length, chunked and close-delimited bodies, every header line kept', async (t) => {
  const cl = await rawServer(t, (s) => s.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 21\r\nX-A: 1\r\nX-A: 2\r\n\r\n{"code":"NOPE_CODE"}'))
  const a = await exchange(cl, GET, 2000)
  t.equal(a.status, 403)
  t.same(a.headers.get('x-a'), ['1', '2'])
  t.equal(describe(a), '403 NOPE_CODE')
  const chunked = await rawServer(t, (s) => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'))
  t.equal(String((await exchange(chunked, GET, 2000)).body), 'hello world')
  const closed = await rawServer(t, (s) => s.end('HTTP/1.0 400 Bad\r\n\r\nbye'))
  const c = await exchange(closed, GET, 2000)
  t.same([c.status, String(c.body)], [400, 'bye'])
  t.equal(describe(c), '400', 'a body without a code shows the status only')
})

t.test('a server that never answers is a timeout, a closed one a closed connection, a 101 an open socket', async (t) => {
  const silent = await rawServer(t, () => {})
  const timeout = await exchange(silent, GET, 300).then(() => undefined, (e: unknown) => e)
  t.ok(timeout instanceof WireError)
  t.match(timeout, { kind: 'timeout', message: 'no answer within 300 ms' })
  const hangup = await rawServer(t, (s) => s.destroy())
  t.match(await exchange(hangup, GET, 2000).then(() => undefined, (e: unknown) => e), { kind: 'closed' })
  const up = await rawServer(t, (s) => s.write(Buffer.concat([Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'), Buffer.from([0x88, 0x02, 0x03, 0xe8])])))
  const a = await exchange(up, GET, 2000)
  t.equal(a.status, 101)
  t.ok(a.upgraded !== undefined && !a.upgraded.socket.destroyed, 'the socket stays open for frames')
  t.same([...(a.upgraded?.rest ?? [])], [0x88, 0x02, 0x03, 0xe8], 'bytes after the head are kept')
  a.upgraded?.socket.destroy()
})

t.test('the budget refuses past its maximum and spaces connections by the rate', async (t) => {
  const b = new Budget(3, 20)
  const start = Date.now()
  await b.take()
  await b.take()
  await b.take()
  t.ok(Date.now() - start >= 2 * 50 * 0.9, 'three connections at 20 per second take at least 100 ms')
  const err = await b.take().then(() => undefined, (e: Error) => e)
  t.ok(err instanceof BudgetSpent, 'a fourth connection is refused')
  t.match(err, { message: 'request budget of 3 spent' })
})

t.test('arguments: both --flag value and --flag=value, and a clear error for anything else', async (t) => {
  const { opts, json } = parseArgs(['ws://h/p', '--origin=http://a.test', '--cookie', 'a=1; b=2', '--fallback', '--json', '--max-requests', '50', '--rate=5'])
  t.match(opts, { url: 'ws://h/p', origin: 'http://a.test', cookie: 'a=1; b=2', fallback: true, maxRequests: 50, ratePerSecond: 5 })
  t.equal(json, true)
  t.throws(() => parseArgs(['ws://h/p', '--origin', 'x', '--origin', 'y']), /given twice/)
  t.throws(() => parseArgs(['ws://h/p', '--origin']), /needs a value/)
  t.throws(() => parseArgs(['ws://h/p', '--origin', 'x', '--timeout-ms', '1e3']), /whole number/)
  t.throws(() => parseArgs(['ws://h/p', 'ws://h/q', '--origin', 'x']), /only one URL/)
  t.throws(() => parseArgs(['ws://h/p', '--origin', 'x', '--json=yes']), /unknown option --json/)
  t.equal(parseArgs(['--help']).help, true)
})

t.test('the table puts the remedy under each failure only, colours only when asked, and ends with the summary', async (t) => {
  const report: Report = {
    target: 'ws://h/p',
    checks: [
      { id: 'origin.null', category: 'origin', door: 'websocket', result: 'pass', detail: 'refused', remedy: 'never allow null' },
      { id: 'origin.suffix', category: 'origin', door: 'websocket', result: 'fail', detail: 'accepted', remedy: 'compare exactly' },
      { id: 'session.tampered', category: 'session', door: 'websocket', result: 'skip', detail: 'no --cookie given', remedy: 'verify it' }
    ],
    findings: 1
  }
  const plain = formatReport(report)
  t.notOk(plain.includes('\u001b['))
  t.match(plain, /FAIL {4}origin\.suffix/)
  t.match(plain, /remedy: compare exactly/)
  t.notMatch(plain, /never allow null|verify it/, 'no remedy under a pass or a skip')
  t.equal(plain.split('\n').pop(), 'ws://h/p: 3 checks, 1 pass, 1 fail, 1 skip: 1 finding')
  t.ok(formatReport(report, { color: true }).includes('\u001b[31;1mFAIL'), 'a failure in bold red on a TTY')
  t.equal(summary({ ...report, checks: [report.checks[0]], findings: 0 }), 'ws://h/p: 1 checks, 1 pass, 0 fail, 0 skip: no findings')
})
