import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionGuard, PortcullisSocket, PortcullisState } from './types.js'
import { CloseCodes } from './close-codes.js'

/**
 * One record per live connection, stored on the socket under a symbol: the close listener and
 * the guarded `emit` are shared functions that find their record through `this`, so a
 * connection costs one object and a few slots, not a set of closures (idle memory matters at
 * thousands of sockets).
 */
interface Tracked {
  socket: PortcullisSocket
  state: PortcullisState
  registry: ConnectionRegistry
  sessionId: string | undefined
  identityId: string | undefined
  guards: ConnectionGuard[] | undefined
  /** The socket's own `emit`, called for what the guards let through. */
  emit: PortcullisSocket['emit'] | undefined
  violated: boolean
  log: FastifyBaseLogger
}

const kTracked = Symbol('portcullis.tracked')
type TrackedSocket = PortcullisSocket & { [kTracked]?: Tracked }

const OPEN = 1

/**
 * Live connections of both doors, indexed by session (for revocation) and by identity (for
 * per-identity limits). One registry, so `closeSession` reaches WebSocket and long-poll alike.
 */
export class ConnectionRegistry {
  readonly #all = new Set<Tracked>()
  readonly #bySession = new Map<string, Set<Tracked>>()
  readonly #perIdentity = new Map<string, number>()
  readonly #closeListeners: Array<(state: PortcullisState) => void> = []

  get size (): number {
    return this.#all.size
  }

  onClose (fn: (state: PortcullisState) => void): void {
    this.#closeListeners.push(fn)
  }

  connectionsOf (identityId: string): number {
    return this.#perIdentity.get(identityId) ?? 0
  }

  attach (socket: PortcullisSocket, state: PortcullisState, log: FastifyBaseLogger): void {
    const sessionId = state.identity?.sessionId
    const identityId = state.identity?.id
    const entry: Tracked = { socket, state, registry: this, sessionId, identityId, guards: undefined, emit: undefined, violated: false, log }
    ;(socket as TrackedSocket)[kTracked] = entry
    this.#all.add(entry)
    if (sessionId !== undefined) {
      let set = this.#bySession.get(sessionId)
      if (set === undefined) this.#bySession.set(sessionId, (set = new Set()))
      set.add(entry)
    }
    if (identityId !== undefined) this.#perIdentity.set(identityId, (this.#perIdentity.get(identityId) ?? 0) + 1)

    if (state.guards !== undefined && state.guards.length > 0) {
      entry.guards = state.guards.map(factory => factory({ state, socket, log }))
      entry.emit = socket.emit
      socket.emit = guardedEmit as PortcullisSocket['emit']
    }
    // `on`, not `once`: both sockets emit close once, and `once` would allocate a wrapper
    socket.on('close', onTrackedClose)
  }

  /** Forget a closed connection (called once, from its close event). */
  release (entry: Tracked): void {
    if (!this.#all.delete(entry)) return
    const { sessionId, identityId } = entry
    if (sessionId !== undefined) {
      const set = this.#bySession.get(sessionId)
      if (set !== undefined) {
        set.delete(entry)
        if (set.size === 0) this.#bySession.delete(sessionId)
      }
    }
    if (identityId !== undefined) {
      const n = (this.#perIdentity.get(identityId) ?? 1) - 1
      if (n <= 0) this.#perIdentity.delete(identityId)
      else this.#perIdentity.set(identityId, n)
    }
    if (entry.guards !== undefined) for (const g of entry.guards) g.close?.()
    for (const fn of this.#closeListeners) fn(entry.state)
  }

  closeSession (sessionId: string, code: number, reason: string): number {
    const set = this.#bySession.get(sessionId)
    if (set === undefined) return 0
    let n = 0
    for (const entry of [...set]) {
      if (entry.socket.readyState <= OPEN) {
        entry.socket.close(code, reason)
        n++
      }
    }
    return n
  }

  /** Close everything (server shutdown): 1001 Going Away on both doors (RFC 6455 §7.4.1). */
  closeAll (reason = 'server shutting down'): void {
    for (const entry of [...this.#all]) {
      if (entry.socket.readyState <= OPEN) entry.socket.close(CloseCodes.GOING_AWAY, reason)
    }
  }
}

function onTrackedClose (this: TrackedSocket): void {
  const entry = this[kTracked]
  if (entry !== undefined) entry.registry.release(entry)
}

/**
 * Puts the guards in front of every `message` listener, in place of the socket's `emit`: a
 * listener the handler adds later still only sees messages that passed. After a violation the
 * connection is closing and nothing more is delivered. Other events pass untouched. No rest
 * parameters and no closure: this runs for every inbound message of every guarded socket.
 */
function guardedEmit (this: TrackedSocket, event: string | symbol, data?: unknown, isBinary?: unknown): boolean {
  const entry = this[kTracked] as Tracked
  const emit = entry.emit as PortcullisSocket['emit']
  if (event !== 'message') return emit.apply(this, arguments as unknown as [string | symbol, ...unknown[]])
  if (entry.violated) return false
  const guards = entry.guards as ConnectionGuard[]
  for (let i = 0; i < guards.length; i++) {
    let v
    try {
      v = guards[i].message(data as Buffer | string, isBinary as boolean)
    } catch (err) {
      entry.log.error({ err }, 'portcullis: message guard failed')
      v = { code: CloseCodes.INTERNAL_ERROR, reason: 'inspection failed' }
    }
    if (v !== undefined) {
      entry.violated = true
      entry.log.info({ portcullis: { close: v.code, reason: v.reason } }, 'portcullis: message refused')
      this.close(v.code, v.reason)
      return false
    }
  }
  return emit.call(this, event, data, isBinary)
}
