/**
 * Attacks on the long-poll door: cross-site sends with simple requests, id guessing and
 * fixation, a leaked id used with another cookie / origin / route / protocol, JSONP-style
 * parameters, oversized bodies, and sessions that never poll — all refused, memory bounded,
 * ids never logged.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { type PortcullisSocket } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import fallback, { FALLBACK_REQUEST_HEADERS, MemoryStore, type FallbackOptions } from '@portcullis/fallback'
import { captureLogs, rawHttp, type LogCapture } from './helpers/index.js'
import { http, Inbox, LpClient, lpIdentityStage, lpProtocolStage, start } from '../packages/fallback/test/helpers.js'

const APP = 'https://app.example.com'
const EVIL = 'https://evil.example'

async function attackApp (t: { teardown: (fn: () => unknown) => void }, opts: FallbackOptions = {}, logs?: LogCapture): Promise<{ app: FastifyInstance, inbox: Inbox<string>, port: number }> {
  const app = Fastify(logs === undefined ? {} : { logger: { level: 'trace', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(originGuard, { allow: [APP, 'https://other.example.com'] })
  app.wsPolicy.addStage(lpIdentityStage)
  app.wsPolicy.addStage(lpProtocolStage)
  await app.register(fallback, opts)
  const inbox = new Inbox<string>()
  const handler = (socket: PortcullisSocket): void => {
    socket.send('secret for the owner only')
    socket.on('message', (d: Buffer) => inbox.push(String(d)))
  }
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true, lpIdentity: true, lpProtocols: ['chat.v1', 'chat.v2'] } }, handler)
  app.get('/admin', { websocket: true, wsPolicy: { fallback: true, lpIdentity: true, lpProtocols: ['chat.v1'] } }, handler)
  const port = await start(app)
  return { app, inbox, port }
}

async function victim (port: number, path = '/chat'): Promise<LpClient> {
  const c = new LpClient(port, path, { origin: APP, cookie: 'auth=alice.s-alice' })
  const r = await c.open(['chat.v1'])
  if (r.status !== 200) throw new Error(`open failed: ${r.status} ${r.text}`)
  return c
}

/** A raw request, headers exactly as given (what a hostile page or script could send). */
function raw (port: number, method: string, path: string, headers: Record<string, string>, body = ''): ReturnType<typeof rawHttp> {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close']
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
  if (body.length > 0 || method === 'POST') lines.push(`Content-Length: ${Buffer.byteLength(body)}`)
  return rawHttp(port, lines.join('\r\n') + '\r\n\r\n' + body)
}

t.test('cross-site simple requests (text/plain, forms) cannot send, even with the victim\'s cookie and id', async (t) => {
  const { inbox, port } = await attackApp(t)
  const c = await victim(port)
  const body = JSON.stringify({ seq: 1, messages: [{ text: 'forged' }] })
  const common = { Origin: EVIL, Cookie: 'auth=alice.s-alice', 'X-Portcullis-Sid': c.sid }
  // what an HTML form or a no-preflight fetch can send: no custom header, a safelisted type
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain; charset=utf-8']) {
    const r = await raw(port, 'POST', '/chat/_lp/send', { ...common, 'Content-Type': type }, body)
    t.equal(r.status, 400, `${type}: refused`)
    t.equal(JSON.parse(r.body).code, 'PORTCULLIS_FALLBACK_HEADER_REQUIRED')
  }
  // even with the marker (a non-browser client) a safelisted type is refused before the policy
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json-seq', '']) {
    const r = await raw(port, 'POST', '/chat/_lp/send', { ...common, Origin: APP, 'X-Portcullis-Fallback': '1', 'Content-Type': type }, body)
    t.equal(r.status, 415, `${type || 'no type'} with the marker: 415`)
    t.equal(r.headers['cache-control'], 'no-store')
  }
  const noType = await raw(port, 'POST', '/chat/_lp/send', { Origin: APP, Cookie: 'auth=alice.s-alice', 'X-Portcullis-Sid': c.sid, 'X-Portcullis-Fallback': '1' }, body)
  t.equal(noType.status, 415, 'no content type at all')
  // and the marker must be exactly "1", one line
  for (const marker of ['0', 'true', '1, 1']) {
    const r = await http(port, 'POST', '/chat/_lp/send', { ...c.headers(), 'x-portcullis-fallback': marker }, body)
    t.equal(r.status, 400, `marker ${marker}`)
  }
  t.equal((await c.send('legit')).status, 200)
  t.same(await inbox.take(1), ['legit'], 'only the legitimate message arrived')
})

