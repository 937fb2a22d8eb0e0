/**
 * The chat example's contract (examples/chat/README.md), driven through this client from Node.js
 * on both doors: login, the chat.v1 messages and their limits, logout, and several nodes on Redis.
 */
import t from 'tap'
import { request as httpsRequest } from 'node:https'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { buildChat, type ChatOptions } from '../../../examples/chat/src/app.js'
import { startRedis } from '../../../test/helpers/redis.js'
import { testTls } from '../../../test/helpers/index.js'
import { PortcullisSocket, type TransportName } from '../src/index.js'
import { messages, next, nextClose } from './helpers.js'

const ORIGIN = 'http://chat.test'

interface Node { app: FastifyInstance, http: string, ws: string }

async function chatNode (t: { teardown: (fn: () => unknown) => void }, opts: Partial<ChatOptions> = {}): Promise<Node> {
  const app = await buildChat({ sessionSecret: 'chat-contract-test-secret-0123456789', logger: false, clientBundle: Buffer.from(''), allowedOrigins: [ORIGIN], ...opts })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}` }
}

async function login (node: Node, user: string, password = 'demo', origin = ORIGIN): Promise<{ status: number, cookie: string }> {
  const res = await fetch(node.http + '/login', { method: 'POST', headers: { 'content-type': 'application/json', origin }, body: JSON.stringify({ user, password }) })
  return { status: res.status, cookie: (res.headers.get('set-cookie') ?? '').split(';')[0] }
}

function chatSocket (t: { teardown: (fn: () => unknown) => void }, node: Node, cookie: string, transport: TransportName): PortcullisSocket {
  const s = new PortcullisSocket(node.ws + '/chat', 'chat.v1', { WebSocket, headers: { cookie, origin: ORIGIN }, transports: [transport] })
  t.teardown(() => s.close())
  return s
}

t.test('login accepts the demo users only, and only from an allowed origin', async (t) => {
  const node = await chatNode(t)
  t.equal((await login(node, 'alice')).status, 200)
  t.equal((await login(node, 'bob')).status, 200)
  t.equal((await login(node, 'alice', 'wrong')).status, 401)
  t.equal((await login(node, 'mallory')).status, 401)
  t.equal((await login(node, 'alice', 'demo', 'http://evil.test')).status, 403, 'login CSRF from another origin')
  const { cookie } = await login(node, 'alice')
  t.match(cookie, /^chat=/)
  const me = await fetch(node.http + '/me', { headers: { cookie } })
  t.same(await me.json(), { user: 'alice' })
})

for (const transport of ['websocket', 'long-poll'] as const) {
  t.test(`${transport}: say is broadcast as said to everyone, in order`, async (t) => {
    const node = await chatNode(t)
    const [aliceLogin, bobLogin] = [await login(node, 'alice'), await login(node, 'bob')]
    const alice = chatSocket(t, node, aliceLogin.cookie, transport)
    const bob = chatSocket(t, node, bobLogin.cookie, transport)
    await Promise.all([next(alice, 'open'), next(bob, 'open')])
    t.equal(alice.protocol, 'chat.v1')
    t.equal(alice.transport, transport)
    const got = messages(bob, 3)
    alice.send(JSON.stringify({ type: 'say', text: 'one' }))
    alice.send(JSON.stringify({ type: 'say', text: 'two ✓ 😀' }))
    alice.send(JSON.stringify({ type: 'say', text: 'x'.repeat(1000) }))
    const said = (await got).map((m) => JSON.parse(m as string))
    t.same(said.map((m) => m.text), ['one', 'two ✓ 😀', 'x'.repeat(1000)])
    for (const m of said) {
      t.same(Object.keys(m).sort(), ['text', 'ts', 'type', 'user'], 'exactly type, user, text, ts')
      t.equal(m.type, 'said')
      t.equal(m.user, 'alice', 'the user comes from the session, never from the message')
      t.ok(Number.isInteger(m.ts) && Math.abs(m.ts - Date.now()) < 60_000)
    }
  })

  t.test(`${transport}: anything but a valid say closes with 1008, more than 16 KiB with 1009`, async (t) => {
    const node = await chatNode(t)
    const { cookie } = await login(node, 'alice')
    const cases: Array<[string, string | Uint8Array, number]> = [
      ['an unknown type', JSON.stringify({ type: 'shout', text: 'hi' }), 1008],
      ['an extra key', JSON.stringify({ type: 'say', text: 'hi', user: 'bob' }), 1008],
      ['an empty text', JSON.stringify({ type: 'say', text: '' }), 1008],
      ['1001 characters', JSON.stringify({ type: 'say', text: '😀'.repeat(1001) }), 1008],
      ['not JSON', 'say hi', 1008],
      ['a prototype key', '{"type":"say","text":"hi","__proto__":{"admin":true}}', 1008],
      ['a binary message', new TextEncoder().encode(JSON.stringify({ type: 'say', text: 'hi' })), 1008],
      ['more than 16 KiB', JSON.stringify({ type: 'say', text: 'x'.repeat(17 * 1024) }), 1009]
    ]
    for (const [what, payload, code] of cases) {
      const s = chatSocket(t, node, cookie, transport)
      await next(s, 'open')
      s.send(payload)
      t.equal((await nextClose(s)).code, code, `${what} closes with ${code}`)
    }
  })

  t.test(`${transport}: without a session, or from another origin, the chat refuses to open`, async (t) => {
    const node = await chatNode(t)
    // A WebSocket-only client sees what a browser's WebSocket sees: an abnormal close (1006). The
    // default transports add the fallback, whose open tells the reason (next test).
    const reasonOf = (code: number, reason: string): [number, string] => transport === 'long-poll' ? [code, reason] : [1006, '']
    const anonymous = chatSocket(t, node, '', transport)
    const ev = await nextClose(anonymous)
    t.same([ev.code, ev.reason], reasonOf(4401, 'PORTCULLIS_SESSION_REQUIRED'))
    const { cookie } = await login(node, 'alice')
    const evil = new PortcullisSocket(node.ws + '/chat', 'chat.v1', { WebSocket, headers: { cookie, origin: 'http://evil.test' }, transports: [transport] })
    t.teardown(() => evil.close())
    const ev2 = await nextClose(evil)
    t.same([ev2.code, ev2.reason], reasonOf(4403, 'PORTCULLIS_ORIGIN_NOT_ALLOWED'))
    const noProtocol = new PortcullisSocket(node.ws + '/chat', [], { WebSocket, headers: { cookie, origin: ORIGIN } })
    t.teardown(() => noProtocol.close())
    t.same((await nextClose(noProtocol)).reason, 'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED', 'chat.v1 is required (default transports: the reason is known)')
  })
}

t.test('logout ends the session and closes its connections on both doors with 4001', async (t) => {
  const node = await chatNode(t)
  const { cookie } = await login(node, 'alice')
  const ws = chatSocket(t, node, cookie, 'websocket')
  const lp = chatSocket(t, node, cookie, 'long-poll')
  await Promise.all([next(ws, 'open'), next(lp, 'open')])
  const closes = Promise.all([nextClose(ws), nextClose(lp)])
  const res = await fetch(node.http + '/logout', { method: 'POST', headers: { cookie, origin: ORIGIN } })
  t.same(await res.json(), { closed: 2 })
  t.same((await closes).map((e) => [e.code, e.reason]), [[4001, 'session revoked'], [4001, 'session revoked']])
  const again = chatSocket(t, node, cookie, 'long-poll')
  t.equal((await nextClose(again)).code, 4401, 'the old cookie opens nothing any more')
})

t.test('two nodes on one Redis share the room, the sessions and the logout', async (t) => {
  const redis = await startRedis(t)
  const redisPrefix = `chat-test-${process.pid}-${Date.now()}:`
  const a = await chatNode(t, { redisUrl: redis.url, redisPrefix })
  const b = await chatNode(t, { redisUrl: redis.url, redisPrefix })
  const { cookie } = await login(a, 'alice')
  const onA = chatSocket(t, a, cookie, 'websocket')
  const onB = chatSocket(t, b, cookie, 'long-poll')
  await Promise.all([next(onA, 'open'), next(onB, 'open')])
  const gotA = messages(onA, 2)
  const gotB = messages(onB, 2)
  onA.send(JSON.stringify({ type: 'say', text: 'from a' }))
  await next(onB, 'message')
  onB.send(JSON.stringify({ type: 'say', text: 'from b' }))
  const texts = async (p: Promise<unknown[]>): Promise<string[]> => (await p).map((m) => JSON.parse(m as string).text)
  t.same(await texts(gotA), ['from a', 'from b'])
  t.same(await texts(gotB), ['from a', 'from b'], 'both nodes show the room in the same order')
  const closes = Promise.all([nextClose(onA), nextClose(onB)])
  await fetch(b.http + '/logout', { method: 'POST', headers: { cookie, origin: ORIGIN } })
  const [codeA, codeB] = (await closes).map((e) => e.code)
  t.equal(codeA, 4001, 'a logout on node b closes node a\'s WebSocket too')
  // The long-poll session on b ends as logged out either way: with the close record (4001) when
  // a held poll carries it, or with the policy's 401 (4401) when the client's next request reached
  // the gate after the revocation — the policy runs before the session id is looked at, so it
  // cannot tell that client why (PROTOCOL.md §5). Both mean "log in again".
  t.ok(codeB === 4001 || codeB === 4401, `node b's long-poll session ends as logged out (${codeB})`)
})

