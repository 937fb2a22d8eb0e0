import t from 'tap'
import { Redis } from 'ioredis'
import type { WakeReason } from '@portcullis/fallback'
import { startRedis } from '../../../test/helpers/redis.js'
import { waitFor } from '../../../test/helpers/index.js'
import { RedisStore } from '../src/index.js'
import { startedStore, newRecord, noLimits, prefix, recordingNode } from './helpers.js'

const limits = { messages: 64, bytes: 1 << 20 }

function rawClient (t: { teardown: (fn: () => unknown) => void }, url: string): Redis {
  const r = new Redis(url)
  t.teardown(() => r.disconnect())
  return r
}

/** Retry while the store answers 503 (a connection still reconnecting after a restart). */
async function eventually<T> (fn: () => Promise<T>, ms = 3000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if ((err as { code?: string }).code !== 'PORTCULLIS_STORE_UNAVAILABLE' || Date.now() > until) throw err
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
}

function nextWake (store: RedisStore, sid: string): { reason: Promise<WakeReason>, unwatch: () => void } {
  let unwatch!: () => void
  const reason = new Promise<WakeReason>((resolve) => { unwatch = store.watch(sid, resolve) })
  return { reason, unwatch }
}

t.test('a session opened on one node is served by another: outbound, inbound, acks', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix })
  const b = await startedStore(t, { redis: redis.url, keyPrefix })
  const rec = newRecord(a.store.nodeId)
  t.equal(await a.store.create(rec, noLimits), 'ok')
  const got = await b.store.get(rec.sid)
  t.equal(got?.node, a.store.nodeId)
  t.equal(got?.origin, rec.origin)
  t.equal(got?.closed, undefined)

  t.same(await a.store.pushOutbound(rec.sid, [
    { seq: 1, type: 'text', data: 'hello', bytes: 5 },
    { seq: 2, type: 'binary', data: 'AAEC', bytes: 3 }
  ]), { messages: 2, bytes: 8 })
  await t.rejects(a.store.pushOutbound(rec.sid, [{ seq: 2, type: 'text', data: 'again', bytes: 5 }]), RangeError, 'a repeated seq is refused')
  let r = await b.store.readOutbound(rec.sid, 0, limits)
  t.same(r.found && r.frames.map(f => [f.seq, f.type, f.data, f.bytes]), [[1, 'text', 'hello', 5], [2, 'binary', 'AAEC', 3]])
  r = await b.store.readOutbound(rec.sid, 0, limits)
  t.same(r.found && r.frames.map(f => f.seq), [1, 2], 'a lost poll answer is redelivered with the same seqs')
  r = await a.store.readOutbound(rec.sid, 1, limits)
  t.same(r.found && r.frames.map(f => f.seq), [2], 'acked frame dropped')
  t.same(await a.store.pushOutbound(rec.sid, [{ seq: 3, type: 'text', data: 'x', bytes: 1 }]), { messages: 2, bytes: 4 }, 'queue size counts unacked frames only')
  r = await b.store.readOutbound(rec.sid, 99, limits)
  t.same(r.found && [r.frames.length, r.lastSeq], [0, 3], 'an ack beyond the last seq is clamped')
  t.equal((await b.store.get(rec.sid))?.outAck, 3)

  const res = await b.store.pushInbound(rec.sid, [{ seq: 1, type: 'text', data: 'hi' }, { seq: 2, type: 'binary', data: 'AAE=' }])
  t.same(res, { status: 'ok', inAck: 2, accepted: 2 })
  t.same(a.node.inbox.flatMap(x => x.frames.map(f => [f.seq, f.type, f.data])), [[1, 'text', 'hi'], [2, 'binary', 'AAE=']], 'the owner had them before the send was answered')
  t.same(await b.store.pushInbound(rec.sid, [{ seq: 2, type: 'binary', data: 'AAE=' }, { seq: 3, type: 'text', data: 'new' }]), { status: 'ok', inAck: 3, accepted: 1 }, 'a retry is deduplicated')
  t.same(await a.store.pushInbound(rec.sid, [{ seq: 5, type: 'text', data: 'x' }]), { status: 'gap', inAck: 3 })
  t.same(a.node.inbox.flatMap(x => x.frames.map(f => f.seq)), [1, 2, 3], 'each message reached the handler once, in order')
  t.equal(b.node.inbox.length, 0, 'the other node never sees inbound frames')
  t.equal((await b.store.get(rec.sid))?.inAck, 3)
})

