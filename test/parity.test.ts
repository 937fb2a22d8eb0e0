/**
 * Parity: the WebSocket door and its fallback twins (long-poll, and the v2 stream), fed the same table of requests (origins,
 * identity cookies, subprotocol offers, message limits, revocation, shutdown), give the same
 * HTTP status and code before the connection, and the same close code after it.
 *
 * Real plugins: @portcullis/origin-guard (its own origin table, reused row for row) and
 * @portcullis/subprotocols. Identity is a small cookie stand-in stage (the parity point is that
 * both doors feed the same stage the same request, whatever the stage).
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { type StageDefinition } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import subprotocols, { json } from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'
import { originTable, tableAllow, expandOrigin } from '../packages/origin-guard/test/origin-table.js'
import { closed, listen, rawHttp, rawUpgrade, wsOpen } from './helpers/index.js'
import { LpClient, http } from '../packages/fallback/test/helpers.js'
import { openStream } from '../packages/fallback/test/sse.js'

const APP = 'https://app.example.com'

const revokedSessions = new Set<string>()

/** Identity stand-in: `parityAuth: true` requires the cookie `auth=<user>.<session>` (401 without, 401 revoked). */
const identityStage: StageDefinition<boolean, boolean> = {
  name: 'parity-identity',
  phase: 'identity',
  option: 'parityAuth',
  compile: (v) => v === true,
  evaluate (ctx, required) {
    const v = ctx.cookies.get('auth')?.[0]
    if (v === undefined) return required ? { status: 401, code: 'PARITY_SESSION_REQUIRED', reason: 'Session required' } : undefined
    const [id, sessionId] = v.split('.')
    if (revokedSessions.has(sessionId)) return { status: 401, code: 'PARITY_SESSION_REVOKED', reason: 'Session revoked' }
    ctx.state.identity = { id, sessionId }
  }
}

declare module '@portcullis/policy' {
  interface PortcullisRoutePolicy {
    parityAuth?: boolean
  }
}

type Outcome = { status: 'open', protocol: string } | { status: number, code: string }

interface Attempt {
  origin?: string | readonly string[]
  cookie?: string
  /** The offer exactly as one Sec-WebSocket-Protocol line (and, as one string, in the open body). */
  protocols?: string
  headers?: Readonly<Record<string, string>>
}

async function parityApp (t: { teardown: (fn: () => unknown) => void }): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(originGuard, { allow: tableAllow })
  app.wsPolicy.addStage(identityStage)
  await app.register(subprotocols, {
    protocols: { 'chat.v1': json(), 'bin.v1': { dataTypes: 'binary' } },
    limits: { maxMessageBytes: 64 }
  })
  await app.register(fallback, { pollTimeoutMs: 200, idleTimeoutMs: 5000 })
  const handler = (socket: import('@portcullis/policy').PortcullisSocket): void => {
    socket.on('message', (data: Buffer) => {
      if (String(data) === '"close-me"') socket.close(4321, 'asked to')
      else socket.send(data)
    })
  }
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, handler)
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true, protocols: ['chat.v1', 'bin.v1'] } }, handler)
  app.get('/private', { websocket: true, wsPolicy: { fallback: true, parityAuth: true, protocols: ['chat.v1'] } }, handler)
  app.get('/rated', { websocket: true, wsPolicy: { fallback: true, protocols: { accept: ['chat.v1'], limits: { rate: { messagesPerSecond: 1, burst: 2 } } } } }, handler)
  app.get('/single', { websocket: true, wsPolicy: { fallback: true, parityAuth: true, protocols: { accept: ['chat.v1'], limits: { maxConnectionsPerIdentity: 1 } } } }, handler)
  return app
}

function attemptHeaders (a: Attempt, self: string): Record<string, string | string[]> {
  const h: Record<string, string | string[]> = { ...a.headers }
  if (a.origin !== undefined) h.Origin = Array.isArray(a.origin) ? a.origin.map(o => expandOrigin(o, self)) : expandOrigin(a.origin as string, self)
  if (a.cookie !== undefined) h.Cookie = a.cookie
  return h
}

