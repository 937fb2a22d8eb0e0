import { createNoopMeter, metrics, type Attributes, type Counter, type Histogram, type MeterProvider, type ObservableResult } from '@opentelemetry/api'
import type { FastifyBaseLogger } from 'fastify'
import type { AuditEvent, Transport } from './types.js'
import { CloseCodes } from './close-codes.js'

/** The package version, for the meter's instrumentation scope. */
export const VERSION = '0.1.0'

/** At most one "audit sink failed" log line per this many milliseconds (a failing sink cannot flood the log). */
const FAILURE_LOG_INTERVAL_MS = 10_000
/** Decision latencies, seconds: a cached session answers in microseconds, a session store in milliseconds. */
const DURATION_BUCKETS = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5]

export interface AuditCounters {
  /** Events handed to the sink whose call returned (sync) or resolved (async). */
  delivered: number
  /** Events whose sink call threw, rejected or timed out. */
  failed: number
  /** Events not handed to the sink because `auditMaxInFlight` async calls were pending. */
  dropped: number
  /** Async sink calls pending now. */
  inFlight: number
}

/**
 * Calls a user's audit sink so that nothing it does reaches a decision: a throw is caught, a
 * rejection is caught, a promise is never awaited (the decision is already made and answered),
 * and a sink that hangs holds one of `maxInFlight` slots until `timeoutMs`, after which the slot
 * is freed and the call counted as failed. Past the bound, events are dropped and counted.
 */
export class AuditSink {
  readonly counters: AuditCounters = { delivered: 0, failed: 0, dropped: 0, inFlight: 0 }
  readonly #sink: (event: AuditEvent) => unknown
  readonly #log: FastifyBaseLogger
  readonly #maxInFlight: number
  readonly #timeoutMs: number
  #lastFailureLog = -Infinity
  #suppressed = 0

  constructor (sink: (event: AuditEvent) => unknown, log: FastifyBaseLogger, maxInFlight: number, timeoutMs: number) {
    this.#sink = sink
    this.#log = log
    this.#maxInFlight = maxInFlight
    this.#timeoutMs = timeoutMs
  }

  emit (event: AuditEvent): void {
    if (this.counters.inFlight >= this.#maxInFlight) {
      this.counters.dropped++
      return
    }
    let result: unknown
    try {
      result = this.#sink(event)
    } catch (err) {
      this.#failed(err)
      return
    }
    if (result === null || typeof result !== 'object' || typeof (result as Promise<unknown>).then !== 'function') {
      this.counters.delivered++
      return
    }
    this.counters.inFlight++
    const call = new PendingCall(this)
    call.timer = setTimeout(onAuditTimeout, this.#timeoutMs, call)
    call.timer.unref()
    ;(result as Promise<unknown>).then(call.resolve, call.reject)
  }

  settle (call: PendingCall, err: unknown, timedOut: boolean): void {
    if (call.settled) return
    call.settled = true
    clearTimeout(call.timer)
    this.counters.inFlight--
    if (err === undefined && !timedOut) this.counters.delivered++
    else this.#failed(timedOut ? new Error(`audit sink did not settle within ${this.#timeoutMs} ms`) : err)
  }

  #failed (err: unknown): void {
    this.counters.failed++
    const now = Date.now()
    if (now - this.#lastFailureLog < FAILURE_LOG_INTERVAL_MS) {
      this.#suppressed++
      return
    }
    this.#lastFailureLog = now
    const suppressed = this.#suppressed
    this.#suppressed = 0
    this.#log.error({ err, portcullis: { auditFailures: this.counters.failed, suppressedSinceLastLog: suppressed } },
      'portcullis: audit sink failed (decisions are unaffected; further failures are logged at most every 10 s)')
  }
}

/** One pending async sink call: bound methods made once per call, no closure over the event. */
class PendingCall {
  readonly owner: AuditSink
  settled = false
  timer!: NodeJS.Timeout
  constructor (owner: AuditSink) {
    this.owner = owner
  }

  resolve = (): void => { this.owner.settle(this, undefined, false) }
  // a rejection with `undefined` is still a failure
  reject = (err: unknown): void => { this.owner.settle(this, err ?? new Error('audit sink rejected'), false) }
}

