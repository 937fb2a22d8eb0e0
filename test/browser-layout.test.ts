/**
 * The chat page as people see it, in real Chromium at desktop (1280×800) and phone (390×844)
 * widths: screenshots of every state in test/artifacts/ (not committed), and checks that the
 * controls stay inside the viewport without overlapping, the message list scrolls (not the page),
 * labels, focus order, live regions, contrast, the favicon, and no CSP violation anywhere.
 */
import t, { type Test } from 'tap'
import type { BrowserContext, Page } from 'playwright-core'
import {
  contrastOf, cspViolations, launchBrowser, layoutOf, newContext, noticeOf, openLoggedIn, recordCspViolations,
  say, screenshot, startChat, transportOf, VIEWPORTS, waitForLines, waitForState, WAIT_MS
} from './helpers/browser.js'

const browser = await launchBrowser(t)

type Width = keyof typeof VIEWPORTS

async function person (t: Test, width: Width): Promise<{ context: BrowserContext, failed: string[] }> {
  const context = await newContext(t, browser, { viewport: VIEWPORTS[width] })
  await recordCspViolations(context)
  const failed: string[] = []
  context.on('response', (res) => { if (res.status() >= 400) failed.push(`${res.status()} ${new URL(res.url()).pathname}`) })
  return { context, failed }
}

/** Layout checks every screenshot gets. */
async function checkLayout (t: Test, page: Page, what: string): Promise<void> {
  const l = await layoutOf(page)
  t.same(l.outside, [], `${what}: no control leaves the viewport (checked ${l.checked.join(', ')})`)
  t.same(l.overlaps, [], `${what}: no two controls overlap`)
  t.ok(l.documentWidth <= l.viewport.width, `${what}: no sideways scrolling (${l.documentWidth} ≤ ${l.viewport.width})`)
  t.same(await cspViolations(page), [], `${what}: no CSP violation`)
}

/** Text colours against their backgrounds: WCAG AA for normal text is 4.5:1. */
async function checkContrast (t: Test, page: Page, selectors: string[], what: string): Promise<void> {
  const ratios = await contrastOf(page, selectors)
  t.ok(Object.keys(ratios).length > 0, `${what}: contrast measured for ${Object.keys(ratios).join(', ')}`)
  for (const [sel, ratio] of Object.entries(ratios)) t.ok(ratio >= 4.5, `${what}: ${sel} contrast ${ratio}:1 ≥ 4.5:1`)
}