/** The WebSocket door, over raw TCP (so duplicate and odd headers go out as written). */
async function wsDoor (port: number, self: string, path: string, a: Attempt): Promise<Outcome> {
  const h = attemptHeaders(a, self)
  if (a.protocols !== undefined) h['Sec-WebSocket-Protocol'] = a.protocols
  const res = await rawUpgrade(port, path, h)
  if (res.status === 101) return { status: 'open', protocol: res.headers['sec-websocket-protocol'] ?? '' }
  return { status: res.status, code: JSON.parse(res.body).code }
}

/** The long-poll door: `POST open` with the same headers, the offer in the JSON body. */
async function lpDoor (port: number, self: string, path: string, a: Attempt): Promise<Outcome> {
  const h = attemptHeaders(a, self)
  const body = JSON.stringify(a.protocols === undefined ? {} : { protocols: [a.protocols] })
  const lines = [`POST ${path}/_lp/open HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'X-Portcullis-Fallback: 1', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close']
  for (const [k, v] of Object.entries(h)) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`)
  const res = await rawHttp(port, Buffer.from(lines.join('\r\n') + '\r\n\r\n' + body, 'latin1'))
  const parsed = JSON.parse(Buffer.from(res.body, 'latin1').toString())
  if (res.status === 200) return { status: 'open', protocol: parsed.protocol }
  return { status: res.status, code: parsed.code }
}

/**
 * The stream door: a v2 `open` with the same headers, then (when it opens) `GET stream` with the
 * same headers, which must run the same policy to the same verdict.
 */
