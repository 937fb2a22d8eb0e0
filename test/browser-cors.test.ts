import t from 'tap'
import { createServer } from 'node:http'
import { clientBundle, launchBrowser, newContext, openLoggedIn, startChat, waitForLines, WAIT_MS } from './helpers/browser.js'

const browser = await launchBrowser(t)

/**
 * A page on ANOTHER origin that the chat's allowlist trusts: it uses @portcullis/client against
 * the chat, so the fallback goes cross-origin — CORS preflight, credentials, the custom headers.
 */
function friendPage (chatWs: string, forceLongPoll: boolean): string {
  return `<!doctype html><title>friend</title><script type="module">
import { PortcullisSocket } from '/client.js'
const s = new PortcullisSocket(${JSON.stringify(chatWs)}, 'chat.v1', { forceLongPoll: ${String(forceLongPoll)} })
const seen = []
s.onopen = () => s.send(JSON.stringify({ type: 'say', text: 'hello from a friend' }))
s.onmessage = (ev) => {
  seen.push(JSON.parse(ev.data).text)
  window.outcome = { transport: s.transport, seen }
}
s.onclose = (ev) => { window.outcome = { closed: ev.code, reason: ev.reason } }
</script>`
}

for (const forceLongPoll of [false, true]) {
  const transport = forceLongPoll ? 'long-poll' : 'websocket'
  t.test(`a page on an allowed other origin chats over ${transport} with the visitor's session`, async (t) => {
    const bundle = await clientBundle()
    let chatWs = ''
    const friend = createServer((req, res) => {
      if (req.url === '/client.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' })
        res.end(bundle)
        return
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      res.end(friendPage(chatWs, forceLongPoll))
    })
    await new Promise<void>((resolve) => friend.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise((resolve) => friend.close(resolve)))
    const friendOrigin = `http://127.0.0.1:${(friend.address() as { port: number }).port}`

    const chat = await startChat(t, { allowedOrigins: ['self', friendOrigin] })
    chatWs = chat.origin.replace('http', 'ws') + '/chat'
    const context = await newContext(t, browser)
    const alice = await openLoggedIn(context, chat, 'alice')

    const page = await context.newPage()
    await page.goto(friendOrigin + '/')
    const outcome = await (await page.waitForFunction(() => (window as unknown as { outcome?: unknown }).outcome, undefined, { timeout: WAIT_MS })).jsonValue()
    t.same(outcome, { transport, seen: ['hello from a friend'] }, 'opened, sent, and got the broadcast back')
    t.same(await waitForLines(alice, 1), ['alice: hello from a friend'], 'the message reached the room as alice')
  })
}