t.test('a JSON send from a disallowed origin is refused by the origin policy', async (t) => {
  const { inbox, port } = await attackApp(t)
  const c = await victim(port)
  const r = await http(port, 'POST', '/chat/_lp/send', { ...c.headers(), origin: EVIL }, { seq: 1, messages: [{ text: 'forged' }] })
  t.equal(r.status, 403)
  t.equal(r.body.code, 'PORTCULLIS_ORIGIN_NOT_ALLOWED')
  const poll = await http(port, 'GET', '/chat/_lp/poll', { ...c.headers({}, false), origin: EVIL })
  t.equal(poll.status, 403, 'nor can it read')
  t.notOk(poll.text.includes('secret'), 'nothing of the session leaks')
  t.equal(inbox.items.length, 0)
})

t.test('a CORS preflight is answered only for an allowed origin, naming what the fallback sends', async (t) => {
  const { port } = await attackApp(t)
  const ask = (origin: string, path: string): ReturnType<typeof http> => http(port, 'OPTIONS', path, {
    origin,
    'access-control-request-method': 'POST',
    'access-control-request-headers': FALLBACK_REQUEST_HEADERS.join(',')
  })
  for (const kind of ['open', 'poll', 'send', 'close']) {
    const evil = await ask(EVIL, `/chat/_lp/${kind}`)
    t.equal(evil.headers['access-control-allow-origin'], undefined, `${kind}: no CORS for ${EVIL}`)
    const good = await ask(APP, `/chat/_lp/${kind}`)
    t.equal(good.headers['access-control-allow-origin'], APP, `${kind}: CORS for ${APP}`)
    t.equal(good.headers['access-control-allow-credentials'], 'true')
    const allowed = String(good.headers['access-control-allow-headers']).toLowerCase()
    for (const h of FALLBACK_REQUEST_HEADERS) t.ok(allowed.includes(h), `${kind}: allows ${h}`)
  }
  const lookalike = await ask('https://app.example.com.evil.net', '/chat/_lp/send')
  t.equal(lookalike.headers['access-control-allow-origin'], undefined, 'no CORS for a lookalike')
})

t.test('guessed, malformed and fixated ids all get one uniform answer', async (t) => {
  const { port } = await attackApp(t)
  const c = await victim(port)
  const answers = new Set<string>()
  const attacker = new LpClient(port, '/chat', { origin: APP, cookie: 'auth=alice.s-alice' })
  attacker.protocol = 'chat.v1'
  const ids = [
    ...Array.from({ length: 50 }, () => randomBytes(24).toString('base64url')),
    c.sid.slice(0, -1) + (c.sid.endsWith('A') ? 'B' : 'A'), // one character off
    c.sid.toLowerCase() === c.sid ? c.sid.toUpperCase() : c.sid.toLowerCase(),
    '', 'x', c.sid + 'A', c.sid.slice(1), 'a'.repeat(32), '../../etc/passwd', c.sid + ', ' + c.sid, '%00'.repeat(10)
  ]
  for (const sid of ids) {
    attacker.sid = sid
    for (const r of [await attacker.pollRaw(0), await attacker.sendRaw(1, [{ text: 'x' }]), await attacker.close(1000)]) {
      answers.add(`${r.status} ${r.text} ${r.headers['cache-control']}`)
    }
  }
  t.same([...answers], ['404 {"code":"PORTCULLIS_FALLBACK_UNKNOWN_SESSION","message":"Unknown fallback session"} no-store'])
  // an id chosen by the client at open is ignored: the server always mints its own
  const fixed = 'f'.repeat(32)
  const r = await http(port, 'POST', '/chat/_lp/open', { ...c.headers(), 'x-portcullis-sid': fixed }, { protocols: ['chat.v1'] })
  t.equal(r.status, 200)
  t.not(r.body.sid, fixed)
  t.not(r.body.sid, c.sid)
})

