import t from 'tap'
import fastifyCookie, { sign } from '@fastify/cookie'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { PortcullisIdentity } from '@portcullis/policy'
import { captureLogs, listen, nextMessages, wsOpen, type LogCapture } from '../../../test/helpers/index.js'
import { sessionApp, type TestLike } from './helpers.js'

const TOKEN = 'tok_live_5f2b9c0d1e8a7f6b4c3d2e1f'
const PASSWORD = 'hunter2-correct-horse'
const SECRET = 'auth-test-secret-0123456789-abcdefghij'

/** Bearer tokens and Basic credentials for non-browser clients. */
function authenticate (request: FastifyRequest): PortcullisIdentity | null | false {
  const h = request.headers.authorization
  if (h === undefined) return null
  if (h.startsWith('Bearer ')) return h.slice(7) === TOKEN ? { id: 'robot', sessionId: 'token:robot' } : false
  if (h.startsWith('Basic ')) {
    const [user, pass] = Buffer.from(h.slice(6), 'base64').toString().split(':')
    return user === 'erin' && pass === PASSWORD ? { id: 'erin' } : false
  }
  return false
}

async function app (t: TestLike, withCookie: boolean, logs?: LogCapture): Promise<FastifyInstance> {
  const sessions = new Map<string, PortcullisIdentity>([['s1', { id: 'alice' }]])
  const a = await sessionApp(t, (app) => app.register(fastifyCookie, { secret: SECRET }), {
    signedCookie: withCookie ? { cookieName: 'sid', load: (sid) => sessions.get(sid) ?? null } : undefined,
    // async on purpose: the stage may answer with a promise
    authenticate: async (request) => authenticate(request)
  }, logs)
  a.get('/ws', { websocket: true }, (socket, request) => {
    socket.send(JSON.stringify(request.portcullis?.state.identity ?? null))
  })
  return a
}

t.test('a Bearer token authenticates a non-browser client; a wrong one is PORTCULLIS_AUTH_FAILED', async (t) => {
  const logs = captureLogs()
  const a = await app(t, false, logs)
  const { ws } = await listen(a)
  const ok = await wsOpen(`${ws}/ws`, { headers: { authorization: `Bearer ${TOKEN}` } })
  t.same(JSON.parse((await nextMessages(ok.ws!))[0]), { id: 'robot', sessionId: 'token:robot' })
  ok.ws!.close()
  const wrong = await wsOpen(`${ws}/ws`, { headers: { authorization: `Bearer ${TOKEN}x` } })
  t.equal(wrong.status, 401)
  t.same(JSON.parse(wrong.body!), { code: 'PORTCULLIS_AUTH_FAILED', message: 'Authentication failed' })
  t.notOk(wrong.body!.includes(TOKEN), 'the error body does not echo the token')
  const none = await wsOpen(`${ws}/ws`)
  t.equal(JSON.parse(none.body!).code, 'PORTCULLIS_SESSION_REQUIRED')
  t.notOk(logs.text().includes(TOKEN), 'the token never reaches the logs')
})

t.test('Basic credentials work the same way', async (t) => {
  const logs = captureLogs()
  const a = await app(t, false, logs)
  const { ws } = await listen(a)
  const basic = (u: string, p: string): string => 'Basic ' + Buffer.from(`${u}:${p}`).toString('base64')
  const ok = await wsOpen(`${ws}/ws`, { headers: { authorization: basic('erin', PASSWORD) } })
  t.equal(JSON.parse((await nextMessages(ok.ws!))[0]).id, 'erin')
  ok.ws!.close()
  const bad = await wsOpen(`${ws}/ws`, { headers: { authorization: basic('erin', 'nope') } })
  t.equal(JSON.parse(bad.body!).code, 'PORTCULLIS_AUTH_FAILED')
  t.notOk(logs.text().includes(PASSWORD))
})

t.test('besides cookies: the cookie is tried first, the header serves clients without one', async (t) => {
  const a = await app(t, true)
  const { ws } = await listen(a)
  const cookie = 'sid=' + encodeURIComponent(sign('s1', SECRET))
  const browser = await wsOpen(`${ws}/ws`, { headers: { cookie, authorization: `Bearer ${TOKEN}` } })
  t.equal(JSON.parse((await nextMessages(browser.ws!))[0]).id, 'alice', 'the cookie wins when both are valid')
  browser.ws!.close()
  const robot = await wsOpen(`${ws}/ws`, { headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(JSON.parse((await nextMessages(robot.ws!))[0]).id, 'robot')
  robot.ws!.close()
  const forged = await wsOpen(`${ws}/ws`, { headers: { cookie: 'sid=s1.forged' } })
  t.equal(JSON.parse(forged.body!).code, 'PORTCULLIS_SESSION_INVALID', 'a forged cookie and no other credentials')
  const both = await wsOpen(`${ws}/ws`, { headers: { cookie: 'sid=s1.forged', authorization: `Bearer ${TOKEN}x` } })
  t.equal(JSON.parse(both.body!).code, 'PORTCULLIS_SESSION_INVALID', 'the most telling problem is reported')
})

t.test('with a challenge, every 401 carries WWW-Authenticate; without one, none does', async (t) => {
  const a = await sessionApp(t, () => {}, { authenticate, challenge: 'Bearer realm="chat"' })
  a.get('/ws', { websocket: true }, (socket) => { socket.send('hi') })
  const { ws } = await listen(a)
  const wrong = await wsOpen(`${ws}/ws`, { headers: { authorization: 'Bearer nope' } })
  t.equal(wrong.status, 401)
  t.equal(wrong.headers?.['www-authenticate'], 'Bearer realm="chat"', 'auth failed')
  t.equal(JSON.parse(wrong.body!).code, 'PORTCULLIS_AUTH_FAILED')
  const none = await wsOpen(`${ws}/ws`)
  t.equal(none.headers?.['www-authenticate'], 'Bearer realm="chat"', 'no credentials')
  const plain = await sessionApp(t, () => {}, { authenticate })
  plain.get('/ws', { websocket: true }, () => {})
  const other = await listen(plain)
  const bare = await wsOpen(`${other.ws}/ws`)
  t.equal(bare.status, 401)
  t.equal(bare.headers?.['www-authenticate'], undefined)
  for (const challenge of ['', 'Bearer\r\nSet-Cookie: x=1', 'x'.repeat(1025), 42]) {
    await t.rejects(sessionApp(t, () => {}, { authenticate, challenge: challenge as string }), { code: 'PORTCULLIS_COOKIE_SESSION_INVALID_OPTION' }, JSON.stringify(challenge))
  }
})
