import t from 'tap'
import { launchBrowser, newContext, noticeOf, openChat, openLoggedIn, startChat, transportOf, waitForState } from './helpers/browser.js'

const browser = await launchBrowser(t)

for (const refuseUpgrades of [false, true]) {
  // with upgrades refused the client's first fallback is the stream transport (issue 14)
  const transport = refuseUpgrades ? 'stream' : 'websocket'
  t.test(`logout in one tab closes the live ${transport} connection in another tab`, async (t) => {
    const chat = await startChat(t, { refuseUpgrades })
    const context = await newContext(t, browser)
    const tabA = await openLoggedIn(context, chat, 'alice')
    const tabB = await openChat(context, chat)
    t.equal(await transportOf(tabA), transport)
    t.equal(await transportOf(tabB), transport)
    t.equal(chat.app.wsPolicy.stats().connections, 2, 'two live connections, one per tab')

    await tabA.click('#logout')
    await waitForState(tabB, 'closed')
    t.equal(await tabB.textContent('#close-reason'), '4001 session revoked', 'the other tab shows the revocation')
    t.same(await noticeOf(tabB), {
      text: 'You were logged out, in another tab or window. Log in again to keep chatting.', tone: 'neutral', detail: '4001 session revoked'
    }, 'in a sentence, not as an error')
    // the tab that logged out was closed by the server with 4001 too, and says so neutrally
    // (a user's own logout is not a failure: no red "closed: 4001")
    await waitForState(tabA, 'logged out')
    t.equal(await tabA.getAttribute('body', 'data-close-code'), '4001', 'and so was the tab that logged out')
    t.same(await noticeOf(tabA), { text: 'You logged out.', tone: 'neutral', detail: '' }, 'which reads "You logged out"')
    t.equal(await tabA.inputValue('#password'), '', 'its password field is empty')
    t.ok(await tabA.isVisible('#login-form'), 'the tab that logged out is at the login form')
    t.ok(await tabB.isVisible('#login-form'), 'the other tab is back at the login form')
    t.equal(chat.app.wsPolicy.stats().connections, 0, 'no live connection left on the server')

    // the client must not reconnect after a revocation, even with `reconnect: true` on the page
    const before = chat.app.wsPolicy.stats().routes['/chat']
    await tabB.waitForTimeout(500)
    t.equal(await tabB.getAttribute('body', 'data-state'), 'closed', 'still closed: no retry')
    t.same(chat.app.wsPolicy.stats().routes['/chat'], before, 'no further connection attempt reached the server')

    await tabB.reload()
    await tabB.waitForSelector('#login-form:not([hidden])')
    t.pass('after a reload the session is gone: login form')
  })
}
