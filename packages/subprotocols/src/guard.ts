import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionGuard, ConnectionGuardFactory, PortcullisSocket, PortcullisState, Violation } from '@portcullis/policy'
import type { DataTypes, InspectorContext, MessageInspector, SubprotocolDefinition } from './types.js'

/**
 * Close codes and stable reasons of the generic checks (RFC 6455 §7.4.1; 4008 is Portcullis's
 * private-use code, §7.4.2). Frozen and shared: a refused message allocates nothing.
 */
export const Violations = Object.freeze({
  /** 1003: a text message on a binary-only protocol. */
  TEXT_NOT_ACCEPTED: Object.freeze({ code: 1003, reason: 'text messages are not accepted' }),
  /** 1003: a binary message on a text-only protocol. */
  BINARY_NOT_ACCEPTED: Object.freeze({ code: 1003, reason: 'binary messages are not accepted' }),
  /** 1009: a message larger than `maxMessageBytes`. */
  MESSAGE_TOO_BIG: Object.freeze({ code: 1009, reason: 'message too big' }),
  /** 4008: more messages than the rate limit allows. */
  RATE_LIMITED: Object.freeze({ code: 4008, reason: 'rate limit exceeded' }),
  /** 1008: what a custom inspector's unusable violation is replaced with. */
  POLICY_VIOLATION: Object.freeze({ code: 1008, reason: 'policy violation' }),
  /** 1011: a custom inspector's `open` threw; the connection cannot be inspected (same reason as the core's). */
  INSPECTION_FAILED: Object.freeze({ code: 1011, reason: 'inspection failed' })
})

/** The guard of a connection whose inspector could not be opened: nothing gets through. */
const UNINSPECTABLE: ConnectionGuard = Object.freeze({ message: () => Violations.INSPECTION_FAILED })

/** A 1008 (policy violation) with a stable reason, for inspectors. */
export function policyViolation (reason: string): Violation {
  return { code: 1008, reason }
}

/** Limits resolved for one route and protocol, ready for the per-message path. */
export interface ResolvedLimits {
  /** `Infinity` when off. */
  maxMessageBytes: number
  /** `undefined` when off. */
  rate: { messagesPerSecond: number, burst: number } | undefined
  /** `Infinity` when off. */
  maxConnectionsPerIdentity: number
}

/** Everything a connection's guard needs, computed once per route and protocol at startup. */
export interface GuardPlan {
  protocol: string | undefined
  text: boolean
  binary: boolean
  limits: ResolvedLimits
  open: SubprotocolDefinition['open']
  /** A built-in protocol's stateless inspector (preferred over `open`: no per-connection inspector). */
  inspect?: StatelessInspector | undefined
  /** The composed per-message check (set by `guardFactory`). */
  check?: unknown
}

/**
 * Token bucket (RFC 2697's idea, one rate): `burst` tokens, refilled at `messagesPerSecond`,
 * one per message. Monotonic clock, so a wall-clock jump neither floods nor starves.
 */
export class TokenBucket {
  #tokens: number
  #last: number
  readonly #perMs: number
  readonly #burst: number

  constructor (messagesPerSecond: number, burst: number, now: number) {
    this.#perMs = messagesPerSecond / 1000
    this.#burst = burst
    this.#tokens = burst
    this.#last = now
  }

  /** Take one token at time `now` (ms); false when the bucket is empty. */
  take (now: number): boolean {
    const elapsed = now - this.#last
    if (elapsed > 0) {
      const t = this.#tokens + elapsed * this.#perMs
      this.#tokens = t > this.#burst ? this.#burst : t
      this.#last = now
    }
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }
}

/**
 * A stateless inspector a built-in protocol (`json()`) carries beside its `open`: it needs no
 * per-connection object, so a connection without a rate limit gets no guard object of its own
 * (the plan's one guard serves every connection). It receives the socket the message arrived
 * on, for `exposeParsed`. Internal (a symbol, not part of the public definition type); `open`
 * stays for anyone who calls it.
 */
export const kInspect = Symbol('portcullis.subprotocols.inspect')
export type StatelessInspector = (data: Buffer | string, isBinary: boolean, socket: PortcullisSocket) => Violation | undefined

/*
 * The value an inspector last exposed, with the socket and the message it belongs to: one slot
 * for the whole process, not one per connection. The core delivers a message to the handler's
 * listeners synchronously, right after the guards ran, so the slot still holds that message's
 * value when a listener reads it; the next inspected message (of any connection) replaces it.
 * Keyed by socket and data object, a read for any other message finds nothing.
 */
