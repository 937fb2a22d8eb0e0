/**
 * The pluggable fallback store: session records with a TTL, ordered per-session outbound queues,
 * inbound routing to the node that runs the handler, acks and redelivery, and revocation fan-out.
 *
 * The plugin talks to the store only through `FallbackStore`, always asynchronously, so a
 * multi-node store (Redis: `@portcullis/fallback-redis`) can back it without changing the plugin.
 * The in-memory default below is the reference implementation: a Redis store must give the
 * same answers for the same calls (the shared conformance rules are written next to each method).
 *
 * Roles, for one session:
 * - the OWNER node runs the handler and holds the `LongPollSocket`; it is the only producer of
 *   outbound frames (it assigns their `seq`), and the only consumer of inbound frames.
 * - ANY node may serve `poll`, `send` and `close` for the session: it reads and trims the outbound
 *   queue, accepts inbound frames (deduplicated by the store) and the store routes them to the owner.
 */

/** One server→client frame. `seq` starts at 1 and grows by 1 per frame of a session. */
export interface OutboundFrame {
  seq: number
  /** `text` for a text message, `binary` for a binary one (base64, as on the wire). */
  type: 'text' | 'binary'
  data: string
  /** Bytes this frame counts for the queue bound (UTF-8 length of text, decoded length of binary). */
  bytes: number
}

/** One client→server message, as the store routes it to the owner. */
export interface InboundFrame {
  seq: number
  type: 'text' | 'binary'
  /** Text, or base64 for binary (decoded by the owner, so the store never copies buffers). */
  data: string
}

export interface CloseFrame {
  code: number
  reason: string
}

/**
 * What the store knows about one fallback session. The binding fields (`route`, `protocol`,
 * `identityId`, `sessionId`, `origin`) are written once at `create` and never change: every
 * later request is compared against them.
 */
export interface SessionRecord {
  /** The fallback session id (never logged). */
  readonly sid: string
  /** Id of the node that runs the handler (`FallbackStore.nodeId` of its store). */
  readonly node: string
  /** The WebSocket route URL pattern this session is a twin of. */
  readonly route: string
  /** The negotiated subprotocol, `''` when none. */
  readonly protocol: string
  readonly identityId: string | undefined
  readonly sessionId: string | undefined
  /** The Origin header of the open request, exactly as sent (`undefined` when none). */
  readonly origin: string | undefined
  /** Client IP at open (for the per-IP bound; not a binding: mobile clients change IPs). */
  readonly ip: string
  readonly createdAt: number
  /** Last request of the client (open, poll, send, close) on any node, epoch ms. */
  lastSeen: number
  /**
   * Store TTL: the record is forgotten this long after `lastSeen`. Longer than the route's idle
   * timeout, so the owner closes an idle session (4010) before the store forgets it.
   */
  readonly ttlMs: number
  /** Highest client seq accepted so far (0 = none). */
  inAck: number
  /** Highest server seq the client acknowledged (0 = none); frames ≤ outAck are gone. */
  outAck: number
  /** Set once the session is closed: kept until the TTL so a retried poll sees the same close. */
  closed: CloseFrame | undefined
  /** Wire protocol version negotiated at open (PROTOCOL.md §12); absent = 1. Part of the record, so any node answers a send as the client expects. */
  readonly version?: number
}

export type NewSessionRecord = Omit<SessionRecord, 'lastSeen' | 'inAck' | 'outAck' | 'closed'>

/** Bounds checked atomically with `create` (cluster-wide for a shared store). 0 = no limit. */
export interface SessionLimits {
  perIdentity: number
  perIp: number
  total: number
}

export type CreateResult = 'ok' | 'identity' | 'ip' | 'total'

/** Queue size after a push: the owner closes a slow consumer (4009) past its bounds. */
export interface QueueSize {
  messages: number
  bytes: number
}

export interface ReadLimits {
  /** At most this many frames per read. */
  messages: number
  /** Stop adding frames once this many bytes are in the answer (at least one frame is always returned). */
  bytes: number
  /**
   * Skip frames with `seq ≤ after` too, without acknowledging them: a stream has written them
   * and they stay queued until the client acks (PROTOCOL.md §13). Default 0.
   */
  after?: number
}

