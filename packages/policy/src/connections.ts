import { inspect } from 'node:util'
import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionGuard, ConnectionGuardFactory, PortcullisRequestState, PortcullisSocket, PortcullisState, Transport } from './types.js'
import { CloseCodes } from './close-codes.js'

/**
 * One record per live connection, stored on the socket under a symbol: the close listener and
 * the tracked `emit` are shared functions that find their record through `this`, so a
 * connection costs one object and a few slots, not a set of closures (idle memory matters at
 * thousands of sockets).
 *
 * On the WebSocket door it is also the handshake's `request.portcullis` (its `transport` and
 * `state`, all the handler is told): the request lives as long as the connection, so one object
 * serves both. It is a node of the registry's two lists (every connection; the connections of
 * its session), so indexing a connection allocates nothing: a `Set` per session was a hash
 * table per connection in an app whose users each open one.
 */
export class ConnectionRecord implements PortcullisRequestState {
  transport: Transport
  state: PortcullisState
  socket: PortcullisSocket | undefined = undefined
  /** The registry and route: shared by every connection of the route. */
  scope: Scope | undefined = undefined
  sessionId: string | undefined = undefined
  identityId: string | undefined = undefined
  /**
   * The connection's guards, composed at attach: none (`undefined`), the one guard itself (the
   * common case: no array, one call per message), or the list in stage order. A guard that
   * neither checks messages nor closes (a shared pass-through) is not kept.
   */
  guards: ConnectionGuard | ConnectionGuard[] | undefined = undefined
  /** ATTACHED, VIOLATED and FAILED (one small integer, not three fields: it is per connection). */
  flags = 0
  /** What is rarely set: the first close sent, the last error the socket emitted (one slot for both). */
  rare: Rare | undefined = undefined
  log: FastifyBaseLogger | undefined = undefined
  /** The registry's list of every connection, and the list of this connection's session. */
  prev: ConnectionRecord | undefined = undefined
  next: ConnectionRecord | undefined = undefined
  prevOfSession: ConnectionRecord | undefined = undefined
  nextOfSession: ConnectionRecord | undefined = undefined

  constructor (transport: Transport, state: PortcullisState) {
    this.transport = transport
    this.state = state
  }

  /** What an app that logs `request.portcullis` sees: the decision, not the registry's links. */
  toJSON (): PortcullisRequestState {
    return { transport: this.transport, state: this.state }
  }

  [inspect.custom] (): PortcullisRequestState {
    return this.toJSON()
  }
}

interface Rare {
  /**
   * The code and reason Portcullis or the handler closed with first (a peer may echo another, or
   * none); `sentCode` is undefined until then.
   */
  sentCode: number | undefined
  /**
   * As given to `close` (ws passes the peer's reason as a Buffer when it echoes a close):
   * turned into text only when telemetry reads it, not on every close.
   */
  sentReason: string | Buffer | undefined
  /** The last error the socket itself emitted (a peer or transport error, not the handler's). */
  emittedError: unknown
}

/** A record of an attached connection: every slot attach fills is set. */
type Tracked = ConnectionRecord & { socket: PortcullisSocket, scope: Scope, log: FastifyBaseLogger }

interface Scope {
  readonly registry: ConnectionRegistry
  readonly route: string | undefined
}

/** In the registry's lists (attach succeeded, not yet released). */
const ATTACHED = 4
/** A guard refused a message or a listener threw: the connection is closing, nothing more is delivered. */
const VIOLATED = 1
/** Application code failed (logged once). */
const FAILED = 2

/**
 * How a stage hands the core a guard factory for the connection it admits: appended to
 * `state.guards` in a new array of exact size. The list lives as long as the connection, and
 * both a push and a spread (`[...guards, f]`) give a one-element list a 17-slot store.
 */
export function addConnectionGuard (state: PortcullisState, factory: ConnectionGuardFactory): void {
  const guards = state.guards
  if (guards === undefined) {
    state.guards = [factory]
    return
  }
  // a copy by hand: `concat` is exact too, but checks every argument for Symbol.isConcatSpreadable
  // (0.6 % of a handshake's CPU in the bench profile)
  const n = guards.length
  const out = new Array<ConnectionGuardFactory>(n + 1)
  for (let i = 0; i < n; i++) out[i] = guards[i]
  out[n] = factory
  state.guards = out
}