function onAuditTimeout (call: PendingCall): void {
  call.owner.settle(call, undefined, true)
}

/** Outcome label of `portcullis_decisions_total`. */
export type Outcome = 'allowed' | 'denied' | 'reported'

/**
 * The metrics, through the OpenTelemetry API: a no-op until the app installs an SDK (or passes a
 * `meterProvider`). Names and labels are fixed (they are what dashboards query). Labels carry
 * only route patterns, transports, outcome, stage names and codes — never a client-supplied
 * value — so cardinality is bounded by routes × codes. Attribute objects are made once per
 * combination and reused, so recording allocates nothing.
 *
 * The counters (decisions, closes) and the open-connections gauge are counted here, in plain
 * numbers, and handed to the SDK by observable instruments when it collects: an SDK record
 * hashes its attribute set on every call (sorting and serializing it), which at four records a
 * handshake was several percent of a handshake's cost. Only the decision-duration histogram,
 * which needs every value, is recorded per decision. The names, types and values read the same.
 */
export class Metrics {
  readonly #revocations: Counter
  readonly #duration: Histogram
  /** Attribute objects and counts by route, then transport: two lookups, no key string built per record. */
  readonly #slots = new Map<string, Map<Transport, AttributeSlot>>()
  readonly #decisionCounts: Count[] = []
  readonly #closeCounts: Count[] = []
  readonly #openCounts: Count[] = []
  /**
   * Whether anything listens: `false` for the API's no-op meter (no SDK installed, no provider
   * passed). The metrics API has no proxy provider, so a provider installed later would not be
   * used by this meter anyway; the core then skips recording altogether.
   */
  readonly live: boolean

