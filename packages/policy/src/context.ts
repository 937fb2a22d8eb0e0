import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { ConnectionContext, PortcullisState, Transport } from './types.js'
import { cookieValues, parseCookieHeader } from './cookies.js'

/**
 * The request slot where a transport endpoint's hook (the origin guard's CORS answer) leaves
 * the request's one Context for the policy evaluation of the same request to take (issue 14:
 * one Context, one cookie parse, one origin decision per fallback request). Declared by the
 * core with `decorateRequest`, so requests keep one shape.
 */
export const kRequestContext = Symbol('portcullis.request-context')

/**
 * The transport-neutral context. A class (not an object literal) so every context has one
 * shape, and so the cookie map and Origin line count are computed only if a stage asks.
 */
export class Context implements ConnectionContext {
  transport: Transport
  readonly request: FastifyRequest
  readonly route: string
  readonly headers: IncomingHttpHeaders
  offeredProtocols: string | undefined
  resumed: boolean
  readonly state: PortcullisState
  /**
   * One stage's per-request memo, keyed by the stage's compiled value: the origin guard keeps
   * its decision here, so the CORS answer and the origin stage decide once per request. Never
   * outlives the request (a new request has a new Context): no decision is cached across requests.
   */
  memoKey: unknown = undefined
  memoValue: unknown = undefined
  #cookies: Map<string, string[]> | undefined
  #originCount = -1

  /**
   * The Context a hook left on `request` for `route` (taken: it serves one evaluation), with the
   * evaluation's transport and offer, or a new one.
   */
  static take (request: FastifyRequest, transport: Transport, route: string, offeredProtocols: string | undefined, resumed = false): Context {
    const slot = request as unknown as Record<symbol, Context | null>
    const left = slot[kRequestContext]
    if (left !== null && left !== undefined && left.route === route && left.request === request) {
      slot[kRequestContext] = null
      left.transport = transport
      left.offeredProtocols = offeredProtocols
      left.resumed = resumed
      return left
    }
    return new Context(request, transport, route, offeredProtocols, resumed)
  }

  /** A Context for `request` that its policy evaluation will take (see `take`). */
  static share (request: FastifyRequest, transport: Transport, route: string): Context {
    const ctx = new Context(request, transport, route, undefined)
    ;(request as unknown as Record<symbol, Context | null>)[kRequestContext] = ctx
    return ctx
  }

  constructor (request: FastifyRequest, transport: Transport, route: string, offeredProtocols: string | undefined, resumed = false) {
    this.transport = transport
    this.request = request
    this.route = route
    this.headers = request.headers
    this.offeredProtocols = offeredProtocols
    this.resumed = resumed
    this.state = {}
  }

  get origin (): string | undefined {
    return this.originHeaderCount === 1 ? this.headers.origin : undefined
  }

  get originHeaderCount (): number {
    if (this.#originCount === -1) this.#originCount = countHeaderLines(this.request.raw.rawHeaders, 'origin', this.headers.origin)
    return this.#originCount
  }

  get host (): string {
    return this.request.host
  }

  get scheme (): 'http' | 'https' {
    // Fastify has no protocol for a request without a socket: app.injectWS()'s, which like
    // app.inject() stands for plain http (a request from the network always has its socket)
    return this.request.protocol ?? 'http'
  }

  get ip (): string {
    return this.request.ip
  }

  get cookies (): ReadonlyMap<string, readonly string[]> {
    if (this.#cookies === undefined) this.#cookies = parseCookieHeader(this.headers.cookie)
    return this.#cookies
  }

  cookieValues (name: string): readonly string[] | undefined {
    // the map, when a stage already asked for it; else a scan for this one name
    return this.#cookies === undefined ? cookieValues(this.headers.cookie, name) : this.#cookies.get(name)
  }
}

/**
 * How many header lines named `name` (lowercase) the request carried. Node joins duplicates of
 * most headers with ", ", so the parsed value alone cannot tell two lines from one list; the raw
 * header array can.
 */
export function countHeaderLines (rawHeaders: string[] | undefined, name: string, parsed: string | string[] | undefined): number {
  if (parsed === undefined) return 0
  // app.injectWS()'s request has headers but no raw lines: one value is one line
  if (rawHeaders === undefined) return Array.isArray(parsed) ? parsed.length : 1
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const h = rawHeaders[i]
    if (h.length === name.length && h.toLowerCase() === name) n++
  }
  return n
}
