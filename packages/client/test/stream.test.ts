import t from 'tap'
import { client, echoServer, messages, next, nextClose } from './helpers.js'
import { bufferingProxy } from '../../../test/helpers/buffering-proxy.js'
import type { FetchLike } from '../src/types.js'

const realFetch = globalThis.fetch as unknown as FetchLike

t.test('with upgrades refused the client streams (wire v2), and messages keep their order both ways', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  const s = client(t, server, { rememberFallback: false })
  await next(s, 'open')
  t.equal(s.transport, 'stream')
  const got = messages(s, 50)
  for (let i = 0; i < 50; i++) s.send(`m${i}`)
  t.same(await got, Array.from({ length: 50 }, (_, i) => `m${i}`))
  t.equal(server.counts.polls, 0, 'no poll: the stream carries everything')
})

t.test('a stream client receives server pushes without sending, and acks them with an ack-only send', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  const serverSide = server.nextSocket()
  const s = client(t, server, { rememberFallback: false })
  await next(s, 'open')
  const got = messages(s, 3)
  const peer = await serverSide
  for (const m of ['a', 'b', 'c']) peer.send(m)
  t.same(await got, ['a', 'b', 'c'])
  const sendsBefore = server.counts.sends
  await new Promise((resolve) => setTimeout(resolve, 1600))
  t.ok(server.counts.sends > sendsBefore, 'an ack-only send within the ack interval')
  const quiet = server.counts.sends
  await new Promise((resolve) => setTimeout(resolve, 1300))
  t.equal(server.counts.sends, quiet, 'nothing new to ack: no more ack-only sends')
})

t.test('long-poll speaking v2 needs one exchange per echo: the send answer carries the reply', async (t) => {
  const server = await echoServer(t)
  const s = client(t, server, { forceLongPoll: true })
  await next(s, 'open')
  t.equal(s.transport, 'long-poll')
  const polls = server.counts.polls
  for (let i = 0; i < 20; i++) {
    const got = messages(s, 1)
    s.send(`e${i}`)
    t.same(await got, [`e${i}`])
  }
  t.equal(server.counts.sends, 20, 'one send per echo')
  t.ok(server.counts.polls - polls <= 1, `the held poll was not woken for the replies (${server.counts.polls - polls} more polls)`)
})

t.test('dropped streams resume after the last seq: every message exactly once, in order', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  let streams = 0
  // the network cuts every stream a few hundred bytes past its prelude
  const cutting: FetchLike = async (input, init) => {
    const res = await realFetch(input, init)
    if (!input.endsWith('/_lp/stream') || res.body == null) return res
    streams++
    const reader = res.body.getReader()
    let bytes = 0
    const body = new ReadableStream<Uint8Array>({
      async pull (c) {
        const r = await reader.read()
        if (r.done) return c.close()
        // past the prelude (2,069 bytes), about ten messages, cut mid-event
        const room = 2069 + 330 - bytes
        bytes += r.value.length
        if (r.value.length < room) return c.enqueue(r.value)
        c.enqueue(r.value.subarray(0, room))
        reader.cancel().catch(() => {})
        c.error(new TypeError('network cut'))
      }
    })
    return { status: res.status, ok: res.ok, json: () => res.json(), headers: res.headers, body }
  }
  const serverSide = server.nextSocket()
  const s = client(t, server, { fetch: cutting, rememberFallback: false })
  await next(s, 'open')
  t.equal(s.transport, 'stream')
  const peer = await serverSide
  const got = messages(s, 60, 15000)
  for (let i = 0; i < 60; i++) peer.send(`p${i}`)
  t.same(await got, Array.from({ length: 60 }, (_, i) => `p${i}`))
  t.ok(streams > 3, `the stream was cut and reopened (${streams} streams)`)
})

t.test('behind a proxy that buffers responses: no first byte in time, the same session long-polls, and the page remembers', async (t) => {
  const server = await echoServer(t)
  const port = Number(new URL(server.url).port)
  const proxy = await bufferingProxy(t, port)
  const url = `ws://127.0.0.1:${proxy.port}/echo`
  const via = { ...server, url, origin: proxy.origin }
  const s = client(t, via, { streamFirstByteMs: 500 })
  const t0 = Date.now()
  await next(s, 'open')
  t.equal(s.transport, 'long-poll')
  t.ok(Date.now() - t0 >= 500, 'opened once the stream deadline passed')
  t.equal(server.counts.opens, 1, 'one session: the stream gave way to long-poll within it')
  const got = messages(s, 3)
  for (const m of ['x', 'y', 'z']) s.send(m)
  t.same(await got, ['x', 'y', 'z'])
  s.close()
  await nextClose(s)

  const streams = server.counts.streams
  const upgrades = proxy.seen.length
  const again = client(t, via, { streamFirstByteMs: 500 })
  await next(again, 'open')
  t.equal(again.transport, 'long-poll')
  t.equal(server.counts.streams, streams, 'remembered: no stream tried again')
  t.notOk(proxy.seen.slice(upgrades).includes('/echo'), 'remembered: no WebSocket tried again')
})

t.test('against a v1 server (no versions offered back) the client long-polls with v1 rules', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  // the server sees an open without `versions`: a v1 open, answered with v 1
  const v1: FetchLike = (input, init) => {
    if (input.endsWith('/_lp/open') && init.body !== undefined) {
      const { versions, ...rest } = JSON.parse(init.body)
      return realFetch(input, { ...init, body: JSON.stringify(rest) })
    }
    return realFetch(input, init)
  }
  const s = client(t, server, { fetch: v1, rememberFallback: false })
  await next(s, 'open')
  t.equal(s.transport, 'long-poll')
  const got = messages(s, 10)
  for (let i = 0; i < 10; i++) s.send(`v${i}`)
  t.same(await got, Array.from({ length: 10 }, (_, i) => `v${i}`))
  t.equal(server.counts.streams, 0, 'a v1 session never streams')
  t.ok(server.counts.polls >= 2, 'the replies came by poll')
})

t.test('a close from the server ends a stream client with the same code and reason', async (t) => {
  const server = await echoServer(t, { refuseUpgrades: true })
  const s = client(t, server, { rememberFallback: false })
  await next(s, 'open')
  t.equal(s.transport, 'stream')
  s.send('close-me')
  const ev = await nextClose(s)
  t.same([ev.code, ev.reason, ev.wasClean], [4321, 'as asked', true])
})