t.test('a leaked id is useless with another cookie, origin, route or protocol — and answers like an unknown id', async (t) => {
  const { inbox, port } = await attackApp(t)
  const c = await victim(port)
  await new LpClient(port, '/chat', { origin: APP, cookie: 'auth=mallory.s-m' }).open(['chat.v1'])
  const unknown = new LpClient(port, '/chat', { origin: APP, cookie: 'auth=mallory.s-m' })
  unknown.sid = randomBytes(24).toString('base64url')
  unknown.protocol = 'chat.v1'
  const baseline = await unknown.pollRaw(0)
  t.equal(baseline.status, 404)

  const cases: Array<[string, LpClient, number]> = [
    ['another user\'s cookie', new LpClient(port, '/chat', { origin: APP, cookie: 'auth=mallory.s-m' }), 404],
    ['the same user, another login session', new LpClient(port, '/chat', { origin: APP, cookie: 'auth=alice.s-other' }), 404],
    ['another allowed origin', new LpClient(port, '/chat', { origin: 'https://other.example.com', cookie: 'auth=alice.s-alice' }), 404],
    ['the twin of another route', new LpClient(port, '/admin', { origin: APP, cookie: 'auth=alice.s-alice' }), 404],
    ['no cookie', new LpClient(port, '/chat', { origin: APP }), 401],
    ['no Origin', new LpClient(port, '/chat', { cookie: 'auth=alice.s-alice' }), 403],
    ['a disallowed origin', new LpClient(port, '/chat', { origin: EVIL, cookie: 'auth=alice.s-alice' }), 403]
  ]
  for (const [name, thief, status] of cases) {
    thief.sid = c.sid
    thief.protocol = 'chat.v1'
    const poll = await thief.pollRaw(0)
    t.equal(poll.status, status, `${name}: poll ${status}`)
    if (status === 404) t.equal(poll.text, baseline.text, `${name}: same bytes as an unknown id`)
    t.notOk(poll.text.includes('secret'), `${name}: nothing leaks`)
    t.equal((await thief.sendRaw(1, [{ text: 'stolen' }])).status, status, `${name}: send ${status}`)
    t.equal((await thief.close(1000)).status, status, `${name}: close ${status}`)
  }
  const otherProtocol = new LpClient(port, '/chat', { origin: APP, cookie: 'auth=alice.s-alice' })
  otherProtocol.sid = c.sid
  otherProtocol.protocol = 'chat.v2'
  t.equal((await otherProtocol.pollRaw(0)).text, baseline.text, 'another (allowed) protocol: same bytes as an unknown id')
  const wsHeader = await http(port, 'GET', '/chat/_lp/poll', { ...c.headers({}, false), 'sec-websocket-protocol': 'chat.v1' })
  t.equal(wsHeader.status, 400, 'a WebSocket header on a fallback request is refused')

  t.equal(inbox.items.length, 0, 'the handler never heard the thieves')
  t.same(await c.receive(1), ['secret for the owner only'], 'the owner is unaffected')
})