t.test('concurrent retries of one send through three nodes are delivered once', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix })
  const b = await startedStore(t, { redis: redis.url, keyPrefix })
  const c = await startedStore(t, { redis: redis.url, keyPrefix })
  const rec = newRecord(a.store.nodeId)
  await a.store.create(rec, noLimits)
  const frames = [{ seq: 1, type: 'text' as const, data: 'one' }, { seq: 2, type: 'text' as const, data: 'two' }]
  const answers = await Promise.all([b.store.pushInbound(rec.sid, frames), c.store.pushInbound(rec.sid, frames), a.store.pushInbound(rec.sid, frames)])
  t.same(answers.map(x => x.status === 'ok' && x.inAck), [2, 2, 2])
  t.same(answers.map(x => x.status === 'ok' && x.accepted).sort(), [0, 0, 2])
  t.same(a.node.inbox.flatMap(x => x.frames.map(f => f.data)), ['one', 'two'])
})

t.test('a waiting poll on one node is woken by a message from the owner; a newer poll on a third node supersedes it', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix })
  const b = await startedStore(t, { redis: redis.url, keyPrefix })
  const c = await startedStore(t, { redis: redis.url, keyPrefix })
  const rec = newRecord(a.store.nodeId)
  await a.store.create(rec, noLimits)

  const w1 = nextWake(b.store, rec.sid)
  t.same((await b.store.readOutbound(rec.sid, 0, limits)).found && [], [], 'nothing queued yet')
  await a.store.pushOutbound(rec.sid, [{ seq: 1, type: 'text', data: 'hello', bytes: 5 }])
  t.equal(await w1.reason, 'data')
  w1.unwatch()

  const w2 = nextWake(b.store, rec.sid)
  await b.store.readOutbound(rec.sid, 1, limits)
  const w3 = nextWake(c.store, rec.sid)
  t.equal(await w2.reason, 'superseded', 'the older poll is answered at once, on whichever node it waits')
  await a.store.closeOutbound(rec.sid, { code: 1000, reason: 'bye' }, { lingerMs: 5000, dropQueued: false })
  t.equal(await w3.reason, 'data', 'a close wakes the poll')
  const r = await c.store.readOutbound(rec.sid, 1, limits)
  t.same(r.found && r.close, { code: 1000, reason: 'bye' })
  t.same((await c.store.get(rec.sid))?.closed, { code: 1000, reason: 'bye' })
  t.equal(await c.store.touch(rec.sid, Date.now()), true, 'a closed session is still known while it lingers')

  await a.store.destroy(rec.sid)
  t.equal(await c.store.get(rec.sid), undefined)
  const w4 = nextWake(c.store, rec.sid)
  t.equal(await w4.reason, 'gone')
})

t.test('the close frame comes after every queued frame, and only once they all were read', async (t) => {
  const redis = await startRedis(t)
  const a = await startedStore(t, { redis: redis.url, keyPrefix: prefix() })
  const rec = newRecord(a.store.nodeId)
  await a.store.create(rec, noLimits)
  await a.store.pushOutbound(rec.sid, [1, 2, 3].map(seq => ({ seq, type: 'text' as const, data: `m${seq}`, bytes: 2 })))
  await a.store.closeOutbound(rec.sid, { code: 4009, reason: 'slow consumer' }, { lingerMs: 5000, dropQueued: false })
  let r = await a.store.readOutbound(rec.sid, 0, { messages: 2, bytes: 1000 })
  t.same(r.found && [r.frames.map(f => f.seq), r.close], [[1, 2], undefined])
  r = await a.store.readOutbound(rec.sid, 0, { messages: 10, bytes: 3 })
  t.same(r.found && r.frames.map(f => f.seq), [1], 'byte limit')
  r = await a.store.readOutbound(rec.sid, 0, { messages: 10, bytes: 1 })
  t.same(r.found && r.frames.map(f => f.seq), [1], 'at least one frame')
  r = await a.store.readOutbound(rec.sid, 2, { messages: 10, bytes: 1000 })
  t.same(r.found && [r.frames.map(f => f.seq), r.close], [[3], { code: 4009, reason: 'slow consumer' }])
  t.same(await a.store.pushOutbound(rec.sid, [{ seq: 4, type: 'text', data: 'late', bytes: 4 }]), { messages: 0, bytes: 0 }, 'nothing is queued after the close')
})

