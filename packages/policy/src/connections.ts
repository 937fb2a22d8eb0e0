import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionGuard, PortcullisSocket, PortcullisState } from './types.js'
import { CloseCodes } from './close-codes.js'

interface Tracked {
  socket: PortcullisSocket
  state: PortcullisState
}

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
    const entry: Tracked = { socket, state }
    this.#all.add(entry)
    const sessionId = state.identity?.sessionId
    if (sessionId !== undefined) {
      let set = this.#bySession.get(sessionId)
      if (set === undefined) this.#bySession.set(sessionId, (set = new Set()))
      set.add(entry)
    }
    const identityId = state.identity?.id
    if (identityId !== undefined) this.#perIdentity.set(identityId, (this.#perIdentity.get(identityId) ?? 0) + 1)

    let guards: ConnectionGuard[] | undefined
    if (state.guards !== undefined && state.guards.length > 0) {
      guards = state.guards.map(factory => factory({ state, socket, log }))
      installGuards(socket, guards, log)
    }

    socket.once('close', () => {
      this.#all.delete(entry)
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
      if (guards !== undefined) for (const g of guards) g.close?.()
      for (const fn of this.#closeListeners) fn(state)
    })
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

/**
 * Put the guards in front of every `message` listener by wrapping this socket's `emit`: a
 * listener the handler adds later still only sees messages that passed. After a violation the
 * connection is closing and nothing more is delivered. Other events pass untouched.
 */
function installGuards (socket: PortcullisSocket, guards: ConnectionGuard[], log: FastifyBaseLogger): void {
  const emit = socket.emit
  let violated = false
  // No rest parameters: this runs for every inbound message, so it allocates nothing per call.
  socket.emit = function portcullisGuardedEmit (this: PortcullisSocket, event: string | symbol, data?: unknown, isBinary?: unknown): boolean {
    if (event !== 'message') return emit.apply(this, arguments as unknown as [string | symbol, ...unknown[]])
    if (violated) return false
    for (let i = 0; i < guards.length; i++) {
      let v
      try {
        v = guards[i].message(data as Buffer | string, isBinary as boolean)
      } catch (err) {
        log.error({ err }, 'portcullis: message guard failed')
        v = { code: CloseCodes.INTERNAL_ERROR, reason: 'inspection failed' }
      }
      if (v !== undefined) {
        violated = true
        log.info({ portcullis: { close: v.code, reason: v.reason } }, 'portcullis: message refused')
        socket.close(v.code, v.reason)
        return false
      }
    }
    return emit.call(this, event, data, isBinary)
  } as typeof socket.emit
}
