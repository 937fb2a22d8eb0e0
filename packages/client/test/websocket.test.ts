import t from 'tap'
import { PortcullisSocket, type PortcullisCloseEvent } from '../src/index.js'
import { client, echoServer, messages, next, nextClose } from './helpers.js'

t.test('opens over WebSocket when it can, with the negotiated subprotocol', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server)
  t.equal(s.readyState, PortcullisSocket.CONNECTING)
  t.equal(s.transport, '', 'no transport before open')
  await next(s, 'open')
  t.equal(s.readyState, PortcullisSocket.OPEN)
  t.equal(s.readyState, s.OPEN, 'instance constants like WebSocket')
  t.equal(s.transport, 'websocket')
  t.equal(s.protocol, 'echo.v1')
  t.equal(server.counts.opens, 0, 'the fallback was never asked')
})

t.test('sends and receives text and binary in order, to on* handlers and listeners alike', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server)
  const viaHandler: unknown[] = []
  s.onmessage = (ev) => { viaHandler.push(ev.data) }
  await next(s, 'open')
  const got = messages(s, 51)
  for (let i = 0; i < 50; i++) s.send(`m${i}`)
  s.send(new Uint8Array([0, 1, 2, 255]))
  const all = await got
  t.same(all.slice(0, 50), Array.from({ length: 50 }, (_, i) => `m${i}`))
  t.same([...new Uint8Array(all[50] as ArrayBuffer)], [0, 1, 2, 255], 'binary arrives as an ArrayBuffer')
  t.same(viaHandler, all, 'onmessage saw the same messages')
})

t.test('close() ends the connection cleanly with the given code and reason', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server)
  const serverSocket = server.nextSocket()
  await next(s, 'open')
  const seen = new Promise<[number, string]>((resolve) => {
    serverSocket.then((ss) => ss.once('close', (code: number, reason: Buffer) => resolve([code, String(reason)])))
  })
  const closing = nextClose(s)
  s.close(4100, 'done here')
  t.equal(s.readyState, PortcullisSocket.CLOSING)
  const ev = await closing
  t.equal(ev.code, 4100)
  t.equal(ev.reason, 'done here')
  t.equal(ev.wasClean, true)
  t.equal(ev.reconnecting, false)
  t.equal(s.readyState, PortcullisSocket.CLOSED)
  t.same(await seen, [4100, 'done here'], 'the server saw the same close')
  t.doesNotThrow(() => s.send('dropped'), 'send after close drops the message, like WebSocket')
})

t.test('a close from the server surfaces with its code and reason', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server)
  let viaHandler: PortcullisCloseEvent | undefined
  s.onclose = (ev) => { viaHandler = ev }
  await next(s, 'open')
  s.send('close-me')
  const ev = await nextClose(s)
  t.equal(ev.code, 4321)
  t.equal(ev.reason, 'as asked')
  t.equal(viaHandler, ev, 'onclose got the same event')
})

t.test('misuse throws like WebSocket does', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server)
  t.throws(() => s.send('too early'), { name: 'InvalidStateError' }, 'send while CONNECTING')
  t.throws(() => s.close(1006), { name: 'InvalidAccessError' }, 'a reserved close code')
  t.throws(() => s.close(1000, 'x'.repeat(124)), { name: 'SyntaxError' }, 'a reason over 123 bytes')
  t.throws(() => new PortcullisSocket('ftp://127.0.0.1/x'), SyntaxError, 'a URL that is not ws(s) or http(s)')
  t.throws(() => new PortcullisSocket('/relative-without-a-page'), SyntaxError, 'a relative URL outside a page')
  t.doesNotThrow(() => { s.binaryType = 'arraybuffer' }, 'binaryType can be set, as code written for WebSocket does')
  await next(s, 'open')
})

t.test('http(s) URLs are accepted and converted to ws(s)', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server)
  const h = new PortcullisSocket(server.origin + '/echo', [], { WebSocket: class { constructor () { throw new Error('no') } } as never, transports: ['websocket'] })
  t.equal(h.url, server.url)
  t.equal((await nextClose(h)).code, 1006, 'a WebSocket that cannot even be constructed is a failure before open')
  await next(s, 'open')
})
