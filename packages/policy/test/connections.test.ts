import t from 'tap'
import Fastify from 'fastify'
import { WebSocket } from 'ws'
import portcullis, { addConnectionGuard, CloseCodes } from '../src/index.js'
import type { ConnectionGuardFactory } from '../src/index.js'
import { listen, wsOpen, nextMessages, closed, waitFor, rawUpgrade } from '../../../test/helpers/index.js'

/** An app whose identity stage gives every connection session `s-<query.s>` and a guard that refuses "bad". */
async function guardedApp (t: { teardown: (fn: () => unknown) => void }) {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  const seenByGuard: string[] = []
  const closedGuards: string[] = []
  const guard: ConnectionGuardFactory = ({ state }) => ({
    message (data) {
      seenByGuard.push(String(data))
      if (String(data) === 'bad') return { code: CloseCodes.POLICY_VIOLATION, reason: 'bad message' }
      if (data.length > 10) return { code: CloseCodes.MESSAGE_TOO_BIG, reason: 'too big' }
    },
    close () { closedGuards.push(state.identity!.sessionId!) }
  })
  app.wsPolicy.addStage({
    name: 'who',
    phase: 'identity',
    evaluate (ctx) {
      const s = (ctx.request.query as { s?: string }).s ?? 'anon'
      ctx.state.identity = { id: `user-${s}`, sessionId: `s-${s}` }
      ;(ctx.state.guards ??= []).push(guard)
    }
  })
  const handled: string[] = []
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    socket.on('message', (data) => {
      handled.push(String(data))
      socket.send(`echo:${String(data)}`)
    })
  })
  const addr = await listen(app)
  return { app, ...addr, seenByGuard, handled, closedGuards }
}

t.test('a message guard runs before the handler and a violation closes with its code; the handler never sees it', async (t) => {
  const { ws, handled, seenByGuard } = await guardedApp(t)
  const r = await wsOpen(`${ws}/ws?s=1`)
  r.ws!.send('ok')
  t.same(await nextMessages(r.ws!), ['echo:ok'])
  const done = closed(r.ws!)
  r.ws!.send('bad')
  r.ws!.send('after')
  t.same(await done, { code: 1008, reason: 'bad message' })
  t.same(handled, ['ok'])
  t.same(seenByGuard, ['ok', 'bad'], 'nothing is inspected or delivered after a violation')
})

t.test('an oversized message closes with 1009 and the handler never sees it', async (t) => {
  const { ws, handled } = await guardedApp(t)
  const r = await wsOpen(`${ws}/ws?s=1`)
  const done = closed(r.ws!)
  r.ws!.send('x'.repeat(11))
  t.same(await done, { code: 1009, reason: 'too big' })
  t.same(handled, [])
})

t.test('closeSession closes every live connection of that session and no other', async (t) => {
  const { app, ws, closedGuards } = await guardedApp(t)
  const a1 = await wsOpen(`${ws}/ws?s=a`)
  const a2 = await wsOpen(`${ws}/ws?s=a`)
  const b = await wsOpen(`${ws}/ws?s=b`)
  t.equal(app.wsPolicy.connectionsOf('user-a'), 2)
  const c1 = closed(a1.ws!)
  const c2 = closed(a2.ws!)
  t.equal(app.wsPolicy.closeSession('s-a', CloseCodes.SESSION_REVOKED, 'session revoked'), 2)
  t.same(await c1, { code: 4001, reason: 'session revoked' })
  t.same(await c2, { code: 4001, reason: 'session revoked' })
  await waitFor(() => app.wsPolicy.connectionsOf('user-a') === 0, 2000, 'untrack')
  t.equal(b.ws!.readyState, 1, 'the other session stays open')
  t.equal(app.wsPolicy.closeSession('s-a', 4001, 'again'), 0)
  t.same(closedGuards.sort(), ['s-a', 's-a'])
  b.ws!.send('still here')
  t.same(await nextMessages(b.ws!), ['echo:still here'])
  b.ws!.close()
})