  constructor (provider: MeterProvider | undefined, version: string) {
    const meter = (provider ?? metrics.getMeterProvider()).getMeter('@portcullis/policy', version)
    this.live = meter !== createNoopMeter()
    meter.createObservableCounter('portcullis_decisions_total', {
      description: 'Connection decisions of Portcullis-protected routes (both doors; every long-poll request counts)'
    }).addCallback(observer(this.#decisionCounts))
    meter.createObservableCounter('portcullis_closes_total', {
      description: 'Closes of live connections, by close code'
    }).addCallback(observer(this.#closeCounts))
    meter.createObservableUpDownCounter('portcullis_connections', {
      description: 'Open connections'
    }).addCallback(observer(this.#openCounts))
    this.#revocations = meter.createCounter('portcullis_revocations_total', {
      description: 'Session revocations that reached this node'
    })
    this.#duration = meter.createHistogram('portcullis_decision_duration_seconds', {
      description: 'Time to evaluate the policy for one request',
      unit: 's',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS }
    })
  }

  decision (route: string, transport: Transport, outcome: Outcome, code: string, stage: string, seconds: number): void {
    const slot = this.#slot(route, transport)
    let c: Count | undefined
    if (outcome === 'allowed') {
      c = slot.allowed ??= this.#count(this.#decisionCounts, Object.freeze({ route, transport, outcome, code, stage }))
    } else {
      const key = `${outcome}\0${code}\0${stage}`
      c = slot.decisions.get(key)
      if (c === undefined) slot.decisions.set(key, (c = this.#count(this.#decisionCounts, Object.freeze({ route, transport, outcome, code, stage }))))
    }
    c.n++
    if (outcome !== 'reported') this.#duration.record(seconds, slot.open.attributes)
  }

  opened (route: string, transport: Transport): void {
    this.#slot(route, transport).open.n++
  }

  closed (route: string, transport: Transport, code: number): void {
    const slot = this.#slot(route, transport)
    slot.open.n--
    let c = slot.closesByCode.get(code)
    if (c === undefined) {
      // closeCodeLabel folds unknown codes into ranges: one count per label, found by raw code
      // through a bounded cache
      const label = closeCodeLabel(code)
      c = slot.closes.get(label)
      if (c === undefined) slot.closes.set(label, (c = this.#count(this.#closeCounts, Object.freeze({ route, transport, code: label }))))
      if (slot.closesByCode.size < 256) slot.closesByCode.set(code, c)
    }
    c.n++
  }

  revoked (): void {
    this.#revocations.add(1)
  }

  #count (list: Count[], attributes: Attributes): Count {
    const c = { attributes, n: 0 }
    list.push(c)
    return c
  }

  #slot (route: string, transport: Transport): AttributeSlot {
    let byTransport = this.#slots.get(route)
    if (byTransport === undefined) this.#slots.set(route, (byTransport = new Map()))
    let slot = byTransport.get(transport)
    if (slot === undefined) {
      slot = { open: this.#count(this.#openCounts, Object.freeze({ route, transport })), allowed: undefined, decisions: new Map(), closes: new Map(), closesByCode: new Map() }
      byTransport.set(transport, slot)
    }
    return slot
  }
}

/** One counted attribute set. */
interface Count {
  readonly attributes: Attributes
  n: number
}

/** The counts and attribute objects of one route and transport, made once and reused by every record. */
interface AttributeSlot {
  /** Open connections (its attributes are the route's: { route, transport }). */
  open: Count
  allowed: Count | undefined
  decisions: Map<string, Count>
  closes: Map<string, Count>
  closesByCode: Map<number, Count>
}

/** The collection callback of an observable instrument: every count, as it is now. */
function observer (counts: Count[]): (result: ObservableResult) => void {
  return function portcullisObserveCounts (result) {
    for (let i = 0; i < counts.length; i++) result.observe(counts[i].n, counts[i].attributes)
  }
}

/**
 * The audit code of a close that is a security event, by close code; `undefined` for ordinary
 * closes (1000 normal, 1001 going away, 1005/1006 no status, an application's own codes).
 */
const CLOSE_CAUSES: ReadonlyMap<number, string> = new Map([
  [1002, 'PORTCULLIS_CLOSE_PROTOCOL_ERROR'], // the peer broke RFC 6455 framing (e.g. an unmasked frame)
  [CloseCodes.UNSUPPORTED_DATA, 'PORTCULLIS_CLOSE_UNSUPPORTED_DATA'],
  [1007, 'PORTCULLIS_CLOSE_INVALID_PAYLOAD'], // invalid UTF-8
  [CloseCodes.POLICY_VIOLATION, 'PORTCULLIS_CLOSE_POLICY_VIOLATION'],
  [CloseCodes.MESSAGE_TOO_BIG, 'PORTCULLIS_CLOSE_MESSAGE_TOO_BIG'],
  [CloseCodes.INTERNAL_ERROR, 'PORTCULLIS_CLOSE_INTERNAL_ERROR'],
  [CloseCodes.SESSION_REVOKED, 'PORTCULLIS_CLOSE_SESSION_REVOKED'],
  [CloseCodes.SESSION_EXPIRED, 'PORTCULLIS_CLOSE_SESSION_EXPIRED'],
  [CloseCodes.SESSION_INVALID, 'PORTCULLIS_CLOSE_SESSION_INVALID'],
  [CloseCodes.RATE_LIMITED, 'PORTCULLIS_CLOSE_RATE_LIMITED'],
  [CloseCodes.SLOW_CONSUMER, 'PORTCULLIS_CLOSE_SLOW_CONSUMER'],
  [CloseCodes.IDLE_TIMEOUT, 'PORTCULLIS_CLOSE_IDLE_TIMEOUT'],
  [CloseCodes.NODE_GONE, 'PORTCULLIS_CLOSE_NODE_GONE'],
  [CloseCodes.TOO_MANY_CONNECTIONS, 'PORTCULLIS_CLOSE_TOO_MANY_CONNECTIONS']
])

export function closeCause (code: number): string | undefined {
  return CLOSE_CAUSES.get(code)
}

/**
 * The `code` label of `portcullis_closes_total`. A peer chooses the code of a close it starts,
 * so only the codes of RFC 6455 §7.4.1 and Portcullis's own are labelled as they are; any other
 * is folded into its range, which keeps the label set bounded whatever clients send.
 */
export function closeCodeLabel (code: number): string {
  if ((code >= 1000 && code <= 1015) || CLOSE_CAUSES.has(code) || KNOWN_CODES.has(code)) return String(code)
  if (code >= 3000 && code <= 3999) return '3xxx'
  if (code >= 4000 && code <= 4999) return '4xxx'
  return 'other'
}

const KNOWN_CODES: ReadonlySet<number> = new Set(Object.values(CloseCodes))