let exposedSocket: PortcullisSocket | undefined
let exposedData: unknown
let exposedValue: unknown

/**
 * Exposed in place of a value the inspector proved but did not build (the JSON fast path,
 * json-shape.ts): `parsedMessage` parses the message the first time it is read, once.
 */
export const PARSE_LATER: unknown = Object.freeze({ portcullis: 'parse later' })

/** Keep `value` as the parsed form of `data`, the message being inspected on `socket`, for `parsedMessage`. */
export function exposeParsed (socket: PortcullisSocket, data: Buffer | string, value: unknown): void {
  exposedSocket = socket
  exposedData = data
  exposedValue = value
}

/**
 * Drop the slot when it belongs to `socket`, whose connection has closed: the slot must not keep
 * a closed connection's socket and last message alive until the next inspected message.
 */
function forgetExposed (socket: PortcullisSocket): void {
  if (exposedSocket !== socket) return
  exposedSocket = undefined
  exposedData = undefined
  exposedValue = undefined
}

/**
 * The value an inspector parsed from `data` (e.g. the JSON inspector's parsed object), when
 * `data` is the message being delivered on `socket`; otherwise `undefined`. Read it in the
 * handler's `message` listener, synchronously: the next inspected message replaces it.
 */
export function parsedMessage<T = unknown> (socket: PortcullisSocket, data: unknown): T | undefined {
  if (socket !== exposedSocket || data !== exposedData) return undefined
  if (exposedValue === PARSE_LATER) exposedValue = parseProven(data as Buffer | string)
  return exposedValue as T
}

/**
 * The parse of a message the JSON fast path accepted: plain JSON.parse gives exactly what the
 * screened parse would, as the fast path proved there is no BOM, no escape and no key but the
 * schema's (none of them `__proto__` or `constructor`).
 */
function parseProven (data: Buffer | string): unknown {
  try {
    return JSON.parse(typeof data === 'string' ? data : data.toString())
  } catch {
    // unreachable for a proven message; a value that is not there beats a throw in a listener
    return undefined
  }
}

/**
 * The per-message check of one route and protocol: type, size, rate and content in one function.
 * `conn` is the connection's own guard object, which exists only when the plan needs
 * per-connection state (a token bucket, a stateful inspector).
 */
type Check = (data: Buffer | string, isBinary: boolean, socket: PortcullisSocket, conn?: ProtocolConnection) => Violation | undefined

/**
 * Compose the checks a plan needs into ONE function, once, at startup: a check that is off for
 * this route and protocol (both data types, no size limit, no rate, no inspector) is not in it,
 * so a message pays for what the route asks and nothing else, with no chain of guard calls.
 * Same on both doors.
 */
function composeCheck (plan: GuardPlan): Check {
  const text = plan.text
  const binary = plan.binary
  const maxBytes = plan.limits.maxMessageBytes
  const rated = plan.limits.rate !== undefined
  const inspect = plan.inspect
  const stateful = isStateful(plan)
  return function portcullisMessageCheck (data, isBinary, socket, conn) {
    if (isBinary ? !binary : !text) return isBinary ? Violations.BINARY_NOT_ACCEPTED : Violations.TEXT_NOT_ACCEPTED
    // ws hands a Buffer unless the handler changed binaryType; inspectors always get Buffer or string
    if (typeof data !== 'string' && !Buffer.isBuffer(data)) data = toBuffer(data)
    if (maxBytes !== Infinity && exceeds(data, maxBytes)) return Violations.MESSAGE_TOO_BIG
    if (rated && !((conn as ProtocolConnection).bucket as TokenBucket).take(performance.now())) return Violations.RATE_LIMITED
    // an inspector (and an app's hook inside it, e.g. the STOMP ACL) that throws is caught by
    // the core, which closes the connection with 1011 'inspection failed' and logs it
    if (inspect !== undefined) return inspect(data, isBinary, socket)
    if (!stateful) return undefined
    const v = ((conn as ProtocolConnection).inspector as MessageInspector).message(data, isBinary)
    return v === undefined ? undefined : usable(v)
  }
}

/** A plan whose inspector is opened per connection (an app's own, or `stomp()`'s). */
function isStateful (plan: GuardPlan): boolean {
  return plan.inspect === undefined && plan.open !== undefined && plan.protocol !== undefined
}

/**
 * Everything one connection of a protocol holds when its plan needs per-connection state (a
 * rate limit's token bucket, a stateful inspector), in one object: the guard the core calls and
 * the inspector's context (`open` receives this object). No closure per connection.
 */