t.test('the session index stays right whichever of a session\'s connections closes first', async (t) => {
  const { app, ws } = await guardedApp(t)
  const a = [await wsOpen(`${ws}/ws?s=a`), await wsOpen(`${ws}/ws?s=a`), await wsOpen(`${ws}/ws?s=a`), await wsOpen(`${ws}/ws?s=a`)].map((r) => r.ws!)
  const b = [await wsOpen(`${ws}/ws?s=b`), await wsOpen(`${ws}/ws?s=b`)].map((r) => r.ws!)
  t.equal(app.wsPolicy.stats().connections, 6)
  // a middle one, the newest, the oldest: each unlinks from the middle and both ends of the lists
  for (const [i, left] of [[1, 3], [3, 2], [0, 1]] as const) {
    a[i].close()
    await waitFor(() => app.wsPolicy.connectionsOf('user-a') === left, 2000, `a${i} released`)
    t.equal(app.wsPolicy.stats().connections, left + 2, `${left} of a and both of b are counted`)
  }
  const last = closed(a[2])
  t.equal(app.wsPolicy.closeSession('s-a', CloseCodes.SESSION_REVOKED, 'session revoked'), 1, 'revocation finds the one left')
  t.same(await last, { code: 4001, reason: 'session revoked' })
  await waitFor(() => app.wsPolicy.connectionsOf('user-a') === 0, 2000, 'a released')
  t.equal(app.wsPolicy.closeSession('s-a', 4001, 'again'), 0, 'the session is gone from the index')
  b[0].close()
  await waitFor(() => app.wsPolicy.connectionsOf('user-b') === 1, 2000, 'b0 released')
  const lastB = closed(b[1])
  t.equal(app.wsPolicy.closeSession('s-b', CloseCodes.SESSION_REVOKED, 'session revoked'), 1)
  t.same(await lastB, { code: 4001, reason: 'session revoked' })
  await waitFor(() => app.wsPolicy.stats().connections === 0, 2000, 'all released')
  t.same(app.wsPolicy.stats().connectionsByTransport, {})
})

t.test('onConnectionClose listeners hear every closed connection and stats go back to zero', async (t) => {
  const { app, ws } = await guardedApp(t)
  const heard: string[] = []
  app.wsPolicy.onConnectionClose((state) => heard.push(state.identity!.id))
  const r = await wsOpen(`${ws}/ws?s=z`)
  t.equal(app.wsPolicy.stats().connections, 1)
  r.ws!.close()
  await waitFor(() => heard.length === 1, 2000, 'close listener')
  t.same(heard, ['user-z'])
  t.equal(app.wsPolicy.stats().connections, 0)
})

t.test('server shutdown closes live connections with 1001 Going Away', async (t) => {
  const app = Fastify()
  await app.register(portcullis)
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  const done = closed(r.ws!)
  await app.close()
  t.same(await done, { code: 1001, reason: 'server shutting down' })
})

t.test('the handshake answers no subprotocol unless a stage chose one', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage({
    name: 'pick',
    phase: 'subprotocol',
    evaluate (ctx) { if (ctx.offeredProtocols?.includes('chat.v1') === true) ctx.state.protocol = 'chat.v1' }
  })
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => socket.send(socket.protocol))
  const { ws, port } = await listen(app)
  const chosen = await wsOpen(`${ws}/ws`, { protocols: ['other', 'chat.v1'] })
  t.equal(chosen.ws!.protocol, 'chat.v1')
  t.same(await nextMessages(chosen.ws!), ['chat.v1'])
  chosen.ws!.close()
  // ws alone would echo the client's "other"; Portcullis answers no protocol at all
  const none = await rawUpgrade(port, '/ws', { 'Sec-WebSocket-Protocol': 'other' })
  t.equal(none.status, 101)
  t.equal(none.headers['sec-websocket-protocol'], undefined)
})

t.test('a WebSocket peer that stops reading is sent 4009 slow consumer once maxBufferedBytes wait', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis, { maxBufferedBytes: 256 * 1024 })
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  let server: { readyState: number } | undefined
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    server = socket
    socket.on('message', () => {
      // a broadcaster that never checks bufferedAmount: 32 MiB at once
      for (let i = 0; i < 512; i++) socket.send(chunk)
    })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  const tcp = (r.ws as unknown as { _socket: { pause: () => void, resume: () => void } })._socket
  tcp.pause() // stop reading
  const done = closed(r.ws!)
  r.ws!.send('flood me')
  await waitFor(() => server?.readyState === 2, 5000, 'the server to start closing')
  // read again: the data already queued arrives, then the close frame the server queued behind it
  tcp.resume()
  t.same(await done, { code: 4009, reason: 'slow consumer' })
  await waitFor(() => app.wsPolicy.stats().connections === 0, 2000, 'released')
})