export type ReadResult =
  | { found: false }
  | {
    found: true
    /** Frames with `seq > max(ack, outAck, limits.after)`, in order, within the read limits. */
    frames: OutboundFrame[]
    /** The close frame, only once every queued frame has been read (it is the last thing delivered). */
    close: CloseFrame | undefined
    /** Highest client seq accepted (echoed to the client so it can drop resent messages). */
    inAck: number
    /** Highest seq the owner has pushed (a client ack above it is a protocol error). */
    lastSeq: number
  }

export type InboundResult =
  | { status: 'unknown' }
  /** Frames with `seq ≤ inAck` were duplicates (dropped); the rest were routed to the owner. */
  | { status: 'ok', inAck: number, accepted: number }
  /** The first frame's seq is beyond `inAck + 1`: nothing was accepted. */
  | { status: 'gap', inAck: number }
  /** The session is closing or closed: nothing was accepted. */
  | { status: 'closed', inAck: number }

/** Why a waiting poll is woken. */
export type WakeReason = 'data' | 'superseded' | 'gone'

/** Callbacks of one node, given to `start`. */
export interface StoreNode {
  /** Inbound frames for a session this node owns, in seq order, each exactly once. */
  inbound: (sid: string, frames: InboundFrame[]) => void
  /** The client asked to close a session this node owns (`POST close`). */
  clientClose: (sid: string, close: CloseFrame) => void
  /** A revocation published on any node (this one included). */
  revocation: (sessionId: string, code: number, reason: string) => void
}

export interface FallbackStore {
  /** Stable id of this node; recorded as `SessionRecord.node` for the sessions it owns. */
  readonly nodeId: string

  /** Called once by the plugin (on `onReady`) before any other method. */
  start: (node: StoreNode) => Promise<void>
  /** Called once on `fastify.close()`, after the plugin closed the sessions this node owns. */
  stop: () => Promise<void>

  /**
   * Create a session record unless a bound is reached. Atomic: two concurrent creates cannot
   * both take the last slot. A session counts until it is forgotten (closed ones included).
   */
  create: (record: NewSessionRecord, limits: SessionLimits) => Promise<CreateResult>
  /** The record, or `undefined` when unknown or expired. Callers treat it as read-only. */
  get: (sid: string) => Promise<SessionRecord | undefined>
  /** Refresh `lastSeen` (and the TTL). Returns false when the session is unknown. */
  touch: (sid: string, now: number) => Promise<boolean>
  /** Forget the session: record, queues and counts. Wakes a waiting poll with `gone`. Idempotent. */
  destroy: (sid: string) => Promise<void>

  /**
   * Owner only: append frames (seqs already assigned, contiguous, increasing) and wake the
   * session's waiting poll with `data`. Ignored when the session is unknown or closed.
   */
  pushOutbound: (sid: string, frames: OutboundFrame[]) => Promise<QueueSize>
  /**
   * Owner only: mark the session closed with this frame (first close wins) and wake the waiting
   * poll with `data`. The record lingers `opts.lingerMs` (no longer refreshed by `touch`) so a
   * retried poll sees the same close, then is forgotten; it keeps its slot in the bounds until
   * then, so open/close churn cannot grow memory. `dropQueued` discards undelivered frames
   * (the client closed: it does not want them); otherwise they are delivered before the close.
   */
  closeOutbound: (sid: string, close: CloseFrame, opts: { lingerMs: number, dropQueued: boolean }) => Promise<void>
  /**
   * Any node: drop frames with `seq ≤ ack` (the client has them), raise `outAck`, and return
   * what is left, within the limits. Redelivery is this: a frame stays until acked.
   */
  readOutbound: (sid: string, ack: number, limits: ReadLimits) => Promise<ReadResult>
  /**
   * Any node: register the session's one waiting poll. A new watch supersedes the previous one
   * (its callback gets `superseded`, on whichever node it waits). `wake` is called at most once;
   * the returned function unregisters (idempotent).
   */
  watch: (sid: string, wake: (reason: WakeReason) => void) => () => void

  /**
   * Any node: accept client frames numbered `frames[0].seq ...` — drop those `≤ inAck`, refuse a
   * gap, raise `inAck`, and route the rest to the owner's `inbound` callback, in order. Atomic:
   * a retried POST racing its original is delivered once.
   */
  pushInbound: (sid: string, frames: InboundFrame[]) => Promise<InboundResult>
  /** Any node: route a client close to the owner's `clientClose`. Returns false when unknown. */
  pushClientClose: (sid: string, close: CloseFrame) => Promise<boolean>

  /** Fan a revocation out to every node's `revocation` callback (this node's included). */
  publishRevocation: (sessionId: string, code: number, reason: string) => Promise<void>
}

