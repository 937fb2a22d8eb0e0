/**
 * The chat's login limits, on a real server: a per-address rate limit (@fastify/rate-limit,
 * keyed by the peer address — no trustProxy, no forged X-Forwarded-For), and a backoff on repeated
 * failures for one account from any address. Other addresses are real: the client socket is
 * bound to 127.0.0.2 / 127.0.0.3 (all of 127.0.0.0/8 is loopback on Linux).
 */
import t from 'tap'
import { request } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { buildChat, type ChatOptions } from '../examples/chat/src/app.js'

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: Record<string, unknown> }

async function chat (t: { teardown: (fn: () => unknown) => void }, opts: Partial<ChatOptions> = {}): Promise<{ app: FastifyInstance, port: number }> {
  const app = await buildChat({ sessionSecret: 'chat-login-limits-secret-0123456789ab', logger: false, clientBundle: Buffer.from(''), ...opts })
  t.teardown(() => app.close())
  // a client bound to 127.0.0.2 reaches 127.0.0.1 over the loopback interface
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as { port: number }).port }
}

function login (port: number, user: string, password: string, from = '127.0.0.1'): Promise<Answer> {
  const body = JSON.stringify({ user, password })
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      localAddress: from,
      method: 'POST',
      path: '/login',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), origin: `http://127.0.0.1:${port}` }
    }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text === '' ? {} : JSON.parse(text) }))
    })
    req.setTimeout(5000, () => req.destroy(new Error('login timed out')))
    req.on('error', reject)
    req.end(body)
  })
}

t.test('one address is limited to max login attempts per window, answered 429 with Retry-After', async (t) => {
  const { port } = await chat(t, { loginRateLimit: { max: 3, timeWindowMs: 60_000 } })
  t.equal((await login(port, 'alice', 'demo')).status, 200)
  t.equal((await login(port, 'bob', 'demo')).status, 200)
  t.equal((await login(port, 'alice', 'demo')).status, 200)
  const limited = await login(port, 'alice', 'demo')
  t.equal(limited.status, 429, 'the fourth attempt in the window')
  t.equal(limited.body.code, 'LOGIN_RATE_LIMITED')
  t.match(String(limited.body.message), /Too many login attempts from this address/)
  const retry = Number(limited.headers['retry-after'])
  t.ok(Number.isInteger(retry) && retry > 0 && retry <= 60, `Retry-After: ${retry} s`)
  t.equal(limited.headers['set-cookie'], undefined, 'no session handed out')
  t.equal((await login(port, 'bob', 'demo')).status, 429, 'whatever the account: the limit is the address\'s')
})

t.test('a user from another address still logs in while one address is limited', async (t) => {
  const { port } = await chat(t, { loginRateLimit: { max: 2, timeWindowMs: 60_000 } })
  for (let i = 0; i < 2; i++) await login(port, 'mallory', 'guess' + i)
  t.equal((await login(port, 'mallory', 'guess')).status, 429, '127.0.0.1 is limited')
  const bob = await login(port, 'bob', 'demo', '127.0.0.2')
  t.equal(bob.status, 200, 'bob, from 127.0.0.2, logs in')
  t.match(String(bob.headers['set-cookie']), /^chat=/)
  t.equal((await login(port, 'alice', 'demo', '127.0.0.3')).status, 200, 'alice, from 127.0.0.3, too')
})

t.test('the limit window passes and the address may try again', async (t) => {
  const { port } = await chat(t, { loginRateLimit: { max: 1, timeWindowMs: 400 } })
  t.equal((await login(port, 'alice', 'demo')).status, 200)
  t.equal((await login(port, 'alice', 'demo')).status, 429)
  await new Promise((resolve) => setTimeout(resolve, 600))
  t.equal((await login(port, 'alice', 'demo')).status, 200, 'a new window')
})