t.test('a client close sent to any node reaches the owner', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix })
  const b = await startedStore(t, { redis: redis.url, keyPrefix })
  const rec = newRecord(a.store.nodeId)
  await a.store.create(rec, noLimits)
  t.equal(await b.store.pushClientClose(rec.sid, { code: 1000, reason: 'done' }), true)
  await waitFor(() => a.node.closes.length === 1, 2000, 'the owner hears the close')
  t.same(a.node.closes[0], { sid: rec.sid, close: { code: 1000, reason: 'done' } })
  t.equal(await a.store.pushClientClose(rec.sid, { code: 1000, reason: 'again' }), true)
  await waitFor(() => a.node.closes.length === 2, 2000, 'the owner on its own node')
  t.equal(await b.store.pushClientClose('no-such-session-id-xxxxxxxxxxxxx', { code: 1000, reason: '' }), false)
  t.equal(b.node.closes.length, 0)
})

t.test('session bounds hold across nodes and free their slot when a session is forgotten', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix })
  const b = await startedStore(t, { redis: redis.url, keyPrefix })
  const bounds = { perIdentity: 2, perIp: 3, total: 4 }
  const r1 = newRecord(a.store.nodeId)
  t.equal(await a.store.create(r1, bounds), 'ok')
  t.equal(await b.store.create(newRecord(b.store.nodeId), bounds), 'ok')
  t.equal(await b.store.create(newRecord(b.store.nodeId, { ip: '10.0.0.2' }), bounds), 'identity', 'the identity bound counts both nodes')
  t.equal(await b.store.create(newRecord(b.store.nodeId, { identityId: 'bob' }), bounds), 'ok')
  t.equal(await a.store.create(newRecord(a.store.nodeId, { identityId: 'carol' }), bounds), 'ip')
  t.equal(await a.store.create(newRecord(a.store.nodeId, { identityId: 'carol', ip: '10.0.0.2' }), bounds), 'ok')
  t.equal(await b.store.create(newRecord(b.store.nodeId, { identityId: 'dave', ip: '10.0.0.3' }), bounds), 'total')
  await a.store.destroy(r1.sid)
  t.equal(await b.store.create(newRecord(b.store.nodeId, { identityId: 'dave', ip: '10.0.0.3' }), bounds), 'ok', 'a destroyed session frees its slots')
  const one = { perIdentity: 1, perIp: 0, total: 0 }
  const short = newRecord(a.store.nodeId, { identityId: 'erin', ttlMs: 150 })
  t.equal(await a.store.create(short, one), 'ok')
  t.equal(await a.store.create(newRecord(a.store.nodeId, { identityId: 'erin' }), one), 'identity')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(await a.store.get(short.sid), undefined, 'forgotten after its TTL')
  t.equal(await a.store.create(newRecord(a.store.nodeId, { identityId: 'erin' }), one), 'ok', 'an expired session frees its slot too')
})

t.test('touch keeps an open session alive; the TTL forgets a quiet one', async (t) => {
  const redis = await startRedis(t)
  const a = await startedStore(t, { redis: redis.url, keyPrefix: prefix() })
  const rec = newRecord(a.store.nodeId, { ttlMs: 1200 })
  await a.store.create(rec, noLimits)
  const started = Date.now()
  for (let i = 0; i < 4; i++) {
    await new Promise(resolve => setTimeout(resolve, 400))
    t.equal(await a.store.touch(rec.sid, Date.now()), true)
  }
  t.ok(Date.now() - started > 1200, 'alive past its TTL thanks to the touches')
  const seen = (await a.store.get(rec.sid))?.lastSeen ?? 0
  t.ok(Date.now() - seen < 1000, 'lastSeen follows the touches')
  await new Promise(resolve => setTimeout(resolve, 1800))
  t.equal(await a.store.touch(rec.sid, Date.now()), false, 'forgotten once the touches stop')
})

t.test('a session whose owner stopped beating is closed with 4011 on every node, waiting polls included', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 600 })
  const raw = rawClient(t, redis.url)
  // a node that beat once, then died (its liveness key runs out)
  await raw.set(`${keyPrefix}node:ghost`, '1', 'PX', 500)
  const rec = newRecord('ghost')
  t.equal(await b.store.create(rec, noLimits), 'ok')
  const w = nextWake(b.store, rec.sid)
  const first = await b.store.readOutbound(rec.sid, 0, limits)
  t.same(first.found && [first.frames.length, first.close], [0, undefined], 'alive at first')
  const started = Date.now()
  t.equal(await w.reason, 'data', 'the waiting poll is woken')
  const waited = Date.now() - started
  t.ok(waited < 2000, `woken ${waited} ms after the owner's key expired`)
  const r = await b.store.readOutbound(rec.sid, 0, limits)
  t.same(r.found && r.close, { code: 4011, reason: 'node gone' })
  t.same(await b.store.pushInbound(rec.sid, [{ seq: 1, type: 'text', data: 'x' }]), { status: 'closed', inAck: 0 })
})

