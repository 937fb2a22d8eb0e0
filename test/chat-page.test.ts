/**
 * The chat example's HTTP surface: the page and its files through @fastify/static, the security
 * headers from @fastify/helmet on the page AND on the fallback's responses (which keep their own
 * no-store / nosniff), the favicon, and the login/logout origin check through the origin guard.
 */
import t from 'tap'
import { buildChat, type ChatOptions } from '../examples/chat/src/app.js'
import { testTls } from './helpers/index.js'

const SECRET = 'chat-page-test-secret-0123456789abcdef'
const HOST = '127.0.0.1:3000'
const ORIGIN = `http://${HOST}`

async function chat (t: { teardown: (fn: () => unknown) => void }, opts: Partial<ChatOptions> = {}) {
  const app = await buildChat({ sessionSecret: SECRET, logger: false, clientBundle: Buffer.from('export class PortcullisSocket {}'), ...opts })
  t.teardown(() => app.close())
  return app
}

async function loginCookie (app: Awaited<ReturnType<typeof chat>>): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/login', headers: { host: HOST, origin: ORIGIN }, payload: { user: 'alice', password: 'demo' } })
  return String(res.headers['set-cookie']).split(';')[0]
}

/** The directives of a CSP header, by name. */
function csp (header: unknown): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const part of String(header).split(';')) {
    const [name, ...values] = part.trim().split(/\s+/)
    if (name !== '') out.set(name, values)
  }
  return out
}

t.test('the page is served with a strict CSP naming only its own http and ws origin', async (t) => {
  const app = await chat(t)
  const res = await app.inject({ url: '/', headers: { host: HOST } })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html/)
  t.match(res.body, /<title>Portcullis chat<\/title>/)
  const d = csp(res.headers['content-security-policy'])
  t.same(d.get('default-src'), ["'none'"])
  t.same(d.get('script-src'), ["'self'"], 'no inline script')
  t.same(d.get('style-src'), ["'self'"], 'no inline style')
  t.same(d.get('connect-src'), [ORIGIN, `ws://${HOST}`], 'connect-src: the page\'s own origin, over http and ws, and nothing else')
  t.same(d.get('frame-ancestors'), ["'none'"])
  t.same(d.get('base-uri'), ["'none'"])
  t.same(d.get('form-action'), ["'self'"])
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.equal(res.headers['referrer-policy'], 'no-referrer')
  t.equal(res.headers['cross-origin-opener-policy'], 'same-origin')
  t.equal(res.headers['x-frame-options'], 'DENY')
  t.equal(res.headers['strict-transport-security'], undefined, 'no HSTS over plain http')
})

t.test('a crafted Host cannot inject a CSP directive', async (t) => {
  const app = await chat(t)
  const res = await app.inject({ url: '/', headers: { host: "evil.example; script-src 'unsafe-inline'" } })
  const d = csp(res.headers['content-security-policy'])
  t.same(d.get('connect-src'), ["'self'", "'self'"], 'an unparsable Host falls back to \'self\'')
  t.same(d.get('script-src'), ["'self'"])
  t.notMatch(String(res.headers['content-security-policy']), /unsafe-inline/)
})

t.test('under TLS the page carries HSTS and a wss: connect-src', async (t) => {
  const app = await chat(t, { https: testTls() })
  const res = await app.inject({ url: '/', headers: { host: 'chat.example:8443' } })
  t.match(res.headers['strict-transport-security'], /^max-age=31536000/)
  t.same(csp(res.headers['content-security-policy']).get('connect-src'), ['https://chat.example:8443', 'wss://chat.example:8443'])
})

