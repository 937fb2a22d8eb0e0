import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { Client, type IFrame } from '@stomp/stompjs'
import type { FastifyInstance } from 'fastify'
import type { PortcullisSocket } from '@portcullis/policy'
import { protoApp } from './helpers.js'
import { parseStompFrames, stomp, stompHeader, StompViolations, type InspectorContext, type StompInspectorOptions } from '../src/index.js'
import { listen, waitFor } from '../../../test/helpers/index.js'

/** A per-connection STOMP inspector outside any server, for the state machine. */
function inspector (opts: StompInspectorOptions = {}, identity?: { id: string }) {
  const def = stomp(opts)
  const ctx = { protocol: 'v12.stomp', identity, state: { identity }, socket: {} as PortcullisSocket, log: {} as never, expose () {} } satisfies InspectorContext
  const insp = def.open!(ctx)
  return (s: string) => insp.message(Buffer.from(s), false)
}

const CONNECT = 'CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0'
const SEND = (dest: string, body = 'hi') => `SEND\ndestination:${dest}\ncontent-length:${Buffer.byteLength(body)}\n\n${body}\0`
const SUBSCRIBE = (dest: string, id = 'sub-0') => `SUBSCRIBE\nid:${id}\ndestination:${dest}\n\n\0`

t.test('CONNECT (or STOMP) must come first, once; nothing follows DISCONNECT', async (t) => {
  t.same(inspector()(SEND('/q')), StompViolations.CONNECT_FIRST)
  t.same(inspector()('\n'), undefined, 'a heart-beat before CONNECT is no frame')
  const a = inspector()
  t.equal(a(CONNECT), undefined)
  t.equal(a(SEND('/q')), undefined)
  t.same(a(CONNECT), StompViolations.ALREADY_CONNECTED)
  const b = inspector()
  t.equal(b('STOMP\naccept-version:1.2\nhost:x\n\n\0'), undefined, 'STOMP is CONNECT\'s alias')
  t.equal(b('DISCONNECT\nreceipt:77\n\n\0'), undefined)
  t.same(b(SEND('/q')), StompViolations.AFTER_DISCONNECT)
  t.equal(b('\n'), undefined, 'heart-beats after DISCONNECT are harmless')
})

t.test('the command allowlist, server frames and required headers', async (t) => {
  const readOnly = inspector({ commands: ['CONNECT', 'SUBSCRIBE', 'UNSUBSCRIBE', 'DISCONNECT'] })
  t.equal(readOnly(CONNECT + SUBSCRIBE('/topic/a')), undefined, 'two frames in one message')
  t.same(readOnly(SEND('/topic/a')), StompViolations.COMMAND_NOT_ALLOWED)
  const any = inspector()
  any(CONNECT)
  t.same(any('MESSAGE\ndestination:/q\nmessage-id:1\nsubscription:0\n\n\0'), StompViolations.COMMAND_NOT_ALLOWED, 'a server frame from a client')
  for (const frame of ['SEND\n\n\0', 'SUBSCRIBE\ndestination:/q\n\n\0', 'SUBSCRIBE\nid:1\n\n\0', 'ACK\n\n\0', 'BEGIN\n\n\0', 'UNSUBSCRIBE\n\n\0']) {
    const i = inspector()
    i(CONNECT)
    t.same(i(frame), StompViolations.MISSING_HEADER, JSON.stringify(frame))
  }
  t.same(inspector()('CONNECT\nhost:x\n\n\0'), StompViolations.MISSING_HEADER, 'accept-version is required (STOMP 1.2)')
})

