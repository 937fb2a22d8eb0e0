/**
 * Every store call bounded in time. A store is user code (a custom one) or a network service
 * (Redis): either may hang. The plugin calls the store only through this wrapper, so a call that
 * does not settle within `storeTimeoutMs` fails closed with `503 PORTCULLIS_STORE_UNAVAILABLE`
 * where a request waits on it, fails its socket (1011) where the owner waits on it, and never
 * holds `fastify.close()` longer than the bound.
 */
import { MemoryStore, type FallbackStore } from './store.js'
import { PORTCULLIS_STORE_UNAVAILABLE } from './errors.js'

type AsyncMethod = Exclude<keyof FallbackStore, 'nodeId' | 'watch'>

const ASYNC_METHODS: readonly AsyncMethod[] = Object.freeze([
  'start', 'stop', 'create', 'get', 'touch', 'destroy', 'pushOutbound', 'closeOutbound',
  'readOutbound', 'pushInbound', 'pushClientClose', 'publishRevocation'
])

/**
 * The store with every asynchronous method bounded by `ms`; `watch` is synchronous and passes through.
 * The built-in `MemoryStore`, with none of its methods replaced, is returned as it is: it is
 * in-process code of this package whose every method settles in the same turn, so a deadline
 * cannot fire, and wrapping it cost a promise, a closure pair and a set entry per call (four to
 * six calls per long-poll exchange). A subclass or an instance with a replaced method is user
 * code again and is bounded.
 */
export function timedStore (store: FallbackStore, ms: number): FallbackStore {
  if (isPlainMemoryStore(store)) return store
  const deadlines = new Deadlines(ms)
  const timed: Record<string, unknown> = {
    get nodeId () { return store.nodeId },
    watch: (sid: string, wake: Parameters<FallbackStore['watch']>[1]) => store.watch(sid, wake)
  }
  for (const name of ASYNC_METHODS) {
    timed[name] = function timedStoreCall (...args: unknown[]): Promise<unknown> {
      let p: unknown
      try {
        p = (store[name] as (...a: unknown[]) => unknown).apply(store, args)
      } catch (err) {
        // a custom store's method that throws synchronously fails like one that rejects
        return Promise.reject(err)
      }
      return deadlines.within(Promise.resolve(p), name)
    }
  }
  return timed as unknown as FallbackStore
}

function isPlainMemoryStore (store: FallbackStore): boolean {
  if (!(store instanceof MemoryStore)) return false
  const own = MemoryStore.prototype as unknown as Record<string, unknown>
  const given = store as unknown as Record<string, unknown>
  for (const name of ASYNC_METHODS) if (given[name] !== own[name]) return false
  return true
}

interface Pending {
  deadline: number
  what: string
  reject: (err: Error) => void
}

/**
 * The deadlines of the calls in flight, swept by one interval instead of a timer armed and
 * cleared per call (a profile of the long-poll bench showed timer insert/unenroll per store call).
 * A call fails between `ms` and `ms + tick` after it started (tick = ms/8, 5 ms to 1 s). The
 * interval runs only while calls are in flight, and keeps the process alive as a timer would.
 */
class Deadlines {
  readonly #ms: number
  readonly #tick: number
  readonly #pending = new Set<Pending>()
  #timer: NodeJS.Timeout | undefined

  constructor (ms: number) {
    this.#ms = ms
    this.#tick = Math.max(5, Math.min(1000, Math.floor(ms / 8)))
  }

  within<T> (p: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Pending = { deadline: Date.now() + this.#ms, what, reject }
      this.#pending.add(entry)
      this.#timer ??= setInterval(() => this.#sweep(), this.#tick)
      // a late settlement (after the 503) is absorbed, never unhandled
      p.then((v) => { this.#pending.delete(entry); resolve(v) }, (err: unknown) => { this.#pending.delete(entry); reject(err) })
    })
  }

  #sweep (): void {
    const now = Date.now()
    for (const e of this.#pending) {
      if (e.deadline > now) continue
      this.#pending.delete(e)
      e.reject(unavailable(new Error(`store ${e.what}() did not answer within ${this.#ms} ms`)))
    }
    if (this.#pending.size === 0) {
      clearInterval(this.#timer)
      this.#timer = undefined
    }
  }
}

/** `p`, or a 503 once `ms` have passed. A late settlement of `p` is absorbed, never unhandled. */
export function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(unavailable(new Error(`store ${what}() did not answer within ${ms} ms`))), ms)
    p.then((v) => { clearTimeout(timer); resolve(v) }, (err: unknown) => { clearTimeout(timer); reject(err) })
  })
}

/** Resolves when `p` settles or after `ms`, whichever comes first (for shutdown waits). */
export function atMost (p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, Math.max(ms, 0))
    p.then(() => { clearTimeout(timer); resolve() }, () => { clearTimeout(timer); resolve() })
  })
}

/** The 503, with what timed out as a non-enumerable `cause`: logs show it, responses do not. */
function unavailable (cause: Error): Error {
  const err = new PORTCULLIS_STORE_UNAVAILABLE()
  Object.defineProperty(err, 'cause', { value: cause, enumerable: false, configurable: true, writable: true })
  return err
}