t.test('with TLS the chat serves https and wss, and the session cookie is a Secure __Host- cookie', async (t) => {
  const { key, cert } = testTls()
  const app = await buildChat({ sessionSecret: 'chat-contract-test-secret-0123456789', logger: false, clientBundle: Buffer.from(''), https: { key, cert } })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const origin = `https://127.0.0.1:${port}`
  const res = await new Promise<{ status: number, cookie: string }>((resolve, reject) => {
    const req = httpsRequest(`${origin}/login`, { method: 'POST', ca: cert, headers: { 'content-type': 'application/json', origin } }, (r) => {
      r.resume()
      resolve({ status: r.statusCode ?? 0, cookie: String(r.headers['set-cookie']?.[0] ?? '') })
    })
    req.on('error', reject)
    req.end(JSON.stringify({ user: 'alice', password: 'demo' }))
  })
  t.equal(res.status, 200)
  t.match(res.cookie, /^__Host-chat=/)
  t.match(res.cookie, /; Secure/)
  t.match(res.cookie, /; HttpOnly/)
  class TrustingWebSocket extends WebSocket {
    constructor (url: string, protocols?: string | string[], opts?: { headers: Record<string, string> }) {
      super(url, protocols, { ...opts, ca: cert })
    }
  }
  const s = new PortcullisSocket(`wss://127.0.0.1:${port}/chat`, 'chat.v1', {
    WebSocket: TrustingWebSocket, transports: ['websocket'], headers: { origin, cookie: res.cookie.split(';')[0] }
  })
  t.teardown(() => s.close())
  await next(s, 'open')
  t.equal(s.transport, 'websocket')
  const got = messages(s, 1)
  s.send(JSON.stringify({ type: 'say', text: 'over wss' }))
  t.equal(JSON.parse((await got)[0] as string).text, 'over wss')
})
