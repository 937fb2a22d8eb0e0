/**
 * The session model both downstream shapes share (long-poll answers and the stream): the
 * binding every request is checked against, the answers' common headers and bodies, and the
 * one-shot wake-ups of a held request.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { denialOf, replyDenial, type Decision, type PortcullisState, type ProtectedRoute } from '@portcullis/policy'
import type { OutboundFrame, ReadResult, SessionRecord, WakeReason } from './store.js'
import { PORTCULLIS_FALLBACK_BAD_REQUEST, PORTCULLIS_FALLBACK_UNKNOWN_SESSION } from './errors.js'

/** Why a held request (a poll or a stream) stops waiting. */
export type HoldReason = WakeReason | 'timeout' | 'aborted'

/**
 * The wake-ups of one held request. The store's watch, the hold timer, the client's abort and
 * shutdown all call `fire`; `next()` gives the first reason not yet taken. A reason that arrives
 * while nobody waits is kept (the most final one: an abort or a supersede is never overwritten
 * by `data`), so a stream that re-watches between two reads misses nothing.
 */
export class Hold {
  /** True for a stream (it writes the replies itself; a send answer then carries none). */
  readonly stream: boolean
  #resolve: ((reason: HoldReason) => void) | undefined
  #pending: HoldReason | undefined
  /** v2 sends in flight on this node for the held session (their answers carry the replies). */
  sends = 0
  /** The highest server seq a v2 send answer carried while this poll was held. */
  claimed = 0
  #settled: (() => void) | undefined
  #settledPromise: Promise<void> | undefined

  constructor (stream = false) {
    this.stream = stream
  }

  readonly fire = (reason: HoldReason): void => {
    const r = this.#resolve
    if (r !== undefined) {
      this.#resolve = undefined
      r(reason)
    } else if (this.#pending === undefined || this.#pending === 'data') {
      this.#pending = reason
    }
  }

  next (): Promise<HoldReason> {
    const p = this.#pending
    if (p !== undefined) {
      this.#pending = undefined
      return Promise.resolve(p)
    }
    return new Promise((resolve) => { this.#resolve = resolve })
  }

  /** A v2 send for this session started here: its answer will carry the handler's replies. */
  sendStarted (): void {
    this.sends++
  }

  /** That send answered, carrying messages up to `upTo`. */
  sendDone (upTo: number): void {
    if (upTo > this.claimed) this.claimed = upTo
    if (--this.sends === 0 && this.#settled !== undefined) {
      const s = this.#settled
      this.#settled = undefined
      this.#settledPromise = undefined
      s()
    }
  }

  /** Resolves once no v2 send of the session is in flight here. */
  sendsSettled (): Promise<void> {
    if (this.sends === 0) return Promise.resolve()
    this.#settledPromise ??= new Promise((resolve) => { this.#settled = resolve })
    return this.#settledPromise
  }
}

/** The session binding (PROTOCOL.md §5): same route, protocol, identity, auth session and Origin. */
export function matches (record: SessionRecord, route: ProtectedRoute, decision: Decision & { allowed: true }, request: FastifyRequest): boolean {
  const state: PortcullisState = decision.state
  return record.route === route.url &&
    record.protocol === (state.protocol ?? '') &&
    record.identityId === state.identity?.id &&
    record.sessionId === state.identity?.sessionId &&
    record.origin === originOf(request)
}

/**
 * The origin a request effectively comes from, for the binding. Browsers send no `Origin` on a
 * same-origin GET (Fetch §3.1, "origin header" is only serialized for CORS or non-GET/HEAD), so
 * a poll from the page that opened the session arrives without one; `Sec-Fetch-Site:
 * same-origin` — a forbidden header a page cannot set — then stands for the server's own origin,
 * as the origin guard judges it. Otherwise the exact header value (or its absence).
 */
export function originOf (request: FastifyRequest): string | undefined {
  const o = request.headers.origin
  if (typeof o === 'string') return o
  if (o === undefined && request.headers['sec-fetch-site'] === 'same-origin') return `${request.protocol}://${request.host}`
  return undefined
}

export function headerValue (h: string | string[] | undefined): string | undefined {
  if (h === undefined) return undefined
  const v = Array.isArray(h) ? h.join(', ') : h
  return v.length === 0 ? undefined : v
}

/** An answer with nothing in it: the hold ended (superseded, or the client went away). */
export function emptyPoll (reply: FastifyReply, inAck: number): unknown {
  noStore(reply)
  return { messages: [], ack: inAck }
}

/** The client's connection is closed already (it aborted during the gate). */
export function clientGone (request: FastifyRequest): boolean {
  const socket = request.raw.socket as { destroyed?: boolean } | null
  return socket === null || socket.destroyed === true
}

export function noop (): void {}

export function answerPoll (reply: FastifyReply, r: ReadResult & { found: true }): unknown {
  noStore(reply)
  const messages = r.frames.map(wireMessage)
  return r.close === undefined ? { messages, ack: r.inAck } : { messages, ack: r.inAck, close: r.close }
}

export function wireMessage (f: OutboundFrame): { seq: number, text: string } | { seq: number, binary: string } {
  return f.type === 'text' ? { seq: f.seq, text: f.data } : { seq: f.seq, binary: f.data }
}

export function noStore (reply: FastifyReply): FastifyReply {
  reply.header('cache-control', 'no-store')
  reply.header('x-content-type-options', 'nosniff')
  return reply
}

export function refuse (reply: FastifyReply, err: { statusCode?: number, code: string, message: string }): FastifyReply {
  return replyDenial(reply, denialOf(err))
}

export function unknownSession (reply: FastifyReply): FastifyReply {
  return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_UNKNOWN_SESSION()))
}

export function badRequest (reply: FastifyReply, err: unknown): FastifyReply {
  const detail = err instanceof SyntaxError ? err.message : 'invalid body'
  return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_BAD_REQUEST(detail)))
}

export function bump (map: Map<string, number>, key: string, d: number): void {
  const n = (map.get(key) ?? 0) + d
  if (n <= 0) map.delete(key)
  else map.set(key, n)
}