t.test('the page\'s script, style, client bundle and favicon are served with the same headers', async (t) => {
  const app = await chat(t)
  const cases: Array<[string, RegExp]> = [
    ['/app.js', /^text\/javascript|^application\/javascript/],
    ['/style.css', /^text\/css/],
    ['/client.js', /^text\/javascript/],
    ['/favicon.svg', /^image\/svg\+xml/]
  ]
  for (const [url, type] of cases) {
    const res = await app.inject({ url, headers: { host: HOST } })
    t.equal(res.statusCode, 200, `${url} served`)
    t.match(res.headers['content-type'], type, `${url}: ${String(res.headers['content-type'])}`)
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${url}: nosniff`)
    t.ok(res.headers['content-security-policy'], `${url}: CSP`)
    t.equal(res.headers['cache-control'], 'no-cache', `${url}: revalidated on every load`)
  }
  const ico = await app.inject({ url: '/favicon.ico', headers: { host: HOST } })
  t.equal(ico.statusCode, 301, 'the browser\'s default /favicon.ico is not a 404')
  t.equal(ico.headers.location, '/favicon.svg')
  t.equal((await app.inject({ url: '/nope.js', headers: { host: HOST } })).statusCode, 404)
  t.equal((await app.inject({ url: '/../src/app.ts', headers: { host: HOST } })).statusCode, 404, 'nothing outside public/')
})

t.test('the fallback\'s responses keep no-store and nosniff, with helmet\'s headers beside them', async (t) => {
  const app = await chat(t)
  const cookie = await loginCookie(app)
  const headers = { host: HOST, origin: ORIGIN, cookie, 'content-type': 'application/json', 'x-portcullis-fallback': '1' }
  const open = await app.inject({ method: 'POST', url: '/chat/_lp/open', headers, payload: { protocols: ['chat.v1'] } })
  t.equal(open.statusCode, 200, 'opened')
  const { sid } = open.json()
  const session = { ...headers, 'x-portcullis-sid': sid, 'x-portcullis-protocol': 'chat.v1' }
  t.equal(open.headers['cache-control'], 'no-store', 'open: no-store')
  t.equal(open.headers['x-content-type-options'], 'nosniff')
  t.equal(open.headers['referrer-policy'], 'no-referrer', 'open: helmet too')
  t.ok(open.headers['content-security-policy'])

  const send = await app.inject({ method: 'POST', url: '/chat/_lp/send', headers: session, payload: { seq: 1, messages: [{ text: JSON.stringify({ type: 'say', text: 'hi' }) }] } })
  t.equal(send.statusCode, 200, 'sent')
  t.equal(send.headers['cache-control'], 'no-store', 'send: no-store')
  const poll = await app.inject({ url: '/chat/_lp/poll', headers: { ...session, 'x-portcullis-ack': '0' } })
  t.equal(poll.statusCode, 200, 'polled')
  t.equal(poll.headers['cache-control'], 'no-store', 'poll: no-store (no proxy caches a poll)')
  t.equal(poll.headers['x-content-type-options'], 'nosniff')
  t.match(poll.body, /said/, 'the poll carried the message')

  const denied = await app.inject({ method: 'POST', url: '/chat/_lp/open', headers: { ...headers, origin: 'http://evil.example' }, payload: { protocols: ['chat.v1'] } })
  t.equal(denied.statusCode, 403)
  t.equal(denied.headers['cache-control'], 'no-store', 'a denial: no-store')
  t.equal(denied.headers['x-content-type-options'], 'nosniff')
})

t.test('login and logout from another origin are refused by the origin guard\'s allowlist', async (t) => {
  const app = await chat(t, { allowedOrigins: ['self', 'http://friend.example'] })
  const login = (origin: string | undefined) => app.inject({
    method: 'POST', url: '/login', headers: { host: HOST, ...(origin === undefined ? {} : { origin }) }, payload: { user: 'alice', password: 'demo' }
  })
  t.equal((await login(ORIGIN)).statusCode, 200, 'self')
  t.equal((await login('http://friend.example')).statusCode, 200, 'a listed origin')
  t.equal((await login(undefined)).statusCode, 200, 'no Origin: curl')
  const evil = await login('http://evil.example')
  t.equal(evil.statusCode, 403)
  t.same(evil.json(), { code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' }, 'the same code as the WebSocket door')
  t.equal(evil.headers['set-cookie'], undefined, 'no session handed out')
  const lookalike = await login('http://127.0.0.1:3000.evil.example')
  t.equal(lookalike.statusCode, 403, 'a lookalike')
  const formPost = await app.inject({
    method: 'POST', url: '/login', headers: { host: HOST, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }, payload: { user: 'alice', password: 'demo' }
  })
  t.equal(formPost.statusCode, 403, 'a cross-site browser post without Origin')

  const cookie = await loginCookie(app)
  const out = await app.inject({ method: 'POST', url: '/logout', headers: { host: HOST, origin: 'http://evil.example', cookie } })
  t.equal(out.statusCode, 403, 'logout CSRF refused')
  t.equal((await app.inject({ url: '/me', headers: { host: HOST, cookie } })).statusCode, 200, 'the session survived')
  t.equal((await app.inject({ method: 'POST', url: '/logout', headers: { host: HOST, origin: ORIGIN, cookie } })).statusCode, 200)
  t.equal((await app.inject({ url: '/me', headers: { host: HOST, cookie } })).statusCode, 401, 'logged out')
})
