import t from 'tap'
import { createServer } from 'node:http'
import { launchBrowser, newContext, openLoggedIn, say, startChat, waitForLines, WAIT_MS } from './helpers/browser.js'

const browser = await launchBrowser(t)

/**
 * The attacker's page: served from another origin (another port on 127.0.0.1 — the same *site*,
 * so SameSite cookies do not help; only the origin check does). It tries every door into the
 * chat with the victim's cookies and reports what it saw in `window.results`.
 */
function attackerPage (chat: string): string {
  return `<!doctype html><title>totally legit</title>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<script>
const chat = ${JSON.stringify(chat)}
const say = JSON.stringify({ type: 'say', text: 'pwned' })
const results = {}
const within = (p, ms = 5000) => Promise.race([p, new Promise((resolve) => setTimeout(() => resolve('timeout'), ms))])

function tryWebSocket () {
  return new Promise((resolve) => {
    const ws = new WebSocket(chat.replace('http', 'ws') + '/chat', 'chat.v1')
    let opened = false
    ws.onopen = () => { opened = true; ws.send(say) }
    ws.onclose = (ev) => resolve({ opened, code: ev.code })
  })
}

async function tryFetch (path, init) {
  try {
    const res = await fetch(chat + path, { method: 'POST', credentials: 'include', ...init })
    return { type: res.type, status: res.status }
  } catch (err) {
    return { error: err.name }
  }
}

function tryForm (target, path, name, value) {
  return new Promise((resolve) => {
    const form = document.createElement('form')
    form.method = 'POST'
    form.enctype = 'text/plain'
    form.action = chat + path
    form.target = target
    const input = document.createElement('input')
    input.name = name
    input.value = value
    form.append(input)
    document.body.append(form)
    document.querySelector('iframe[name=' + target + ']').onload = () => resolve('submitted')
    form.submit()
  })
}

async function run () {
  results.websocket = await within(tryWebSocket())
  // what @portcullis/client would send: JSON + the marker header → a CORS preflight first
  results.corsOpen = await within(tryFetch('/chat/_lp/open', {
    headers: { 'content-type': 'application/json', 'x-portcullis-fallback': '1' },
    body: JSON.stringify({ protocols: ['chat.v1'] })
  }))
  // "simple" requests that skip the preflight: text/plain, no custom header
  results.plainOpen = await within(tryFetch('/chat/_lp/open', {
    mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ protocols: ['chat.v1'] })
  }))
  results.plainSend = await within(tryFetch('/chat/_lp/send', {
    mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ seq: 1, messages: [{ text: say }] })
  }))
  // an HTML form: text/plain body shaped into JSON (name + "=" + value)
  results.formOpen = await within(tryForm('sink1', '/chat/_lp/open', '{"protocols":["chat.v1"],"x":"', '"}'))
  results.formSend = await within(tryForm('sink2', '/chat/_lp/send', '{"seq":1,"messages":[{"text":' + JSON.stringify(say).slice(0, -1), '"}]}'))
  window.results = results
}
run()
</script>`
}

t.test('an attacker page on another origin, in the victim\'s browser, is denied on every door', async (t) => {
  const seen: Array<{ method: string, url: string, status: number, acao: unknown }> = []
  let attackerOrigin = ''
  const chat = await startChat(t, {}, (app) => {
    app.addHook('onResponse', function recordAttacker (request, reply, done) {
      if (request.headers.origin === attackerOrigin && request.url.startsWith('/chat')) {
        seen.push({ method: request.method, url: request.url, status: reply.statusCode, acao: reply.getHeader('access-control-allow-origin') })
      }
      done()
    })
  })

  const attacker = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(attackerPage(chat.origin))
  })
  await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => attacker.close(resolve)))
  const address = attacker.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  attackerOrigin = `http://127.0.0.1:${address.port}`

  // the victim is logged in and has the chat open, in the same browser (same cookie jar)
  const context = await newContext(t, browser)
  const victim = await openLoggedIn(context, chat, 'alice')
  const cookies = await context.cookies(chat.url)
  t.ok(cookies.some((c) => c.name === 'chat'), 'the victim holds a session cookie')

  const evil = await context.newPage()
  await evil.goto(attackerOrigin + '/')
  const handle = await evil.waitForFunction(() => (window as unknown as { results?: unknown }).results, undefined, { timeout: WAIT_MS * 3 })
  const results = await handle.jsonValue() as Record<string, any>

  t.same(results.websocket, { opened: false, code: 1006 }, 'the WebSocket never opens (refused before the handshake)')
  t.same(results.corsOpen, { error: 'TypeError' }, 'the credentialed JSON fetch dies at the CORS preflight')
  // the text/plain open goes out; its answer carries Cross-Origin-Resource-Policy: same-origin
  // (helmet), so the browser withholds even the opaque response from the attacker's page
  t.same(results.plainOpen, { error: 'TypeError' }, 'the text/plain open went out, and CORP kept even its opaque answer from the page...')
  t.equal(results.formOpen, 'submitted', 'the form posts went out...')
  t.equal(results.formSend, 'submitted')

  // ...and the server refused every one of them
  const upgrade = seen.find((r) => r.method === 'GET' && r.url === '/chat')
  t.equal(upgrade?.status, 403, 'the upgrade was answered 403')
  const posts = seen.filter((r) => r.method === 'POST')
  t.ok(posts.length >= 4, `the server saw the attacker's POSTs (${posts.length})`)
  t.ok(posts.filter((r) => r.url === '/chat/_lp/open').length >= 2, 'including the text/plain and the form opens')
  for (const r of posts) t.ok(r.status >= 400, `${r.method} ${r.url} refused with ${r.status}`)
  for (const r of seen) t.notOk(r.acao, `${r.method} ${r.url}: no Access-Control-Allow-Origin for the attacker`)
  t.equal(chat.app.wsPolicy.stats().connections, 1, 'the only live connection is the victim\'s own')

  // nothing reached the room: the victim's next line is the first one anybody sees
  await say(victim, 'still only me')
  t.same(await waitForLines(victim, 1), ['alice: still only me'])
  await victim.waitForTimeout(300)
  t.same(await victim.$$eval('#messages li .text', (els) => els.map((e) => e.textContent)), ['still only me'], 'no pwned line')
})