const kTracked = Symbol('portcullis.tracked')
/**
 * The socket's own `emit` (called for what the guards let through) and `close`: on the tracked
 * class's prototype, or an own property of a socket patched at attach.
 */
const kBase = Symbol('portcullis.base-methods')
interface BaseMethods { emit: PortcullisSocket['emit'], close: PortcullisSocket['close'] }
type TrackedSocket = PortcullisSocket & { [kTracked]?: Tracked, [kBase]?: BaseMethods }

type SocketClass = new (...args: any[]) => object

/**
 * A subclass of the WebSocket server's socket class (ws's `WebSocket`, or the app's own class
 * given as the `WebSocket` server option) with the tracked `emit` and `close` on its prototype
 * and the registry's slot declared: attaching a socket then stores one field instead of adding
 * three own properties, which would give every socket a property store (64 B per idle
 * connection) and a map transition each. A socket of any other class is patched at attach.
 * Before attach (and after a guard factory threw) both methods behave as the base class's.
 */
export function trackedSocketClass (Base: SocketClass, send?: PortcullisSocket['send']): SocketClass {
  const proto = Base.prototype as BaseMethods
  if ((proto as Partial<TrackedSocket>)[kBase] !== undefined) return Base
  class PortcullisWebSocket extends Base {
    [kTracked]: Tracked | undefined = undefined
  }
  Object.defineProperties(PortcullisWebSocket.prototype, {
    [kBase]: { value: { emit: proto.emit, close: proto.close } },
    emit: { value: trackedEmit, writable: true, configurable: true },
    close: { value: trackedClose, writable: true, configurable: true },
    // the bounded send (index.ts) on the prototype too: set per socket it was one more slot and
    // a map transition per handshake
    ...(send === undefined ? {} : { send: { value: send, writable: true, configurable: true } })
  })
  return PortcullisWebSocket
}

const OPEN = 1

/** The close reason of a connection whose application code failed (1011, RFC 6455 §7.4.1). Same on both doors. */
export const INTERNAL_ERROR_REASON = 'internal error'

/**
 * Live connections of both doors, indexed by session (for revocation) and by identity (for
 * per-identity limits). One registry, so `closeSession` reaches WebSocket and long-poll alike.
 */
export class ConnectionRegistry {
  /** Every attached connection: a list through the records (`prev`/`next`), newest first. */
  #head: Tracked | undefined = undefined
  #size = 0
  /** The newest connection of each session; the rest hang off it (`prevOfSession`/`nextOfSession`). */
  readonly #bySession = new Map<string, Tracked>()
  readonly #perIdentity = new Map<string, number>()
  readonly #closeListeners: Array<(state: PortcullisState) => void> = []
  readonly #scopes = new Map<string | undefined, Scope>()
  /** Telemetry: told of every attached connection and of its close (code, reason, route, transport). */
  readonly #observer: ConnectionObserver | undefined

  constructor (observer?: ConnectionObserver) {
    this.#observer = observer
  }

  get size (): number {
    return this.#size
  }

  onClose (fn: (state: PortcullisState) => void): void {
    this.#closeListeners.push(fn)
  }