t.test('a slow consumer that never reads its close frame is dropped after closeTimeout (1006 on the server)', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis, { maxBufferedBytes: 256 * 1024, websocket: { closeTimeout: 300 } })
  const closes: number[] = []
  const asked: Array<{ code: number, at: number }> = []
  let closedAt = 0
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    const close = socket.close
    socket.close = function (code?: number, reason?: string | Buffer) {
      asked.push({ code: code ?? 0, at: Date.now() })
      return close.call(this, code, reason)
    }
    socket.on('close', (code: number) => { closes.push(code); closedAt = Date.now() })
    socket.on('message', () => {
      for (let i = 0; i < 512; i++) socket.send(chunk)
    })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  ;(r.ws as unknown as { _socket: { pause: () => void } })._socket.pause() // never read again
  r.ws!.send('flood me')
  await waitFor(() => closes.length === 1, 5000, 'the slow reader is dropped')
  t.equal(asked[0]?.code, 4009, 'the bound asked for a 4009 close')
  // the close frame waits behind the data the peer never reads: no closing handshake, so the
  // socket is destroyed after closeTimeout and the server's close event reports 1006
  t.equal(closes[0], 1006)
  t.ok(closedAt - asked[0].at >= 290, `dropped ${closedAt - asked[0].at} ms after the close was asked (closeTimeout 300)`)
  t.equal(app.wsPolicy.stats().connections, 0, 'freed')
  r.ws!.terminate()
})

t.test('the slow-consumer bound leaves a reading peer alone', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis, { maxBufferedBytes: 256 * 1024 })
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    socket.on('message', () => { for (let i = 0; i < 64; i++) socket.send('x'.repeat(1024)) })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  r.ws!.send('go')
  t.equal((await nextMessages(r.ws!, 64)).length, 64)
  t.equal(r.ws!.readyState, 1, 'still open')
  r.ws!.close()
})

t.test('addConnectionGuard appends in stage order without changing the list an earlier stage made', async (t) => {
  const a: ConnectionGuardFactory = () => ({})
  const b: ConnectionGuardFactory = () => ({})
  const state: { guards?: ConnectionGuardFactory[] } = {}
  addConnectionGuard(state, a)
  const first = state.guards
  addConnectionGuard(state, b)
  t.same(first, [a], 'the first list is left as it was')
  t.equal(state.guards?.length, 2)
  t.equal(state.guards?.[0], a)
  t.equal(state.guards?.[1], b)
})

t.test('server sockets are of the tracked subclass of the ws server\'s class, the app\'s own WebSocket class included', async (t) => {
  class AppSocket extends WebSocket {
    hello (): string { return 'app method' }
  }
  for (const [label, websocket] of [['ws\'s own class', {}], ['the app\'s class', { WebSocket: AppSocket }]] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(portcullis, { websocket })
    const seen: Array<{ ownEmit: boolean, ownClose: boolean, isWs: boolean, isApp: boolean, hello: unknown }> = []
    app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
      seen.push({
        ownEmit: Object.hasOwn(socket, 'emit'),
        ownClose: Object.hasOwn(socket, 'close'),
        isWs: socket instanceof WebSocket,
        isApp: socket instanceof AppSocket,
        hello: (socket as unknown as { hello?: () => string }).hello?.()
      })
      socket.on('message', () => { throw new Error('listener bug') })
    })
    const { ws } = await listen(app)
    const r = await wsOpen(`${ws}/ws`)
    const done = closed(r.ws!)
    r.ws!.send('x')
    t.same(await done, { code: 1011, reason: 'internal error' }, `${label}: a throwing listener is still contained`)
    t.same(seen, [{ ownEmit: false, ownClose: false, isWs: true, isApp: 'WebSocket' in websocket, hello: 'WebSocket' in websocket ? 'app method' : undefined }], label)
  }
})

t.test('the state a handler sees keeps no guard list once the connection is attached, and its two guards still run in order', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  const order: string[] = []
  const first: ConnectionGuardFactory = () => ({ message () { order.push('first'); return undefined } })
  const second: ConnectionGuardFactory = () => ({ message (data) { order.push('second'); if (String(data) === 'bad') return { code: 1008, reason: 'bad' }; return undefined } })
  app.wsPolicy.addStage({ name: 'g', phase: 'custom', evaluate (ctx) { addConnectionGuard(ctx.state, first); addConnectionGuard(ctx.state, second) } })
  let seen: unknown = 'not run'
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket, request) => {
    seen = request.portcullis?.state.guards
    socket.on('message', () => socket.send('ok'))
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  r.ws!.send('x')
  t.same(await nextMessages(r.ws!), ['ok'])
  const done = closed(r.ws!)
  r.ws!.send('bad')
  t.same(await done, { code: 1008, reason: 'bad' })
  t.equal(seen, undefined, 'no list left on the state')
  t.same(order, ['first', 'second', 'first', 'second'])
})
