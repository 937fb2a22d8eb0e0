import { randomBytes } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import type {
  CloseFrame, CreateResult, FallbackStore, InboundFrame, InboundResult, NewSessionRecord, OutboundFrame,
  QueueSize, ReadLimits, ReadResult, SessionLimits, SessionRecord, StoreNode, WakeReason
} from '@portcullis/fallback'
import { CloseCodes } from '@portcullis/policy'
import * as S from './scripts.js'
import { PORTCULLIS_REDIS_INVALID_OPTION, PORTCULLIS_STORE_UNAVAILABLE } from './errors.js'
import type { RedisStoreOptions, StoreLogger } from './types.js'

const defaults = Object.freeze({
  keyPrefix: 'portcullis:',
  nodeTtlMs: 10_000,
  commandTimeoutMs: 2000,
  deliveryTimeoutMs: 10_000,
  lingerMs: 10_000,
  revocationBacklog: 10_000
})

/** The close a node gives the sessions it owns when Redis lost them or stayed unreachable. */
export const STORE_LOST_CLOSE: Readonly<CloseFrame> = Object.freeze({ code: CloseCodes.INTERNAL_ERROR, reason: 'store unavailable' })

type Script = keyof typeof scriptSources
const scriptSources = {
  pcCreate: S.CREATE,
  pcGet: S.GET,
  pcTouch: S.TOUCH,
  pcDestroy: S.DESTROY,
  pcPushOut: S.PUSH_OUT,
  pcCloseOut: S.CLOSE_OUT,
  pcReadOut: S.READ_OUT,
  pcWatch: S.WATCH,
  pcUnwatch: S.UNWATCH,
  pcPushIn: S.PUSH_IN,
  pcInState: S.IN_STATE,
  pcInbox: S.INBOX,
  pcDelivered: S.DELIVERED,
  pcClientClose: S.CLIENT_CLOSE
} as const
const SESSION_KEYS = 3

/** Told of every revocation published on any node (this one included). */
export type RevocationListener = (sessionId: string, code: number, reason: string) => void

interface Watcher { token: string, wake: (reason: WakeReason) => void }
interface SendWait { target: number, done: boolean, resolve: (delivered: boolean) => void }
interface Owned { delivered: number, draining: boolean, again: boolean }
interface NodeMessage { k: 'd' | 'g' | 's' | 'i' | 'a' | 'c', s: string, t?: string, n?: number, c?: number, r?: string }

const noopLogger: StoreLogger = { info () {}, warn () {}, error () {} }

/**
 * The fallback store on Redis: any node serves any poll, send or close of any session; the
 * owner node (the one that ran `open`) runs the handler. Redis is the only shared state, every
 * state change is one Lua script, pub/sub only wakes (a lost wake-up is repaired by the
 * heartbeat's re-checks, never relied on for correctness).
 */
export class RedisStore implements FallbackStore {
  readonly nodeId: string
  readonly #opts: Required<Omit<RedisStoreOptions, 'redis' | 'nodeId' | 'logger'>>
  readonly #source: string | Redis
  readonly #log: StoreLogger
  #cmd: Redis | undefined
  #sub: Redis | undefined
  #node: StoreNode | undefined
  #epoch: string | undefined
  #heartbeat: NodeJS.Timeout | undefined
  #lastBeat = 0
  #stopped = false
  #tokens = 0
  #lastRevocation = '0-0'
  #subReadyOnce = false
  /** Sessions this node owns (runs the handler of). */
  readonly #owned = new Map<string, Owned>()
  /** Owned sessions given up while Redis was unreachable: closed in Redis once it answers again. */
  readonly #orphans = new Set<string>()
  readonly #watchers = new Map<string, Watcher>()
  readonly #sends = new Map<string, SendWait[]>()
  readonly #revocationListeners = new Set<RevocationListener>()