  /** Open connections per transport (for `stats()`). */
  byTransport (): Partial<Record<Transport, number>> {
    const out: Partial<Record<Transport, number>> = {}
    for (let e = this.#head; e !== undefined; e = e.next as Tracked | undefined) out[e.transport] = (out[e.transport] ?? 0) + 1
    return out
  }

  connectionsOf (identityId: string): number {
    return this.#perIdentity.get(identityId) ?? 0
  }

  /**
   * Track a connection that has just opened. The guard factories run first: when one throws, the
   * guards already made are closed, nothing is indexed (no phantom in `connectionsOf` or the
   * session index, so a per-identity limit cannot lock the user out), the connection is closed
   * with 1011 and `false` is returned — the caller must not run the handler. Every attached
   * socket gets the tracked `emit`, so a throwing `message` or `close` listener is contained.
   * `record` is the handshake's `request.portcullis` (the WebSocket door), filled in rather than
   * a second object made.
   */
  attach (socket: PortcullisSocket, state: PortcullisState, log: FastifyBaseLogger, route?: string, transport: Transport = 'websocket', record?: ConnectionRecord): boolean {
    let guards: ConnectionGuard | ConnectionGuard[] | undefined
    const factories = state.guards
    if (factories !== undefined && factories.length > 0) {
      // exact size: pushing onto [] would allocate a 17-slot store on every handshake
      const made = new Array<ConnectionGuard>(factories.length)
      // one argument object for every factory of the connection, not one each
      const info = { state, socket, log }
      let k = 0
      try {
        for (; k < factories.length; k++) made[k] = factories[k](info)
      } catch (err) {
        log.error({ err, portcullis: { route } }, 'portcullis: connection guard failed to open; connection closed')
        closeGuards(made, k, socket, log, route)
        if (socket.readyState <= OPEN) socket.close(CloseCodes.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
        return false
      }
      guards = compose(made)
      // the factories are spent: the guards they made live in the record, and the state (which
      // lives as long as the connection) keeps no list of them
      state.guards = undefined
    }
    // a record is attached once (a second attach of the same handshake gets its own)
    const entry = (record !== undefined && record.state === state && record.transport === transport && record.socket === undefined ? record : new ConnectionRecord(transport, state)) as Tracked
    entry.socket = socket
    entry.scope = this.#scope(route)
    entry.sessionId = state.identity?.sessionId
    entry.identityId = state.identity?.id
    entry.guards = guards
    entry.log = log
    // a socket of the tracked class has both on its prototype (no own properties to add)
    if (socket.emit !== trackedEmit) {
      ;(socket as TrackedSocket)[kBase] = { emit: socket.emit, close: socket.close }
      socket.emit = trackedEmit as PortcullisSocket['emit']
      socket.close = trackedClose
    }
    ;(socket as TrackedSocket)[kTracked] = entry
    // A ws socket emits its close through `this.emit`, i.e. the tracked emit, which releases
    // the connection: no listener of our own (it would turn the socket's one close listener into
    // an array). Another transport's socket may emit through its own reference: a listener.
    // `on`, not `once`: both sockets emit close once, and `once` would allocate a wrapper.
    if (transport !== 'websocket') socket.on('close', onTrackedClose)
    // indexed last, once nothing above can fail
    this.#link(entry)
    this.#observer?.opened(route, transport)
    return true
  }

  #link (entry: Tracked): void {
    entry.flags |= ATTACHED
    const head = this.#head
    entry.next = head
    if (head !== undefined) head.prev = entry
    this.#head = entry
    this.#size++
    const { sessionId, identityId } = entry
    if (sessionId !== undefined) {
      const first = this.#bySession.get(sessionId)
      entry.nextOfSession = first
      if (first !== undefined) first.prevOfSession = entry
      this.#bySession.set(sessionId, entry)
    }
    if (identityId !== undefined) this.#perIdentity.set(identityId, (this.#perIdentity.get(identityId) ?? 0) + 1)
  }

  /** Out of both lists and the identity count; false when it was not in them (released already). */
  #unlink (entry: Tracked): boolean {
    if ((entry.flags & ATTACHED) === 0) return false
    entry.flags &= ~ATTACHED
    const { prev, next } = entry
    if (prev !== undefined) prev.next = next
    else this.#head = next as Tracked | undefined
    if (next !== undefined) next.prev = prev
    entry.prev = entry.next = undefined
    this.#size--
    const { sessionId, identityId } = entry
    if (sessionId !== undefined) {
      const before = entry.prevOfSession
      const after = entry.nextOfSession
      if (before !== undefined) before.nextOfSession = after
      else if (after !== undefined) this.#bySession.set(sessionId, after as Tracked)
      else this.#bySession.delete(sessionId)
      if (after !== undefined) after.prevOfSession = before
      entry.prevOfSession = entry.nextOfSession = undefined
    }
    if (identityId !== undefined) {
      const n = (this.#perIdentity.get(identityId) ?? 1) - 1
      if (n <= 0) this.#perIdentity.delete(identityId)
      else this.#perIdentity.set(identityId, n)
    }
    return true
  }

  #scope (route: string | undefined): Scope {
    let scope = this.#scopes.get(route)
    if (scope === undefined) this.#scopes.set(route, (scope = Object.freeze({ registry: this, route })))
    return scope
  }