t.test('grammar violations map to stable reasons', async (t) => {
  const cases: Array<[string, object]> = [
    ['CONNECT\naccept-version:1.2\n\nbody\0', StompViolations.INVALID_FRAME],
    ['CONNECT\naccept-version:1.2\n\n', StompViolations.INVALID_FRAME],
    [`CONNECT\n${Array.from({ length: 40 }, (_, i) => `h${i}:v`).join('\n')}\n\n\0`, StompViolations.TOO_MANY_HEADERS],
    [`CONNECT\naccept-version:1.2\nx:${'y'.repeat(9000)}\n\n\0`, StompViolations.HEADERS_TOO_LARGE]
  ]
  for (const [frame, v] of cases) t.same(inspector()(frame), v)
  const i = inspector({ maxHeaders: 4, maxHeaderBytes: 100 })
  i(CONNECT)
  t.same(i('SEND\ndestination:/q\ncontent-length:9\n\nhi\0'), StompViolations.CONTENT_LENGTH_MISMATCH)
})

t.test('a repeated content-length or destination is refused: no frame smuggled past the ACL', async (t) => {
  const acl: StompInspectorOptions['acl'] = (_identity, _command, destination) => destination.startsWith('/topic/public')
  // first content-length (48) hides a SUBSCRIBE in the body; a last-wins reader (5) would see it as a frame
  const hidden = 'hello\0SUBSCRIBE\nid:9\ndestination:/topic/secret\n\n'
  const smuggle = `SEND\ndestination:/topic/public.a\ncontent-length:${Buffer.byteLength(hidden)}\ncontent-length:5\n\n${hidden}\0`
  const i = inspector({ acl })
  i(CONNECT)
  t.same(i(smuggle), StompViolations.REPEATED_HEADER)
  const j = inspector({ acl })
  j(CONNECT)
  t.same(j('SEND\ndestination:/topic/public.a\ndestination:/topic/secret\n\nhi\0'), StompViolations.REPEATED_HEADER)
  const k = inspector({ acl })
  k(CONNECT)
  t.equal(k('SEND\ndestination:/topic/public.a\nx-tag:1\nx-tag:2\n\nhi\0'), undefined, 'other repeated headers are harmless')
})

t.test('the ACL sees the identity, the command and the decoded destination', async (t) => {
  const calls: unknown[] = []
  const acl: StompInspectorOptions['acl'] = (identity, command, destination) => {
    calls.push([identity?.id, command, destination])
    return destination.startsWith('/topic/public') || identity?.id === 'root'
  }
  const alice = inspector({ acl }, { id: 'alice' })
  alice(CONNECT)
  t.equal(alice(SUBSCRIBE('/topic/public.news')), undefined)
  t.same(alice('SEND\ndestination:/topic/admin\\cx\n\n\0'), StompViolations.DESTINATION_DENIED)
  const root = inspector({ acl }, { id: 'root' })
  root(CONNECT)
  t.equal(root(SEND('/topic/admin')), undefined)
  t.same(calls, [['alice', 'SUBSCRIBE', '/topic/public.news'], ['alice', 'SEND', '/topic/admin:x'], ['root', 'SEND', '/topic/admin']])
})

t.test('stomp() refuses bad options at startup', async (t) => {
  t.throws(() => stomp({ commands: ['SEND'] }), /CONNECT or STOMP/)
  t.throws(() => stomp({ commands: ['MESSAGE' as never] }), /client commands/)
  t.throws(() => stomp({ maxHeaders: 0 }), /maxHeaders/)
  t.throws(() => stomp({ maxHeaderBytes: 1.5 }), /maxHeaderBytes/)
  t.throws(() => stomp({ acl: 'yes' as never }), /acl/)
})

/**
 * A tiny STOMP 1.2 broker as the route handler: CONNECTED, SUBSCRIBE, SEND → MESSAGE to
 * subscribers, RECEIPT, DISCONNECT. It records every frame it sees, so the tests can prove an
 * invalid or forbidden frame never reached it.
 */
