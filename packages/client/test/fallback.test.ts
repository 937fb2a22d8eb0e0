import t from 'tap'
import { PortcullisSocket } from '../src/index.js'
import { client, echoServer, messages, next, nextClose } from './helpers.js'

t.test('falls back to the fallback\'s stream when the upgrade is refused, and the app does not notice', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  const s = client(t, server, { rememberFallback: false })
  await next(s, 'open')
  t.equal(s.transport, 'stream', 'the fallback\'s first choice against a v2 server')
  t.equal(s.protocol, 'echo.v1', 'the same subprotocol is negotiated on the fallback')
  t.equal(server.counts.upgrades, 1, 'the WebSocket was tried first')
  t.equal(server.counts.opens, 1)
  const got = messages(s, 3)
  s.send('one')
  s.send('two')
  s.send(new Uint8Array([9, 8, 7]))
  const all = await got
  t.same(all.slice(0, 2), ['one', 'two'])
  t.same([...new Uint8Array(all[2] as ArrayBuffer)], [9, 8, 7], 'binary survives the base64 leg')
})

t.test('falls back when the upgrade hangs past openTimeoutMs', async (t) => {
  const server = await echoServer(t, { hangUpgrades: true })
  const started = Date.now()
  const s = client(t, server, { openTimeoutMs: 300, rememberFallback: false })
  await next(s, 'open')
  t.equal(s.transport, 'stream')
  t.ok(Date.now() - started >= 300, 'waited for the timeout before falling back')
  const got = messages(s, 1)
  s.send('after a hang')
  t.same(await got, ['after a hang'])
})

t.test('remembers the fallback: the next socket to the same URL skips the WebSocket', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  const first = client(t, server)
  await next(first, 'open')
  t.equal(server.counts.upgrades, 1)
  const second = client(t, server)
  await next(second, 'open')
  t.equal(second.transport, 'stream', 'straight to the fallback that worked')
  t.equal(server.counts.upgrades, 1, 'no second upgrade attempt')
  t.equal(server.counts.opens, 2)
})

t.test('forceLongPoll never tries the WebSocket, and many messages keep their order both ways', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server, { forceLongPoll: true })
  await next(s, 'open')
  t.equal(s.transport, 'long-poll')
  t.equal(server.counts.upgrades, 0)
  const n = 300
  const got = messages(s, n, 15000)
  for (let i = 0; i < n; i++) s.send(`#${i}`)
  t.same(await got, Array.from({ length: n }, (_, i) => `#${i}`))
})

t.test('server pushes reach a long-poll client without it sending anything', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server, { forceLongPoll: true })
  const serverSocket = server.nextSocket()
  await next(s, 'open')
  const got = messages(s, 2)
  const ss = await serverSocket
  ss.send('push 1')
  ss.send('push 2')
  t.same(await got, ['push 1', 'push 2'])
})

t.test('close codes mean the same on the long-poll door: server close and client close', async (t) => {
  const server = await echoServer(t)
  const a = client(t, server, { forceLongPoll: true })
  await next(a, 'open')
  a.send('close-me')
  const ev = await nextClose(a)
  t.equal(ev.code, 4321)
  t.equal(ev.reason, 'as asked')
  t.equal(ev.wasClean, true)
  t.equal(a.readyState, PortcullisSocket.CLOSED)

  const b = client(t, server, { forceLongPoll: true })
  const serverSocket = server.nextSocket()
  await next(b, 'open')
  const ss = await serverSocket
  const seen = new Promise<[number, string]>((resolve) => ss.once('close', (code: number, reason: Buffer) => resolve([code, String(reason)])))
  b.close(4100, 'done here')
  t.equal((await nextClose(b)).code, 4100)
  t.same(await seen, [4100, 'done here'], 'the handler saw the client close')
})

t.test('messages sent right before close() still reach the server', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server, { forceLongPoll: true })
  const serverSocket = server.nextSocket()
  await next(s, 'open')
  const ss = await serverSocket
  const received: string[] = []
  ss.on('message', (d: Buffer) => received.push(String(d)))
  const closed = new Promise((resolve) => ss.once('close', resolve))
  s.send('last words 1')
  s.send('last words 2')
  s.close(1000)
  await closed
  t.same(received, ['last words 1', 'last words 2'])
})

t.test('a send lost on the network is retried and reaches the handler exactly once', async (t) => {
  const server = await echoServer(t)
  let dropped = 0
  // the first send POST "fails on the network" after the server got it: a lost response
  const flaky = (async (url: string, init: RequestInit) => {
    const res = await fetch(url, init)
    if (url.endsWith('/_lp/send') && dropped === 0) {
      dropped++
      throw new TypeError('network error')
    }
    return res
  }) as never
  const s = client(t, server, { forceLongPoll: true, fetch: flaky })
  const serverSocket = server.nextSocket()
  await next(s, 'open')
  const ss = await serverSocket
  const received: string[] = []
  ss.on('message', (d: Buffer) => received.push(String(d)))
  const got = messages(s, 2)
  s.send('once')
  s.send('twice?')
  t.same(await got, ['once', 'twice?'])
  t.equal(dropped, 1, 'one response was lost')
  t.same(received, ['once', 'twice?'], 'the retried send was deduplicated by seq')
})

t.test('a single 5xx from the fallback is retried with backoff: the socket stays open', async (t) => {
  const server = await echoServer(t)
  let failPolls = true
  const unavailable = (async (url: string, init: RequestInit) => {
    if (url.endsWith('/_lp/poll') && failPolls) {
      failPolls = false
      return new Response(JSON.stringify({ code: 'FST_UNAVAILABLE', message: 'shutting down' }), { status: 503 })
    }
    return fetch(url, init)
  }) as never
  const s = client(t, server, { forceLongPoll: true, fetch: unavailable })
  let closes = 0
  s.addEventListener('close', () => { closes++ })
  await next(s, 'open')
  const got = messages(s, 1)
  s.send('after a 503')
  t.same(await got, ['after a 503'])
  t.equal(failPolls, false, 'a poll was answered 503')
  t.equal(closes, 0, 'and it was not a close (a 5xx that outlasts its retries is: see faults.test.ts)')
})

t.test('sends are split to fit the server\'s body and message-count limits', async (t) => {
  const server = await echoServer(t, { fallback: { maxBodyBytes: 4096, maxMessagesPerRequest: 3 } })
  const s = client(t, server, { forceLongPoll: true })
  await next(s, 'open')
  const texts = Array.from({ length: 12 }, (_, i) => `${i}:` + 'é"'.repeat(500)) // ~2 KB of JSON each
  const got = messages(s, texts.length, 15000)
  for (const text of texts) s.send(text)
  t.same(await got, texts, 'every message arrived, in order, none refused as too large')
  t.equal(s.readyState, PortcullisSocket.OPEN)
})
