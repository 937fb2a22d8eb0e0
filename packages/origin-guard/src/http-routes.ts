/**
 * The origin decision for ordinary HTTP routes: a login form's POST, a `fetch('/logout')`, any
 * state-changing request that rides the user's cookies. The same compiled allowlist, the same
 * decision function (`OriginPolicy.decide`), the same denial codes as the WebSocket upgrade and
 * the fallback — so one list guards the sockets and the routes that hand out their sessions.
 *
 * A browser attaches `Origin` to every POST (Fetch §3.1), which is what makes this a CSRF check
 * (RFC 6454 §7.3: a server may refuse a request whose origin it does not trust). It is not a
 * stage: these routes are not Portcullis routes and nothing is audited through the core. Only the
 * core decorates the instance, so this module keeps the plugin's compiled policy in a WeakMap of
 * its own, keyed by the instance the plugin was registered on.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify'
import { replyDenial, type Denial } from '@portcullis/policy'
import { OriginMatcher } from './origin.js'
import { OriginPolicy } from './guard.js'
import { PORTCULLIS_ORIGIN_INVALID_OPTION, PORTCULLIS_ORIGIN_NOT_REGISTERED } from './errors.js'
import type { HttpOriginOptions, MissingOriginPolicy } from './types.js'

interface AppOrigin {
  policy: OriginPolicy
  reportOnly: boolean
}

/**
 * The app-wide compiled policy of each registration, keyed by the instance the plugin was
 * registered on. Fastify makes an encapsulated child context with `Object.create(parent)`, so a
 * route's `request.server` finds its registration up its prototype chain — and a sibling
 * context, where the plugin is not visible, finds none.
 */
const apps = new WeakMap<object, AppOrigin>()

const HTTP_KEYS = new Set(['allow', 'missing', 'fetchMetadata'])
const MISSING_VALUES = new Set(['deny', 'allow'])

/** Called by the plugin at registration (internal). */
export function registerAppOrigin (instance: FastifyInstance, policy: OriginPolicy, reportOnly: boolean): void {
  apps.set(instance, { policy, reportOnly })
}

function appOf (request: FastifyRequest): AppOrigin {
  let scope: object | null = request.server
  while (scope !== null) {
    const app = apps.get(scope)
    if (app !== undefined) return app
    scope = Object.getPrototypeOf(scope) as object | null
  }
  // fail closed: a route that asked for the check never runs unchecked
  throw new PORTCULLIS_ORIGIN_NOT_REGISTERED()
}

/**
 * Check an ordinary HTTP request against the app-wide allowlist of `@portcullis/origin-guard`
 * (the plugin's `allow`, `missing` and `fetchMetadata`). Returns the denial
 * (`{ status: 403, code, reason }`) or `undefined` when the origin is allowed. Ignores
 * `reportOnly` (it is the decision itself); `requireAllowedOrigin` honours it.
 *
 * Throws `PORTCULLIS_ORIGIN_NOT_REGISTERED` when the plugin is not registered on this instance.
 */
export function checkOrigin (request: FastifyRequest): Denial | undefined {
  return decideHttp(request, appOf(request).policy)
}

function decideHttp (request: FastifyRequest, policy: OriginPolicy): Denial | undefined {
  // The decision reads Origin, Host, scheme and Fetch Metadata, never the transport: the core's
  // context gives it the same view (Origin line count included) as on the two doors.
  const ctx = request.server.wsPolicy.context(request, 'long-poll', request.routeOptions.url ?? request.url)
  return policy.evaluate(ctx)
}

/**
 * A `preHandler` hook that refuses a request from an origin not on the allowlist with the same
 * answer as the WebSocket door: the denial's status (403) and `{ code, message }`, `no-store`.
 *
 * `options` override the plugin's app-wide `allow` / `missing` / `fetchMetadata` for the routes
 * that use this hook (validated now: a wrong option fails at startup). A typical login route
 * takes `{ missing: 'allow' }` so that `curl` (no `Origin`, no victim's cookies) can log in while
 * every browser request is still checked.
 *
 * Under the plugin's `reportOnly: true`, a would-be denial is logged at `info` and let through.
 */
export function requireAllowedOrigin (options: HttpOriginOptions = {}): preHandlerAsyncHookHandler {
  const override = validateHttpOptions(options)
  // one derived policy per app policy, compiled on the first request (the app's list is only
  // known once the request names its instance); the list itself is compiled above, once
  const derived = new WeakMap<OriginPolicy, OriginPolicy>()

  function policyFor (app: OriginPolicy): OriginPolicy {
    if (override.matcher === undefined && override.missing === undefined && override.fetchMetadata === undefined) return app
    let p = derived.get(app)
    if (p === undefined) {
      p = new OriginPolicy(override.matcher ?? app.matcher, override.missing ?? app.missing, override.fetchMetadata ?? app.fetchMetadata)
      derived.set(app, p)
    }
    return p
  }

  return async function portcullisRequireAllowedOrigin (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const app = appOf(request)
    const denial = decideHttp(request, policyFor(app.policy))
    if (denial === undefined) return undefined
    const origin = request.headers.origin === undefined ? undefined : String(request.headers.origin).slice(0, 256)
    const log = { portcullis: { action: app.reportOnly ? 'report' : 'deny', code: denial.code, stage: 'origin', route: request.routeOptions.url, transport: 'http', origin } }
    if (app.reportOnly) {
      request.log.info(log, 'portcullis: request would be denied (report-only)')
      return undefined
    }
    request.log.warn(log, 'portcullis: request denied')
    // an async hook that has replied returns the reply, so Fastify stops the chain here
    return replyDenial(reply, denial)
  }
}

interface CompiledHttpOptions {
  matcher: OriginMatcher | undefined
  missing: MissingOriginPolicy | undefined
  fetchMetadata: boolean | undefined
}

function validateHttpOptions (options: HttpOriginOptions): CompiledHttpOptions {
  try {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new TypeError('requireAllowedOrigin options must be an object')
    for (const key of Object.keys(options)) {
      if (!HTTP_KEYS.has(key)) throw new TypeError(`unknown requireAllowedOrigin option "${key}" (known: ${[...HTTP_KEYS].join(', ')})`)
    }
    const { allow, missing, fetchMetadata } = options
    if (allow !== undefined && !Array.isArray(allow)) throw new TypeError('allow must be an array of origins, e.g. [\'https://app.example.com\']')
    if (missing !== undefined && !MISSING_VALUES.has(missing)) throw new TypeError('missing must be \'deny\' or \'allow\'')
    if (fetchMetadata !== undefined && typeof fetchMetadata !== 'boolean') throw new TypeError('fetchMetadata must be a boolean')
    return { matcher: allow === undefined ? undefined : new OriginMatcher(allow), missing, fetchMetadata }
  } catch (err) {
    throw new PORTCULLIS_ORIGIN_INVALID_OPTION((err as Error).message)
  }
}
