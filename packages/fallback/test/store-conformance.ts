/**
 * The rules every `FallbackStore` must follow (see the comments in src/store.ts), as a test
 * suite that takes a store factory. `store.test.ts` runs it on the in-memory store; a multi-node
 * store (`@portcullis/fallback-redis`) can run the very same suite on its own.
 */
import type { Test } from 'tap'
import type { CloseFrame, FallbackStore, InboundFrame, NewSessionRecord, OutboundFrame, StoreNode, WakeReason } from '../src/index.js'

export interface NodeEvents {
  inbound: Array<[string, InboundFrame[]]>
  closes: Array<[string, CloseFrame]>
  revocations: Array<[string, number, string]>
}

/** A started store and what its node callbacks received. */
export async function startStore (make: () => FallbackStore | Promise<FallbackStore>): Promise<{ store: FallbackStore, events: NodeEvents }> {
  const store = await make()
  const events: NodeEvents = { inbound: [], closes: [], revocations: [] }
  const node: StoreNode = {
    inbound: (sid, frames) => { events.inbound.push([sid, frames]) },
    clientClose: (sid, close) => { events.closes.push([sid, close]) },
    revocation: (sessionId, code, reason) => { events.revocations.push([sessionId, code, reason]) }
  }
  await store.start(node)
  return { store, events }
}

let n = 0
/** A fresh record with a unique sid (valid shape: 32 base64url characters). */
export function record (store: FallbackStore, over: Partial<NewSessionRecord> = {}): NewSessionRecord {
  n++
  return {
    sid: `conformance${String(n).padStart(6, '0')}${'x'.repeat(15)}`,
    node: store.nodeId,
    route: '/chat',
    protocol: 'chat.v1',
    identityId: 'alice',
    sessionId: 's1',
    origin: 'https://app.example.com',
    ip: '10.0.0.1',
    createdAt: Date.now(),
    ttlMs: 60_000,
    ...over
  }
}

const NO_LIMITS = { perIdentity: 0, perIp: 0, total: 0 }
const READ = { messages: 100, bytes: 1 << 20 }

function text (seq: number, data: string): OutboundFrame {
  return { seq, type: 'text', data, bytes: Buffer.byteLength(data) }
}