for (const width of ['desktop', 'phone'] as const) {
  t.test(`${width}: the login card is laid out, labelled, in focus order, and the favicon loads`, async (t) => {
    const chat = await startChat(t)
    const { context, failed } = await person(t, width)
    const page = await context.newPage()
    const favicon = page.waitForResponse((r) => new URL(r.url()).pathname === '/favicon.svg', { timeout: WAIT_MS })
    await page.goto(chat.url)
    await page.waitForSelector('#login-form:not([hidden])')
    t.equal((await favicon).status(), 200, 'the favicon is served')
    t.equal(await page.getAttribute('link[rel="icon"]', 'href'), '/favicon.svg')

    t.same(await page.$$eval('input', (els) => els.map((e) => (e as HTMLInputElement).labels?.[0]?.textContent?.trim() ?? '')), ['User name', 'Password', 'Message'], 'every input has a label')
    t.equal(await page.evaluate(() => document.activeElement?.id), 'user', 'the user name field has focus')
    await page.keyboard.press('Tab')
    t.equal(await page.evaluate(() => document.activeElement?.id), 'password', 'Tab: password')
    await page.keyboard.press('Tab')
    t.equal(await page.evaluate(() => document.activeElement?.id), 'login', 'Tab: the Log in button')

    await checkLayout(t, page, 'login')
    await checkContrast(t, page, ['h1', 'h2', '.hint', '#login-form label', '#login'], 'login')
    await screenshot(page, `login-${width}.png`)

    // a wrong password: a sentence, the password cleared, focus back on it
    await page.fill('#user', 'alice')
    await page.fill('#password', 'nope')
    await page.click('#login')
    await page.waitForFunction(() => document.getElementById('login-error')?.textContent !== '')
    t.equal(await page.textContent('#login-error'), 'Wrong user name or password.')
    t.equal(await page.inputValue('#password'), '', 'the password field is cleared')
    t.equal(await page.evaluate(() => document.activeElement?.id), 'password')
    await checkContrast(t, page, ['#login-error'], 'login error')
    await checkLayout(t, page, 'login error')
    await screenshot(page, `login-error-${width}.png`)
    t.same(failed.filter((f) => !f.startsWith('401 /login') && !f.startsWith('401 /me')), [], 'nothing else failed to load (no favicon 404)')
  })

  t.test(`${width}: the chat sets one's own messages apart, shows times, and its list scrolls`, async (t) => {
    const chat = await startChat(t)
    const { context, failed } = await person(t, width)
    const bob = await openLoggedIn(await newContext(t, browser), chat, 'bob')
    const page = await openLoggedIn(context, chat, 'alice')
    t.equal(await transportOf(page), 'websocket')
    t.equal(await page.textContent('#transport'), 'WebSocket', 'the badge names the transport')
    t.equal(await page.textContent('#transport-why'), '', 'and needs no excuse')
    t.equal(await page.textContent('#state'), 'Connected', 'the state in words')
    t.equal(await page.textContent('#who'), 'alice')
    t.equal(await page.getAttribute('#messages', 'aria-live'), 'polite', 'new messages are announced')

    const n = 30
    for (let i = 1; i <= n; i++) {
      if (i % 3 === 0) await say(bob, `bob here, message ${i}`)
      else await say(page, i === 4 ? 'a longer line to see how the bubbles wrap: ' + 'lorem ipsum dolor sit amet '.repeat(6) : `alice says ${i}`)
      await waitForLines(page, i)
    }
    const list = await page.$eval('#messages', (el) => ({
      scrollHeight: el.scrollHeight, clientHeight: el.clientHeight, scrollTop: el.scrollTop, overflowY: getComputedStyle(el).overflowY
    }))
    t.ok(list.scrollHeight > list.clientHeight, `the list overflows (${list.scrollHeight} > ${list.clientHeight})`)
    t.equal(list.overflowY, 'auto', 'and scrolls')
    t.ok(list.scrollTop + list.clientHeight >= list.scrollHeight - 2, 'it followed the conversation to the last line')
    t.ok(await page.isVisible('#messages li:last-child'), 'the last line is in view')
    const doc = await page.evaluate(() => ({ h: document.documentElement.scrollHeight, vh: window.innerHeight }))
    t.ok(doc.h <= doc.vh, `the page itself does not grow (${doc.h} ≤ ${doc.vh}): the list scrolls, the form stays`)
    await page.$eval('#messages', (el) => { el.scrollTop = 0 })
    t.equal(await page.$eval('#messages', (el) => el.scrollTop), 0, 'the reader can scroll back')

    const classes = await page.$$eval('#messages li', (lis) => lis.map((li) => `${li.className}|${li.querySelector('.user')?.textContent ?? ''}`))
    t.ok(classes.every((c) => c.startsWith('mine|') === c.endsWith('|alice')), 'exactly alice\'s own lines are marked as hers')
    const sides = await page.$$eval('#messages li', (lis) => lis.map((li) => {
      const r = li.getBoundingClientRect()
      const p = (li.parentElement as HTMLElement).getBoundingClientRect()
      return { mine: li.classList.contains('mine'), left: r.left - p.left, right: p.right - r.right }
    }))
    t.ok(sides.filter((s) => s.mine).every((s) => s.right < s.left), 'her own lines sit on the right')
    t.ok(await page.$$eval('#messages li.mine', (lis) => lis.length > 0 && lis.every((li) => li.querySelector('.you')?.textContent === '(you)')), 'and say "(you)"')
    t.equal(await page.$$eval('#messages li:not(.mine) .you', (els) => els.length), 0, 'the others\' do not')
    t.ok(sides.filter((s) => !s.mine).every((s) => s.left < s.right), 'the others on the left')
    t.ok(await page.$$eval('#messages li time', (ts) => ts.length > 0 && ts.every((e) => /^\d{4}-\d\d-\d\dT/.test(e.getAttribute('datetime') ?? '') && (e.textContent ?? '') !== '')), 'every line has a time')

    await page.$eval('#messages', (el) => { el.scrollTop = el.scrollHeight })
    await checkLayout(t, page, 'chat')
    await checkContrast(t, page, ['#state', '#transport', '.who', '#logout', '#send', '#messages li .user', '#messages li time', '#messages li.mine .user', '#messages li.mine .you', '#messages li .text'], 'chat')
    await screenshot(page, `chat-${width}.png`)

    // focus order in the room: log out, the list (scrollable by keyboard), the message, send
    await page.focus('#logout')
    const order = ['logout']
    for (let i = 0; i < 3; i++) {
      await page.keyboard.press('Tab')
      order.push(await page.evaluate(() => document.activeElement?.id ?? ''))
    }
    t.same(order, ['logout', 'messages', 'text', 'send'], 'focus order')
    t.same(failed.filter((f) => f !== '401 /me'), [], 'nothing failed to load (but the page\'s first /me, before logging in)')
  })

  t.test(`${width}: over the fallback the badge names the transport (stream, the first fallback), and why`, async (t) => {
    const chat = await startChat(t, { refuseUpgrades: true })
    const { context } = await person(t, width)
    const page = await openLoggedIn(context, chat, 'alice')
    t.equal(await transportOf(page), 'stream')
    t.equal(await page.textContent('#transport'), 'Stream')
    t.match(await page.textContent('#transport-why'), /WebSocket could not be opened.*same security checks apply/, 'the reason, in words')
    await say(page, 'hello over HTTP')
    await waitForLines(page, 1)
    await checkLayout(t, page, 'long-poll')
    await checkContrast(t, page, ['#transport', '#transport-why'], 'long-poll')
    await screenshot(page, `long-poll-${width}.png`)
  })
}

