import t, { type Test } from 'tap'
import { launchBrowser, newContext, openLoggedIn, say, startChat, transportOf, waitForLines, waitForState, type Chat } from './helpers/browser.js'
import { bufferingProxy } from './helpers/buffering-proxy.js'

const browser = await launchBrowser(t)

/** Alice and Bob take turns and burst; both pages show every line once, in order. */
async function converse (t: Test, chat: Chat, transport: string): Promise<void> {
  const alice = await openLoggedIn(await newContext(t, browser), chat, 'alice')
  const bob = await openLoggedIn(await newContext(t, browser), chat, 'bob')
  t.equal(await transportOf(alice), transport, `alice's page shows ${transport}`)
  t.equal(await transportOf(bob), transport, `bob's page shows ${transport}`)
  const expected: string[] = []
  for (let i = 1; i <= 3; i++) {
    await say(alice, `alice ${i}`)
    expected.push(`alice: alice ${i}`)
    await say(bob, `bob ${i}`)
    expected.push(`bob: bob ${i}`)
  }
  for (let i = 1; i <= 4; i++) {
    await bob.evaluate((n) => { (document.getElementById('text') as HTMLInputElement).value = `burst ${n}` }, i)
    await bob.click('#send')
    expected.push(`bob: burst ${i}`)
  }
  const seenByBob = await waitForLines(bob, expected.length)
  const seenByAlice = await waitForLines(alice, expected.length)
  t.same(seenByAlice.filter((l) => l.startsWith('bob:')), expected.filter((l) => l.startsWith('bob:')), 'alice sees bob\'s lines in order')
  t.same(seenByBob.filter((l) => l.startsWith('alice:')), expected.filter((l) => l.startsWith('alice:')), 'bob sees alice\'s lines in order')
  t.same(seenByAlice, seenByBob, 'both pages show the room in the same order')
  t.equal(seenByAlice.length, expected.length, 'nothing lost, nothing doubled')
}

t.test('with upgrades refused, two users chat over the stream transport and every line arrives in order', async (t) => {
  const streams: string[] = []
  const chat = await startChat(t, { refuseUpgrades: true }, (app) => {
    app.addHook('onResponse', function countStreams (request, reply, done) {
      if (request.url.endsWith('/_lp/stream')) streams.push(String(reply.getHeader('content-type')))
      done()
    })
  })
  await converse(t, chat, 'stream')
  t.ok(streams.every((c) => c.startsWith('text/event-stream')), 'the streams were server-sent events')
})

t.test('behind a proxy that buffers whole responses, the page falls back to long-poll, chats, and remembers it', async (t) => {
  const chat = await startChat(t)
  const proxy = await bufferingProxy(t, chat.port)
  const via: Chat = { ...chat, url: proxy.origin + '/', origin: proxy.origin }
  await converse(t, via, 'long-poll')
  t.ok(proxy.seen.some((p) => p.endsWith('/_lp/stream')), 'a stream was tried (and never showed a byte in time)')
  t.ok(proxy.seen.some((p) => p.endsWith('/_lp/poll')), 'then the session long-polled')

  // the page session remembers: a reload goes straight to long-poll, no WebSocket, no stream
  const context = await newContext(t, browser)
  const page = await openLoggedIn(context, via, 'alice')
  t.equal(await transportOf(page), 'long-poll')
  const before = proxy.seen.length
  const t0 = Date.now()
  await page.reload()
  await waitForState(page, 'open')
  t.equal(await transportOf(page), 'long-poll')
  t.notOk(proxy.seen.slice(before).some((p) => p.endsWith('/_lp/stream') || p === '/chat'), 'no stream and no upgrade tried after the reload')
  t.ok(Date.now() - t0 < 3000, 'and no stream deadline waited for')
})
