import t from 'tap'
import type { PortcullisSocket } from '@portcullis/policy'
import { MemoryStore, LongPollSocket, type OutboundFrame, type QueueSize } from '../src/index.js'
import { APP_ORIGIN, Inbox, LpClient, lpApp, start } from './helpers.js'
import { wsOpen, closed } from '../../../test/helpers/index.js'

const origin = APP_ORIGIN

/** What a handler's misuse of `close` throws, on either door. */
function misuse (socket: PortcullisSocket): string[] {
  const out: string[] = []
  for (const args of [[1005], [1006], [999], [5000], ['1000'], [1000, 'x'.repeat(124)], [4000, 'é'.repeat(62)]] as const) {
    try {
      socket.close(...(args as unknown as [number, string]))
      out.push('no error')
    } catch (err) {
      out.push(`${(err as Error).constructor.name}: ${(err as Error).message}`)
    }
  }
  return out
}

t.test('close() refuses the same codes and reasons, with the same errors, as ws', async (t) => {
  const app = await lpApp(t)
  const seen = new Inbox<string[]>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    seen.push(misuse(socket))
    t.equal(socket.readyState, 1, 'still open after the refused calls')
    socket.close(4000, 'x'.repeat(123))
  })
  const port = await start(app)
  const r = await wsOpen(`ws://127.0.0.1:${port}/ws`, { origin })
  t.same(await closed(r.ws!), { code: 4000, reason: 'x'.repeat(123) })
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same(await c.closed(), { code: 4000, reason: 'x'.repeat(123) })
  const [ws, lp] = await seen.take(2)
  t.equal(ws.filter(e => e !== 'no error').length, 7, 'ws refuses all seven')
  t.same(lp, ws)
})

t.test('send() takes what ws takes: strings, Buffers, ArrayBuffers, views, numbers, and the binary option', async (t) => {
  const app = await lpApp(t)
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    const send = (socket.send as (d: unknown, o?: unknown) => void).bind(socket)
    send('text')
    send(Buffer.from('buf'))
    send(new Uint8Array([1, 2]).buffer)
    send(new Uint16Array([0x0102]))
    send(new DataView(new Uint8Array([9, 8, 7]).buffer, 1, 2))
    send(42)
    send(Buffer.from('as text'), { binary: false })
    send('as binary', { binary: true })
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const got = (await c.receive(8)).map(m => typeof m === 'string' ? `t:${m}` : `b:${m.toString('hex')}`)
  t.same(got, ['t:text', `b:${Buffer.from('buf').toString('hex')}`, 'b:0102', `b:${Buffer.from(new Uint16Array([0x0102]).buffer).toString('hex')}`, 'b:0807', 't:42', 't:as text', `b:${Buffer.from('as binary').toString('hex')}`])
})

t.test('send() after close calls back with an error and never throws', async (t) => {
  const app = await lpApp(t)
  const errors = new Inbox<string>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.send('before', (err) => errors.push(err === undefined ? 'ok' : err.message))
    socket.close(1000)
    t.equal(socket.readyState, 2, 'CLOSING until the close is recorded')
    socket.close(1000)
    socket.send('after', (err) => errors.push(err === undefined ? 'ok' : err.message))
    socket.send('after, no callback')
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  const got = await errors.take(2)
  t.ok(got.includes('ok'), 'the send before the close went out')
  t.ok(got.some(m => /WebSocket is not open: readyState 2 \(CLOSING\)/.test(m)), 'ws\'s message for a send on a closing socket')
  const r = await c.poll()
  t.same(r.messages, ['before'])
  t.same(r.close, { code: 1000, reason: '' })
})

t.test('the socket has ws\'s constants, protocol and a bufferedAmount of unacked bytes', async (t) => {
  const app = await lpApp(t)
  let sock!: LongPollSocket
  const ready = new Inbox<void>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true, lpProtocols: ['p1'] } }, (socket) => {
    sock = socket as unknown as LongPollSocket
    ready.push()
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open(['p1'])
  await ready.take(1)
  t.ok(sock instanceof LongPollSocket)
  t.same([sock.CONNECTING, sock.OPEN, sock.CLOSING, sock.CLOSED], [0, 1, 2, 3])
  t.same([LongPollSocket.CONNECTING, LongPollSocket.OPEN, LongPollSocket.CLOSING, LongPollSocket.CLOSED], [0, 1, 2, 3])
  t.equal(sock.protocol, 'p1')
  t.equal(sock.binaryType, 'nodebuffer')
  t.equal(sock.bufferedAmount, 0)
  sock.send('12345')
  t.equal(sock.bufferedAmount, 5, 'counted at once')
  await new Promise(resolve => setImmediate(resolve))
  t.equal(sock.bufferedAmount, 5, 'still unacked once stored')
  await c.receive(1)
  sock.send('1')
  await new Promise(resolve => setImmediate(resolve))
  t.equal(sock.bufferedAmount, 6, 'received is not acked: the ack rides on the next poll')
  t.same((await c.poll()).messages, ['1'])
  sock.send('22')
  await new Promise(resolve => setImmediate(resolve))
  t.equal(sock.bufferedAmount, 3, 'acked bytes no longer count (as of the next write)')
})

/** A store whose writes fail (Redis down), to see the socket fail like a broken link. */
class FailingStore extends MemoryStore {
  failing = false
  override async pushOutbound (sid: string, frames: OutboundFrame[]): Promise<QueueSize> {
    if (this.failing) throw new Error('store down')
    return super.pushOutbound(sid, frames)
  }
}

t.test('a store failure closes the socket with 1011 and reports it on error when listened to', async (t) => {
  const store = new FailingStore()
  const app = await lpApp(t, { store })
  const events = new Inbox<string>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('error', (err: Error) => events.push(`error: ${err.message}`))
    socket.on('close', (code: number) => events.push(`close: ${code}`))
    store.failing = true
    socket.send('lost', (err) => events.push(`callback: ${err?.message}`))
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same(await events.take(3), ['callback: store down', 'error: store down', 'close: 1011'])
})

t.test('a store failure without an error listener does not crash the server', async (t) => {
  const store = new FailingStore()
  const app = await lpApp(t, { store })
  const closes = new Inbox<number>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    socket.on('close', (code: number) => closes.push(code))
    store.failing = true
    socket.send('lost')
  })
  const port = await start(app)
  await new LpClient(port, '/ws', { origin }).open()
  t.same(await closes.take(1), [1011])
  store.failing = false
  t.equal((await new LpClient(port, '/ws', { origin }).open()).status, 200)
})

t.test('ws heartbeat code runs unchanged: ping() and pong() are no-ops that call back, and the session stays open', async (t) => {
  const app = await lpApp(t)
  const pinged = new Inbox<string>()
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => {
    const s = socket as unknown as { ping: (d?: unknown, m?: boolean, cb?: (err?: Error) => void) => void, pong: (d?: unknown, m?: boolean, cb?: (err?: Error) => void) => void }
    s.ping(undefined, undefined, (err) => pinged.push(`ping:${String(err)}`))
    s.pong(undefined, undefined, (err) => pinged.push(`pong:${String(err)}`))
    socket.send('alive')
  })
  const port = await start(app)
  const c = new LpClient(port, '/ws', { origin })
  await c.open()
  t.same((await c.receive(1)).map(String), ['alive'])
  t.same(await pinged.take(2), ['ping:undefined', 'pong:undefined'])
})
