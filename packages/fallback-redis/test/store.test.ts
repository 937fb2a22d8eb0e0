import t from 'tap'
import { startRedis } from '../../../test/helpers/redis.js'
import { startedStore, newRecord, noLimits, prefix } from './helpers.js'
import { waitFor } from '../../../test/helpers/index.js'

t.test('a session opened on one node is served by another: outbound, inbound, acks', async (t) => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const a = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 900 })
  const b = await startedStore(t, { redis: redis.url, keyPrefix, nodeTtlMs: 900 })
  const rec = newRecord(a.store.nodeId)
  t.equal(await a.store.create(rec, noLimits), 'ok')
  const got = await b.store.get(rec.sid)
  t.equal(got?.node, a.store.nodeId)
  t.equal(got?.closed, undefined)

  t.same(await a.store.pushOutbound(rec.sid, [
    { seq: 1, type: 'text', data: 'hello', bytes: 5 },
    { seq: 2, type: 'binary', data: 'AAEC', bytes: 3 }
  ]), { messages: 2, bytes: 8 })
  let r = await b.store.readOutbound(rec.sid, 0, { messages: 10, bytes: 1000 })
  t.ok(r.found)
  if (!r.found) return
  t.same(r.frames.map(f => [f.seq, f.type, f.data]), [[1, 'text', 'hello'], [2, 'binary', 'AAEC']])
  r = await b.store.readOutbound(rec.sid, 1, { messages: 10, bytes: 1000 })
  t.same(r.found && r.frames.map(f => f.seq), [2], 'acked frame dropped, unacked redelivered')

  const res = await b.store.pushInbound(rec.sid, [{ seq: 1, type: 'text', data: 'hi' }, { seq: 2, type: 'text', data: 'there' }])
  t.same(res, { status: 'ok', inAck: 2, accepted: 2 })
  t.same(a.node.inbox.map(x => x.frames.map(f => f.data)).flat(), ['hi', 'there'], 'owner got them before the send answered')
  const dup = await b.store.pushInbound(rec.sid, [{ seq: 2, type: 'text', data: 'there' }])
  t.same(dup, { status: 'ok', inAck: 2, accepted: 0 })
  t.same(await a.store.pushInbound(rec.sid, [{ seq: 5, type: 'text', data: 'x' }]), { status: 'gap', inAck: 2 })
  t.equal(a.node.inbox.length, 1, 'no duplicate delivery')
})