t.test('a send waiting for an owner that dies answers closed, never ok', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 600 })
  const raw = rawClient(t, redis.url)
  await raw.set(`${keyPrefix}node:ghost`, '1', 'PX', 400)
  const rec = newRecord('ghost')
  await b.store.create(rec, noLimits)
  const r = await b.store.pushInbound(rec.sid, [{ seq: 1, type: 'text', data: 'never delivered' }])
  t.same(r, { status: 'closed', inAck: 1 })
  t.same((await b.store.get(rec.sid))?.closed, { code: 4011, reason: 'node gone' })
})

t.test('a revocation reaches every node once, and a node whose subscription dropped catches up', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 3000 })
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 3000 })
  await a.store.publishRevocation('sess-1', 4001, 'logged out')
  await waitFor(() => a.node.revocations.length === 1 && b.node.revocations.length === 1, 2000, 'both nodes')
  t.same(b.node.revocations[0], { sessionId: 'sess-1', code: 4001, reason: 'logged out' })

  // Drop every pub/sub connection; publish while they reconnect.
  const raw = rawClient(t, redis.url)
  await raw.client('KILL', 'TYPE', 'pubsub')
  await a.store.publishRevocation('sess-2', 4001, 'logged out')
  await waitFor(() => b.node.revocations.length === 2 && a.node.revocations.length === 2, 4000, 'caught up after reconnecting')
  t.same(b.node.revocations.map(r => r.sessionId), ['sess-1', 'sess-2'])
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(b.node.revocations.length, 2, 'never twice')
})

t.test('Redis unreachable: calls fail fast with 503 PORTCULLIS_STORE_UNAVAILABLE; after a restart the owner closes its sessions', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 600, commandTimeoutMs: 500 })
  const rec = newRecord(a.store.nodeId)
  await a.store.create(rec, noLimits)
  await redis.stop()
  const started = Date.now()
  const err = await a.store.readOutbound(rec.sid, 0, limits).then(() => undefined, (e: { code?: string, statusCode?: number }) => e)
  t.equal(err?.code, 'PORTCULLIS_STORE_UNAVAILABLE')
  t.equal(err?.statusCode, 503)
  t.ok(Date.now() - started < 1500, 'within the command timeout')
  await t.rejects(a.store.pushInbound(rec.sid, [{ seq: 1, type: 'text', data: 'x' }]), { code: 'PORTCULLIS_STORE_UNAVAILABLE' }, 'a send is never acknowledged while Redis is away')
  await redis.start()
  await waitFor(() => a.node.closes.length === 1, 5000, 'the owner gives up the lost session')
  t.same(a.node.closes[0], { sid: rec.sid, close: { code: 1011, reason: 'store unavailable' } })
  t.equal(a.store.ownedSessions, 0)
  const again = newRecord(a.store.nodeId)
  t.equal(await a.store.create(again, noLimits), 'ok', 'the store serves again')
})

