/**
 * Multi-node Portcullis on one real redis-server: three Fastify nodes (in this process, plus a
 * child process for the node that gets killed), no sticky sessions. A long-poll client's
 * requests go round-robin over the nodes; WebSocket clients sit on other nodes; the chat room
 * relays between nodes through Redis pub/sub (the app's part, as in examples/chat).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyCookie, { sign } from '@fastify/cookie'
import portcullis, { type PortcullisSocket } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import fallback from '@portcullis/fallback'
import fallbackRedis from '@portcullis/fallback-redis'
import { startRedis } from './helpers/redis.js'
import { closed, listen, nextMessages, waitFor, wsOpen } from './helpers/index.js'
import { openStream } from '../packages/fallback/test/sse.js'

const ORIGIN = 'http://app.test'
const SECRET = 'multinode-secret-0123456789-abcdefghijkl'
const NODE_TTL_MS = 1500
const POLL_TIMEOUT_MS = 2000
const IDLE_TIMEOUT_MS = 8000

// The app's own Redis client for its chat room (ioredis is a dependency of fallback-redis).
interface PubSub {
  publish: (channel: string, message: string) => Promise<unknown>
  subscribe: (channel: string) => Promise<unknown>
  on: (event: string, fn: (...args: any[]) => void) => unknown
  disconnect: () => void
}
const RedisClient = createRequire(new URL('../packages/fallback-redis/package.json', import.meta.url))('ioredis').Redis as new (url: string, opts?: object) => PubSub

interface NodeOptions {
  redisUrl: string
  keyPrefix: string
  /** Register the long-poll fallback (else a WebSocket-only node). Default true. */
  fallback?: boolean
  /** Sessions logged out (the app's session database, shared by the in-process nodes). */
  loggedOut: Set<string>
}

interface ChatNode {
  app: FastifyInstance
  port: number
  http: string
  ws: string
  /** What handlers on this node received: `user: text`. */
  heard: string[]
  /** Close events handlers on this node saw. */
  closes: Array<{ user: string, transport: string, code: number, reason: string }>
}

/** One node: core, origin guard, signed-cookie sessions, Redis store + revocation, fallback, the chat route. */
async function chatNode (opts: NodeOptions, onClose?: (fn: () => unknown) => void): Promise<ChatNode> {
  const app = Fastify({ logger: { level: 'fatal' } })
  const pub = new RedisClient(opts.redisUrl, { maxRetriesPerRequest: 1 })
  const sub = new RedisClient(opts.redisUrl)
  pub.on('error', () => {})
  sub.on('error', () => {})
  onClose?.(async () => {
    await app.close()
    pub.disconnect()
    sub.disconnect()
  })
  const room = `${opts.keyPrefix}room`
  const local = new Set<PortcullisSocket>()
  const heard: string[] = []
  const closes: ChatNode['closes'] = []
  await sub.subscribe(room)
  sub.on('message', (_channel: string, message: string) => { for (const s of local) s.send(message) })

  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis)
  await app.register(originGuard, { allow: [ORIGIN] })
  await app.register(cookieSession, {
    signedCookie: {
      cookieName: 'sid',
      load: (sessionId) => opts.loggedOut.has(sessionId) ? null : { id: sessionId.split('.')[0], sessionId }
    }
  })
  await app.register(fallbackRedis, { redis: opts.redisUrl, keyPrefix: opts.keyPrefix, nodeTtlMs: NODE_TTL_MS, commandTimeoutMs: 1000 })
  if (opts.fallback !== false) {
    await app.register(fallback, { store: app.portcullisRedis.store, pollTimeoutMs: POLL_TIMEOUT_MS, idleTimeoutMs: IDLE_TIMEOUT_MS })
  }
  app.post('/logout', async (request) => {
    const sessionId = app.unsignCookie(request.cookies.sid ?? '').value ?? ''
    opts.loggedOut.add(sessionId)
    return { closed: app.portcullisSessions.revoke(sessionId, 'logged out') }
  })
  app.get('/chat', { websocket: true, wsPolicy: opts.fallback !== false ? { fallback: true } : {} }, (socket, request) => {
    const user = request.portcullis?.state.identity?.id ?? '?'
    const transport = request.portcullis?.transport ?? '?'
    local.add(socket)
    socket.on('message', (data: Buffer) => {
      heard.push(`${user}: ${String(data)}`)
      pub.publish(room, `${user}: ${String(data)}`).catch(() => {})
    })
    socket.on('close', (code: number, reason: Buffer) => {
      local.delete(socket)
      closes.push({ user, transport, code, reason: String(reason) })
    })
  })
  const { port, http, ws } = await listen(app)
  return { app, port, http, ws, heard, closes }
}

