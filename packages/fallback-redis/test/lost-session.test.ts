/**
 * Issue 19, "a session closed on a store failure is closed in the store too", on a real Redis with
 * two nodes: the owner's write fails while Redis is paused (`CLIENT PAUSE`), its socket ends with
 * 1011, and the client — polling the OTHER node — is told with a close record once Redis answers
 * again, instead of a session that keeps answering while its sends go nowhere.
 */
import t from 'tap'
import { createRequire } from 'node:module'
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { type PortcullisSocket } from '@portcullis/policy'
import fallback from '@portcullis/fallback'
import { RedisStore } from '../src/index.js'
import { LpClient } from '../../fallback/test/helpers.js'
import { startRedis } from '../../../test/helpers/redis.js'
import { listen, waitFor } from '../../../test/helpers/index.js'
import { prefix } from './helpers.js'

interface Cmd { call: (...args: string[]) => Promise<unknown>, disconnect: () => void, on: (e: string, fn: () => void) => void }
const RedisClient = createRequire(new URL('../package.json', import.meta.url))('ioredis').Redis as new (url: string) => Cmd

async function node (t: { teardown: (fn: () => unknown) => void }, url: string, keyPrefix: string, onSocket: (s: PortcullisSocket) => void): Promise<{ app: FastifyInstance, port: number }> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis, { defaults: { origin: false } })
  const store = new RedisStore({ redis: url, keyPrefix, commandTimeoutMs: 300, nodeTtlMs: 6000 })
  await app.register(fallback, { store, pollTimeoutMs: 1000, idleTimeoutMs: 20_000 })
  app.get('/ws', { websocket: true, wsPolicy: { fallback: true } }, (socket) => onSocket(socket))
  const { port } = await listen(app)
  return { app, port }
}

for (const via of ['the other node', 'the owner node'] as const) {
  t.test(`an owner whose store write failed closes the session in Redis: a client polling ${via} hears 1011, its send is not acked`, async (t) => {
    const redis = await startRedis(t)
    const keyPrefix = prefix()
    const owned: PortcullisSocket[] = []
    const heard: string[] = []
    const closes: number[] = []
    const a = await node(t, redis.url, keyPrefix, (s) => {
      owned.push(s)
      s.on('message', (m: Buffer) => heard.push(String(m)))
      s.on('close', (code: number) => closes.push(code))
    })
    const b = await node(t, redis.url, keyPrefix, () => {})
    const opener = new LpClient(a.port, '/ws')
    t.equal((await opener.open()).status, 200)
    // the same session, served by the other node from now on
    const c = new LpClient(b.port, '/ws')
    c.sid = opener.sid
    t.equal((await c.send('before')).status, 200)
    await waitFor(() => heard.length === 1, 3000, 'delivered to the owner')

    const admin = new RedisClient(redis.url)
    admin.on('error', () => {})
    t.teardown(() => admin.disconnect())
    await admin.call('CLIENT', 'PAUSE', '1200', 'ALL')
    owned[0].send('lost in the pause')
    await waitFor(() => closes.length === 1, 3000, 'the owner\'s socket failed')
    t.same(closes, [1011], 'the handler hears 1011')
    await new Promise(resolve => setTimeout(resolve, 1300)) // Redis answers again

    // told, wherever it polls: the owner's gate closes a session it owns but no socket runs; the
    // other node learns it from Redis, where the owner's heartbeat closed its orphans
    const p = via === 'the owner node' ? new LpClient(a.port, '/ws') : c
    p.sid = c.sid
    p.nextOut = c.nextOut
    const started = Date.now()
    let close: { code: number, reason: string } | undefined
    const until = Date.now() + 15_000
    while (close === undefined && Date.now() < until) {
      const r = await p.poll()
      if (r.res.status === 200 && r.close !== undefined) close = r.close
      else if (r.res.status !== 200) await new Promise(resolve => setTimeout(resolve, 100))
    }
    t.equal(close?.code, 1011, `the client is told: "${close?.reason}", ${Date.now() - started} ms after Redis came back`)
    const after = await p.send('after')
    t.not(after.status === 200 && after.body?.ack === 2, true, `a send after the failure is not acknowledged (${after.status} ${after.text})`)
    t.same(heard, ['before'], 'and reaches no handler')
  })
}
