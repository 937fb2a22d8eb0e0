import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { FastifyCorsOptions } from '@fastify/cors'
import { kProtectedRoute, protectedRouteOf, type ConnectionContext, type PortcullisOriginPolicy, type StageResult } from '@portcullis/policy'
import { OriginMatcher } from './origin.js'
import { OriginPolicy } from './guard.js'
import { PORTCULLIS_ORIGIN_INVALID_OPTION } from './errors.js'
import { registerAppOrigin } from './http-routes.js'
import type { MissingOriginPolicy, OriginGuardCorsOptions, OriginGuardOptions } from './types.js'

const defaults = Object.freeze({
  allow: Object.freeze(['self']) as readonly string[],
  missing: 'deny' as MissingOriginPolicy,
  fetchMetadata: true,
  reportOnly: false,
  cors: true as boolean | OriginGuardCorsOptions
})
const corsDefaults = Object.freeze({ maxAge: 600 })

const OPTION_KEYS = new Set(['allow', 'missing', 'fetchMetadata', 'reportOnly', 'cors'])
const ROUTE_KEYS = new Set(['allow', 'missing', 'fetchMetadata'])
const MISSING_VALUES = new Set(['deny', 'allow'])

/** The methods and request headers the long-poll fallback uses (see `@portcullis/fallback`). */
const FALLBACK_METHODS = Object.freeze(['GET', 'POST'])
const FALLBACK_HEADERS = Object.freeze(['content-type', 'x-portcullis-fallback', 'x-portcullis-sid', 'x-portcullis-ack', 'x-portcullis-protocol'])
/** Allowed origins whose CORS headers are kept per route policy (cleared when full). */
const MAX_CACHED_ORIGINS = 256

