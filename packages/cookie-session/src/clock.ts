import type { FastifyBaseLogger } from 'fastify'
import { CloseCodes, type PortcullisIdentity, type PortcullisSocket } from '@portcullis/policy'
import type { MaybePromise, RecheckResult } from './types.js'

/** Re-checks a live session: the source's lookup or the app's `revalidate`. */
export type Recheck = (identity: PortcullisIdentity) => MaybePromise<RecheckResult>

interface Watched {
  /** The session id, or undefined for a session-less identity (then one entry per connection). */
  key: string | undefined
  sockets: Set<PortcullisSocket>
  identity: PortcullisIdentity
  /** Epoch ms; Infinity when the identity does not expire. */
  expiresAt: number
  /** Epoch ms of the next re-validation; Infinity when off. */
  revalidateAt: number
  recheck: Recheck | undefined
  /** Bumped on every reschedule: heap nodes with an older generation are stale. */
  gen: number
  /** The re-check in flight (its answer decides; no second one starts), or undefined. */
  checking: 'expire' | 'revalidate' | undefined
  /** Epoch ms by which the re-check in flight must answer; past it the connections close. */
  deadline: number
  /** Bumped when a re-check starts: an answer for an older one is ignored. */
  check: number
  /** The entry's connections were told to close: nothing reschedules it. */
  closed: boolean
  live: boolean
}

interface Node {
  at: number
  entry: Watched
  gen: number
}

// setTimeout's delay is a signed 32-bit number of ms; a longer one fires at once (Node warns).
const MAX_DELAY = 0x7fffffff

/**
 * The expiry and re-validation clock for every live session on this node: ONE binary min-heap
 * keyed by the next due time, and ONE `setTimeout` armed to the earliest node. Per session, not
 * per connection: ten tabs of one session are one entry and one re-check.
 *
 * Heap nodes are never searched for: a reschedule pushes a new node and bumps the entry's
 * generation, so the old node is skipped when it surfaces (lazy deletion). The heap is rebuilt
 * when stale nodes outnumber live entries, so it stays O(live sessions).
 */
export class SessionClock {
  readonly #heap: Node[] = []
  readonly #bySession = new Map<string, Watched>()
  readonly #live = new Set<Watched>()
  readonly #revalidateMs: number
  readonly #recheckTimeoutMs: number
  readonly #log: FastifyBaseLogger
  readonly #now: () => number
  #timer: NodeJS.Timeout | undefined
  #armedAt = Infinity
  #stopped = false

  constructor (opts: { revalidateMs: number, recheckTimeoutMs?: number, log: FastifyBaseLogger, now?: () => number }) {
    this.#revalidateMs = opts.revalidateMs
    this.#recheckTimeoutMs = opts.recheckTimeoutMs ?? 5000
    this.#log = opts.log
    this.#now = opts.now ?? Date.now
  }

  /** Sessions (and session-less connections) being watched. */
  get size (): number {
    return this.#live.size
  }

  /** Heap nodes, live and stale (for tests: it must stay bounded). */
  get heapSize (): number {
    return this.#heap.length
  }

  /** Whether the one timer is armed (for tests: none after stop or when nothing is watched). */
  get armed (): boolean {
    return this.#timer !== undefined
  }

