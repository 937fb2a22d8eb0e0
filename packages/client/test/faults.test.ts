import t from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import { FaultyStore } from '../../fallback/test/faulty-store.js'
import { PortcullisSocket } from '../src/index.js'
import { retryAfter } from '../src/long-poll.js'
import { client, echoServer, messages, next, nextClose } from './helpers.js'

/**
 * A TCP proxy in front of the server. `blackhole('GET /echo/_lp/poll')` makes the next connection
 * that carries such a request half-open: from then on nothing is forwarded either way, and
 * nothing is closed — what a NAT or proxy that silently dropped the connection looks like.
 */
async function proxy (t: { teardown: (fn: () => unknown) => void }, port: number): Promise<{ port: number, blackhole: (marker: string) => void, swallowed: () => number }> {
  let marker: string | undefined
  let swallowed = 0
  const conns = new Set<Socket>()
  const server = createServer((down) => {
    const up = connect(port, '127.0.0.1')
    conns.add(down)
    conns.add(up)
    let dead = false
    down.on('data', (chunk) => {
      if (!dead && marker !== undefined && chunk.toString('latin1').includes(marker)) {
        marker = undefined
        dead = true
        swallowed++
      }
      if (!dead) up.write(chunk)
    })
    up.on('data', (chunk) => { if (!dead) down.write(chunk) })
    down.on('close', () => up.destroy())
    up.on('close', () => { if (!dead) down.destroy() })
    down.on('error', () => {})
    up.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const c of conns) c.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return { port: addr.port, blackhole: (m) => { marker = m }, swallowed: () => swallowed }
}

t.test('the WebSocket URL\'s query string reaches the handler as the same request.query on both doors', async (t) => {
  const server = await echoServer(t)
  const q = '?room=blue&tag=a&tag=b&name=x+y%20z&empty='
  const ws = client(t, { ...server, url: server.url + q }, { rememberFallback: false })
  await next(ws, 'open')
  t.equal(ws.transport, 'websocket')
  const lp = client(t, { ...server, url: server.url + q }, { forceLongPoll: true })
  await next(lp, 'open')
  t.equal(lp.transport, 'long-poll')
  t.equal(server.queries.length, 2)
  const [a, b] = server.queries
  t.same([a.transport, b.transport], ['websocket', 'long-poll'])
  t.same(a.query, { room: 'blue', tag: ['a', 'b'], name: 'x y z', empty: '' })
  t.same(b.query, a.query, 'the handler cannot tell the doors apart by their query')
  const got = messages(lp, 1)
  lp.send('still works')
  t.same(await got, ['still works'], 'and no _lp URL carried a query string (the server refuses one with 400)')
})

t.test('a poll on a half-open connection is abandoned after pollTimeoutMs plus the margin, and the socket carries on', async (t) => {
  const server = await echoServer(t) // pollTimeoutMs 2000
  const p = await proxy(t, Number(new URL(server.url).port))
  const url = `ws://127.0.0.1:${p.port}/echo`
  const s = client(t, { ...server, url }, { forceLongPoll: true, pollTimeoutMarginMs: 300, headers: { origin: `http://127.0.0.1:${p.port}` } })
  await next(s, 'open')
  p.blackhole('GET /echo/_lp/poll')
  // the poll in flight (if any) returns within the hold; the next one goes into the hole
  await new Promise(resolve => setTimeout(resolve, 2300))
  t.equal(p.swallowed(), 1, 'a poll went into the half-open connection')
  const started = Date.now()
  const got = messages(s, 1, 8000)
  s.send('through')
  t.same(await got, ['through'], 'the echo arrives by a later poll')
  t.ok(Date.now() - started < 6000, 'within the hold (2 s) plus the margin, not never')
  t.equal(s.readyState, PortcullisSocket.OPEN)
})

t.test('a 503 with Retry-After on poll is waited out, not a close; the session goes on after the store recovers', async (t) => {
  const store = new FaultyStore()
  const server = await echoServer(t, { fallback: { store, storeTimeoutMs: 150 } })
  const s = client(t, server, { forceLongPoll: true })
  await next(s, 'open')
  let closed = false
  s.addEventListener('close', () => { closed = true })
  store.fail.get = 'hang'
  await new Promise(resolve => setTimeout(resolve, 2500))
  const tries = store.failures.get ?? 0
  store.heal()
  t.ok(tries >= 2 && tries <= 4, `Retry-After: 1 honoured: ${tries} tries in 2.5 s`)
  const got = messages(s, 1)
  s.send('after the outage')
  t.same(await got, ['after the outage'])
  t.notOk(closed, 'no close event during the outage')
})

t.test('a 429 on open is retried with backoff; a 401 stays a denial with no retry', async (t) => {
  const server = await echoServer(t, { fallback: { maxSessions: 1, closeLingerMs: 300 } })
  const first = client(t, server, { forceLongPoll: true })
  await next(first, 'open')
  const second = client(t, server, { forceLongPoll: true })
  let secondClosed: number | undefined
  second.addEventListener('close', (ev) => { secondClosed = (ev as CloseEvent).code })
  await new Promise(resolve => setTimeout(resolve, 600))
  const opensBefore = server.counts.opens
  t.ok(opensBefore >= 3, `the refused open was tried again (${opensBefore} opens)`)
  first.close(1000)
  await next(second, 'open', 10000)
  t.equal(secondClosed, undefined, 'no 4429 close: the slot came free and the retry opened')

  const denied = client(t, server, { forceLongPoll: true, user: 'mallory' })
  const before = server.counts.opens
  const ev = await nextClose(denied)
  t.equal(ev.code, 4401, 'a denial: 4000 + 401')
  t.equal(ev.reconnecting, false)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(server.counts.opens - before, 1, 'asked once')
})

t.test('a 5xx that outlasts its retries closes with 1006, and reconnect brings the socket back', async (t) => {
  const server = await echoServer(t)
  let failing = true
  let refused = 0
  const unavailable = (async (url: string, init: RequestInit) => {
    if (url.endsWith('/_lp/poll') && failing) {
      refused++
      return new Response(JSON.stringify({ code: 'PORTCULLIS_STORE_UNAVAILABLE', message: 'x' }), { status: 503, headers: { 'retry-after': '0' } })
    }
    return fetch(url, init)
  }) as never
  const s = client(t, server, { forceLongPoll: true, fetch: unavailable, reconnect: { minDelayMs: 10, maxDelayMs: 20 } })
  const ev = await nextClose(s)
  t.same([ev.code, ev.reconnecting], [1006, true])
  t.equal(refused, 7, 'the first answer and six retries')
  failing = false
  await next(s, 'open')
  t.equal(s.transport, 'long-poll')
})

t.test('a run of 409 answers to a send backs off, and a long run closes the socket', async (t) => {
  const server = await echoServer(t)
  const at: number[] = []
  let gaps = 3
  const gappy = (async (url: string, init: RequestInit) => {
    if (url.endsWith('/_lp/send') && gaps > 0) {
      gaps--
      at.push(Date.now())
      return new Response(JSON.stringify({ code: 'PORTCULLIS_FALLBACK_SEQUENCE_GAP', message: 'gap', ack: 0 }), { status: 409 })
    }
    return fetch(url, init)
  }) as never
  const s = client(t, server, { forceLongPoll: true, fetch: gappy })
  await next(s, 'open')
  const got = messages(s, 1)
  s.send('after gaps')
  t.same(await got, ['after gaps'])
  t.equal(at.length, 3)
  t.ok(at[2] - at[1] >= 100, `the third resend waited (${at[2] - at[1]} ms)`)

  gaps = 100
  const broken = client(t, server, { forceLongPoll: true, fetch: gappy })
  await next(broken, 'open')
  broken.send('never')
  const ev = await nextClose(broken, 30000)
  t.equal(ev.code, 1006, 'given up as broken')
  t.ok(gaps < 100 && gaps >= 100 - 9, `${100 - gaps} sends, bounded`)
})

t.test('Retry-After is read as seconds or an HTTP-date, and capped', async (t) => {
  t.equal(retryAfter('2'), 2000)
  t.equal(retryAfter('0'), 0)
  t.equal(retryAfter('86400'), 30000, 'capped at 30 s')
  const inFive = new Date(Date.now() + 5000).toUTCString()
  const ms = retryAfter(inFive) as number
  t.ok(ms > 3000 && ms <= 5000, `a date 5 s ahead: ${ms}`)
  t.equal(retryAfter(new Date(Date.now() - 5000).toUTCString()), 0, 'a past date: now')
  for (const bad of [null, undefined, '', 'soon', '-1', '1.5']) t.equal(retryAfter(bad), undefined, String(bad))
})
