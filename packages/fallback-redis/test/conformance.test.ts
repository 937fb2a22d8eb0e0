/**
 * The fallback's store contract says a Redis store must give the same answers as the in-memory
 * reference for the same calls. Property test: random call sequences run against both, every
 * answer and every callback compared. Fixed seed in CI; PORTCULLIS_FC_RUNS / _SEED to explore.
 */
import t from 'tap'
import fc from 'fast-check'
import { MemoryStore, type FallbackStore, type InboundFrame, type SessionRecord } from '@portcullis/fallback'
import { startRedis } from '../../../test/helpers/redis.js'
import { RedisStore } from '../src/index.js'
import { newRecord, prefix, recordingNode, type RecordingNode } from './helpers.js'

type Op =
  | { op: 'create', s: number, perIdentity: number }
  | { op: 'push', s: number, n: number }
  | { op: 'read', s: number, ackDelta: number, messages: number, bytes: number }
  | { op: 'send', s: number, from: number, n: number, bad: boolean }
  | { op: 'close', s: number, code: number, drop: boolean }
  | { op: 'clientClose', s: number }
  | { op: 'touch', s: number }
  | { op: 'destroy', s: number }
  | { op: 'get', s: number }

const S = 3
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('create' as const), s: fc.nat(S - 1), perIdentity: fc.integer({ min: 0, max: 2 }) }),
  fc.record({ op: fc.constant('push' as const), s: fc.nat(S - 1), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ op: fc.constant('push' as const), s: fc.nat(S - 1), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ op: fc.constant('read' as const), s: fc.nat(S - 1), ackDelta: fc.integer({ min: -2, max: 3 }), messages: fc.integer({ min: 1, max: 5 }), bytes: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ op: fc.constant('read' as const), s: fc.nat(S - 1), ackDelta: fc.integer({ min: -2, max: 3 }), messages: fc.integer({ min: 1, max: 5 }), bytes: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ op: fc.constant('send' as const), s: fc.nat(S - 1), from: fc.integer({ min: -1, max: 2 }), n: fc.integer({ min: 1, max: 3 }), bad: fc.boolean() }),
  fc.record({ op: fc.constant('send' as const), s: fc.nat(S - 1), from: fc.integer({ min: -1, max: 2 }), n: fc.integer({ min: 1, max: 3 }), bad: fc.constant(false) }),
  fc.record({ op: fc.constant('close' as const), s: fc.nat(S - 1), code: fc.constantFrom(1000, 4009, 4010), drop: fc.boolean() }),
  fc.record({ op: fc.constant('clientClose' as const), s: fc.nat(S - 1) }),
  fc.record({ op: fc.constant('touch' as const), s: fc.nat(S - 1) }),
  fc.record({ op: fc.constant('destroy' as const), s: fc.nat(S - 1) }),
  fc.record({ op: fc.constant('get' as const), s: fc.nat(S - 1) })
)

/** What a client and the owner would know, tracked from the reference's answers. */
interface Model { lastSeq: number[], ack: number[], inAck: number[], created: boolean[] }

function view (rec: SessionRecord | undefined): unknown {
  if (rec === undefined) return undefined
  return { sid: rec.sid, node: rec.node, route: rec.route, protocol: rec.protocol, identityId: rec.identityId, sessionId: rec.sessionId, origin: rec.origin, ip: rec.ip, createdAt: rec.createdAt, ttlMs: rec.ttlMs, inAck: rec.inAck, outAck: rec.outAck, closed: rec.closed }
}