async function streamDoor (port: number, self: string, path: string, a: Attempt): Promise<Outcome> {
  const h = attemptHeaders(a, self)
  const body = JSON.stringify(a.protocols === undefined ? { versions: [2, 1] } : { protocols: [a.protocols], versions: [2, 1] })
  const lines = [`POST ${path}/_lp/open HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'X-Portcullis-Fallback: 1', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close']
  for (const [k, v] of Object.entries(h)) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`)
  const res = await rawHttp(port, Buffer.from(lines.join('\r\n') + '\r\n\r\n' + body, 'latin1'))
  const parsed = JSON.parse(Buffer.from(res.body, 'latin1').toString())
  if (res.status !== 200) return { status: res.status, code: parsed.code }
  const get = [`GET ${path}/_lp/stream HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'X-Portcullis-Fallback: 1', `X-Portcullis-Sid: ${parsed.sid as string}`, 'X-Portcullis-Ack: 0', 'Connection: close']
  if (parsed.protocol !== '') get.push(`X-Portcullis-Protocol: ${parsed.protocol as string}`)
  for (const [k, v] of Object.entries(h)) for (const one of Array.isArray(v) ? v : [v]) get.push(`${k}: ${one}`)
  // the stream ends itself after pollTimeoutMs (200 ms here) with event: reopen
  const st = await rawHttp(port, Buffer.from(get.join('\r\n') + '\r\n\r\n', 'latin1'))
  if (st.status !== 200 || !/text\/event-stream/.test(String(st.headers['content-type']))) return { status: st.status, code: `stream refused after open: ${st.body.slice(0, 80)}` }
  return { status: 'open', protocol: parsed.protocol }
}

t.test('every row of the origin table gets the same verdict through all three doors', async (t) => {
  const app = await parityApp(t)
  const { port, origin: self } = await listen(app)
  let opens = 0
  for (const row of originTable) {
    const a: Attempt = { origin: row.origin, headers: row.headers }
    const ws = await wsDoor(port, self, '/ws', a)
    const lp = await lpDoor(port, self, '/ws', a)
    t.same(ws, row.expect === 'allow' ? { status: 'open', protocol: '' } : { status: 403, code: row.expect }, `${row.name} (WebSocket)`)
    t.same(lp, ws, `${row.name} (long-poll answers the same)`)
    t.same(await streamDoor(port, self, '/ws', a), ws, `${row.name} (stream answers the same)`)
    if (ws.status === 'open') opens++
  }
  t.ok(opens > 5 && opens < originTable.length - 20, `${opens} of ${originTable.length} rows open`)
})

const requestTable: ReadonlyArray<{ name: string, path: string, attempt: Attempt, expect: Outcome }> = [
  // identity
  { name: 'a private route without a session cookie', path: '/private', attempt: { origin: APP, protocols: 'chat.v1' }, expect: { status: 401, code: 'PARITY_SESSION_REQUIRED' } },
  { name: 'a private route with a session cookie', path: '/private', attempt: { origin: APP, protocols: 'chat.v1', cookie: 'auth=alice.s1' }, expect: { status: 'open', protocol: 'chat.v1' } },
  { name: 'a private route with a revoked session', path: '/private', attempt: { origin: APP, protocols: 'chat.v1', cookie: 'auth=alice.revoked-1' }, expect: { status: 401, code: 'PARITY_SESSION_REVOKED' } },
  { name: 'the origin is checked before the session', path: '/private', attempt: { origin: 'https://evil.example', protocols: 'chat.v1' }, expect: { status: 403, code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' } },
  { name: 'a session cookie from a lookalike origin', path: '/private', attempt: { origin: 'https://app.example.com.evil.net', cookie: 'auth=alice.s1', protocols: 'chat.v1' }, expect: { status: 403, code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' } },
  // subprotocols
  { name: 'a supported subprotocol', path: '/chat', attempt: { origin: APP, protocols: 'chat.v1' }, expect: { status: 'open', protocol: 'chat.v1' } },
  { name: 'the route\'s preference among several', path: '/chat', attempt: { origin: APP, protocols: 'bin.v1, chat.v1' }, expect: { status: 'open', protocol: 'chat.v1' } },
  { name: 'a second-choice protocol', path: '/chat', attempt: { origin: APP, protocols: 'chat.v0, bin.v1' }, expect: { status: 'open', protocol: 'bin.v1' } },
  { name: 'no subprotocol on a route that requires one', path: '/chat', attempt: { origin: APP }, expect: { status: 400, code: 'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED' } },
  { name: 'only unsupported subprotocols', path: '/chat', attempt: { origin: APP, protocols: 'chat.v0' }, expect: { status: 400, code: 'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED' } },
  { name: 'a malformed offer', path: '/chat', attempt: { origin: APP, protocols: 'chat v1' }, expect: { status: 400, code: 'PORTCULLIS_SUBPROTOCOL_MALFORMED' } },
  { name: 'a duplicated offer', path: '/chat', attempt: { origin: APP, protocols: 'chat.v1, chat.v1' }, expect: { status: 400, code: 'PORTCULLIS_SUBPROTOCOL_DUPLICATE' } },
  { name: 'too many offers', path: '/chat', attempt: { origin: APP, protocols: Array.from({ length: 40 }, (_, i) => `p${i}`).join(', ') }, expect: { status: 400, code: 'PORTCULLIS_SUBPROTOCOL_TOO_MANY' } },
  { name: 'a too long offer', path: '/chat', attempt: { origin: APP, protocols: 'x'.repeat(5000) }, expect: { status: 400, code: 'PORTCULLIS_SUBPROTOCOL_TOO_LONG' } },
  { name: 'a subprotocol offer from a bad origin', path: '/chat', attempt: { origin: 'null', protocols: 'chat.v1' }, expect: { status: 403, code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' } }
]

t.test('identity and subprotocol requests get the same answer through all three doors', async (t) => {
  revokedSessions.add('revoked-1')
  t.teardown(() => revokedSessions.delete('revoked-1'))
  const app = await parityApp(t)
  const { port, origin: self } = await listen(app)
  for (const row of requestTable) {
    const ws = await wsDoor(port, self, row.path, row.attempt)
    t.same(ws, row.expect, `${row.name} (WebSocket)`)
    t.same(await lpDoor(port, self, row.path, row.attempt), ws, `${row.name} (long-poll answers the same)`)
    t.same(await streamDoor(port, self, row.path, row.attempt), ws, `${row.name} (stream answers the same)`)
  }
})

interface Door {
  send: (data: string | Buffer) => Promise<void>
  closed: () => Promise<{ code: number, reason: string }>
}

async function openWs (base: string, path: string, protocol: string, cookie?: string): Promise<Door> {
  const r = await wsOpen(`${base}${path}`, { origin: APP, protocols: protocol, headers: cookie === undefined ? {} : { cookie } })
  if (r.ws === undefined) throw new Error(`WebSocket refused: ${r.status} ${r.body}`)
  const ws = r.ws
  const done = closed(ws)
  return { send: async (d) => { ws.send(d) }, closed: () => done }
}

async function openLp (port: number, path: string, protocol: string, cookie?: string): Promise<Door> {
  const c = new LpClient(port, path, { origin: APP, cookie })
  const r = await c.open([protocol])
  if (r.status !== 200) throw new Error(`long-poll refused: ${r.status} ${r.text}`)
  return { send: async (d) => { await c.send(d) }, closed: () => c.closed(100) }
}

/** A v2 session read through streams (reopened with the latest ack on every reopen), sending with v2 sends. */
async function openSt (port: number, path: string, protocol: string, cookie?: string): Promise<Door> {
  const c = new LpClient(port, path, { origin: APP, cookie })
  const r = await http(port, 'POST', `${path}/_lp/open`, c.headers(), { protocols: [protocol], versions: [2, 1] })
  if (r.status !== 200) throw new Error(`stream open refused: ${r.status} ${r.text}`)
  c.sid = r.body.sid
  c.protocol = r.body.protocol
  let seq = 0
  let out = 1
  const done = (async (): Promise<{ code: number, reason: string }> => {
    for (let streams = 0; streams < 100; streams++) {
      const s = await openStream(port, `${path}/_lp/stream`, c.headers({ 'x-portcullis-ack': String(seq) }, false))
      if (s.status !== 200) return { code: 1006, reason: `stream ${s.status}` }
      for (let e = await s.next(10_000); e !== null; e = await s.next(10_000)) {
        if (e.event === 'message' && e.data.seq > seq) seq = e.data.seq
        if (e.event === 'close') return e.data
      }
    }
    throw new Error('no close')
  })()
  return {
    send: async (d) => {
      const messages = [typeof d === 'string' ? { text: d } : { binary: d.toString('base64') }]
      const a = await http(port, 'POST', `${path}/_lp/send`, c.headers({ 'x-portcullis-ack': String(seq) }), { seq: out, messages })
      if (a.status === 200) out = a.body.ack + 1
    },
    closed: () => done
  }
}

const closeTable: ReadonlyArray<{ name: string, path: string, protocol: string, messages: Array<string | Buffer>, expect: number }> = [
  { name: 'a message over the size limit', path: '/chat', protocol: 'chat.v1', messages: [JSON.stringify('x'.repeat(80))], expect: 1009 },
  { name: 'a message that is not JSON on a JSON protocol', path: '/chat', protocol: 'chat.v1', messages: ['{not json'], expect: 1008 },
  { name: 'a binary message on a text protocol', path: '/chat', protocol: 'chat.v1', messages: [Buffer.from([1, 2, 3])], expect: 1003 },
  { name: 'a text message on a binary protocol', path: '/chat', protocol: 'bin.v1', messages: ['"text"'], expect: 1003 },
  { name: 'messages over the rate limit', path: '/rated', protocol: 'chat.v1', messages: ['1', '2', '3', '4', '5'], expect: 4008 },
  { name: 'a close by the handler', path: '/chat', protocol: 'chat.v1', messages: ['"close-me"'], expect: 4321 }
]

t.test('message limits and handler closes give the same close code through all three doors', async (t) => {
  const app = await parityApp(t)
  const { port, ws: base } = await listen(app)
  for (const row of closeTable) {
    const results: number[] = []
    for (const door of [await openWs(base, row.path, row.protocol), await openLp(port, row.path, row.protocol), await openSt(port, row.path, row.protocol)]) {
      for (const m of row.messages) await door.send(m)
      results.push((await door.closed()).code)
    }
    t.same(results, [row.expect, row.expect, row.expect], `${row.name}: ${row.expect} on all three doors`)
  }
})

t.test('revoking a session closes it on all three doors with the same code and reason', async (t) => {
  const app = await parityApp(t)
  const { port, ws: base } = await listen(app)
  const session = randomBytes(8).toString('hex')
  const cookie = `auth=alice.${session}`
  const ws = await openWs(base, '/private', 'chat.v1', cookie)
  const lp = await openLp(port, '/private', 'chat.v1', cookie)
  const st = await openSt(port, '/private', 'chat.v1', cookie)
  t.equal(app.wsPolicy.closeSession(session, 4001, 'session revoked'), 3, 'one registry holds every door')
  t.same(await ws.closed(), { code: 4001, reason: 'session revoked' })
  t.same(await lp.closed(), { code: 4001, reason: 'session revoked' })
  t.same(await st.closed(), { code: 4001, reason: 'session revoked' })
  revokedSessions.add(session)
  t.teardown(() => revokedSessions.delete(session))
  const self = `http://127.0.0.1:${port}`
  const again: Attempt = { origin: APP, cookie, protocols: 'chat.v1' }
  t.same(await wsDoor(port, self, '/private', again), { status: 401, code: 'PARITY_SESSION_REVOKED' })
  t.same(await lpDoor(port, self, '/private', again), { status: 401, code: 'PARITY_SESSION_REVOKED' })
})