function cookieFor (sessionId: string): string {
  return `sid=${encodeURIComponent(sign(sessionId, SECRET))}`
}

interface LpAnswer { status: number, body: any }

/**
 * A long-poll client (PROTOCOL.md) whose every request goes to the next node in turn, as a
 * round-robin load balancer without sticky sessions would send it.
 */
class RoundRobinClient {
  readonly #bases: string[]
  #next = 0
  #cookie: string
  sid = ''
  protocol = ''
  ack = 0
  outSeq = 1
  /** The node each request went to, in order. */
  readonly route: number[] = []

  constructor (bases: string[], cookie: string) {
    this.#bases = bases
    this.#cookie = cookie
  }

  async #request (method: 'GET' | 'POST', kind: string, body?: unknown, extra: Record<string, string> = {}): Promise<LpAnswer> {
    const i = this.#next++ % this.#bases.length
    this.route.push(i)
    const headers: Record<string, string> = { origin: ORIGIN, cookie: this.#cookie, 'x-portcullis-fallback': '1', ...extra }
    if (this.sid !== '') {
      headers['x-portcullis-sid'] = this.sid
      if (this.protocol !== '') headers['x-portcullis-protocol'] = this.protocol
    }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(`${this.#bases[i]}/chat/_lp/${kind}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
  }

  async open (): Promise<LpAnswer> {
    const r = await this.#request('POST', 'open', {})
    if (r.status === 200) {
      this.sid = r.body.sid
      this.protocol = r.body.protocol
    }
    return r
  }

  /** One poll; acks what it returns (a client acks on its next poll). */
  async poll (): Promise<LpAnswer> {
    const r = await this.#request('GET', 'poll', undefined, { 'x-portcullis-ack': String(this.ack) })
    if (r.status === 200 && r.body.messages.length > 0) this.ack = r.body.messages[r.body.messages.length - 1].seq
    return r
  }

  /** Poll until `n` text messages arrived (or a close / an error). */
  async receive (n: number, ms = 8000): Promise<{ texts: string[], close?: { code: number, reason: string }, error?: LpAnswer }> {
    const texts: string[] = []
    const until = Date.now() + ms
    while (texts.length < n && Date.now() < until) {
      const r = await this.poll()
      if (r.status !== 200) return { texts, error: r }
      for (const m of r.body.messages) texts.push(m.text)
      if (r.body.close !== undefined) return { texts, close: r.body.close }
    }
    return { texts }
  }

  async send (...texts: string[]): Promise<LpAnswer> {
    const r = await this.#request('POST', 'send', { seq: this.outSeq, messages: texts.map(text => ({ text })) })
    if (r.status === 200) this.outSeq = r.body.ack + 1
    return r
  }

  /** Which node the next request goes to. */
  get nextNode (): number {
    return this.#next % this.#bases.length
  }

  set nextNode (i: number) {
    this.#next = i
  }
}

function prefix (): string {
  return `mn${randomBytes(4).toString('hex')}:`
}

// ---- child-process mode: one node, for the kill test ----
if (process.env.PORTCULLIS_MULTINODE_CHILD !== undefined) {
  const { redisUrl, keyPrefix } = JSON.parse(process.env.PORTCULLIS_MULTINODE_CHILD)
  // never outlive the test process: its end of our stdin closes when it exits, however it exits
  process.stdin.on('end', () => process.exit(0)).resume()
  const node = await chatNode({ redisUrl, keyPrefix, loggedOut: new Set() })
  process.stdout.write(JSON.stringify({ port: node.port, nodeId: node.app.portcullisRedis.store.nodeId }) + '\n')
} else {
  tests()
}

function tests (): void {
  t.test('a long-poll client round-robin over three nodes chats with a WebSocket client, with no sticky session', async (t) => {
    const redis = await startRedis(t)
    const keyPrefix = prefix()
    const loggedOut = new Set<string>()
    const nodes = await Promise.all([0, 1, 2].map(() => chatNode({ redisUrl: redis.url, keyPrefix, loggedOut }, fn => t.teardown(fn))))
    const lp = new RoundRobinClient(nodes.map(n => n.http), cookieFor('alice.s1'))
    t.equal((await lp.open()).status, 200)
    const owner = nodes.findIndex(n => n.app.wsFallback.sessions() === 1)
    t.equal(owner, 0, 'the node that served open runs the handler')
    t.same(nodes.map(n => n.app.wsFallback.sessions()), [1, 0, 0], 'and only that node')

    const bob = await wsOpen(`${nodes[2].ws}/chat`, { origin: ORIGIN, headers: { cookie: cookieFor('bob.s2') } })
    t.ok(bob.ws, 'bob is on the WebSocket door of node 2')
    await waitFor(() => nodes[2].app.wsPolicy.stats().connections === 1, 2000, 'bob attached')

    // alice's sends land on nodes 1, 2, 0, 1 ...: every one reaches the handler on node 0, in order
    const said: string[] = []
    for (let i = 0; i < 12; i++) {
      said.push(`lp ${i}`)
      const r = await lp.send(`lp ${i}`)
      t.equal(r.status, 200)
    }
    t.same(nodes[0].heard, said.map(s => `alice: ${s}`), 'once each, in order, on the owner only')
    t.same([nodes[1].heard, nodes[2].heard], [[], []])
    t.same(await nextMessages(bob.ws!, 12), said.map(s => `alice: ${s}`), 'bob, on another node, got them all in order')

    // bob's messages reach alice whichever node serves her polls
    for (let i = 0; i < 12; i++) bob.ws!.send(`ws ${i}`)
    const got = await lp.receive(24)
    t.same(got.texts.filter(x => x.startsWith('bob:')), Array.from({ length: 12 }, (_, i) => `bob: ws ${i}`))
    t.same(got.texts.filter(x => x.startsWith('alice:')), said.map(s => `alice: ${s}`), 'her own messages came back too (room echo), none twice')
    t.same(new Set(lp.route), new Set([0, 1, 2]), 'her requests went to every node')

    bob.ws!.close()
  })

  t.test('a v2 stream client round-robin over three nodes: its stream on one node, its sends on the others, every message once and in order, a reopen elsewhere resumes after its ack, a logout elsewhere ends it with 4001', async (t) => {
    const redis = await startRedis(t)
    const keyPrefix = prefix()
    const loggedOut = new Set<string>()
    const nodes = await Promise.all([0, 1, 2].map(() => chatNode({ redisUrl: redis.url, keyPrefix, loggedOut }, fn => t.teardown(fn))))
    const cookie = cookieFor('alice.s1')
    const base = { origin: ORIGIN, cookie, 'x-portcullis-fallback': '1' }
    const opened = await fetch(`${nodes[0].http}/chat/_lp/open`, { method: 'POST', headers: { ...base, 'content-type': 'application/json' }, body: JSON.stringify({ versions: [2, 1] }) })
    const open = await opened.json() as { v: number, sid: string, stream: boolean }
    t.same([open.v, open.stream], [2, true])
    const headers = (ack: number): Record<string, string> => ({ ...base, 'x-portcullis-sid': open.sid, 'x-portcullis-ack': String(ack) })
    const bob = await wsOpen(`${nodes[2].ws}/chat`, { origin: ORIGIN, headers: { cookie: cookieFor('bob.s2') } })
    await waitFor(() => nodes[2].app.wsPolicy.stats().connections === 1, 2000, 'bob attached')

    const s1 = await openStream(nodes[1].port, '/chat/_lp/stream', headers(0))
    t.teardown(() => s1.abort())
    t.equal(s1.status, 200)
    t.equal(s1.headers.get('content-type'), 'text/event-stream; charset=utf-8')
    let seq = 0
    const texts: string[] = []
    async function take (stream: typeof s1, n: number): Promise<void> {
      while (n > 0) {
        const e = await stream.next(8000)
        if (e === null) throw new Error('stream ended')
        if (e.event !== 'message') continue
        t.equal(e.data.seq, seq + 1, 'the next seq, never a repeat or a gap')
        seq = e.data.seq
        texts.push(e.data.text)
        n--
      }
    }
    // alice's v2 sends go to nodes 2 and 0 in turn (never the stream's node), acking as she reads
    let out = 1
    for (let i = 0; i < 6; i++) {
      const r = await fetch(`${nodes[i % 2 === 0 ? 2 : 0].http}/chat/_lp/send`, { method: 'POST', headers: { ...headers(seq), 'content-type': 'application/json' }, body: JSON.stringify({ seq: out, messages: [{ text: `lp ${i}` }] }) })
      t.equal(r.status, 200)
      out = (await r.json() as { ack: number }).ack + 1
    }
    for (let i = 0; i < 6; i++) bob.ws!.send(`ws ${i}`)
    await take(s1, 12)
    t.same(nodes[0].heard.filter(h => h.startsWith('alice:')), Array.from({ length: 6 }, (_, i) => `alice: lp ${i}`), 'her sends reached the owner once each, in order')
    t.same(texts.filter(x => x.startsWith('bob:')), Array.from({ length: 6 }, (_, i) => `bob: ws ${i}`), 'bob\'s messages in order')
    t.same(texts.filter(x => x.startsWith('alice:')), Array.from({ length: 6 }, (_, i) => `alice: lp ${i}`), 'her own room echo, none twice')

    // the stream breaks; the next one goes to node 2 and resumes after her ack
    s1.abort()
    for (let i = 6; i < 9; i++) bob.ws!.send(`ws ${i}`)
    const s2 = await openStream(nodes[2].port, '/chat/_lp/stream', headers(seq))
    t.teardown(() => s2.abort())
    await take(s2, 3)
    t.same(texts.slice(-3), ['bob: ws 6', 'bob: ws 7', 'bob: ws 8'])

    // logout on node 1 ends the stream held by node 2 for the session owned by node 0
    const out1 = await fetch(`${nodes[1].http}/logout`, { method: 'POST', headers: { origin: ORIGIN, cookie } })
    t.equal(out1.status, 200)
    let e = await s2.next(8000)
    while (e !== null && e.event !== 'close') e = await s2.next(8000)
    t.equal(e?.data.code, 4001, 'the close record, at once')
    t.equal(await s2.next(2000), null, 'then the stream ended')
    bob.ws!.close()
  })

  t.test('logout on node A closes the session\'s WebSocket on node B and its long-poll session owned by node C', async (t) => {
    const redis = await startRedis(t)
    const keyPrefix = prefix()
    const loggedOut = new Set<string>()
    const a = await chatNode({ redisUrl: redis.url, keyPrefix, loggedOut }, fn => t.teardown(fn))
    // node B serves WebSocket only: the revocation reaches it through the plugin's own subscription
    const b = await chatNode({ redisUrl: redis.url, keyPrefix, loggedOut, fallback: false }, fn => t.teardown(fn))
    const c = await chatNode({ redisUrl: redis.url, keyPrefix, loggedOut }, fn => t.teardown(fn))
    const cookie = cookieFor('alice.s1')
    const other = await wsOpen(`${b.ws}/chat`, { origin: ORIGIN, headers: { cookie: cookieFor('bob.s2') } })
    const ws = await wsOpen(`${b.ws}/chat`, { origin: ORIGIN, headers: { cookie } })
    t.ok(ws.ws && other.ws)
    const lp = new RoundRobinClient([c.http, a.http], cookie)
    t.equal((await lp.open()).status, 200)
    t.equal(c.app.wsFallback.sessions(), 1, 'owned by node C')
    const wsClosed = closed(ws.ws!)
    const pending = lp.poll() // waits on node A
    await new Promise(resolve => setTimeout(resolve, 100))

    const started = Date.now()
    const out = await a.app.inject({ method: 'POST', url: '/logout', headers: { cookie } })
    t.same(out.json(), { closed: 0 }, 'nothing of this session was on node A itself')
    t.same(await wsClosed, { code: 4001, reason: 'logged out' }, 'the WebSocket on node B closed with 4001')
    const polled = await pending
    t.equal(polled.status, 200)
    t.same(polled.body.close, { code: 4001, reason: 'logged out' }, 'the waiting poll on node A carries the close')
    const took = Date.now() - started
    t.ok(took < 2000, `both closed ${took} ms after the logout`)
    await waitFor(() => c.closes.length === 1, 2000, 'the handler on node C heard the close')
    t.same(c.closes[0], { user: 'alice', transport: 'long-poll', code: 4001, reason: 'logged out' })
    t.equal(other.ws!.readyState, 1, 'another user\'s connection stays open')
    const again = await wsOpen(`${b.ws}/chat`, { origin: ORIGIN, headers: { cookie } })
    t.equal(again.status, 401, 'the logged-out cookie no longer opens anything')
    other.ws!.close()
  })

  t.test('a Redis restart mid-session: 503s while it is away, the session closes cleanly, no acknowledged message is lost, no crash', async (t) => {
    const redis = await startRedis(t)
    const keyPrefix = prefix()
    const loggedOut = new Set<string>()
    const a = await chatNode({ redisUrl: redis.url, keyPrefix, loggedOut }, fn => t.teardown(fn))
    const b = await chatNode({ redisUrl: redis.url, keyPrefix, loggedOut }, fn => t.teardown(fn))
    const lp = new RoundRobinClient([a.http, b.http], cookieFor('alice.s1'))
    t.equal((await lp.open()).status, 200)
    const acknowledged: string[] = []
    for (let i = 0; i < 5; i++) {
      const r = await lp.send(`before ${i}`)
      t.equal(r.status, 200)
      acknowledged.push(`alice: before ${i}`)
    }

    await redis.stop()
    // The store fails with 503 PORTCULLIS_STORE_UNAVAILABLE, and the fallback passes it through.
    const during = await lp.send('during')
    t.equal(during.status, 503, 'a send while Redis is away is refused, not acknowledged')
    t.equal(during.body.code, 'PORTCULLIS_STORE_UNAVAILABLE')
    t.equal(during.body.ack, undefined, 'no ack')
    const poll = await lp.poll()
    t.equal(poll.status, 503, 'a poll too')
    t.equal(poll.body.code, 'PORTCULLIS_STORE_UNAVAILABLE')

    await redis.start()
    await waitFor(() => a.closes.length === 1, 5000, 'the handler hears the close')
    t.same(a.closes[0], { user: 'alice', transport: 'long-poll', code: 1011, reason: 'store unavailable' })
    t.same(a.heard, acknowledged, 'every acknowledged message reached the handler, the refused one did not')
    const after = await lp.poll()
    t.equal(after.status, 404, 'the lost session is unknown, so the client reconnects')

    const fresh = new RoundRobinClient([b.http, a.http], cookieFor('alice.s1'))
    t.equal((await fresh.open()).status, 200, 'a new session opens once Redis is back')
    t.equal((await fresh.send('hello again')).status, 200)
    t.same(b.heard, ['alice: hello again'])
  })

  t.test('a node killed mid-session: the client is told 4011 within the idle timeout and reconnects elsewhere', async (t) => {
    const redis = await startRedis(t)
    const keyPrefix = prefix()
    const child = spawn(process.execPath, ['--import=tsx', '--conditions=portcullis-source', fileURLToPath(import.meta.url)], {
      env: { ...process.env, PORTCULLIS_MULTINODE_CHILD: JSON.stringify({ redisUrl: redis.url, keyPrefix }) },
      stdio: ['pipe', 'pipe', 'inherit']
    })
    t.teardown(() => { child.kill('SIGKILL') })
    const info = await new Promise<{ port: number, nodeId: string }>((resolve, reject) => {
      let out = ''
      child.stdout!.on('data', (c: Buffer) => {
        out += String(c)
        const nl = out.indexOf('\n')
        if (nl !== -1) resolve(JSON.parse(out.slice(0, nl)))
      })
      child.once('exit', (code) => reject(new Error(`child exited with ${code}`)))
    })
    const a = await chatNode({ redisUrl: redis.url, keyPrefix, loggedOut: new Set() }, fn => t.teardown(fn))
    const lp = new RoundRobinClient([`http://127.0.0.1:${info.port}`, a.http], cookieFor('alice.s1'))
    t.equal((await lp.open()).status, 200, 'opened on the child node')
    t.equal(a.app.wsFallback.sessions(), 0, 'node A does not own it')
    t.equal((await lp.send('hi from a')).status, 200, 'a send through node A reaches the handler on the child')
    lp.nextNode = 1

    const waiting = lp.poll() // held on node A
    await new Promise(resolve => setTimeout(resolve, 100))
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
    const killedAt = Date.now()
    let r = await waiting
    // the held poll may time out empty before the liveness key runs out: poll again (on node A)
    while (r.status === 200 && r.body.close === undefined && Date.now() - killedAt < IDLE_TIMEOUT_MS) {
      lp.nextNode = 1
      r = await lp.poll()
    }
    const took = Date.now() - killedAt
    t.equal(r.status, 200)
    t.same(r.body.close, { code: 4011, reason: 'node gone' }, 'the documented close code (CloseCodes.NODE_GONE)')
    t.ok(took < IDLE_TIMEOUT_MS, `told ${took} ms after the kill (idle timeout ${IDLE_TIMEOUT_MS} ms)`)
    lp.nextNode = 1
    const sendAfter = await lp.send('too late')
    t.equal(sendAfter.status, 200, 'a send to the closed session is discarded, as after a close frame')
    t.same(a.heard, [], 'and never reaches anyone')

    const again = new RoundRobinClient([a.http], cookieFor('alice.s1'))
    t.equal((await again.open()).status, 200, 'the client reconnects through a live node')
    t.equal((await again.send('back')).status, 200)
    t.same(a.heard, ['alice: back'])
  })
}