async function apply (store: FallbackStore, op: Op, sids: string[], ids: { identity: string, ip: string }, m: Model, nowish: number): Promise<unknown> {
  const sid = sids[op.s]
  switch (op.op) {
    case 'create':
      return store.create(newRecord(store.nodeId, { sid, identityId: ids.identity, ip: ids.ip, createdAt: nowish }), { perIdentity: op.perIdentity, perIp: 0, total: 0 })
    case 'push': {
      const frames = Array.from({ length: op.n }, (_, i) => {
        const seq = m.lastSeq[op.s] + 1 + i
        return { seq, type: (seq % 2 === 0 ? 'binary' : 'text') as 'binary' | 'text', data: `m${seq}`, bytes: 1 + (seq % 4) }
      })
      return store.pushOutbound(sid, frames)
    }
    case 'read':
      return store.readOutbound(sid, Math.max(0, m.ack[op.s] + op.ackDelta), { messages: op.messages, bytes: op.bytes })
    case 'send': {
      const first = Math.max(1, m.inAck[op.s] + 1 + op.from)
      // text with a lone surrogate (not valid UTF-8) must reach the owner unchanged, so it closes 1007
      const frames: InboundFrame[] = Array.from({ length: op.n }, (_, i) => ({ seq: first + i, type: 'text', data: op.bad && i === 0 ? `c${first + i}\ud800é` : `c${first + i} é` }))
      return store.pushInbound(sid, frames)
    }
    case 'close':
      return store.closeOutbound(sid, { code: op.code, reason: `r${op.code}` }, { lingerMs: 60_000, dropQueued: op.drop })
    case 'clientClose':
      return store.pushClientClose(sid, { code: 1000, reason: 'bye' })
    case 'touch':
      return store.touch(sid, nowish + 1000)
    case 'destroy':
      return store.destroy(sid)
    case 'get':
      return view(await store.get(sid))
  }
}

/** Keep the model in step with the reference's answer (what a real owner and client would learn). */
function learn (op: Op, answer: any, m: Model): void {
  if (op.op === 'push' && answer.messages > 0) m.lastSeq[op.s] += op.n
  if (op.op === 'read' && answer.found === true && answer.frames.length > 0) m.ack[op.s] = answer.frames[answer.frames.length - 1].seq
  if (op.op === 'send' && (answer.status === 'ok' || answer.status === 'gap' || answer.status === 'closed')) m.inAck[op.s] = answer.inAck
}

t.test('the Redis store answers every call as the in-memory reference does', async (t) => {
  const redis = await startRedis(t)
  const redisNode = recordingNode()
  const store = new RedisStore({ redis: redis.url, keyPrefix: prefix(), nodeId: 'local' })
  await store.start(redisNode)
  t.teardown(() => store.stop())
  let run = 0
  const runs = Number(process.env.PORTCULLIS_FC_RUNS ?? 200)
  const seed = Number(process.env.PORTCULLIS_FC_SEED ?? 20261129)

  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), async (ops) => {
    run++
    const memory = new MemoryStore({ nodeId: 'local' })
    const memoryNode: RecordingNode = recordingNode()
    await memory.start(memoryNode)
    redisNode.inbox.length = 0
    redisNode.closes.length = 0
    const sids = Array.from({ length: S }, (_, i) => `run${run}-session-${i}-xxxxxxxxxxxxxxxxxx`)
    const ids = { identity: `user${run}`, ip: `10.1.${run >> 8}.${run & 255}` }
    const m: Model = { lastSeq: [0, 0, 0], ack: [0, 0, 0], inAck: [0, 0, 0], created: [false, false, false] }
    const nowish = Date.now()
    try {
      for (const op of ops) {
        // ids are random: the plugin never creates one twice
        if (op.op === 'create') {
          if (m.created[op.s]) continue
          m.created[op.s] = true
        }
        const want = await apply(memory, op, sids, ids, m, nowish).catch((e: Error) => ({ error: e.name }))
        const got = await apply(store, op, sids, ids, m, nowish).catch((e: Error) => ({ error: e.name }))
        if (JSON.stringify(got) !== JSON.stringify(want)) {
          throw new Error(`${JSON.stringify(op)}: redis ${JSON.stringify(got)} vs memory ${JSON.stringify(want)}`)
        }
        learn(op, want, m)
        const a = JSON.stringify(redisNode.inbox.map(x => [x.sid, x.frames]))
        const b = JSON.stringify(memoryNode.inbox.map(x => [x.sid, x.frames]))
        if (a !== b) throw new Error(`${JSON.stringify(op)}: inbound delivered ${a} vs ${b}`)
        if (JSON.stringify(redisNode.closes) !== JSON.stringify(memoryNode.closes)) throw new Error(`${JSON.stringify(op)}: client closes differ`)
      }
    } finally {
      await memory.stop()
      for (const sid of sids) await store.destroy(sid)
    }
  }), { numRuns: runs, seed })
  t.pass(`${run} random call sequences gave identical answers`)
})
