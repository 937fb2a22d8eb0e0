import t, { type Test } from 'tap'
import { existsSync, statSync } from 'node:fs'
import {
  launchBrowser, newContext, openLoggedIn, say, screenshot, startChat, transportOf, waitForLines, waitForState
} from './helpers/browser.js'
import { waitFor } from './helpers/index.js'

const browser = await launchBrowser(t)

/** Alice and Bob, each in their own browser context, take turns; both see every line in order. */
async function converse (t: Test, refuseUpgrades: boolean): Promise<void> {
  let upgrades = 0
  const chat = await startChat(t, { refuseUpgrades }, (app) => {
    // onResponse: the refusal answers in onRequest, before a later onRequest hook would run
    app.addHook('onResponse', function countUpgrades (request, _reply, done) {
      if (request.headers.upgrade !== undefined) upgrades++
      done()
    })
  })
  const alice = await openLoggedIn(await newContext(t, browser), chat, 'alice')
  const bob = await openLoggedIn(await newContext(t, browser), chat, 'bob')
  // the fallback's first choice is the stream (wire v2); browser-stream.test.ts covers long-poll
  const transport = refuseUpgrades ? 'stream' : 'websocket'
  t.equal(await transportOf(alice), transport, `alice's page shows ${transport}`)
  t.equal(await transportOf(bob), transport, `bob's page shows ${transport}`)

  const expected: string[] = []
  for (let i = 1; i <= 3; i++) {
    await say(alice, `alice ${i}`)
    expected.push(`alice: alice ${i}`)
    await say(bob, `bob ${i}`)
    expected.push(`bob: bob ${i}`)
  }
  // a burst without waiting: order must hold on the wire, not only between clicks
  for (let i = 1; i <= 4; i++) {
    await alice.evaluate((n) => { (document.getElementById('text') as HTMLInputElement).value = `burst ${n}` }, i)
    await alice.click('#send')
    expected.push(`alice: burst ${i}`)
  }
  const seenByBob = await waitForLines(bob, expected.length)
  const seenByAlice = await waitForLines(alice, expected.length)
  // turns interleave across two connections, so compare each sender's own order, and the totals
  t.same(seenByBob.filter((l) => l.startsWith('alice:')), expected.filter((l) => l.startsWith('alice:')), 'bob sees alice\'s lines in order')
  t.same(seenByAlice.filter((l) => l.startsWith('bob:')), expected.filter((l) => l.startsWith('bob:')), 'alice sees bob\'s lines in order')
  t.same(seenByAlice, seenByBob, 'both pages show the room in the same order')
  t.equal(seenByBob.length, expected.length, 'nothing lost, nothing doubled')

  if (!refuseUpgrades) {
    // Test 5: the working chat page as an artifact (test/artifacts/ is gitignored)
    const path = await screenshot(bob, 'chat.png')
    t.ok(existsSync(path) && statSync(path).size > 1000, `screenshot saved to ${path}`)
  } else {
    // the client remembers the fallback for the page session: a reload does not try the upgrade again
    const before = upgrades
    t.equal(before, 2, `each page tried the WebSocket once (${before})`)
    await alice.reload()
    await waitForState(alice, 'open')
    t.equal(await transportOf(alice), 'stream')
    t.equal(upgrades, before, 'no new upgrade attempt after the reload')
    // the old page's session was closed when it went away (1001), not left to idle out
    await waitFor(() => chat.app.wsPolicy.stats().connections === 2, 5000, 'the old fallback session to close')
    t.equal(chat.app.wsPolicy.stats().connections, 2, 'alice\'s reloaded page and bob: no ghost session')
  }
}

t.test('two users chat over WebSocket and every message arrives in order', async (t) => {
  await converse(t, false)
})

t.test('with upgrades refused by the server, the client falls back and the chat works the same', async (t) => {
  await converse(t, true)
})