  /** Does this identity need the clock at all? */
  needs (identity: PortcullisIdentity, recheck: Recheck | undefined): boolean {
    return identity.expiresAt !== undefined || (this.#revalidateMs > 0 && recheck !== undefined)
  }

  /** Watch a connection of `identity`. Returns the function that stops watching it. */
  watch (identity: PortcullisIdentity, socket: PortcullisSocket, recheck: Recheck | undefined): () => void {
    if (this.#stopped) return noop
    const key = identity.sessionId
    let entry = key === undefined ? undefined : this.#bySession.get(key)
    const expiresAt = identity.expiresAt ?? Infinity
    if (entry === undefined) {
      entry = {
        key,
        sockets: new Set(),
        identity,
        expiresAt,
        revalidateAt: this.#revalidateMs > 0 && recheck !== undefined ? this.#now() + this.#revalidateMs : Infinity,
        recheck,
        gen: 0,
        checking: undefined,
        deadline: Infinity,
        check: 0,
        closed: false,
        live: true
      }
      this.#live.add(entry)
      if (key !== undefined) this.#bySession.set(key, entry)
      this.#schedule(entry)
    } else {
      // the newest connection carries the freshest view of the session (a rolling session's
      // expiry moves forward); it replaces the entry's
      entry.identity = identity
      entry.recheck = recheck ?? entry.recheck
      if (expiresAt !== entry.expiresAt) {
        entry.expiresAt = expiresAt
        // a re-check in flight keeps its deadline; its answer reschedules
        if (entry.checking === undefined) this.#schedule(entry)
      }
    }
    entry.sockets.add(socket)
    const watched = entry
    return () => this.#unwatch(watched, socket)
  }

  /** Stop: clear the timer and forget everything (Fastify `onClose`). */
  stop (): void {
    this.#stopped = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#armedAt = Infinity
    this.#heap.length = 0
    for (const e of this.#live) e.live = false
    this.#live.clear()
    this.#bySession.clear()
  }

  #unwatch (entry: Watched, socket: PortcullisSocket): void {
    entry.sockets.delete(socket)
    if (entry.sockets.size > 0 || !entry.live) return
    entry.live = false
    this.#live.delete(entry)
    if (entry.key !== undefined && this.#bySession.get(entry.key) === entry) this.#bySession.delete(entry.key)
    if (this.#live.size === 0) {
      // nothing left to watch: drop the timer and the stale nodes at once
      this.#heap.length = 0
      this.#disarm()
    }
  }

  /** When the entry next needs the clock: its re-check's deadline, else its expiry or re-validation. */
  #dueAt (entry: Watched): number {
    if (entry.closed) return Infinity
    if (entry.checking !== undefined) return entry.deadline
    return Math.min(entry.expiresAt, entry.revalidateAt)
  }

  #schedule (entry: Watched): void {
    entry.gen++
    const at = this.#dueAt(entry)
    if (at === Infinity) return
    if (this.#heap.length > 64 && this.#heap.length > 4 * this.#live.size) this.#compact()
    push(this.#heap, { at, entry, gen: entry.gen })
    this.#arm()
  }

  #compact (): void {
    this.#heap.length = 0
    // every live entry keeps its node, a re-check in flight too (at its deadline): dropping
    // one would leave its connections open past their expiry, forever
    for (const entry of this.#live) {
      const at = this.#dueAt(entry)
      if (at !== Infinity) push(this.#heap, { at, entry, gen: entry.gen })
    }
  }

  #arm (): void {
    const top = this.#heap[0]
    if (top === undefined) return this.#disarm()
    if (this.#timer !== undefined && top.at >= this.#armedAt) return
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#armedAt = top.at
    this.#timer = setTimeout(() => this.#fire(), Math.min(Math.max(top.at - this.#now(), 0), MAX_DELAY))
    // the open sockets keep the process alive, not this timer
    this.#timer.unref()
  }

  #disarm (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#armedAt = Infinity
  }

  #fire (): void {
    this.#timer = undefined
    this.#armedAt = Infinity
    const now = this.#now()
    while (this.#heap.length > 0 && this.#heap[0].at <= now) {
      const node = pop(this.#heap)!
      const entry = node.entry
      if (!entry.live || entry.closed || node.gen !== entry.gen) continue
      if (entry.checking !== undefined) this.#timedOut(entry)
      else this.#due(entry, entry.expiresAt <= now ? 'expire' : 'revalidate', now)
    }
    this.#arm()
  }

  #due (entry: Watched, kind: 'expire' | 'revalidate', now: number): void {
    const recheck = entry.recheck
    if (recheck === undefined) {
      if (kind === 'expire') this.#close(entry, CloseCodes.SESSION_EXPIRED, 'session expired')
      return
    }
    // A due session is asked once more before it is closed: a rolling session that was extended
    // since this connection opened reports its new expiry and stays connected. The answer has
    // `recheckTimeoutMs`: a store that never answers closes the connections then (fail closed).
    entry.checking = kind
    // a periodic re-check that starts just before the expiry waits no longer than the expiry
    entry.deadline = kind === 'expire' ? now + this.#recheckTimeoutMs : Math.min(now + this.#recheckTimeoutMs, entry.expiresAt)
    const check = ++entry.check
    this.#schedule(entry)
    let answer: MaybePromise<RecheckResult>
    try {
      answer = recheck(entry.identity)
    } catch (err) {
      answer = Promise.reject(err)
    }
    Promise.resolve(answer).then(
      (result) => {
        if (!this.#current(entry, check)) return
        this.#settle(entry, kind, result)
      },
      (err: unknown) => {
        if (!this.#current(entry, check)) return
        entry.checking = undefined
        this.#log.error({ err, portcullis: { stage: 'session', check: kind } }, 'portcullis: session re-check failed')
        // past its expiry and unconfirmed: close (fail closed); a failed periodic re-check is
        // retried at the next interval, so a store blip does not drop every connection
        if (kind === 'expire') this.#close(entry, CloseCodes.SESSION_EXPIRED, 'session expired')
        else this.#next(entry, now)
      }
    )
  }

  /** Is this answer the one the entry waits for (not late, not for a closed entry)? */
  #current (entry: Watched, check: number): boolean {
    return entry.live && !entry.closed && entry.checking !== undefined && entry.check === check
  }

  /** The re-check in flight missed its deadline: close, with the code of what was being checked. */
  #timedOut (entry: Watched): void {
    const kind = entry.checking
    entry.checking = undefined
    this.#log.error({ portcullis: { stage: 'session', check: kind, timeoutMs: this.#recheckTimeoutMs } }, 'portcullis: session re-check timed out; connections closed')
    if (kind === 'expire' || entry.expiresAt <= this.#now()) this.#close(entry, CloseCodes.SESSION_EXPIRED, 'session expired')
    else this.#close(entry, CloseCodes.SESSION_INVALID, 'session invalid')
  }

  #settle (entry: Watched, kind: 'expire' | 'revalidate', result: RecheckResult): void {
    entry.checking = undefined
    const now = this.#now()
    const expired = { code: CloseCodes.SESSION_EXPIRED, reason: 'session expired' }
    const invalid = { code: CloseCodes.SESSION_INVALID, reason: 'session invalid' }
    const gone = kind === 'expire' ? expired : invalid
    if (result === null || result === undefined || result === false) return this.#close(entry, gone.code, gone.reason)
    if (result === true) {
      if (kind === 'expire') return this.#close(entry, expired.code, expired.reason)
      return this.#next(entry, now)
    }
    // the session now belongs to someone else: never keep a connection across that
    if (typeof result !== 'object' || result.id !== entry.identity.id) return this.#close(entry, invalid.code, invalid.reason)
    const expiresAt = result.expiresAt ?? Infinity
    if (!(expiresAt > now)) return this.#close(entry, expired.code, expired.reason)
    entry.identity = { ...entry.identity, ...result, sessionId: entry.identity.sessionId }
    entry.expiresAt = expiresAt
    this.#next(entry, now)
  }

  #next (entry: Watched, now: number): void {
    if (entry.revalidateAt !== Infinity) entry.revalidateAt = now + this.#revalidateMs
    this.#schedule(entry)
  }