t.test('a lost connection shows a visible reconnecting state, then recovers', async (t) => {
  // both doors answer 503 while `refusing`: a server the client has to wait for
  let refusing = false
  const chat = await startChat(t, {}, (app) => {
    app.addHook('onRequest', function outageSwitch (request, reply, done) {
      if (refusing && request.url.startsWith('/chat')) {
        reply.code(503).header('connection', 'close').send({ code: 'DOWN', message: 'down for a moment' })
        return
      }
      done()
    })
  })
  const { context } = await person(t, 'desktop')
  const page = await openLoggedIn(context, chat, 'alice')
  refusing = true
  // a transient close (1012 service restart) from the server's side
  for (const ws of chat.app.websocketServer.clients) ws.close(1012, 'restarting')
  await waitForState(page, 'reconnecting')
  t.equal(await page.textContent('#state'), 'Connection lost. Reconnecting…')
  const n = await noticeOf(page)
  t.equal(n.tone, 'warn', 'a warning, not an error')
  t.equal(n.text, 'The server is restarting. The chat reconnects by itself.', 'why, in words')
  t.equal(n.detail, '1012 restarting')
  t.equal(await transportOf(page), '', 'no stale transport badge while reconnecting')
  t.equal(await page.isDisabled('#send'), true, 'sending waits for the connection')
  await checkLayout(t, page, 'reconnecting')
  await screenshot(page, 'reconnecting-desktop.png')
  refusing = false
  await waitForState(page, 'open')
  t.equal((await noticeOf(page)).text, '', 'the notice goes once connected again')
  // the WebSocket was refused during the outage, so the client may have moved to the fallback
  // (and remembers it for the page session): whichever it is, the badge names it, and says why
  const transport = await transportOf(page)
  t.ok(transport === 'websocket' || transport === 'stream' || transport === 'long-poll', `the badge is back: ${transport}`)
  t.equal((await page.textContent('#transport-why')) !== '', transport !== 'websocket', 'with a reason when it is not the WebSocket')
  await checkLayout(t, page, 'recovered')
  await screenshot(page, 'recovered-desktop.png')
  t.equal(await page.isDisabled('#send'), false)
})

t.test('an expired session is said in words and brings back the login card', async (t) => {
  const chat = await startChat(t, { sessionTtlMs: 2500 })
  const { context } = await person(t, 'phone')
  const page = await openLoggedIn(context, chat, 'alice')
  await waitForState(page, 'closed')
  const n = await noticeOf(page)
  t.match(n.text, /^Your session (expired|has expired or ended)\. Please log in again\.$/, `a sentence: "${n.text}"`)
  t.match(n.detail, /^(4002|4401) /, `the code stays as a detail (${n.detail})`)
  t.ok(await page.isVisible('#login-form'), 'the login card is back')
  t.equal(await page.inputValue('#user'), 'alice', 'the user name is kept')
  t.equal(await page.evaluate(() => document.activeElement?.id), 'password', 'and the password is asked for')
  await checkLayout(t, page, 'expired')
  await screenshot(page, 'expired-phone.png')
})

t.test('a page on an origin the chat does not allow is told so in words', async (t) => {
  // the chat only trusts another origin: the page at 127.0.0.1 is "a page on another origin"
  const chat = await startChat(t, { allowedOrigins: ['https://chat.example'] })
  const { context } = await person(t, 'phone')
  const page = await context.newPage()
  await page.goto(chat.url)
  await page.waitForSelector('#login-form:not([hidden])')
  await page.fill('#user', 'alice')
  await page.fill('#password', 'demo')
  await page.click('#login')
  await page.waitForFunction(() => document.getElementById('login-error')?.textContent !== '')
  t.equal(await page.textContent('#login-error'), 'This page’s address is not allowed to log in (origin not allowed).')
  await checkLayout(t, page, 'origin not allowed')
  await screenshot(page, 'origin-denied-phone.png')
})

t.test('after one\'s own logout the page says "You logged out", neutrally', async (t) => {
  const chat = await startChat(t)
  const { context } = await person(t, 'phone')
  const page = await openLoggedIn(context, chat, 'alice')
  await page.click('#logout')
  await waitForState(page, 'logged out')
  t.same(await noticeOf(page), { text: 'You logged out.', tone: 'neutral', detail: '' })
  t.equal(await page.inputValue('#password'), '', 'the password is cleared')
  t.equal(await page.inputValue('#user'), '', 'so is the user name, for the next person')
  t.equal(await page.evaluate(() => document.activeElement?.id), 'user', 'focus is on the user name')
  await checkLayout(t, page, 'logged out')
  await checkContrast(t, page, ['#notice-text'], 'logged out')
  await screenshot(page, 'logged-out-phone.png')
})