async function fastifyOriginGuard (fastify: FastifyInstance, opts: OriginGuardOptions): Promise<void> {
  validateOptions(opts)
  // keys set to undefined keep their default: `fetchMetadata: undefined` must not turn it off
  const options = { ...defaults }
  for (const key of Object.keys(opts) as Array<keyof OriginGuardOptions>) {
    if (opts[key] !== undefined) Object.assign(options, { [key]: opts[key] })
  }
  let appMatcher: OriginMatcher
  try {
    appMatcher = new OriginMatcher(options.allow)
  } catch (err) {
    throw new PORTCULLIS_ORIGIN_INVALID_OPTION((err as Error).message)
  }
  const appPolicy = new OriginPolicy(appMatcher, options.missing, options.fetchMetadata)

  fastify.wsPolicy.addStage<PortcullisOriginPolicy, OriginPolicy>({
    name: 'origin',
    phase: 'origin',
    option: 'origin',
    reportOnly: options.reportOnly,
    compile: function compileOriginPolicy (value: PortcullisOriginPolicy | undefined) {
      return compileRoute(value, appPolicy)
    },
    evaluate: evaluateOrigin,
    describe: describeOrigin
  })
  // the same compiled policy for ordinary HTTP routes (requireAllowedOrigin, checkOrigin)
  registerAppOrigin(fastify, appPolicy, options.reportOnly)

  if (options.cors === false) return
  if (fastify.hasRequestDecorator('corsPreflightEnabled')) {
    throw new PORTCULLIS_ORIGIN_INVALID_OPTION('@fastify/cors is already registered on this instance: pass cors: false and call corsOptionsFor(request) first in your own CORS delegator')
  }
  const cors = { ...corsDefaults, ...(options.cors === true ? {} : options.cors) }
  const wsPolicy = fastify.wsPolicy
  const preflightHeaders = Object.freeze({
    'access-control-allow-methods': FALLBACK_METHODS.join(', '),
    'access-control-allow-headers': FALLBACK_HEADERS.join(', '),
    'access-control-max-age': String(cors.maxAge)
  })
  /**
   * The answer headers per allowed origin string, per route policy: computed once, bounded
   * (cleared when full; a wildcard entry can match many origins). Only the HEADERS are cached:
   * whether the origin is allowed is decided anew on every request.
   */
  const answers = new WeakMap<OriginPolicy, Map<string, Readonly<Record<string, string>>>>()

  function corsAnswer (policy: OriginPolicy, origin: string): Readonly<Record<string, string>> {
    let byOrigin = answers.get(policy)
    if (byOrigin === undefined) answers.set(policy, byOrigin = new Map())
    let h = byOrigin.get(origin)
    if (h === undefined) {
      if (byOrigin.size >= MAX_CACHED_ORIGINS) byOrigin.clear()
      // the exact origin, never `*`: credentialed requests need it (Fetch §3.2.5)
      h = Object.freeze({ 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true' })
      byOrigin.set(origin, h)
    }
    return h
  }

  /**
   * CORS for a Portcullis transport endpoint (the fallback's, and their OPTIONS twins), from the
   * route's compiled origin policy: one Context shared with the route's policy evaluation of the
   * same request, and one origin decision. Nothing is added on a denial; a preflight is answered
   * only for an allowed origin (else it reaches the endpoint's own OPTIONS handler).
   */
  function portcullisCors (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const origin = request.headers.origin
    if (origin === undefined) return done()
    const route = protectedRouteOf(request)
    if (route === undefined) return done()
    const policy = route.compiled('origin')
    // `origin: false` on the route: nothing is checked, so nothing is vouched for cross-origin either
    if (!(policy instanceof OriginPolicy)) return done()
    // the evaluation that takes this Context sets its own transport and offer
    const ctx = wsPolicy.sharedContext(request, 'long-poll', route.url)
    if (!policy.corsAllows(ctx)) return done()
    reply.headers(corsAnswer(policy, ctx.origin as string))
    // Vary: Origin, added to what is there (RFC 9110 §12.5.5): the answer depends on it
    const vary = reply.getHeader('vary')
    reply.header('vary', vary === undefined ? 'Origin' : `${String(vary)}, Origin`)
    if (request.method !== 'OPTIONS') return done()
    // a preflight (Fetch §3.2.2): what the fallback sends, for how long the browser may keep it
    if (request.headers['access-control-request-method'] === undefined) {
      reply.code(400).type('text/plain; charset=utf-8').send('Invalid Preflight Request')
      return
    }
    reply.headers(preflightHeaders).header('content-length', '0').code(204).send()
  }

  // Only on the transport endpoints: no CORS work on WebSocket upgrades or any other route.
  fastify.addHook('onRoute', function portcullisCorsRoutes (routeOptions: RouteOptions) {
    const config = routeOptions.config as Record<symbol, unknown> | undefined
    if (config?.[kProtectedRoute] === undefined || (routeOptions as { websocket?: boolean }).websocket === true) return
    const own = routeOptions.onRequest
    routeOptions.onRequest = own === undefined ? [portcullisCors] : [portcullisCors, ...(Array.isArray(own) ? own : [own])] as typeof own
  })
}

/**
 * Whether `request` is a cross-origin request to a Portcullis endpoint (a fallback endpoint, or
 * its OPTIONS twin) from an origin that the endpoint's route allows. The WebSocket upgrade
 * itself is never subject to CORS.
 */
function corsAllowed (request: FastifyRequest, contextOf: (route: string) => ConnectionContext): boolean {
  // `request.ws` is @fastify/websocket's decoration (registered by the core)
  if (request.headers.origin === undefined || (request as { ws?: boolean }).ws === true) return false
  const route = protectedRouteOf(request)
  if (route === undefined) return false
  const policy = route.compiled('origin')
  // `origin: false` on the route: nothing is checked, so nothing is vouched for cross-origin either
  if (!(policy instanceof OriginPolicy)) return false
  return policy.corsAllows(contextOf(route.url))
}

/**
 * For apps that register `@fastify/cors` themselves (plugin option `cors: false`): the CORS
 * options this plugin would answer `request` with, or `undefined` when the request is not a
 * cross-origin request from an allowed origin to a Portcullis endpoint. Call it first in your
 * own delegator.
 */
export function corsOptionsFor (request: FastifyRequest, opts: OriginGuardCorsOptions = {}): FastifyCorsOptions | undefined {
  if (!corsAllowed(request, (route) => request.server.wsPolicy.context(request, 'long-poll', route))) return undefined
  return {
    origin: true,
    credentials: true,
    methods: [...FALLBACK_METHODS],
    allowedHeaders: [...FALLBACK_HEADERS],
    maxAge: opts.maxAge ?? corsDefaults.maxAge,
    strictPreflight: true
  }
}

function evaluateOrigin (ctx: ConnectionContext, policy: OriginPolicy): StageResult {
  return policy.evaluate(ctx)
}

function describeOrigin (policy: OriginPolicy): string {
  return policy.describe()
}

/** A route's `wsPolicy.origin` over the plugin's options; the app-wide policy is reused when unchanged. */
function compileRoute (value: PortcullisOriginPolicy | undefined, app: OriginPolicy): OriginPolicy {
  if (value === undefined) return app
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`must be false (opt out) or an object with ${[...ROUTE_KEYS].join(', ')}`)
  }
  for (const key of Object.keys(value)) {
    if (!ROUTE_KEYS.has(key)) throw new TypeError(`unknown key "${key}" (known: ${[...ROUTE_KEYS].join(', ')})`)
  }
  checkMissing(value.missing, 'missing')
  checkBoolean(value.fetchMetadata, 'fetchMetadata')
  let matcher = app.matcher
  if (value.allow !== undefined) {
    checkList(value.allow, 'allow')
    matcher = new OriginMatcher(value.allow)
  }
  const missing = value.missing ?? app.missing
  const fetchMetadata = value.fetchMetadata ?? app.fetchMetadata
  if (matcher === app.matcher && missing === app.missing && fetchMetadata === app.fetchMetadata) return app
  return new OriginPolicy(matcher, missing, fetchMetadata)
}