  #close (entry: Watched, code: number, reason: string): void {
    // closed for good: nothing reschedules it, a late answer is ignored, and a connection of the
    // same session that opens from now on (it passed the handshake again) gets an entry of its own
    entry.closed = true
    entry.gen++
    if (entry.key !== undefined && this.#bySession.get(entry.key) === entry) this.#bySession.delete(entry.key)
    for (const socket of [...entry.sockets]) {
      if (socket.readyState <= 1) socket.close(code, reason)
    }
  }
}

function noop (): void {}

function push (heap: Node[], node: Node): void {
  heap.push(node)
  let i = heap.length - 1
  while (i > 0) {
    const parent = (i - 1) >> 1
    if (heap[parent].at <= node.at) break
    heap[i] = heap[parent]
    i = parent
  }
  heap[i] = node
}

function pop (heap: Node[]): Node | undefined {
  const top = heap[0]
  const last = heap.pop()
  if (heap.length === 0 || last === undefined) return top
  let i = 0
  const n = heap.length
  for (;;) {
    const l = 2 * i + 1
    if (l >= n) break
    const r = l + 1
    const c = r < n && heap[r].at < heap[l].at ? r : l
    if (heap[c].at >= last.at) break
    heap[i] = heap[c]
    i = c
  }
  heap[i] = last
  return top
}
