import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyCookie, { sign } from '@fastify/cookie'
import portcullis, { type StageDefinition } from '@portcullis/policy'
import cookieSession from '@portcullis/cookie-session'
import { startRedis } from '../../../test/helpers/redis.js'
import { captureLogs, closed, listen, waitFor, wsOpen } from '../../../test/helpers/index.js'
import fallbackRedis, { RedisStore } from '../src/index.js'
import type { FallbackRedisOptions } from '../src/index.js'
import { prefix } from './helpers.js'

const SECRET = 'plugin-test-secret-0123456789-abcdefghij'

/** Identity stand-in: `x-user: <user>.<session>`. */
const headerIdentity: StageDefinition<undefined, undefined> = {
  name: 'test-identity',
  phase: 'identity',
  evaluate (ctx) {
    const v = ctx.headers['x-user']
    if (typeof v !== 'string') return { status: 401, code: 'TEST_NO_USER', reason: 'no user' }
    const [id, sessionId] = v.split('.')
    ctx.state.identity = { id, sessionId }
  }
}

async function wsNode (t: { teardown: (fn: () => unknown) => void }, opts: FallbackRedisOptions, logs?: ReturnType<typeof captureLogs>): Promise<{ app: FastifyInstance, ws: string }> {
  const app = Fastify(logs === undefined ? {} : { logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.wsPolicy.addStage(headerIdentity)
  await app.register(fallbackRedis, opts)
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => {})
  const { ws } = await listen(app)
  return { app, ws }
}

t.test('a revocation published on one WebSocket-only node closes the session on another (no fallback, no session plugin)', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await wsNode(t, { redis: redis.url, keyPrefix })
  const b = await wsNode(t, { redis: redis.url, keyPrefix })
  t.ok(a.app.portcullisRedis.store.started, 'the plugin started the store itself')
  const alice = await wsOpen(`${b.ws}/ws`, { headers: { 'x-user': 'alice.s1' } })
  const bob = await wsOpen(`${b.ws}/ws`, { headers: { 'x-user': 'bob.s2' } })
  t.ok(alice.ws && bob.ws)
  await waitFor(() => b.app.wsPolicy.stats().connections === 2)
  const gone = closed(alice.ws!)
  await a.app.portcullisRedis.store.publishRevocation('s1', 4003, 'session invalid')
  t.same(await gone, { code: 4003, reason: 'session invalid' }, 'closed with the published code and reason')
  t.equal(bob.ws!.readyState, 1)
  bob.ws!.close()
})

t.test('a revocation that cannot be published is still applied locally, logged, and never crashes', async (t) => {
  const redis = await startRedis(t)
  const logs = captureLogs()
  const store = new RedisStore({ redis: redis.url, keyPrefix: prefix(), commandTimeoutMs: 300 })
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis)
  await app.register(cookieSession, { signedCookie: { cookieName: 'sid', load: (sessionId) => ({ id: sessionId.split('.')[0], sessionId }) } })
  await app.register(fallbackRedis, { store })
  app.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => {})
  const { ws } = await listen(app)
  const alice = await wsOpen(`${ws}/ws`, { headers: { cookie: `sid=${encodeURIComponent(sign('alice.s1', SECRET))}` } })
  t.ok(alice.ws)
  await waitFor(() => app.wsPolicy.stats().connections === 1)
  await redis.stop()
  const gone = closed(alice.ws!)
  t.equal(app.portcullisSessions.revoke('alice.s1', 'logged out'), 1, 'revoke() closes this node\'s connections at once')
  t.same(await gone, { code: 4001, reason: 'logged out' })
  await waitFor(() => logs.lines.some(l => l.msg === 'portcullis: revocation could not be published to other nodes (Redis unavailable)'), 3000, 'the error is logged')
  t.notOk(logs.text().includes('alice.s1'), 'no session id in the logs')
})

t.test('options: either a store or a Redis URL', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await t.rejects(async () => { await app.register(fallbackRedis, {} as FallbackRedisOptions) }, { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  const app2 = Fastify()
  t.teardown(() => app2.close())
  await app2.register(portcullis)
  const store = new RedisStore({ redis: 'redis://127.0.0.1:1' })
  await t.rejects(async () => { await app2.register(fallbackRedis, { store, redis: 'redis://127.0.0.1:1' }) }, { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  const app3 = Fastify()
  t.teardown(() => app3.close())
  await app3.register(portcullis)
  await t.rejects(async () => { await app3.register(fallbackRedis, { store: {} as RedisStore }) }, { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
})

t.test('the store the plugin started is stopped by fastify.close()', async (t) => {
  const redis = await startRedis(t)
  const { app } = await wsNode(t, { redis: redis.url, keyPrefix: prefix() })
  const store = app.portcullisRedis.store
  t.ok(store.started)
  await app.close()
  t.notOk(store.started)
})