function validateOptions (opts: OriginGuardOptions): void {
  if (opts === null || typeof opts !== 'object') throw new PORTCULLIS_ORIGIN_INVALID_OPTION('options must be an object')
  try {
    for (const key of Object.keys(opts)) {
      if (!OPTION_KEYS.has(key)) throw new TypeError(`unknown option "${key}" (known: ${[...OPTION_KEYS].join(', ')})`)
    }
    if (opts.allow !== undefined) checkList(opts.allow, 'allow')
    checkMissing(opts.missing, 'missing')
    checkBoolean(opts.fetchMetadata, 'fetchMetadata')
    checkBoolean(opts.reportOnly, 'reportOnly')
    const cors = opts.cors
    if (cors !== undefined && typeof cors !== 'boolean') {
      if (cors === null || typeof cors !== 'object' || Array.isArray(cors)) throw new TypeError('cors must be a boolean or { maxAge }')
      for (const key of Object.keys(cors)) if (key !== 'maxAge') throw new TypeError(`unknown cors option "${key}" (known: maxAge)`)
      if (cors.maxAge !== undefined && (!Number.isInteger(cors.maxAge) || cors.maxAge < 0)) throw new TypeError('cors.maxAge must be a whole number of seconds ≥ 0')
    }
  } catch (err) {
    throw new PORTCULLIS_ORIGIN_INVALID_OPTION((err as Error).message)
  }
}

function checkList (v: unknown, name: string): void {
  if (!Array.isArray(v)) throw new TypeError(`${name} must be an array of origins, e.g. ['https://app.example.com']`)
}

function checkMissing (v: unknown, name: string): void {
  if (v !== undefined && !MISSING_VALUES.has(v as string)) throw new TypeError(`${name} must be 'deny' or 'allow'`)
}

function checkBoolean (v: unknown, name: string): void {
  if (v !== undefined && typeof v !== 'boolean') throw new TypeError(`${name} must be a boolean`)
}

const plugin = fp(fastifyOriginGuard, {
  name: '@portcullis/origin-guard',
  fastify: '5.x',
  dependencies: ['@portcullis/policy']
})

export default plugin
export { plugin as originGuard, plugin as fastifyOriginGuard }
export { OriginPolicy } from './guard.js'
export { checkOrigin, requireAllowedOrigin } from './http-routes.js'
export {
  OriginMatcher, parseOrigin, tryParseOrigin, serializeOrigin, normalizeOriginEntry, selfOrigin,
  MAX_ORIGIN_LENGTH, NULL_ORIGIN
} from './origin.js'
export type { ParsedOrigin, TupleOrigin, OpaqueOrigin, OriginEntry, MatchKind } from './origin.js'
export * as errors from './errors.js'
export type * from './types.js'