t.test('repeated failures for one account back off from every address, before the password is checked', async (t) => {
  const { port } = await chat(t, { loginBackoff: { freeFailures: 2, baseMs: 2000, maxMs: 8000 } })
  const addresses = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']
  t.equal((await login(port, 'alice', 'wrong1', addresses[0])).status, 401, 'a free failure')
  const second = await login(port, 'alice', 'wrong2', addresses[1])
  t.equal(second.status, 401, 'the second free failure')
  const third = await login(port, 'alice', 'wrong3', addresses[2])
  t.equal(third.status, 401, 'the third failure is still answered as a failure...')
  t.equal(third.headers['retry-after'], '2', '...and says how long the account now waits')

  const during = await login(port, 'alice', 'demo', addresses[3])
  t.equal(during.status, 429, 'even the right password, from a fresh address, waits')
  t.equal(during.body.code, 'LOGIN_BACKOFF')
  t.match(String(during.body.message), /Too many failed attempts for this account/)
  const retry = Number(during.headers['retry-after'])
  t.ok(retry >= 1 && retry <= 2, `Retry-After: ${retry} s`)
  t.equal(during.headers['set-cookie'], undefined)

  t.equal((await login(port, 'bob', 'demo', addresses[3])).status, 200, 'another account is not affected')

  await new Promise((resolve) => setTimeout(resolve, retry * 1000 + 100))
  const fourth = await login(port, 'alice', 'wrong4', addresses[0])
  t.equal(fourth.status, 401, 'after the wait, a failure...')
  t.equal(fourth.headers['retry-after'], '4', '...doubles the wait')
  t.equal((await login(port, 'alice', 'demo', addresses[1])).status, 429, 'still waiting')
})

t.test('a success after the wait forgets the failures', async (t) => {
  const { port } = await chat(t, { loginBackoff: { freeFailures: 1, baseMs: 300 } })
  t.equal((await login(port, 'alice', 'x')).status, 401)
  t.equal((await login(port, 'alice', 'y')).status, 401)
  t.equal((await login(port, 'alice', 'demo')).status, 429)
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.equal((await login(port, 'alice', 'demo')).status, 200, 'logged in after the wait')
  t.equal((await login(port, 'alice', 'z')).status, 401, 'a new failure is free again')
  t.equal((await login(port, 'alice', 'demo')).status, 200, 'no wait')
})

t.test('unknown user names back off like real ones (the answer does not tell which exist)', async (t) => {
  const { port } = await chat(t, { loginBackoff: { freeFailures: 1, baseMs: 5000 } })
  for (const user of ['alice', 'nobody']) {
    await login(port, user, 'a')
    await login(port, user, 'b')
    const r = await login(port, user, 'c')
    t.equal(r.status, 429, user)
    t.equal(r.body.code, 'LOGIN_BACKOFF', user)
  }
})

t.test('wrong limit options fail at startup with a message saying what is allowed', async (t) => {
  const secret = 'chat-login-limits-secret-0123456789ab'
  await t.rejects(buildChat({ sessionSecret: secret, logger: false, clientBundle: Buffer.from(''), loginRateLimit: { max: 0 } }), /loginRateLimit\.max must be a whole number ≥ 1/)
  await t.rejects(buildChat({ sessionSecret: secret, logger: false, clientBundle: Buffer.from(''), loginBackoff: { baseMs: -1 } }), /loginBackoff\.baseMs must be a whole number ≥ 1/)
})

t.test('the backoff remembers at most maxAccounts accounts, forgetting the oldest failure first', async (t) => {
  const { LoginBackoff } = await import('../examples/chat/src/login-backoff.js')
  const b = new LoginBackoff({ freeFailures: 0, baseMs: 1000, maxAccounts: 2 })
  const now = 1_000_000
  b.fail('a', now)
  b.fail('b', now + 1)
  t.equal(b.size, 2)
  b.fail('c', now + 2)
  t.equal(b.size, 2, 'a made-up name cannot grow the table past its cap')
  t.equal(b.wait('a', now + 3), 0, 'the oldest was forgotten')
  t.ok(b.wait('b', now + 3) > 0 && b.wait('c', now + 3) > 0, 'the newer ones still wait')
  t.equal(b.wait('b', now + 1 + 900_000), 0, 'forgotten after forgetMs without a failure')
  const capped = new LoginBackoff({ freeFailures: 0, baseMs: 1000, maxMs: 5000 })
  let last = 0
  for (let i = 0; i < 50; i++) last = capped.fail('x', now + i)
  t.equal(last, 5000, 'the wait never exceeds maxMs, however many failures')
})