t.test('options are validated at construction', async (t) => {
  t.throws(() => new RedisStore({ redis: 'http://localhost' }), { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  t.throws(() => new RedisStore({ redis: {} as never }), { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  t.throws(() => new RedisStore({ redis: 'redis://127.0.0.1', keyPrefix: 'a {b}' }), { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  t.throws(() => new RedisStore({ redis: 'redis://127.0.0.1', nodeTtlMs: 0 }), { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  t.throws(() => new RedisStore({ redis: 'redis://127.0.0.1', nodeId: 'a b' }), { code: 'PORTCULLIS_REDIS_INVALID_OPTION' })
  t.ok(new RedisStore({ redis: 'redis://127.0.0.1:6379/0', keyPrefix: 'app:', nodeId: 'web-1' }))
})

t.test('start fails with 503 when Redis cannot be reached, and an ioredis instance is duplicated, not used', async (t) => {
  const redis = await startRedis(t)
  await redis.stop()
  const s = new RedisStore({ redis: redis.url, commandTimeoutMs: 300 })
  await t.rejects(s.start(recordingNode()), { code: 'PORTCULLIS_STORE_UNAVAILABLE' })
  await redis.start()
  const client = rawClient(t, redis.url)
  const { store } = await startedStore(t, { redis: client, keyPrefix: prefix() })
  t.equal(await store.create(newRecord(store.nodeId), noLimits), 'ok')
  await store.stop()
  t.equal(client.status, 'ready', 'the app\'s own client is left open')
})

t.test('a session opened right after a Redis restart, before the next heartbeat, is neither given up nor taken for orphaned', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 3000 })
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 3000 })
  const old = newRecord(b.store.nodeId)
  await b.store.create(old, noLimits)
  await redis.restart()
  // retry until b's command connection is back
  const fresh = newRecord(b.store.nodeId)
  t.equal(await eventually(() => b.store.create(fresh, noLimits)), 'ok')
  t.same(b.node.closes, [{ sid: old.sid, close: { code: 1011, reason: 'store unavailable' } }], 'the lost session is given up at once')
  const r = await eventually(() => a.store.readOutbound(fresh.sid, 0, limits))
  t.same(r.found && r.close, undefined, 'the new session is open on every node')
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.equal(b.node.closes.length, 1, 'the next heartbeats leave the new session alone')
  t.equal(b.store.ownedSessions, 1)
})

/** A TCP proxy in front of Redis that can cut one node off (a network partition). */
async function partitionable (t: { teardown: (fn: () => unknown) => void }, port: number): Promise<{ url: string, cut: () => void, heal: () => void }> {
  const { createServer, connect } = await import('node:net')
  let blocked = false
  const live = new Set<import('node:net').Socket>()
  const server = createServer((client) => {
    if (blocked) return client.destroy()
    const upstream = connect({ port, host: '127.0.0.1' })
    live.add(client)
    live.add(upstream)
    client.pipe(upstream).pipe(client)
    const drop = (): void => { client.destroy(); upstream.destroy(); live.delete(client); live.delete(upstream) }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of live) s.destroy(); server.close() })
  const addr = server.address() as import('node:net').AddressInfo
  return {
    url: `redis://127.0.0.1:${addr.port}`,
    cut: () => { blocked = true; for (const s of live) s.destroy() },
    heal: () => { blocked = false }
  }
}

t.test('an owner cut off from Redis: others close its sessions with 4011, it gives them up (1011) and serves again once healed', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const proxy = await partitionable(t, redis.port)
  const a = await startedStore(t, { redis: proxy.url, keyPrefix, nodeTtlMs: 600, commandTimeoutMs: 300 })
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 600 })
  const rec = newRecord(a.store.nodeId)
  await a.store.create(rec, noLimits)
  await a.store.pushOutbound(rec.sid, [{ seq: 1, type: 'text', data: 'queued before the cut', bytes: 21 }])
  proxy.cut()
  await waitFor(() => a.node.closes.length === 1, 4000, 'the cut-off owner gives its session up')
  t.same(a.node.closes[0], { sid: rec.sid, close: { code: 1011, reason: 'store unavailable' } })
  // the owner's liveness key runs out about when it gives up: read until the close shows
  let r = await b.store.readOutbound(rec.sid, 0, limits)
  for (let i = 0; i < 30 && r.found && r.close === undefined; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    r = await b.store.readOutbound(rec.sid, 0, limits)
  }
  t.same(r.found && [r.frames.map(f => f.data), r.close], [['queued before the cut'], { code: 4011, reason: 'node gone' }],
    'frames queued before the cut are delivered, then the close, by the node the client reached')
  proxy.heal()
  await waitFor(() => a.store.started, 1000)
  t.equal(await eventually(() => a.store.create(newRecord(a.store.nodeId), noLimits)), 'ok', 'the healed node opens sessions again')
  t.same((await b.store.get(rec.sid))?.closed, { code: 4011, reason: 'node gone' }, 'the old session stays closed')
})

t.test('a revocation whose pub/sub message was lost is applied by the next heartbeat', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 600 })
  const raw = rawClient(t, redis.url)
  // what REVOKE writes, minus the PUBLISH: as if the message had been dropped
  await raw.xadd(`${keyPrefix}revocations`, '*', 's', 'sess-9', 'c', '4001', 'r', 'logged out')
  await waitFor(() => b.node.revocations.length === 1, 2000, 'applied from the stream')
  t.same(b.node.revocations, [{ sessionId: 'sess-9', code: 4001, reason: 'logged out' }])
})
