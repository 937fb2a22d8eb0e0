import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { isTransientClose, PortcullisSocket, type PortcullisCloseEvent } from '../src/index.js'
import { client, echoServer, next, nextClose } from './helpers.js'

t.test('a policy denial surfaces as a close event: 4000 + status, the denial code as reason', async (t) => {
  const server = await echoServer(t)
  const noSession = client(t, server, { user: null, rememberFallback: false })
  const ev = await nextClose(noSession)
  t.equal(ev.code, 4401)
  t.equal(ev.reason, 'PORTCULLIS_SESSION_REQUIRED')
  t.equal(ev.reconnecting, false)
  t.equal(noSession.transport, '', 'never opened')
  t.equal(server.counts.upgrades, 1, 'the WebSocket was tried first')
  t.equal(server.counts.opens, 1, 'then the fallback open told the reason the browser would hide')

  const wrongOrigin = client(t, server, { headers: { origin: 'http://evil.example' } })
  const ev2 = await nextClose(wrongOrigin)
  t.equal(ev2.code, 4403)
  t.equal(ev2.reason, 'PORTCULLIS_ORIGIN_NOT_ALLOWED')

  const badProtocol = new PortcullisSocket(server.url, 'other.v1', { WebSocket: (await import('ws')).default, headers: { origin: server.origin, authorization: 'Bearer alice' } })
  t.teardown(() => badProtocol.close())
  const ev3 = await nextClose(badProtocol)
  t.equal(ev3.code, 4400)
  t.equal(ev3.reason, 'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED')
})

t.test('a denial is not remembered as a need for the fallback', async (t) => {
  const server = await echoServer(t)
  await nextClose(client(t, server, { user: null }))
  const s = client(t, server)
  await next(s, 'open')
  t.equal(s.transport, 'websocket', 'the next socket tries the WebSocket again')
})

t.test('never retries after a denial, even with reconnect on', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server, { user: 'mallory', reconnect: { minDelayMs: 10, maxDelayMs: 20 } })
  const ev = await nextClose(s)
  t.equal(ev.code, 4401)
  t.equal(ev.reason, 'PORTCULLIS_AUTH_FAILED')
  t.equal(ev.reconnecting, false)
  const attempts = server.counts.upgrades + server.counts.opens
  await sleep(400) // 20× the longest backoff: a retry would have shown up
  t.equal(server.counts.upgrades + server.counts.opens, attempts, 'no further attempt')
  t.equal(s.readyState, PortcullisSocket.CLOSED)
})

t.test('a revoked session closes both doors with 4001 and is not retried', async (t) => {
  const server = await echoServer(t)
  const reconnect = { minDelayMs: 10, maxDelayMs: 20 }
  const ws = client(t, server, { reconnect })
  const lp = client(t, server, { reconnect, forceLongPoll: true })
  await Promise.all([next(ws, 'open'), next(lp, 'open')])
  t.equal(ws.transport, 'websocket')
  t.equal(lp.transport, 'long-poll')
  const closes = Promise.all([nextClose(ws), nextClose(lp)])
  t.equal(server.app.portcullisSessions.revoke('session-alice'), 2, 'two live connections closed')
  for (const ev of await closes) {
    t.equal(ev.code, 4001)
    t.equal(ev.reason, 'session revoked')
    t.equal(ev.reconnecting, false)
  }
  const attempts = server.counts.upgrades + server.counts.opens
  await sleep(400)
  t.equal(server.counts.upgrades + server.counts.opens, attempts, 'no reconnect after a revocation')
})

t.test('a transient close reconnects with backoff and opens again, on both doors', async (t) => {
  const server = await echoServer(t)
  for (const forceLongPoll of [false, true]) {
    const s = client(t, server, { forceLongPoll, reconnect: { minDelayMs: 20, maxDelayMs: 50 } })
    await next(s, 'open')
    s.send('restart')
    const ev = await nextClose(s)
    t.equal(ev.code, 1012)
    t.equal(ev.reconnecting, true, 'the close event says a reconnect is coming')
    t.equal(s.readyState, PortcullisSocket.CONNECTING)
    await next(s, 'open')
    t.equal(s.readyState, PortcullisSocket.OPEN)
    t.equal(s.transport, forceLongPoll ? 'long-poll' : 'websocket')
    s.close()
    t.equal((await nextClose(s)).reconnecting, false, 'close() stops reconnecting')
  }
})

t.test('an unreachable server is retried `retries` times, then the socket gives up', async (t) => {
  const server = await echoServer(t)
  const url = server.url
  await server.app.close()
  const s = new PortcullisSocket(url, 'echo.v1', {
    WebSocket: (await import('ws')).default,
    reconnect: { retries: 2, minDelayMs: 10, maxDelayMs: 20 },
    rememberFallback: false
  })
  t.teardown(() => s.close())
  const events: PortcullisCloseEvent[] = []
  let errors = 0
  s.onerror = () => { errors++ }
  await new Promise<void>((resolve) => {
    s.onclose = (ev) => {
      events.push(ev)
      if (!ev.reconnecting) resolve()
    }
  })
  t.same(events.map((e) => [e.code, e.reconnecting]), [[1006, true], [1006, true], [1006, false]])
  t.equal(errors, 3, 'an error event before each abnormal close, like WebSocket')
})

t.test('transient and final close codes', async (t) => {
  for (const code of [1001, 1006, 1011, 1012, 1013, 1014, 4008, 4009, 4010, 4011, 4429, 4500, 4503]) {
    t.equal(isTransientClose(code), true, `${code} is transient`)
  }
  for (const code of [1000, 1002, 1003, 1005, 1007, 1008, 1009, 4001, 4002, 4003, 4029, 4400, 4401, 4403, 4404, 4415]) {
    t.equal(isTransientClose(code), false, `${code} is final`)
  }
})