function broker (app: FastifyInstance, heartBeat = '0,0') {
  const seen: string[] = []
  const subs = new Map<string, Array<{ socket: PortcullisSocket, id: string }>>()
  let messageId = 0
  app.get('/stomp', { websocket: true, wsPolicy: { protocols: ['v12.stomp'] } }, (socket) => {
    socket.on('message', (data: Buffer) => {
      const frames = parseStompFrames(data, { maxHeaders: 64, maxHeaderBytes: 65536 })
      if (frames.length === 0) seen.push('EOL')
      for (const f of frames) {
        seen.push(`${f.command} ${stompHeader(f, 'destination') ?? ''}`.trim())
        const receipt = stompHeader(f, 'receipt')
        if (f.command === 'CONNECT' || f.command === 'STOMP') {
          socket.send(`CONNECTED\nversion:1.2\nheart-beat:${heartBeat}\nserver:test\n\n\0`)
        } else if (f.command === 'SUBSCRIBE') {
          const dest = stompHeader(f, 'destination')!
          subs.set(dest, [...(subs.get(dest) ?? []), { socket, id: stompHeader(f, 'id')! }])
        } else if (f.command === 'SEND') {
          const dest = stompHeader(f, 'destination')!
          const body = data.subarray(f.bodyOffset, f.bodyOffset + f.bodyLength)
          const type = stompHeader(f, 'content-type')
          const head = `MESSAGE\ndestination:${dest}\nmessage-id:${++messageId}\ncontent-length:${body.length}\n${type === undefined ? '' : `content-type:${type}\n`}`
          for (const s of subs.get(dest) ?? []) {
            s.socket.send(Buffer.concat([Buffer.from(`${head}subscription:${s.id}\n\n`), body, Buffer.from([0])]))
          }
        }
        if (receipt !== undefined) socket.send(`RECEIPT\nreceipt-id:${receipt}\n\n\0`)
      }
    })
  })
  return seen
}

/** A real @stomp/stompjs client over a real `ws` WebSocket offering v12.stomp. */
function stompClient (url: string, user: string, extra: Partial<ConstructorParameters<typeof Client>[0]> = {}) {
  const closes: Array<{ code: number, reason: string }> = []
  const client = new Client({
    webSocketFactory: () => new WebSocket(url, ['v12.stomp'], { headers: { 'x-user': user } }),
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
    onWebSocketClose: (evt: { code: number, reason: string }) => { closes.push({ code: evt.code, reason: evt.reason }) },
    ...extra
  })
  const connected = new Promise<IFrame>((resolve) => { client.onConnect = resolve })
  client.activate()
  return { client, connected, closes }
}

async function stompApp (t: Test, opts: StompInspectorOptions = {}, heartBeat?: string) {
  const app = await protoApp(t, { protocols: { 'v12.stomp': stomp(opts) } })
  const seen = broker(app, heartBeat)
  const { ws } = await listen(app)
  return { app, seen, url: `${ws}/stomp` }
}

const acl: StompInspectorOptions['acl'] = (identity, _command, destination) =>
  destination.startsWith('/topic/public') || (identity?.id === 'root' && destination.startsWith('/topic/admin'))

t.test('a @stomp/stompjs session: connect, subscribe, send, receive, with ACL and binary bodies', async (t) => {
  const { seen, url } = await stompApp(t, { acl })
  const { client, connected } = stompClient(url, 'alice')
  t.teardown(() => client.deactivate())
  const frame = await connected
  t.equal(frame.headers.version, '1.2')
  t.equal((client.webSocket as unknown as WebSocket).protocol, 'v12.stomp', 'negotiated v12.stomp')
  const received: string[] = []
  const binary: number[][] = []
  client.subscribe('/topic/public.chat', (m) => {
    if (m.isBinaryBody && m.headers['content-type'] === 'application/octet-stream') binary.push([...m.binaryBody])
    else received.push(m.body)
  })
  const subscribed = new Promise<void>((resolve) => client.watchForReceipt('r-1', () => resolve()))
  client.publish({ destination: '/topic/public.chat', body: 'warm-up', headers: { receipt: 'r-1' } })
  await subscribed
  client.publish({ destination: '/topic/public.chat', body: 'h\u00e9llo: world\nwith lines' })
  client.publish({ destination: '/topic/public.chat', binaryBody: new Uint8Array([0, 1, 2, 255]), headers: { 'content-type': 'application/octet-stream' } })
  await waitFor(() => received.length === 2 && binary.length === 1, 3000, 'messages back')
  t.same(received, ['warm-up', 'h\u00e9llo: world\nwith lines'])
  t.same(binary, [[0, 1, 2, 255]], 'a binary body with NULs, sized by content-length')
  t.same(seen.slice(0, 5), ['CONNECT', 'SUBSCRIBE /topic/public.chat', 'SEND /topic/public.chat', 'SEND /topic/public.chat', 'SEND /topic/public.chat'])
})