t.test('JSONP-style and query parameters are refused on every endpoint', async (t) => {
  const { port } = await attackApp(t)
  const c = await victim(port)
  for (const kind of ['open', 'poll', 'send', 'close']) {
    const method = kind === 'poll' ? 'GET' : 'POST'
    for (const q of ['?callback=steal', '?jsonp=x', '?sid=' + c.sid, '?', '?_=1', '?ack=0']) {
      const r = await http(port, method, `/chat/_lp/${kind}${q}`, c.headers({}, method === 'POST'), method === 'POST' ? {} : undefined)
      t.equal(r.status, 400, `${kind}${q}`)
      t.equal(r.body.code, 'PORTCULLIS_FALLBACK_QUERY_REFUSED')
      t.notOk(r.text.includes('steal') || r.text.includes(c.sid), 'nothing of the URL is echoed')
      t.match(r.headers['content-type'], /^application\/json/, 'JSON, never script')
    }
  }
})

t.test('oversized bodies are refused with 413 before they are read', async (t) => {
  const { inbox, port } = await attackApp(t, { maxBodyBytes: 1024 })
  const c = await victim(port)
  const head = (path: string, extra: string): string => [`POST ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, `Origin: ${APP}`, 'Cookie: auth=alice.s-alice',
    `X-Portcullis-Sid: ${c.sid}`, 'X-Portcullis-Protocol: chat.v1', 'X-Portcullis-Fallback: 1', 'Content-Type: application/json', extra].join('\r\n') + '\r\n\r\n'
  // a declared 50 MB body, none of it sent: the answer comes from the header alone
  const started = Date.now()
  const declared = await rawHttp(port, head('/chat/_lp/send', 'Content-Length: 52428800'), { timeoutMs: 2000 })
  t.equal(declared.status, 413)
  t.equal(JSON.parse(declared.body).code, 'PORTCULLIS_FALLBACK_BODY_TOO_LARGE')
  t.ok(Date.now() - started < 1500, 'without waiting for the body')
  // chunked: refused once the limit is passed while streaming
  const chunk = 'a'.repeat(2000)
  const chunked = await rawHttp(port, head('/chat/_lp/send', 'Transfer-Encoding: chunked') + `${chunk.length.toString(16)}\r\n${chunk}\r\n`, { timeoutMs: 2000 })
  t.equal(chunked.status, 413)
  // open and close have their own small limits, whatever maxBodyBytes says
  const bigOpen = await http(port, 'POST', '/chat/_lp/open', c.headers(), { protocols: Array(100).fill('x'.repeat(200)) })
  t.equal(bigOpen.status, 413)
  const bigClose = await http(port, 'POST', '/chat/_lp/close', c.headers(), { code: 1000, reason: 'x'.repeat(2000) })
  t.equal(bigClose.status, 413)
  t.equal(inbox.items.length, 0)
})

t.test('malformed bodies are refused without echoing them', async (t) => {
  const { port } = await attackApp(t)
  const c = await victim(port)
  const secret = 'TOPSECRET-' + randomBytes(8).toString('hex')
  for (const body of [`{"seq":1,"messages":[{"text":"${secret}"`, `{"seq":1,"messages":[{"html":"${secret}"}]}`, `{"__proto__":{"x":"${secret}"},"seq":1,"messages":[{"text":"a"}]}`, `"${secret}"`, '']) {
    const r = await http(port, 'POST', '/chat/_lp/send', c.headers(), body)
    t.equal(r.status, 400, body.slice(0, 30))
    t.notOk(r.text.includes(secret), 'the body is not echoed')
    t.equal(r.headers['x-content-type-options'], 'nosniff')
  }
})

t.test('sessions that never poll cannot grow memory: queues, counts and idle sessions are bounded', async (t) => {
  const store = new MemoryStore()
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(fallback, { store, maxSessions: 40, maxSessionsPerIp: 40, maxQueuedBytes: 8192, pollTimeoutMs: 100, idleTimeoutMs: 5000, closeLingerMs: 200 })
  const closes = new Inbox<number>()
  let flooding = false
  app.get('/feed', { websocket: true, wsPolicy: { origin: false, fallback: true } }, (socket) => {
    socket.on('close', (code: number) => closes.push(code))
    const timer = setInterval(() => { if (flooding) for (let i = 0; i < 8; i++) socket.send(randomBytes(512)) }, 5)
    socket.on('close', () => clearInterval(timer))
  })
  const port = await start(app)
  const statuses: number[] = []
  for (let i = 0; i < 50; i++) statuses.push((await new LpClient(port, '/feed').open()).status)
  t.equal(statuses.filter(s => s === 200).length, 40)
  t.equal(statuses.filter(s => s === 429).length, 10, 'opens beyond the total bound are refused')
  flooding = true
  const slow = await closes.take(40, 5000)
  t.same([...new Set(slow)], [4009], 'every flooding session is closed as a slow consumer')
  t.ok(store.queuedBytes <= 40 * 2 * 8192, `queued ${store.queuedBytes} bytes for 40 sessions`)
  const until = Date.now() + 3000
  while (store.size > 0 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(store.size, 0, 'closed sessions are forgotten after their linger')
  t.equal(store.queuedBytes, 0)
  t.equal(app.wsPolicy.stats().connections, 0)
  flooding = false
  t.equal((await new LpClient(port, '/feed').open()).status, 200, 'and their slots are free again')
})

t.test('idle sessions are closed with 4010 and forgotten', async (t) => {
  const store = new MemoryStore()
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(fallback, { store, pollTimeoutMs: 100, idleTimeoutMs: 300, closeLingerMs: 100 })
  const closes = new Inbox<number>()
  app.get('/quiet', { websocket: true, wsPolicy: { origin: false, fallback: true } }, (socket) => { socket.on('close', (code: number) => closes.push(code)) })
  const port = await start(app)
  for (let i = 0; i < 20; i++) await new LpClient(port, '/quiet').open()
  t.same([...new Set(await closes.take(20, 3000))], [4010])
  const until = Date.now() + 2000
  while (store.size > 0 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 25))
  t.equal(store.size, 0)
})

t.test('fallback ids never reach the logs', async (t) => {
  const logs = captureLogs()
  const { port } = await attackApp(t, {}, logs)
  const c = await victim(port)
  await c.receive(1)
  await c.send('hello')
  const thief = new LpClient(port, '/chat', { origin: APP, cookie: 'auth=mallory.s-m' })
  thief.sid = c.sid
  thief.protocol = 'chat.v1'
  t.equal((await thief.pollRaw(0)).status, 404)
  // the whole id in a URL (refused with 400): if any layer logged URLs, the check below would see it
  const inUrl = await http(port, 'GET', '/chat/_lp/poll?sid=' + c.sid, c.headers({}, false))
  t.equal(inUrl.status, 400)
  t.equal(inUrl.body.code, 'PORTCULLIS_FALLBACK_QUERY_REFUSED')
  await c.close(1000)
  t.ok(logs.lines.length > 5, `${logs.lines.length} log lines`)
  t.ok(logs.lines.some(l => l.portcullis?.code === 'PORTCULLIS_FALLBACK_UNKNOWN_SESSION'), 'the mismatch is logged')
  t.notOk(logs.text().includes(c.sid), 'the id is in no log line')
  t.notOk(logs.text().includes('s-alice'), 'nor is the session cookie')
})

t.test('only the documented methods answer on the endpoints', async (t) => {
  const { port } = await attackApp(t)
  const c = await victim(port)
  for (const [method, kind] of [['GET', 'send'], ['GET', 'open'], ['POST', 'poll'], ['PUT', 'send'], ['DELETE', 'close'], ['HEAD', 'poll']]) {
    const r = await http(port, method, `/chat/_lp/${kind}`, c.headers({}, false))
    t.equal(r.status, 404, `${method} ${kind}`)
  }
})