class ProtocolConnection implements ConnectionGuard, InspectorContext {
  readonly #plan: GuardPlan
  readonly state: PortcullisState
  readonly socket: PortcullisSocket
  readonly log: FastifyBaseLogger
  readonly bucket: TokenBucket | undefined
  inspector: MessageInspector | undefined = undefined

  constructor (plan: GuardPlan, state: PortcullisState, socket: PortcullisSocket, log: FastifyBaseLogger) {
    this.#plan = plan
    this.state = state
    this.socket = socket
    this.log = log
    const rate = plan.limits.rate
    this.bucket = rate === undefined ? undefined : new TokenBucket(rate.messagesPerSecond, rate.burst, performance.now())
  }

  get protocol (): string {
    return this.#plan.protocol as string
  }

  get identity (): PortcullisState['identity'] {
    return this.state.identity
  }

  message (data: Buffer | string, isBinary: boolean): Violation | undefined {
    // the plan's composed check (read through the plan: one field fewer per connection)
    return (this.#plan.check as Check)(data, isBinary, this.socket, this)
  }

  expose (data: Buffer | string, value: unknown): void {
    exposeParsed(this.socket, data, value)
  }

  close (): void {
    forgetExposed(this.socket)
    const inspector = this.inspector
    if (inspector?.close === undefined) return
    // app code, run from the connection's close event: a throw must neither escape into the
    // server nor keep the connection's other close listeners from running
    try {
      inspector.close()
    } catch (err) {
      this.log.error({ err, portcullis: { protocol: this.#plan.protocol } }, 'portcullis: subprotocol inspector failed to close')
    }
  }
}

/**
 * The guard factory of one route and protocol, built once at startup and shared by its
 * connections. A plan with no per-connection state (no rate limit; no inspector, or a stateless
 * one) has ONE guard for all its connections: the core hands each message's socket to
 * `message`, so an idle connection costs this guard nothing (issue 15: 88 B per connection).
 */
export function guardFactory (plan: GuardPlan): ConnectionGuardFactory {
  const check = composeCheck(plan)
  plan.check = check
  const stateful = isStateful(plan)
  if (!stateful && plan.limits.rate === undefined) {
    const shared: ConnectionGuard = Object.freeze({ message: check, close: forgetExposed })
    return function portcullisSubprotocolGuard () { return shared }
  }
  return function portcullisSubprotocolGuard ({ state, socket, log }) {
    const conn = new ProtocolConnection(plan, state, socket, log)
    if (stateful) {
      try {
        conn.inspector = (plan.open as NonNullable<GuardPlan['open']>)(conn)
      } catch (err) {
        // app code, run from the core's attach (inside the upgrade's handler): a throw here must
        // neither escape into the server nor leave the connection open without its inspector
        log.error({ err, portcullis: { protocol: plan.protocol } }, 'portcullis: subprotocol inspector failed to open')
        const { code, reason } = Violations.INSPECTION_FAILED
        setImmediate(() => { if (socket.readyState <= 1) socket.close(code, reason) })
        return UNINSPECTABLE
      }
    }
    return conn
  }
}

export function dataTypeFlags (types: DataTypes): { text: boolean, binary: boolean } {
  return { text: types !== 'binary', binary: types !== 'text' }
}

/** UTF-8 size above `max`? Without encoding the string when its length alone decides. */
function exceeds (data: Buffer | string, max: number): boolean {
  if (typeof data !== 'string') return data.length > max
  // UTF-8 takes 1 to 3 bytes per UTF-16 code unit (a surrogate pair: 4 bytes for 2 units)
  if (data.length > max) return true
  if (data.length * 3 <= max) return false
  return Buffer.byteLength(data, 'utf8') > max
}

function toBuffer (data: unknown): Buffer {
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[])
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  return Buffer.from(String(data))
}

/**
 * A custom inspector's violation made safe to send: `ws` throws on an invalid close code, and a
 * reason must be at most 123 bytes (RFC 6455 §5.5). Built-in reasons are short ASCII already.
 */
function usable (v: Violation): Violation {
  const okCode = v.code === 1003 || v.code === 1007 || v.code === 1008 || v.code === 1009 || v.code === 1011 ||
    (Number.isInteger(v.code) && v.code >= 3000 && v.code <= 4999)
  if (!okCode || typeof v.reason !== 'string' || v.reason.length > 123 || !isPrintableAscii(v.reason)) return Violations.POLICY_VIOLATION
  return v
}

function isPrintableAscii (s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e) return false
  }
  return true
}