  constructor (opts: RedisStoreOptions) {
    validate(opts)
    this.#opts = {
      keyPrefix: opts.keyPrefix ?? defaults.keyPrefix,
      nodeTtlMs: opts.nodeTtlMs ?? defaults.nodeTtlMs,
      commandTimeoutMs: opts.commandTimeoutMs ?? defaults.commandTimeoutMs,
      deliveryTimeoutMs: opts.deliveryTimeoutMs ?? defaults.deliveryTimeoutMs,
      lingerMs: opts.lingerMs ?? defaults.lingerMs,
      revocationBacklog: opts.revocationBacklog ?? defaults.revocationBacklog
    }
    this.nodeId = opts.nodeId ?? randomBytes(12).toString('base64url')
    this.#source = opts.redis
    this.#log = opts.logger ?? noopLogger
  }

  /** Sessions this node runs the handler of (for tests and stats). */
  get ownedSessions (): number {
    return this.#owned.size
  }

  /** True between a successful `start` and `stop`. */
  get started (): boolean {
    return this.#node !== undefined && !this.#stopped
  }

  /**
   * Listen to revocations from every node, besides the `StoreNode` the fallback gives `start`
   * (the Fastify plugin uses it to apply revocations through `@portcullis/cookie-session`).
   * Returns an unsubscribe function.
   */
  onRevocation (listener: RevocationListener): () => void {
    this.#revocationListeners.add(listener)
    return () => { this.#revocationListeners.delete(listener) }
  }

  async start (node: StoreNode): Promise<void> {
    if (this.#node !== undefined) throw new Error('RedisStore.start called twice')
    this.#node = node
    // Fail fast: a command while disconnected errors at once (→ 503) instead of queueing.
    const cmdOpts: Partial<RedisOptions> = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.#opts.commandTimeoutMs,
      retryStrategy: (times) => Math.min(50 * times, 500)
    }
    // The subscriber queues its (re)subscriptions until connected and resubscribes after a drop.
    const subOpts: Partial<RedisOptions> = {
      lazyConnect: true,
      enableOfflineQueue: true,
      autoResubscribe: true,
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(50 * times, 500)
    }
    this.#cmd = typeof this.#source === 'string' ? new Redis(this.#source, cmdOpts) : this.#source.duplicate(cmdOpts)
    this.#sub = typeof this.#source === 'string' ? new Redis(this.#source, subOpts) : this.#source.duplicate(subOpts)
    for (const [name, lua] of Object.entries(scriptSources)) {
      this.#cmd.defineCommand(name, { numberOfKeys: SESSION_KEYS, lua })
    }
    this.#cmd.defineCommand('pcHeartbeat', { numberOfKeys: 0, lua: S.HEARTBEAT })
    this.#cmd.defineCommand('pcRevoke', { numberOfKeys: 0, lua: S.REVOKE })
    this.#cmd.on('error', (err: Error) => this.#connectionError('command', err))
    // Reconnected: beat at once (epoch check, liveness) instead of at the next tick.
    this.#cmd.on('ready', () => { if (this.#epoch !== undefined) this.#tick().catch(() => {}) })
    this.#sub.on('error', (err: Error) => this.#connectionError('subscriber', err))
    this.#sub.on('message', (channel: string, message: string) => this.#onMessage(channel, message))
    this.#sub.on('ready', () => this.#onSubscriberReady())

    try {
      await Promise.all([this.#cmd.connect(), this.#sub.connect()])
      const p = this.#opts.keyPrefix
      await this.#sub.subscribe(`${p}ch:${this.nodeId}`, `${p}ch:revoke`)
      const last = await this.#cmd.xrevrange(`${p}revocations`, '+', '-', 'COUNT', 1)
      if (last.length > 0) this.#lastRevocation = last[0][0]
      await this.#beat()
    } catch (err) {
      this.#node = undefined
      this.#cmd.disconnect()
      this.#sub.disconnect()
      throw unavailable(err)
    }
    const every = Math.max(Math.floor(this.#opts.nodeTtlMs / 3), 50)
    this.#heartbeat = setInterval(() => { this.#tick().catch(() => {}) }, every)
    this.#heartbeat.unref()
  }

  async stop (): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    clearInterval(this.#heartbeat)
    for (const [sid, w] of this.#watchers) {
      this.#watchers.delete(sid)
      w.wake('gone')
    }
    for (const waits of [...this.#sends.values()]) for (const w of [...waits]) w.resolve(false)
    this.#sends.clear()
    const cmd = this.#cmd
    const sub = this.#sub
    try {
      // Sessions were closed by the plugin; dropping the liveness key tells other nodes at once.
      if (cmd?.status === 'ready') await this.#run(cmd.del(`${this.#opts.keyPrefix}node:${this.nodeId}`))
    } catch {}
    this.#owned.clear()
    await Promise.all([quit(cmd), quit(sub)])
    this.#node = undefined
  }

  async create (rec: NewSessionRecord, limits: SessionLimits): Promise<CreateResult> {
    const binding = JSON.stringify({
      sid: rec.sid,
      node: rec.node,
      route: rec.route,
      protocol: rec.protocol,
      identityId: rec.identityId,
      sessionId: rec.sessionId,
      origin: rec.origin,
      ip: rec.ip,
      createdAt: rec.createdAt,
      ttlMs: rec.ttlMs,
      // the negotiated wire version (absent = 1): any node answers a send as the client expects
      version: rec.version
    })
    const [r, epoch] = await this.#script('pcCreate', rec.sid, rec.node, rec.ip, rec.identityId ?? '', binding,
      rec.createdAt, rec.ttlMs, limits.total, limits.perIp, limits.perIdentity, this.#opts.nodeTtlMs,
      randomBytes(12).toString('base64url')) as [string, string]
    this.#epochSeen(epoch)
    if (r === 'exists') throw new Error('fallback session id collision')
    if (r === 'ok' && rec.node === this.nodeId) this.#owned.set(rec.sid, { delivered: 0, draining: false, again: false })
    return r as CreateResult
  }

  async get (sid: string): Promise<SessionRecord | undefined> {
    const r = await this.#script('pcGet', sid, this.#opts.lingerMs) as Array<string | null> | null
    if (r === null || r[0] === null) return undefined
    const [rec, lastSeen, inAck, outAck, state, code, reason] = r
    const binding = JSON.parse(rec as string) as Omit<SessionRecord, 'lastSeen' | 'inAck' | 'outAck' | 'closed'>
    return {
      ...binding,
      lastSeen: Number(lastSeen),
      inAck: Number(inAck),
      outAck: Number(outAck),
      closed: state === 'open' ? undefined : { code: Number(code), reason: reason ?? '' }
    }
  }

  async touch (sid: string, now: number): Promise<boolean> {
    return await this.#script('pcTouch', sid, now) === 1
  }

  async destroy (sid: string): Promise<void> {
    await this.#owner(sid, this.#script('pcDestroy', sid))
    this.#owned.delete(sid)
  }

  async pushOutbound (sid: string, frames: OutboundFrame[]): Promise<QueueSize> {
    const args: Array<string | number> = []
    for (const f of frames) args.push(f.seq, f.type === 'binary' ? 'b' : 't', f.data, f.bytes)
    try {
      const [messages, bytes] = await this.#owner(sid, this.#script('pcPushOut', sid, ...args)) as [number, number]
      return { messages, bytes }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('SEQ ')) throw new RangeError(err.message.slice(4))
      throw err
    }
  }

  async closeOutbound (sid: string, close: CloseFrame, opts: { lingerMs: number, dropQueued: boolean }): Promise<void> {
    await this.#owner(sid, this.#script('pcCloseOut', sid, close.code, close.reason, opts.lingerMs, opts.dropQueued ? 1 : 0))
    this.#owned.delete(sid)
  }

  async readOutbound (sid: string, ack: number, limits: ReadLimits): Promise<ReadResult> {
    const r = await this.#script('pcReadOut', sid, ack, limits.messages, limits.bytes, this.#opts.lingerMs, limits.after ?? 0) as Array<string | number> | null
    if (r === null) return { found: false }
    const frames: OutboundFrame[] = []
    for (let i = 6; i < r.length; i += 4) {
      frames.push({ seq: Number(r[i]), type: r[i + 1] === 'b' ? 'binary' : 'text', data: String(r[i + 2]), bytes: Number(r[i + 3]) })
    }
    const closed = r[2] !== 'open'
    return {
      found: true,
      frames,
      close: closed && r[5] === 1 ? { code: Number(r[3]), reason: String(r[4]) } : undefined,
      inAck: Number(r[0]),
      lastSeq: Number(r[1])
    }
  }

  watch (sid: string, wake: (reason: WakeReason) => void): () => void {
    const token = `${this.nodeId}.${++this.#tokens}`
    let done = false
    const watcher: Watcher = {
      token,
      wake: (reason) => {
        if (done) return
        done = true
        if (this.#watchers.get(sid) === watcher) this.#watchers.delete(sid)
        wake(reason)
      }
    }
    this.#watchers.get(sid)?.wake('superseded')
    this.#watchers.set(sid, watcher)
    // Register in Redis. The plugin watches before it reads, and both go down the same
    // connection in that order, so Redis registers first: nothing pushed after the read is
    // missed. On failure, wake with `data`: the plugin's next read fails with 503, which is what
    // the client must learn.
    this.#script('pcWatch', sid, this.nodeId, token, 1, this.#opts.lingerMs).then((r) => {
      if (r !== 'wait') watcher.wake(r as WakeReason)
    }, () => watcher.wake('data'))
    return () => {
      if (done) return
      done = true
      if (this.#watchers.get(sid) === watcher) this.#watchers.delete(sid)
      this.#script('pcUnwatch', sid, token).catch(() => {})
    }
  }

  async pushInbound (sid: string, frames: InboundFrame[]): Promise<InboundResult> {
    const args: Array<string | number> = []
    for (const f of frames) {
      // Redis stores UTF-8, which cannot carry a lone surrogate (it would arrive as U+FFFD and
      // pass the owner's RFC 6455 §8.1 check): such text travels JSON-escaped, so the owner
      // sees exactly what the client sent and closes with 1007 as the in-memory store would.
      if (f.type === 'text' && !isWellFormed(f.data)) args.push(f.seq, 'u', JSON.stringify(f.data))
      else args.push(f.seq, f.type === 'binary' ? 'b' : 't', f.data)
    }
    const [status, inAck, inDone, accepted] = await this.#script('pcPushIn', sid, this.nodeId, this.#opts.lingerMs, ...args) as [string, number, number, number]
    if (status === 'unknown') return { status: 'unknown' }
    if (status === 'closed' || status === 'gap') return { status, inAck }
    // Answer the client only once the owner has handed the messages to the handler: an `ack`
    // the client gets can never be lost to a Redis restart or an owner crash afterwards. A
    // retried POST waits too (its original may still be on its way to the owner).
    const target = frames.length === 0 ? 0 : Math.min(frames[frames.length - 1].seq, inAck)
    if (inDone < target) {
      const outcome = await this.#awaitDelivery(sid, target)
      if (outcome === 'closed') return { status: 'closed', inAck }
      if (outcome === 'timeout') throw new PORTCULLIS_STORE_UNAVAILABLE()
    }
    return { status: 'ok', inAck, accepted }
  }

  async pushClientClose (sid: string, close: CloseFrame): Promise<boolean> {
    const r = await this.#script('pcClientClose', sid, close.code, close.reason, this.nodeId, this.#opts.lingerMs) as number
    if (r === 3) this.#node?.clientClose(sid, close)
    return r !== 0
  }

  async publishRevocation (sessionId: string, code: number, reason: string): Promise<void> {
    const cmd = this.#ready()
    await this.#run((cmd as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>).pcRevoke(this.#opts.keyPrefix, sessionId, code, reason, this.#opts.revocationBacklog))
  }

  // ---- internals ----

  /**
   * An owner-side write that failed makes the plugin's socket give up (1011) while Redis may
   * still show the session open under a live owner: remember it, and close it in Redis as soon
   * as Redis answers again, so its client is told instead of polling a session nobody runs.
   */
  async #owner<T> (sid: string, p: Promise<T>): Promise<T> {
    try {
      return await p
    } catch (err) {
      if ((err as { code?: string }).code === 'PORTCULLIS_STORE_UNAVAILABLE' && this.#owned.delete(sid)) this.#orphans.add(sid)
      throw err
    }
  }

  #ready (): Redis {
    const cmd = this.#cmd
    if (cmd === undefined || this.#stopped) throw new PORTCULLIS_STORE_UNAVAILABLE()
    return cmd
  }

  /**
   * Run a session script: keys derived from the sid, prefix first in ARGV. Sent synchronously
   * (so `watch` then `readOutbound` reach Redis in that order) and never throws synchronously.
   */
  #script (name: Script, sid: string, ...args: Array<string | number>): Promise<unknown> {
    let cmd: Redis
    try {
      cmd = this.#ready()
    } catch (err) {
      return Promise.reject(err)
    }
    const p = this.#opts.keyPrefix
    const base = `${p}fb:{${sid}}`
    const fn = (cmd as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name]
    return this.#run(fn.call(cmd, base, `${base}:out`, `${base}:in`, p, sid, ...args))
  }

  /** Bound a Redis call in time; any connection failure becomes the documented 503. */
  async #run<T> (p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error('redis command timed out')), this.#opts.commandTimeoutMs)
    })
    try {
      return await Promise.race([p, timeout])
    } catch (err) {
      if (err instanceof Error && (err.name === 'ReplyError') && err.message.startsWith('SEQ ')) throw err
      throw unavailable(err)
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Wait until the owner has handed inbound frames up to `target` to the handler. Woken by the
   * owner's `a` notification; re-checked in Redis every heartbeat (a lost notification, a dead
   * owner — which the check closes with 4011). `closed`: the session closed first (the frames
   * are discarded, as after a WebSocket close frame). `timeout`: the caller answers 503.
   */
  #awaitDelivery (sid: string, target: number): Promise<'ok' | 'closed' | 'timeout'> {
    return new Promise((resolve) => {
      const started = Date.now()
      const every = Math.max(Math.floor(this.#opts.nodeTtlMs / 3), 50)
      const finish = (outcome: 'ok' | 'closed' | 'timeout'): void => {
        if (wait.done) return
        wait.done = true
        clearInterval(check)
        const list = this.#sends.get(sid)
        if (list !== undefined) {
          const i = list.indexOf(wait)
          if (i !== -1) list.splice(i, 1)
          if (list.length === 0) this.#sends.delete(sid)
        }
        resolve(outcome)
      }
      const wait: SendWait = { target, done: false, resolve: (ok) => finish(ok ? 'ok' : 'closed') }
      let list = this.#sends.get(sid)
      if (list === undefined) this.#sends.set(sid, (list = []))
      list.push(wait)
      const check = setInterval(() => {
        if (Date.now() - started > this.#opts.deliveryTimeoutMs) return finish('timeout')
        this.#script('pcInState', sid, this.#opts.lingerMs).then((r) => {
          const st = r as [string | null, string | null, string | null] | null
          if (st === null || st[0] === null) return finish('closed')
          if (Number(st[1]) >= target) return finish('ok')
          if (st[0] !== 'open') return finish('closed')
          // The owner may have missed its wake-up (subscription dropped): nudge it again.
          this.#cmd?.publish(`${this.#opts.keyPrefix}ch:${st[2] ?? ''}`, JSON.stringify({ k: 'i', s: sid })).catch(() => {})
        }, () => {})
      }, every)
      check.unref()
    })
  }

  #onMessage (channel: string, message: string): void {
    let msg: NodeMessage & { id?: string }
    try {
      msg = JSON.parse(message)
    } catch {
      return
    }
    if (channel === `${this.#opts.keyPrefix}ch:revoke`) {
      this.#revocation(msg.id as string, msg.s, msg.c as number, msg.r as string)
      return
    }
    switch (msg.k) {
      case 'd':
      case 'g':
      case 's': {
        const w = this.#watchers.get(msg.s)
        if (w !== undefined && w.token === msg.t) w.wake(msg.k === 'd' ? 'data' : msg.k === 'g' ? 'gone' : 'superseded')
        break
      }
      case 'i':
        this.#drain(msg.s)
        break
      case 'a': {
        const list = this.#sends.get(msg.s)
        if (list !== undefined) for (const w of [...list]) if ((msg.n as number) >= w.target) w.resolve(true)
        break
      }
      case 'c':
        if (this.#owned.has(msg.s)) this.#node?.clientClose(msg.s, { code: msg.c as number, reason: msg.r as string })
        break
    }
  }

  /** Owner: hand undelivered inbound frames to the handler, in order, once; then ack the senders. */
  #drain (sid: string): void {
    const owned = this.#owned.get(sid)
    if (owned === undefined) return
    if (owned.draining) {
      owned.again = true
      return
    }
    owned.draining = true
    const run = async (): Promise<void> => {
      do {
        owned.again = false
        const entries = await this.#script('pcInbox', sid, 256) as Array<[string, string[]]> | null
        if (entries === null || entries.length === 0) break
        const frames: InboundFrame[] = []
        const replies = new Set<string>()
        for (const [id, fields] of entries) {
          const seq = Number(id.slice(0, id.indexOf('-')))
          const f = fieldMap(fields)
          replies.add(f.r)
          // Delivered before but not yet recorded (Redis hiccup): never twice to the handler.
          if (seq <= owned.delivered) continue
          frames.push({ seq, type: f.t === 'b' ? 'binary' : 'text', data: f.t === 'u' ? JSON.parse(f.d) as string : f.d })
        }
        if (frames.length > 0) {
          owned.delivered = frames[frames.length - 1].seq
          try {
            if (this.#owned.get(sid) === owned) this.#node?.inbound(sid, frames)
          } catch (err) {
            // Handed over is handed over: a throwing listener must not make the sender retry forever.
            this.#log.error({ err }, 'portcullis: inbound handler threw')
          }
        }
        const last = entries[entries.length - 1][0]
        await this.#script('pcDelivered', sid, Number(last.slice(0, last.indexOf('-'))), ...replies)
        if (entries.length === 256) owned.again = true
      } while (owned.again)
    }
    run().catch((err) => {
      this.#log.warn({ err }, 'portcullis: inbound delivery failed; the sender retries')
    }).finally(() => { owned.draining = false })
  }

  #revocation (id: string, sessionId: string, code: number, reason: string): void {
    if (typeof id !== 'string' || compareIds(id, this.#lastRevocation) <= 0) return
    this.#lastRevocation = id
    for (const fn of [this.#node?.revocation, ...this.#revocationListeners]) {
      try {
        fn?.(sessionId, code, reason)
      } catch (err) {
        this.#log.error({ err }, 'portcullis: revocation handler failed')
      }
    }
  }

  /** After a dropped subscription: catch up revocations (published while we were away) and inbound. */
  #onSubscriberReady (): void {
    if (!this.#subReadyOnce) {
      this.#subReadyOnce = true
      return
    }
    this.#catchUpRevocations().catch((err) => this.#log.warn({ err }, 'portcullis: revocation catch-up failed'))
    for (const sid of this.#owned.keys()) this.#drain(sid)
  }

  /**
   * Apply revocations this node has not seen (pub/sub drops messages while a subscription is
   * down). Run on resubscribe and on every heartbeat — the latter also covers the instant between
   * a resubscribe and its SUBSCRIBE reaching Redis. One XRANGE that is almost always empty.
   */
  async #catchUpRevocations (): Promise<void> {
    const cmd = this.#cmd
    if (cmd === undefined || this.#stopped) return
    const entries = await this.#run(cmd.xrange(`${this.#opts.keyPrefix}revocations`, `(${this.#lastRevocation}`, '+', 'COUNT', 1000))
    for (const [id, fields] of entries) {
      const f = fieldMap(fields)
      this.#revocation(id, f.s, Number(f.c), f.r)
    }
  }

  async #beat (): Promise<void> {
    const cmd = this.#ready()
    const candidate = randomBytes(12).toString('base64url')
    const epoch = await this.#run((cmd as unknown as Record<string, (...a: unknown[]) => Promise<string>>)
      .pcHeartbeat(this.#opts.keyPrefix, this.nodeId, this.#opts.nodeTtlMs, candidate))
    this.#lastBeat = Date.now()
    this.#epochSeen(epoch)
  }

  #epochSeen (epoch: string): void {
    if (this.#epoch !== undefined && epoch !== this.#epoch) {
      // Redis restarted without its data (or failed over to an empty replica): every session and
      // queue is gone. Close what this node runs, loudly; clients reconnect.
      this.#log.error({ portcullis: { sessions: this.#owned.size } }, 'portcullis: the Redis store lost its data; closing this node\'s fallback sessions')
      this.#orphans.clear()
      this.#abandonAll()
      this.#lastRevocation = '0-0'
    }
    this.#epoch = epoch
  }

  async #tick (): Promise<void> {
    if (this.#stopped) return
    try {
      await this.#beat()
    } catch (err) {
      if (Date.now() - this.#lastBeat > this.#opts.nodeTtlMs && this.#owned.size > 0) {
        // Other nodes already consider us dead: give the sessions up now rather than serve
        // handlers whose clients can no longer reach them.
        this.#log.error({ err }, 'portcullis: Redis unreachable for longer than nodeTtlMs; closing this node\'s fallback sessions')
        for (const sid of this.#owned.keys()) this.#orphans.add(sid)
        this.#abandonAll()
      }
      // A waiting poll re-reads now: its read answers 503 while Redis is away.
      if (Date.now() - this.#lastBeat > this.#opts.nodeTtlMs) for (const w of [...this.#watchers.values()]) w.wake('data')
      return
    }
    this.#catchUpRevocations().catch(() => {})
    for (const sid of [...this.#orphans]) {
      this.#orphans.delete(sid)
      this.#script('pcCloseOut', sid, STORE_LOST_CLOSE.code, STORE_LOST_CLOSE.reason, this.#opts.lingerMs, 0).catch(() => {})
    }
    // Re-check waiting polls: a dead owner (4011), a lost wake-up.
    for (const [sid, w] of [...this.#watchers]) {
      this.#script('pcWatch', sid, this.nodeId, w.token, 0, this.#opts.lingerMs).then((r) => {
        if (r !== 'wait') w.wake(r as WakeReason)
      }, () => {})
    }
  }

  #abandonAll (): void {
    const sids = [...this.#owned.keys()]
    this.#owned.clear()
    for (const sid of sids) {
      try {
        this.#node?.clientClose(sid, { ...STORE_LOST_CLOSE })
      } catch (err) {
        this.#log.error({ err }, 'portcullis: closing a fallback session failed')
      }
    }
  }

  #lastError = 0
  #connectionError (which: string, err: Error): void {
    // ioredis reports every failed reconnect; log at most once a second.
    const now = Date.now()
    if (now - this.#lastError < 1000) return
    this.#lastError = now
    this.#log.warn({ portcullis: { connection: which }, err: { message: err.message } }, 'portcullis: Redis connection error')
  }
}

/**
 * The 503 error, with the Redis error kept as a non-enumerable `cause`: logs still show it
 * ("caused by"), but the message — which may reach a response body — names no internals.
 */
function unavailable (cause: unknown): Error {
  const err = new PORTCULLIS_STORE_UNAVAILABLE()
  Object.defineProperty(err, 'cause', { value: cause, enumerable: false, configurable: true, writable: true })
  return err
}

/** ES2024 `String.prototype.isWellFormed` (Node ≥ 20): false when a lone surrogate is present. */
function isWellFormed (s: string): boolean {
  return (s as string & { isWellFormed: () => boolean }).isWellFormed()
}

function fieldMap (fields: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i]] = fields[i + 1]
  return out
}

/** Compare stream ids `ms-seq` numerically. */
function compareIds (a: string, b: string): number {
  const [am, as] = a.split('-').map(Number)
  const [bm, bs] = b.split('-').map(Number)
  return am !== bm ? am - bm : as - bs
}

async function quit (r: Redis | undefined): Promise<void> {
  if (r === undefined) return
  try {
    if (r.status === 'ready') await r.quit()
    else r.disconnect()
  } catch {
    r.disconnect()
  }
}

function validate (opts: RedisStoreOptions): void {
  if (opts === null || typeof opts !== 'object') throw new PORTCULLIS_REDIS_INVALID_OPTION('options must be an object')
  const r = opts.redis as unknown
  if (typeof r === 'string') {
    if (!/^rediss?:\/\//.test(r)) throw new PORTCULLIS_REDIS_INVALID_OPTION('redis must be a redis:// or rediss:// URL, or an ioredis instance')
  } else if (r === null || typeof r !== 'object' || typeof (r as { duplicate?: unknown }).duplicate !== 'function') {
    throw new PORTCULLIS_REDIS_INVALID_OPTION('redis must be a redis:// or rediss:// URL, or an ioredis instance')
  }
  if (opts.keyPrefix !== undefined && (typeof opts.keyPrefix !== 'string' || opts.keyPrefix.length > 64 || /[\s{}]/.test(opts.keyPrefix))) {
    throw new PORTCULLIS_REDIS_INVALID_OPTION('keyPrefix must be a string of at most 64 characters without spaces or braces')
  }
  if (opts.nodeId !== undefined && (typeof opts.nodeId !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(opts.nodeId))) {
    throw new PORTCULLIS_REDIS_INVALID_OPTION('nodeId must be 1 to 64 characters of A-Z a-z 0-9 . _ -')
  }
  for (const key of ['nodeTtlMs', 'commandTimeoutMs', 'deliveryTimeoutMs', 'lingerMs', 'revocationBacklog'] as const) {
    const v = opts[key]
    if (v !== undefined && (!Number.isInteger(v) || v <= 0)) throw new PORTCULLIS_REDIS_INVALID_OPTION(`${key} must be a positive integer`)
  }
  if (opts.logger !== undefined && (opts.logger === null || typeof opts.logger.warn !== 'function')) {
    throw new PORTCULLIS_REDIS_INVALID_OPTION('logger must be a pino-like logger')
  }
}