async function eventually (fn: () => boolean, ms = 2000): Promise<boolean> {
  const until = Date.now() + ms
  while (!fn()) {
    if (Date.now() > until) return false
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return true
}

function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

function nextWake (store: FallbackStore, sid: string): { reason: Promise<WakeReason>, unwatch: () => void } {
  let unwatch!: () => void
  const reason = new Promise<WakeReason>((resolve) => { unwatch = store.watch(sid, resolve) })
  return { reason, unwatch }
}

export function storeConformance (t: Test, make: () => FallbackStore | Promise<FallbackStore>): void {
  const setup = async (t: Test): Promise<{ store: FallbackStore, events: NodeEvents }> => {
    const s = await startStore(make)
    t.teardown(() => s.store.stop())
    return s
  }

  t.test('creates, reads and forgets a session record', async (t) => {
    const { store } = await setup(t)
    const rec = record(store)
    t.equal(await store.create(rec, NO_LIMITS), 'ok')
    const got = await store.get(rec.sid)
    t.match(got, { ...rec, lastSeen: rec.createdAt, inAck: 0, outAck: 0, closed: undefined })
    t.equal(await store.get('unknown'.padEnd(32, 'x')), undefined)
    t.equal(await store.touch(rec.sid, rec.createdAt + 10), true)
    t.equal((await store.get(rec.sid))?.lastSeen, rec.createdAt + 10)
    await store.destroy(rec.sid)
    await store.destroy(rec.sid)
    t.equal(await store.get(rec.sid), undefined, 'destroy is idempotent')
    t.equal(await store.touch(rec.sid, Date.now()), false)
  })

  t.test('enforces the session bounds atomically and releases slots when forgotten', async (t) => {
    const { store } = await setup(t)
    const limits = { perIdentity: 2, perIp: 3, total: 4 }
    const a = [record(store), record(store)]
    for (const r of a) t.equal(await store.create(r, limits), 'ok')
    t.equal(await store.create(record(store), limits), 'identity')
    t.equal(await store.create(record(store, { identityId: 'bob' }), limits), 'ok')
    t.equal(await store.create(record(store, { identityId: 'carol' }), limits), 'ip')
    t.equal(await store.create(record(store, { identityId: undefined, ip: '10.0.0.2' }), limits), 'ok')
    t.equal(await store.create(record(store, { identityId: undefined, ip: '10.0.0.3' }), limits), 'total')
    await store.destroy(a[0].sid)
    t.equal(await store.create(record(store, { identityId: 'dave', ip: '10.0.0.4' }), limits), 'ok', 'a forgotten session frees its slot')
    const racers = await Promise.all([0, 1, 2].map(i => store.create(record(store, { identityId: `r${i}`, ip: `10.1.0.${i}` }), { ...limits, total: 5 })))
    t.same(racers.filter(r => r === 'ok').length, 1, 'concurrent creates cannot share the last slot')
  })

  t.test('delivers outbound frames in order until acked, within the read limits', async (t) => {
    const { store } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    t.same(await store.pushOutbound(rec.sid, [text(1, 'a'), text(2, 'bb')]), { messages: 2, bytes: 3 })
    t.same(await store.pushOutbound(rec.sid, [text(3, 'ccc')]), { messages: 3, bytes: 6 })
    let r = await store.readOutbound(rec.sid, 0, READ)
    t.match(r, { found: true, lastSeq: 3, inAck: 0, close: undefined })
    t.same(r.found && r.frames.map(f => f.seq), [1, 2, 3])
    r = await store.readOutbound(rec.sid, 0, READ)
    t.same(r.found && r.frames.map(f => f.seq), [1, 2, 3], 'unacked frames are read again (redelivery)')
    r = await store.readOutbound(rec.sid, 2, READ)
    t.same(r.found && r.frames.map(f => f.data), ['ccc'])
    r = await store.readOutbound(rec.sid, 1, READ)
    t.same(r.found && r.frames.map(f => f.seq), [3], 'an older ack brings nothing back')
    t.equal((await store.get(rec.sid))?.outAck, 2)
    await store.pushOutbound(rec.sid, [text(4, 'dddd'), text(5, 'e'), text(6, 'f')])
    r = await store.readOutbound(rec.sid, 3, { messages: 2, bytes: 1000 })
    t.same(r.found && r.frames.map(f => f.seq), [4, 5], 'at most `messages` frames')
    r = await store.readOutbound(rec.sid, 3, { messages: 100, bytes: 2 })
    t.same(r.found && r.frames.map(f => f.seq), [4], 'at least one frame, even over `bytes`')
    t.same(await store.readOutbound('unknown'.padEnd(32, 'x'), 0, READ), { found: false })
  })

  t.test('delivers the close only after every frame before it, and keeps it for the linger', async (t) => {
    const { store } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    await store.pushOutbound(rec.sid, [text(1, 'a'), text(2, 'b')])
    await store.closeOutbound(rec.sid, { code: 4000, reason: 'bye' }, { lingerMs: 200, dropQueued: false })
    await store.closeOutbound(rec.sid, { code: 4001, reason: 'second' }, { lingerMs: 200, dropQueued: false })
    t.same(await store.pushOutbound(rec.sid, [text(3, 'after')]), { messages: 0, bytes: 0 }, 'nothing is queued after the close')
    let r = await store.readOutbound(rec.sid, 0, { messages: 1, bytes: 100 })
    t.match(r, { found: true, close: undefined }, 'not while frames are still unread')
    r = await store.readOutbound(rec.sid, 0, READ)
    t.match(r, { found: true, close: { code: 4000, reason: 'bye' } }, 'the first close wins')
    t.same(r.found && r.frames.map(f => f.seq), [1, 2])
    t.same((await store.get(rec.sid))?.closed, { code: 4000, reason: 'bye' })
    await sleep(300)
    t.equal(await store.get(rec.sid), undefined, 'forgotten after the linger')
  })

  t.test('a stream read skips the frames it wrote (limits.after) without acking them, and the close comes after the last', async (t) => {
    const { store } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    await store.pushOutbound(rec.sid, [text(1, 'a'), text(2, 'b'), text(3, 'c')])
    let r = await store.readOutbound(rec.sid, 1, { ...READ, after: 2 })
    t.same(r.found && r.frames.map(f => f.seq), [3], 'past the ack and past what the stream wrote')
    t.equal((await store.get(rec.sid))?.outAck, 1, 'only the ack is applied: 2 stays queued')
    r = await store.readOutbound(rec.sid, 1, { ...READ, after: 3 })
    t.same(r.found && r.frames, [], 'nothing new')
    r = await store.readOutbound(rec.sid, 0, READ)
    t.same(r.found && r.frames.map(f => f.seq), [2, 3], 'a reconnect (no after) gets the unacked frames again')
    await store.closeOutbound(rec.sid, { code: 4001, reason: 'revoked' }, { lingerMs: 1000, dropQueued: false })
    r = await store.readOutbound(rec.sid, 1, { messages: 1, bytes: 100, after: 1 })
    t.match(r, { found: true, close: undefined }, 'frames 2 and 3 are still unwritten')
    r = await store.readOutbound(rec.sid, 1, { ...READ, after: 3 })
    t.match(r, { found: true, frames: [], close: { code: 4001, reason: 'revoked' } }, 'the close once everything was written')
  })

  t.test('a client close drops the queued frames', async (t) => {
    const { store } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    await store.pushOutbound(rec.sid, [text(1, 'a')])
    await store.closeOutbound(rec.sid, { code: 1000, reason: '' }, { lingerMs: 1000, dropQueued: true })
    const r = await store.readOutbound(rec.sid, 0, READ)
    t.match(r, { found: true, frames: [], close: { code: 1000, reason: '' } })
  })

  t.test('wakes the one waiting poll: data, superseded, gone', async (t) => {
    const { store } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    const first = nextWake(store, rec.sid)
    const second = nextWake(store, rec.sid)
    t.equal(await first.reason, 'superseded')
    await store.pushOutbound(rec.sid, [text(1, 'a')])
    t.equal(await second.reason, 'data')
    const third = nextWake(store, rec.sid)
    await store.closeOutbound(rec.sid, { code: 1000, reason: '' }, { lingerMs: 1000, dropQueued: false })
    t.equal(await third.reason, 'data', 'a close wakes like data')
    const fourth = nextWake(store, rec.sid)
    await store.destroy(rec.sid)
    t.equal(await fourth.reason, 'gone')
    t.equal(await nextWake(store, rec.sid).reason, 'gone', 'watching an unknown session wakes at once')

    const other = record(store)
    await store.create(other, NO_LIMITS)
    let woken = false
    const unwatch = store.watch(other.sid, () => { woken = true })
    unwatch()
    unwatch()
    await store.pushOutbound(other.sid, [text(1, 'a')])
    await eventually(() => woken, 100)
    t.notOk(woken, 'an unwatched poll is not woken')
  })

  t.test('accepts inbound frames once, in order, and routes them to the owner', async (t) => {
    const { store, events } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    const f = (seq: number): InboundFrame => ({ seq, type: 'text', data: `m${seq}` })
    t.same(await store.pushInbound(rec.sid, [f(1), f(2)]), { status: 'ok', inAck: 2, accepted: 2 })
    t.same(await store.pushInbound(rec.sid, [f(1), f(2)]), { status: 'ok', inAck: 2, accepted: 0 }, 'a retry')
    t.same(await store.pushInbound(rec.sid, [f(2), f(3)]), { status: 'ok', inAck: 3, accepted: 1 }, 'an overlapping retry')
    t.same(await store.pushInbound(rec.sid, [f(5)]), { status: 'gap', inAck: 3 })
    const racing = await Promise.all([store.pushInbound(rec.sid, [f(4)]), store.pushInbound(rec.sid, [f(4)])])
    t.same(racing.map(r => r.status === 'ok' && r.accepted).sort(), [0, 1], 'a retry racing its original is accepted once')
    t.ok(await eventually(() => events.inbound.flatMap(([, fr]) => fr).length === 4))
    t.same(events.inbound.flatMap(([sid, fr]) => fr.map(x => [sid, x.seq])), [1, 2, 3, 4].map(s => [rec.sid, s]))
    t.equal((await store.get(rec.sid))?.inAck, 4)
    const r = await store.readOutbound(rec.sid, 0, READ)
    t.equal(r.found && r.inAck, 4, 'reads report the client ack')
    await store.closeOutbound(rec.sid, { code: 1000, reason: '' }, { lingerMs: 1000, dropQueued: false })
    t.same(await store.pushInbound(rec.sid, [f(5)]), { status: 'closed', inAck: 4 })
    t.same(await store.pushInbound('unknown'.padEnd(32, 'x'), [f(1)]), { status: 'unknown' })
  })

  t.test('routes client closes and revocations', async (t) => {
    const { store, events } = await setup(t)
    const rec = record(store)
    await store.create(rec, NO_LIMITS)
    t.equal(await store.pushClientClose(rec.sid, { code: 1000, reason: 'done' }), true)
    t.equal(await store.pushClientClose('unknown'.padEnd(32, 'x'), { code: 1000, reason: '' }), false)
    await store.publishRevocation('s1', 4001, 'revoked')
    t.ok(await eventually(() => events.closes.length === 1 && events.revocations.length === 1))
    t.same(events.closes, [[rec.sid, { code: 1000, reason: 'done' }]])
    t.same(events.revocations, [['s1', 4001, 'revoked']])
  })

  t.test('forgets a session its TTL after the last touch', async (t) => {
    const { store } = await setup(t)
    const rec = record(store, { ttlMs: 200 })
    await store.create(rec, NO_LIMITS)
    await sleep(120)
    t.equal(await store.touch(rec.sid, Date.now()), true)
    await sleep(120)
    t.ok(await store.get(rec.sid), 'a touch extends the TTL')
    await sleep(250)
    t.equal(await store.get(rec.sid), undefined, 'forgotten once idle for its TTL')
  })
}
