// The client side of the consumer apps (app.mjs, app.cjs), run in the scratch npm project that
// scripts/consumer-check.mjs installs the packed tarballs into. Real connections to the app's
// server on 127.0.0.1: a WebSocket with an allowed Origin and a token (opens, negotiates chat.v1,
// a JSON message passes the inspector), one with an evil Origin (403 before any handshake), one
// without a token (401), and the long-poll fallback's `open` from both origins.
'use strict'
const { WebSocket } = require('ws')

const ALLOWED = 'https://app.example'
const EVIL = 'https://evil.example'
const TOKEN = 'Bearer consumer-check'

/**
 * The handshake's answer: `{ ws, next }` when it opened, `{ status }` when the server refused.
 * Messages are queued from the start: the 101 and the handler's first frame can arrive in one
 * read, and ws emits that 'message' before a listener added after 'open' could see it.
 */
function wsOpen (url, headers) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['chat.v1'], { headers })
    const queue = []
    const waiters = []
    ws.on('message', (data) => {
      const value = JSON.parse(String(data))
      const waiter = waiters.shift()
      if (waiter === undefined) queue.push(value)
      else waiter(value)
    })
    const next = () => new Promise((resolve, reject) => {
      if (queue.length > 0) return resolve(queue.shift())
      const timer = setTimeout(() => reject(new Error('no message within 10 s')), 10_000)
      waiters.push((value) => { clearTimeout(timer); resolve(value) })
    })
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('handshake timed out')) }, 10_000)
    ws.once('open', () => { clearTimeout(timer); resolve({ ws, next }) })
    ws.once('unexpected-response', (_req, res) => { clearTimeout(timer); res.resume(); resolve({ status: res.statusCode }) })
    ws.once('error', (err) => { clearTimeout(timer); reject(err) })
  })
}

async function fallbackOpen (base, origin) {
  const res = await fetch(`${base}/live/_lp/open`, {
    method: 'POST',
    headers: { origin, authorization: TOKEN, 'content-type': 'application/json', 'x-portcullis-fallback': '1' },
    body: JSON.stringify({ protocols: ['chat.v1'] })
  })
  return { status: res.status, body: await res.json() }
}

function expect (results, name, ok, detail) {
  results.push({ name, ok: Boolean(ok), detail })
}

/** Runs every check against the app listening on `port`; returns `[{ name, ok, detail }]`. */
async function drive (port, format) {
  const url = `ws://127.0.0.1:${port}/live`
  const results = []

  const allowed = await wsOpen(url, { origin: ALLOWED, authorization: TOKEN })
  expect(results, 'allowed Origin opens the WebSocket', allowed.ws, `status ${allowed.status}`)
  if (allowed.ws !== undefined) {
    expect(results, 'chat.v1 is negotiated', allowed.ws.protocol === 'chat.v1', allowed.ws.protocol)
    const hello = await allowed.next()
    expect(results, `the handler greets the identity from the ${format} build`, hello.hello === 'alice' && hello.format === format, JSON.stringify(hello))
    allowed.ws.send(JSON.stringify({ type: 'say', text: 'hi' }))
    const echo = await allowed.next()
    expect(results, 'a valid chat.v1 message reaches the handler parsed', echo.echo?.text === 'hi', JSON.stringify(echo))
    const closed = new Promise((resolve) => allowed.ws.once('close', resolve))
    allowed.ws.close(1000)
    await closed
  }

  const evil = await wsOpen(url, { origin: EVIL, authorization: TOKEN })
  if (evil.ws !== undefined) evil.ws.terminate()
  expect(results, 'evil Origin is refused with 403 before the handshake', evil.status === 403, `status ${evil.status}`)

  const anonymous = await wsOpen(url, { origin: ALLOWED })
  if (anonymous.ws !== undefined) anonymous.ws.terminate()
  expect(results, 'no token is refused with 401', anonymous.status === 401, `status ${anonymous.status}`)

  const base = `http://127.0.0.1:${port}`
  const lpOk = await fallbackOpen(base, ALLOWED)
  expect(results, 'the fallback opens from the allowed Origin', lpOk.status === 200 && lpOk.body.protocol === 'chat.v1', `${lpOk.status} protocol ${lpOk.body.protocol} code ${lpOk.body.code}`)
  const lpEvil = await fallbackOpen(base, EVIL)
  expect(results, 'the fallback refuses the evil Origin with 403', lpEvil.status === 403, `${lpEvil.status} ${lpEvil.body.code}`)
  return results
}

/** Loads every installed @portcullis/* package through `load` (require or import). */
async function loadAll (names, load) {
  const results = []
  for (const name of names) {
    try {
      const mod = await load(name)
      expect(results, `${name} loads`, mod !== null && typeof mod === 'object' && Object.keys(mod).length > 0, Object.keys(mod).slice(0, 4).join(', '))
    } catch (err) {
      expect(results, `${name} loads`, false, err.message)
    }
  }
  return results
}

/** Prints the results as one JSON line (read by the check) and exits non-zero on any failure. */
function report (results) {
  process.stdout.write(`RESULTS ${JSON.stringify(results)}\n`)
  process.exitCode = results.every((r) => r.ok) ? 0 : 1
}

module.exports = { drive, loadAll, report, ALLOWED, TOKEN }
