import t from 'tap'
import https from 'node:https'
import { coreApp } from './helpers.js'
import { listen, wsOpen, rawUpgrade, rawHttp, nextMessages, testTls } from '../../../test/helpers/index.js'

const ORIGIN = 'https://app.example.com'

async function app (t: Parameters<typeof coreApp>[0]) {
  const a = await coreApp(t)
  let reached = 0
  a.wsPolicy.addStage({ name: 'count', phase: 'custom', evaluate: () => { reached++ } })
  a.get('/ws', { websocket: true, wsPolicy: { testOrigins: [ORIGIN] } }, (socket) => socket.send('hi'))
  a.get('/plain', async () => ({ ok: true }))
  const addr = await listen(a)
  return { app: a, ...addr, reached: () => reached }
}

const malformed: Array<[string, Record<string, string | null | string[]>, { method?: string, version?: string }, number, string]> = [
  ['a missing Sec-WebSocket-Key', { 'Sec-WebSocket-Key': null }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['no Host header', { Host: null }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['a Sec-WebSocket-Key that is not 16 bytes of base64', { 'Sec-WebSocket-Key': 'c2hvcnQ=' }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['a Sec-WebSocket-Key with a non-base64 character', { 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25j!Q==' }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['a Sec-WebSocket-Key with non-zero padding bits', { 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZR==' }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['two Sec-WebSocket-Key headers', { 'Sec-WebSocket-Key': ['dGhlIHNhbXBsZSBub25jZQ==', 'dGhlIHNhbXBsZSBub25jZQ=='] }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['the draft version 8', { 'Sec-WebSocket-Version': '8' }, {}, 426, 'PORTCULLIS_UNSUPPORTED_VERSION'],
  ['a missing version', { 'Sec-WebSocket-Version': null }, {}, 426, 'PORTCULLIS_UNSUPPORTED_VERSION'],
  ['two version headers', { 'Sec-WebSocket-Version': ['13', '13'] }, {}, 426, 'PORTCULLIS_UNSUPPORTED_VERSION'],
  ['HTTP/1.0', {}, { version: '1.0' }, 400, 'PORTCULLIS_BAD_HANDSHAKE'],
  ['Upgrade: h2c', { Upgrade: 'h2c' }, {}, 400, 'PORTCULLIS_BAD_HANDSHAKE']
]

for (const [what, headers, opts, status, code] of malformed) {
  t.test(`an upgrade with ${what} gets ${status} ${code} and never reaches a stage`, async (t) => {
    const { port, reached } = await app(t)
    const r = await rawUpgrade(port, '/ws', { Origin: ORIGIN, ...headers }, opts)
    t.equal(r.status, status)
    t.notOk(r.raw.startsWith('HTTP/1.1 101'))
    t.equal(JSON.parse(r.body).code, code)
    if (status === 426) t.equal(r.headers['sec-websocket-version'], '13', '426 names the version we speak')
    t.equal(reached(), 0)
  })
}

t.test('a POST upgrade to a WebSocket route gets a 4xx and never a 101', async (t) => {
  const { port, reached } = await app(t)
  const r = await rawUpgrade(port, '/ws', { Origin: ORIGIN }, { method: 'POST' })
  t.ok(r.status >= 400 && r.status < 500, `status ${r.status}`)
  t.equal(reached(), 0)
})

t.test('an upgrade to a route that is not a WebSocket route is refused with 400', async (t) => {
  const { port } = await app(t)
  const r = await rawUpgrade(port, '/plain', { Origin: ORIGIN })
  t.equal(r.status, 400)
  t.equal(JSON.parse(r.body).code, 'PORTCULLIS_NOT_A_WEBSOCKET_ROUTE')
})

t.test('an upgrade to an unknown path gets 404', async (t) => {
  const { port } = await app(t)
  const r = await rawUpgrade(port, '/nowhere', { Origin: ORIGIN })
  t.equal(r.status, 404)
})

t.test('a plain GET to a WebSocket route gets 404, not a policy answer', async (t) => {
  const { port } = await app(t)
  const r = await rawHttp(port, 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
  t.equal(r.status, 404)
})

t.test('a valid raw upgrade gets a 101 with no Sec-WebSocket-Protocol echoed when no stage chose one', async (t) => {
  const { port } = await app(t)
  const r = await rawUpgrade(port, '/ws', { Origin: ORIGIN, 'Sec-WebSocket-Protocol': 'evil, other' })
  t.equal(r.status, 101)
  t.equal(r.headers['sec-websocket-protocol'], undefined)
})

t.test('garbage and half-sent requests never crash the server, which keeps serving', async (t) => {
  const { port, ws } = await app(t)
  const junk = [
    'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ' + 'A'.repeat(10000) + '\r\n\r\n',
    'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    '\x00\x01\x02\x03\r\n\r\n',
    'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n'
  ]
  for (const j of junk) await rawHttp(port, j, { timeoutMs: 300 }).catch(() => undefined)
  const r = await wsOpen(`${ws}/ws`, { origin: ORIGIN })
  t.ok(r.ws, 'still serving')
  r.ws!.close()
})

t.test('wss: the same policy applies on an https server', async (t) => {
  const tls = testTls()
  const a = await coreApp(t, {}, { https: tls } as never)
  a.get('/ws', { websocket: true, wsPolicy: { testOrigins: [ORIGIN] } }, (socket, request) => socket.send(request.protocol))
  const { ws, port } = await listen(a)
  t.match(ws, /^wss:/)
  const ok = await wsOpen(`${ws}/ws`, { origin: ORIGIN, ca: tls.cert })
  t.ok(ok.ws, 'allowed over TLS')
  t.same(await nextMessages(ok.ws!), ['https'], 'the handler sees an https request')
  ok.ws!.close()
  const denied = await wsOpen(`${ws}/ws`, { origin: 'https://evil.example', ca: tls.cert })
  t.equal(denied.status, 403)
  t.equal(JSON.parse(denied.body!).code, 'TEST_ORIGIN_DENIED')
  const raw = await rawUpgrade(port, '/ws', { Origin: 'https://evil.example' }, { tls: true })
  t.equal(raw.status, 403)
  // and plain HTTPS requests still work on the same server
  const status = await new Promise<number | undefined>((resolve, reject) => {
    https.get(`https://127.0.0.1:${port}/ws`, { ca: tls.cert }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)) }).on('error', reject)
  })
  t.equal(status, 404)
})