t.test('a forbidden destination closes the session with 1008; the broker never sees the frame', async (t) => {
  const { seen, url } = await stompApp(t, { acl })
  const { client, connected, closes } = stompClient(url, 'alice')
  t.teardown(() => client.deactivate())
  await connected
  client.subscribe('/topic/admin', () => { t.fail('no message for a forbidden subscription') })
  await waitFor(() => closes.length > 0, 3000, 'the close')
  t.same(closes[0], { code: 1008, reason: 'STOMP: destination not allowed' })
  t.same(seen, ['CONNECT'], 'only the CONNECT reached the handler')
  await client.deactivate()

  const root = stompClient(url, 'root')
  t.teardown(() => root.client.deactivate())
  await root.connected
  const got = new Promise<string>((resolve) => root.client.subscribe('/topic/admin', (m) => resolve(m.body), { receipt: 'r-admin' }))
  await new Promise<void>((resolve) => root.client.watchForReceipt('r-admin', () => resolve()))
  root.client.publish({ destination: '/topic/admin', body: 'for root' })
  t.equal(await got, 'for root', 'the same destination is allowed for root')
})

t.test('a disallowed command closes the session; heart-beats pass', async (t) => {
  const { seen, url } = await stompApp(t, { commands: ['CONNECT', 'SUBSCRIBE', 'UNSUBSCRIBE', 'DISCONNECT'] }, '0,20')
  const { client, connected, closes } = stompClient(url, 'bob', { heartbeatOutgoing: 20 })
  t.teardown(() => client.deactivate())
  await connected
  await waitFor(() => seen.includes('EOL'), 3000, 'a heart-beat EOL')
  client.publish({ destination: '/topic/public.x', body: 'nope' })
  await waitFor(() => closes.length > 0, 3000, 'the close')
  t.same(closes[0], { code: 1008, reason: 'STOMP: command not allowed' })
  t.notOk(seen.some(s => s.startsWith('SEND')), 'the SEND never reached the handler')
})

t.test('raw frames a client library would not send are refused on the real door', async (t) => {
  const { seen, url } = await stompApp(t)
  const cases: Array<[string | Buffer, string]> = [
    ['SEND\ndestination:/q\n\nhi\0', 'STOMP: CONNECT must come first'],
    ['GET / HTTP/1.1\n\n\0', 'STOMP: invalid frame'],
    [CONNECT + SEND('/q').replace('content-length:2', 'content-length:200'), 'STOMP: content-length mismatch'],
    [CONNECT + 'SEND\ndestination:/a\\tb\n\n\0', 'STOMP: invalid frame']
  ]
  for (const [frame, reason] of cases) {
    const ws = new WebSocket(url, ['v12.stomp'])
    await new Promise((resolve) => ws.once('open', resolve))
    const done = new Promise<[number, string]>((resolve) => ws.once('close', (code, r) => resolve([code, String(r)])))
    ws.send(frame)
    t.same(await done, [1008, reason], reason)
  }
  t.same(seen, [], 'the handler saw none of them')
})
