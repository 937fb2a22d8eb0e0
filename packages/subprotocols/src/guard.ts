import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { ConnectionGuard, ConnectionGuardFactory, PortcullisSocket, Violation } from '@portcullis/policy'
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

interface Slot {
  data: unknown
  value: unknown
}

// One slot per connection (set when the connection opens), not one entry per message.
const slots = new WeakMap<object, Slot>()

/**
 * The value an inspector parsed from `data` (e.g. the JSON inspector's parsed object), when
 * `data` is the message being delivered on `socket`; otherwise `undefined`. Read it in the
 * handler's `message` listener, synchronously: the next message replaces it.
 */
export function parsedMessage<T = unknown> (socket: PortcullisSocket, data: unknown): T | undefined {
  const slot = slots.get(socket)
  return slot !== undefined && slot.data === data ? slot.value as T : undefined
}

/** The connection guard: type, size, rate, then the protocol's inspector. Same on both doors. */
class ProtocolGuard implements ConnectionGuard {
  readonly #text: boolean
  readonly #binary: boolean
  readonly #maxBytes: number
  readonly #bucket: TokenBucket | undefined
  readonly #inspector: MessageInspector | undefined
  readonly #protocol: string | undefined
  readonly #log: FastifyBaseLogger

  constructor (plan: GuardPlan, inspector: MessageInspector | undefined, log: FastifyBaseLogger) {
    this.#text = plan.text
    this.#binary = plan.binary
    this.#maxBytes = plan.limits.maxMessageBytes
    const rate = plan.limits.rate
    this.#bucket = rate === undefined ? undefined : new TokenBucket(rate.messagesPerSecond, rate.burst, performance.now())
    this.#inspector = inspector
    this.#protocol = plan.protocol
    this.#log = log
  }

  message (data: Buffer | string, isBinary: boolean): Violation | undefined {
    if (isBinary ? !this.#binary : !this.#text) return isBinary ? Violations.BINARY_NOT_ACCEPTED : Violations.TEXT_NOT_ACCEPTED
    // ws hands a Buffer unless the handler changed binaryType; inspectors always get Buffer or string
    if (typeof data !== 'string' && !Buffer.isBuffer(data)) data = toBuffer(data)
    if (exceeds(data, this.#maxBytes)) return Violations.MESSAGE_TOO_BIG
    if (this.#bucket !== undefined && !this.#bucket.take(performance.now())) return Violations.RATE_LIMITED
    if (this.#inspector === undefined) return undefined
    // an inspector (and an app's hook inside it, e.g. the STOMP ACL) that throws is caught by
    // the core, which closes the connection with 1011 'inspection failed' and logs it
    const v = this.#inspector.message(data, isBinary)
    return v === undefined ? undefined : usable(v)
  }

  close (): void {
    if (this.#inspector?.close === undefined) return
    // app code, run from the connection's close event: a throw must neither escape into the
    // server nor keep the connection's other close listeners from running
    try {
      this.#inspector.close()
    } catch (err) {
      this.#log.error({ err, portcullis: { protocol: this.#protocol } }, 'portcullis: subprotocol inspector failed to close')
    }
  }
}

/** The guard factory of one route and protocol, built once at startup and shared by its connections. */
export function guardFactory (plan: GuardPlan): ConnectionGuardFactory {
  return function portcullisSubprotocolGuard ({ state, socket, log }) {
    let inspector: MessageInspector | undefined
    if (plan.open !== undefined && plan.protocol !== undefined) {
      let slot: Slot | undefined
      const ctx: InspectorContext = {
        protocol: plan.protocol,
        identity: state.identity,
        state,
        socket,
        log,
        expose (data, value) {
          if (slot === undefined) slots.set(socket, (slot = { data, value }))
          else { slot.data = data; slot.value = value }
        }
      }
      try {
        inspector = plan.open(ctx)
      } catch (err) {
        // app code, run from the core's attach (inside the upgrade's handler): a throw here must
        // neither escape into the server nor leave the connection open without its inspector
        log.error({ err, portcullis: { protocol: plan.protocol } }, 'portcullis: subprotocol inspector failed to open')
        const { code, reason } = Violations.INSPECTION_FAILED
        setImmediate(() => { if (socket.readyState <= 1) socket.close(code, reason) })
        return UNINSPECTABLE
      }
    }
    return new ProtocolGuard(plan, inspector, log)
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