t.test('a per-identity connection limit counts both doors', async (t) => {
  const app = await parityApp(t)
  const { port, ws: base, origin: self } = await listen(app)
  const attempt: Attempt = { origin: APP, cookie: 'auth=bob.b1', protocols: 'chat.v1' }
  const first = await openWs(base, '/single', 'chat.v1', 'auth=bob.b1')
  t.same(await lpDoor(port, self, '/single', attempt), { status: 429, code: 'PORTCULLIS_TOO_MANY_CONNECTIONS' }, 'long-poll after a WebSocket')
  await first.send('"close-me"')
  await first.closed()
  const lp = new LpClient(port, '/single', { origin: APP, cookie: 'auth=bob.b1' })
  t.equal((await lp.open(['chat.v1'])).status, 200)
  t.same(await wsDoor(port, self, '/single', attempt), { status: 429, code: 'PORTCULLIS_TOO_MANY_CONNECTIONS' }, 'WebSocket after a long-poll session')
  // the open session's own polls and sends are not new connections: the limit does not refuse them
  await lp.send('"still me"')
  t.same((await lp.receive(1)).map(String), ['"still me"'], 'the counted session keeps working')
})

t.test('server shutdown closes both doors with 1001', async (t) => {
  const app = await parityApp(t)
  const { port, ws: base } = await listen(app)
  const ws = await openWs(base, '/chat', 'chat.v1')
  const lp = new LpClient(port, '/chat', { origin: APP })
  await lp.open(['chat.v1'])
  // a poll waiting when the server goes down carries the close (one arriving later gets
  // Fastify's 503 for a closing server, which a client treats as 1006)
  const waiting = lp.pollRaw()
  await new Promise(resolve => setTimeout(resolve, 20))
  await app.close()
  t.equal((await ws.closed()).code, 1001)
  t.same((await waiting).body.close, { code: 1001, reason: 'server shutting down' })
})