  /**
   * Whether `error` is one the socket emitted itself (a peer breaking RFC 6455, a transport
   * error) rather than one thrown by application code: both reach @fastify/websocket's error
   * handler, and only the second is a server fault.
   */
  emittedError (socket: PortcullisSocket, error: unknown): boolean {
    const entry = (socket as TrackedSocket)[kTracked]
    return entry !== undefined && entry.rare !== undefined && entry.rare.emittedError === error
  }

  /** Application code of this connection failed: log once at error with the route, close with 1011. */
  fail (socket: PortcullisSocket, err: unknown, what: string, log: FastifyBaseLogger, route: string | undefined): void {
    const entry = (socket as TrackedSocket)[kTracked]
    if (entry !== undefined) {
      if ((entry.flags & FAILED) !== 0) return
      entry.flags |= FAILED | VIOLATED
    }
    log.error({ err, portcullis: { route, close: CloseCodes.INTERNAL_ERROR } }, `portcullis: ${what} failed; connection closed`)
    if (socket.readyState <= OPEN) socket.close(CloseCodes.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
  }

  /** Forget a closed connection (called once, from its close event with the socket's code and reason). */
  release (entry: Tracked, code: unknown, reason: unknown): void {
    if (!this.#unlink(entry)) return
    if (this.#observer !== undefined) {
      // what the server side chose wins over what the peer echoed (or failed to: 1006)
      const rare = entry.rare
      const sent = rare !== undefined && rare.sentCode !== undefined
      const closeCode = sent ? rare.sentCode as number : typeof code === 'number' ? code : 1005
      const closeReason = sent ? rare.sentReason : reason
      try {
        this.#observer.closed(entry.scope.route, entry.transport, closeCode, closeReason)
      } catch (err) {
        entry.log.error({ err }, 'portcullis: close telemetry failed')
      }
    }
    const guards = entry.guards
    if (guards !== undefined) {
      if (Array.isArray(guards)) closeGuards(guards, guards.length, entry.socket, entry.log, entry.scope.route)
      else closeGuard(guards, entry.socket, entry.log, entry.scope.route)
    }
    // each listener on its own: one that throws neither escapes into the socket's close event
    // nor keeps the others from hearing it
    for (const fn of this.#closeListeners) {
      try {
        fn(entry.state)
      } catch (err) {
        entry.log.error({ err, portcullis: { route: entry.scope.route } }, 'portcullis: onConnectionClose listener failed')
      }
    }
  }

  closeSession (sessionId: string, code: number, reason: string): number {
    // a copy first: a close may release (and unlink) synchronously
    const list: Tracked[] = []
    for (let e = this.#bySession.get(sessionId); e !== undefined; e = e.nextOfSession as Tracked | undefined) list.push(e)
    let n = 0
    for (const entry of list) {
      if (entry.socket.readyState <= OPEN) {
        entry.socket.close(code, reason)
        n++
      }
    }
    return n
  }

  /** Close everything (server shutdown): 1001 Going Away on both doors (RFC 6455 §7.4.1). */
  closeAll (reason = 'server shutting down'): void {
    const list: Tracked[] = []
    for (let e = this.#head; e !== undefined; e = e.next as Tracked | undefined) list.push(e)
    for (const entry of list) {
      if (entry.socket.readyState <= OPEN) entry.socket.close(CloseCodes.GOING_AWAY, reason)
    }
  }
}

/** The guards worth keeping (see `Tracked.guards`): none, one, or several in order. */
function compose (made: ConnectionGuard[]): ConnectionGuard | ConnectionGuard[] | undefined {
  let n = 0
  let one: ConnectionGuard | undefined
  for (let i = 0; i < made.length; i++) {
    if (isActive(made[i])) {
      n++
      one ??= made[i]
    }
  }
  if (n <= 1) return one
  // exact size (it lives as long as the connection; a push would give it 17 slots)
  const kept = new Array<ConnectionGuard>(n)
  for (let i = 0, k = 0; i < made.length; i++) if (isActive(made[i])) kept[k++] = made[i]
  return kept
}

function isActive (g: ConnectionGuard): boolean {
  return typeof g.message === 'function' || typeof g.close === 'function'
}

/** Close each guard on its own: a throwing `close()` (an app's inspector) skips no other. */
function closeGuards (guards: ConnectionGuard[], n: number, socket: PortcullisSocket, log: FastifyBaseLogger, route: string | undefined): void {
  for (let i = 0; i < n; i++) closeGuard(guards[i], socket, log, route)
}

function closeGuard (g: ConnectionGuard, socket: PortcullisSocket, log: FastifyBaseLogger, route: string | undefined): void {
  if (g.close === undefined) return
  try {
    g.close(socket)
  } catch (err) {
    log.error({ err, portcullis: { route } }, 'portcullis: connection guard close failed')
  }
}

function onTrackedClose (this: TrackedSocket, code: unknown, reason: unknown): void {
  const entry = this[kTracked]
  if (entry !== undefined) entry.scope.registry.release(entry, code, reason)
}

/** The `close` of every attached socket: remembers the first code and reason it was closed with. */
function trackedClose (this: TrackedSocket, code?: number, reason?: string | Buffer): void {
  const entry = this[kTracked]
  if (entry === undefined) return (this[kBase] as BaseMethods).close.call(this, code, reason)
  const rare = entry.rare
  if ((rare === undefined || rare.sentCode === undefined) && this.readyState <= OPEN) {
    const sentCode = code ?? 1005
    if (rare === undefined) entry.rare = { sentCode, sentReason: reason, emittedError: undefined }
    else {
      rare.sentCode = sentCode
      rare.sentReason = reason
    }
  }
  ;(this[kBase] as BaseMethods).close.call(this, code, reason)
}

/** A close reason as text: '' for none; a Buffer (ws's, RFC 6455 §5.5.1) is UTF-8. */
export function closeReasonText (reason: unknown): string {
  return reason === undefined || reason === null ? '' : String(reason)
}

/** What the registry tells telemetry. */
export interface ConnectionObserver {
  opened: (route: string | undefined, transport: Transport) => void
  /** `reason` as the socket or `close` had it: a string, a Buffer, or none (see `closeReasonText`). */
  closed: (route: string | undefined, transport: Transport, code: number, reason: unknown) => void
}

/**
 * The `emit` of every attached socket (both doors). For `message`: the guards run in front of
 * every listener (a listener the handler adds later still only sees messages that passed), and a
 * listener that throws closes this connection with 1011 instead of escaping into `ws`'s receiver,
 * where it would crash the process. After a violation or a failure nothing more is delivered.
 * For `close`: the registry releases the connection first, then every listener runs, each
 * contained, so one that throws skips no other. Other events pass untouched. No rest parameters and no
 * closure: this runs for every inbound message of every socket.
 */
function trackedEmit (this: TrackedSocket, event: string | symbol, data?: unknown, isBinary?: unknown): boolean {
  const entry = this[kTracked]
  if (entry === undefined) return (this[kBase] as BaseMethods).emit.apply(this, arguments as unknown as [string | symbol, ...unknown[]])
  if (event === 'message') {
    if ((entry.flags & VIOLATED) !== 0) return false
    const guards = entry.guards
    if (guards !== undefined) {
      if (!Array.isArray(guards)) {
        if (!passes(this, entry, guards, data, isBinary)) return false
      } else {
        for (let i = 0; i < guards.length; i++) if (!passes(this, entry, guards[i], data, isBinary)) return false
      }
    }
    try {
      return deliverMessage(this, entry, data, isBinary)
    } catch (err) {
      entry.scope.registry.fail(this, err, 'message listener', entry.log, entry.scope.route)
      return true
    }
  }
  if (event === 'close') {
    // first, as a listener registered at attach would run before the handler's (release is
    // idempotent: a long-poll socket's own listener finds it released)
    entry.scope.registry.release(entry, data, isBinary)
    return emitEach(this, entry, data, isBinary)
  }
  if (event === 'error') {
    if (entry.rare === undefined) entry.rare = { sentCode: undefined, sentReason: undefined, emittedError: data }
    else entry.rare.emittedError = data
  }
  return (this[kBase] as BaseMethods).emit.apply(this, arguments as unknown as [string | symbol, ...unknown[]])
}

/** Run one guard on a message; on a violation (or a guard that throws: 1011) close and refuse it. */
function passes (socket: TrackedSocket, entry: Tracked, guard: ConnectionGuard, data: unknown, isBinary: unknown): boolean {
  if (guard.message === undefined) return true
  let v
  try {
    v = guard.message(data as Buffer | string, isBinary as boolean, socket)
  } catch (err) {
    entry.log.error({ err, portcullis: { route: entry.scope.route } }, 'portcullis: message guard failed')
    v = { code: CloseCodes.INTERNAL_ERROR, reason: 'inspection failed' }
  }
  if (v === undefined) return true
  entry.flags |= VIOLATED
  entry.log.info({ portcullis: { close: v.code, reason: v.reason, route: entry.scope.route } }, 'portcullis: message refused')
  socket.close(v.code, v.reason)
  return false
}

/**
 * Call the `message` listeners as EventEmitter's own emit would (a copy when there are several,
 * so a listener that removes itself does not skip the next), and catch the promise an async
 * listener returns: EventEmitter ignores it, and its rejection would reach the process as an
 * unhandled rejection. Reads `_events` directly so the one-listener case allocates nothing.
 */
function deliverMessage (socket: TrackedSocket, entry: Tracked, data: unknown, isBinary: unknown): boolean {
  const listeners = (socket as unknown as { _events?: Record<string | symbol, unknown> })._events?.message
  if (listeners === undefined) return false
  if (typeof listeners === 'function') {
    callMessageListener(socket, entry, listeners as MessageListener, data, isBinary)
    return true
  }
  const list = (listeners as MessageListener[]).slice()
  for (let i = 0; i < list.length && (entry.flags & VIOLATED) === 0; i++) callMessageListener(socket, entry, list[i], data, isBinary)
  return true
}

type MessageListener = (this: PortcullisSocket, data: unknown, isBinary: unknown) => unknown

function callMessageListener (socket: TrackedSocket, entry: Tracked, fn: MessageListener, data: unknown, isBinary: unknown): void {
  const r = fn.call(socket, data, isBinary)
  if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function') {
    (r as Promise<unknown>).then(undefined, (err: unknown) => { entry.scope.registry.fail(socket, err, 'message listener', entry.log, entry.scope.route) })
  }
}

/**
 * Emit `close` to each listener in turn, containing each (runs once per connection). Reads
 * `_events` as `deliverMessage` does: the one-listener case needs no copy of the list. A `once`
 * wrapper removes itself when called, as EventEmitter's own emit would.
 */
function emitEach (socket: TrackedSocket, entry: Tracked, code: unknown, reason: unknown): boolean {
  const listeners = (socket as unknown as { _events?: Record<string | symbol, unknown> })._events?.close
  if (listeners === undefined) return false
  if (typeof listeners === 'function') {
    callCloseListener(socket, entry, listeners as CloseListener, code, reason)
    return true
  }
  const list = (listeners as CloseListener[]).slice()
  for (let i = 0; i < list.length; i++) callCloseListener(socket, entry, list[i], code, reason)
  return true
}

type CloseListener = (this: PortcullisSocket, code: unknown, reason: unknown) => unknown

function callCloseListener (socket: TrackedSocket, entry: Tracked, fn: CloseListener, code: unknown, reason: unknown): void {
  try {
    const r = fn.call(socket, code, reason)
    // an async close listener's rejection is contained too, not left unhandled
    if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function') {
      (r as Promise<unknown>).then(undefined, (err: unknown) => { entry.log.error({ err, portcullis: { route: entry.scope.route } }, 'portcullis: close listener failed') })
    }
  } catch (err) {
    entry.log.error({ err, portcullis: { route: entry.scope.route } }, 'portcullis: close listener failed')
  }
}