interface MemorySession {
  record: SessionRecord
  frames: OutboundFrame[]
  bytes: number
  lastSeq: number
  waiter: ((reason: WakeReason) => void) | undefined
  expiry: NodeJS.Timeout | undefined
  /** Set by `closeOutbound`: the record is forgotten at this time, whatever `lastSeen` says. */
  lingerUntil: number
}

export interface MemoryStoreOptions {
  /** Node id. Default `'local'`. */
  nodeId?: string
}

/**
 * The in-memory store: one node, everything in Maps. Expiry is a timer per session (unref'd),
 * re-armed lazily: `touch` only moves `lastSeen`, and the timer re-checks when it fires.
 */
export class MemoryStore implements FallbackStore {
  readonly nodeId: string
  readonly #sessions = new Map<string, MemorySession>()
  readonly #perIdentity = new Map<string, number>()
  readonly #perIp = new Map<string, number>()
  #open = 0
  #node: StoreNode | undefined

  constructor (opts: MemoryStoreOptions = {}) {
    this.nodeId = opts.nodeId ?? 'local'
  }

  /** Sessions held (open or closed-but-lingering), for tests and stats. */
  get size (): number {
    return this.#sessions.size
  }

  /** Queued outbound bytes over all sessions, for tests and stats. */
  get queuedBytes (): number {
    let n = 0
    for (const s of this.#sessions.values()) n += s.bytes
    return n
  }

  async start (node: StoreNode): Promise<void> {
    this.#node = node
  }

  async stop (): Promise<void> {
    for (const sid of [...this.#sessions.keys()]) this.#forget(sid, 'gone')
    this.#node = undefined
  }

  async create (rec: NewSessionRecord, limits: SessionLimits): Promise<CreateResult> {
    if (limits.total > 0 && this.#open >= limits.total) return 'total'
    if (limits.perIp > 0 && (this.#perIp.get(rec.ip) ?? 0) >= limits.perIp) return 'ip'
    if (limits.perIdentity > 0 && rec.identityId !== undefined && (this.#perIdentity.get(rec.identityId) ?? 0) >= limits.perIdentity) return 'identity'
    const record: SessionRecord = { ...rec, lastSeen: rec.createdAt, inAck: 0, outAck: 0, closed: undefined }
    const s: MemorySession = { record, frames: [], bytes: 0, lastSeq: 0, waiter: undefined, expiry: undefined, lingerUntil: 0 }
    this.#sessions.set(rec.sid, s)
    this.#count(record, 1)
    this.#arm(s)
    return 'ok'
  }

  async get (sid: string): Promise<SessionRecord | undefined> {
    return this.#sessions.get(sid)?.record
  }

  async touch (sid: string, now: number): Promise<boolean> {
    const s = this.#sessions.get(sid)
    if (s === undefined) return false
    if (now > s.record.lastSeen && s.record.closed === undefined) s.record.lastSeen = now
    return true
  }

  async destroy (sid: string): Promise<void> {
    this.#forget(sid, 'gone')
  }

  async pushOutbound (sid: string, frames: OutboundFrame[]): Promise<QueueSize> {
    const s = this.#sessions.get(sid)
    if (s === undefined || s.record.closed !== undefined) return { messages: 0, bytes: 0 }
    for (const f of frames) {
      // the owner numbers frames; a repeated or out-of-order push is a bug upstream, never stored twice
      if (f.seq !== s.lastSeq + 1) throw new RangeError(`outbound seq ${f.seq} after ${s.lastSeq}`)
      s.frames.push(f)
      s.bytes += f.bytes
      s.lastSeq = f.seq
    }
    this.#wake(s, 'data')
    return { messages: s.frames.length, bytes: s.bytes }
  }

  async closeOutbound (sid: string, close: CloseFrame, opts: { lingerMs: number, dropQueued: boolean }): Promise<void> {
    const s = this.#sessions.get(sid)
    if (s === undefined || s.record.closed !== undefined) return
    s.record.closed = { code: close.code, reason: close.reason }
    if (opts.dropQueued) {
      s.frames = []
      s.bytes = 0
    }
    s.lingerUntil = Date.now() + opts.lingerMs
    clearTimeout(s.expiry)
    this.#arm(s)
    this.#wake(s, 'data')
  }

  async readOutbound (sid: string, ack: number, limits: ReadLimits): Promise<ReadResult> {
    const s = this.#sessions.get(sid)
    if (s === undefined) return { found: false }
    if (ack > s.record.outAck) {
      s.record.outAck = Math.min(ack, s.lastSeq)
      let drop = 0
      while (drop < s.frames.length && s.frames[drop].seq <= s.record.outAck) s.bytes -= s.frames[drop++].bytes
      if (drop > 0) s.frames.splice(0, drop)
    }
    const frames: OutboundFrame[] = []
    let bytes = 0
    const after = Math.max(limits.after ?? 0, s.record.outAck)
    // frames are contiguous from outAck + 1: the first one past `after` is at a known index
    const start = Math.max(0, after - s.record.outAck)
    for (let i = start; i < s.frames.length; i++) {
      const f = s.frames[i]
      if (frames.length >= limits.messages || (frames.length > 0 && bytes + f.bytes > limits.bytes)) break
      frames.push(f)
      bytes += f.bytes
    }
    // the close comes last: only once every frame up to the last seq has been read
    const all = start + frames.length >= s.frames.length
    return { found: true, frames, close: all ? s.record.closed : undefined, inAck: s.record.inAck, lastSeq: s.lastSeq }
  }

  watch (sid: string, wake: (reason: WakeReason) => void): () => void {
    const s = this.#sessions.get(sid)
    if (s === undefined) {
      queueMicrotask(() => wake('gone'))
      return noop
    }
    this.#wake(s, 'superseded')
    let done = false
    const once = (reason: WakeReason): void => {
      if (done) return
      done = true
      wake(reason)
    }
    s.waiter = once
    return () => {
      done = true
      if (s.waiter === once) s.waiter = undefined
    }
  }

  async pushInbound (sid: string, frames: InboundFrame[]): Promise<InboundResult> {
    const s = this.#sessions.get(sid)
    if (s === undefined) return { status: 'unknown' }
    const rec = s.record
    if (rec.closed !== undefined) return { status: 'closed', inAck: rec.inAck }
    if (frames.length === 0) return { status: 'ok', inAck: rec.inAck, accepted: 0 }
    if (frames[0].seq > rec.inAck + 1) return { status: 'gap', inAck: rec.inAck }
    let from = 0
    while (from < frames.length && frames[from].seq <= rec.inAck) from++
    const fresh = from === 0 ? frames : frames.slice(from)
    if (fresh.length > 0) {
      rec.inAck = fresh[fresh.length - 1].seq
      this.#node?.inbound(sid, fresh)
    }
    return { status: 'ok', inAck: rec.inAck, accepted: fresh.length }
  }

  async pushClientClose (sid: string, close: CloseFrame): Promise<boolean> {
    const s = this.#sessions.get(sid)
    if (s === undefined) return false
    if (s.record.closed === undefined) this.#node?.clientClose(sid, close)
    return true
  }

  async publishRevocation (sessionId: string, code: number, reason: string): Promise<void> {
    this.#node?.revocation(sessionId, code, reason)
  }

  #wake (s: MemorySession, reason: WakeReason): void {
    const w = s.waiter
    if (w === undefined) return
    s.waiter = undefined
    w(reason)
  }

  #count (rec: SessionRecord, d: 1 | -1): void {
    this.#open += d
    bump(this.#perIp, rec.ip, d)
    if (rec.identityId !== undefined) bump(this.#perIdentity, rec.identityId, d)
  }

  #arm (s: MemorySession): void {
    s.expiry = setTimeout(() => {
      if (this.#sessions.get(s.record.sid) !== s) return
      if (deadline(s) <= Date.now()) this.#forget(s.record.sid, 'gone')
      else this.#arm(s)
    }, Math.max(deadline(s) - Date.now(), 1))
    s.expiry.unref()
  }

  #forget (sid: string, reason: WakeReason): void {
    const s = this.#sessions.get(sid)
    if (s === undefined) return
    this.#sessions.delete(sid)
    clearTimeout(s.expiry)
    this.#count(s.record, -1)
    s.frames = []
    s.bytes = 0
    this.#wake(s, reason)
  }
}

function deadline (s: MemorySession): number {
  return s.record.closed !== undefined ? s.lingerUntil : s.record.lastSeen + s.record.ttlMs
}

function bump (map: Map<string, number>, key: string, d: number): void {
  const n = (map.get(key) ?? 0) + d
  if (n <= 0) map.delete(key)
  else map.set(key, n)
}

function noop (): void {}
