import type { ConnectionContext, Denial } from '@portcullis/policy'
import { denialOf } from '@portcullis/policy'
import { OriginMatcher, selfOrigin, tryParseOrigin, type MatchKind } from './origin.js'
import type { MissingOriginPolicy } from './types.js'
import {
  PORTCULLIS_ORIGIN_CROSS_SITE, PORTCULLIS_ORIGIN_MALFORMED, PORTCULLIS_ORIGIN_MISSING, PORTCULLIS_ORIGIN_NOT_ALLOWED
} from './errors.js'

// One frozen denial per code: the request path allocates nothing to deny.
const NOT_ALLOWED = Object.freeze(denialOf(new PORTCULLIS_ORIGIN_NOT_ALLOWED()))
const MISSING = Object.freeze(denialOf(new PORTCULLIS_ORIGIN_MISSING()))
const MALFORMED = Object.freeze(denialOf(new PORTCULLIS_ORIGIN_MALFORMED()))
const CROSS_SITE = Object.freeze(denialOf(new PORTCULLIS_ORIGIN_CROSS_SITE()))

/** Allowed because the route lets Origin-less (non-browser) requests through. */
type Allowed = MatchKind | 'missing'

/**
 * The origin stage's compiled value for one route: what `protectedRoute.compiled('origin')`
 * returns. Both doors and the CORS answers call `decide` — one decision, one code path.
 */
export class OriginPolicy {
  readonly matcher: OriginMatcher
  readonly missing: MissingOriginPolicy
  readonly fetchMetadata: boolean

  constructor (matcher: OriginMatcher, missing: MissingOriginPolicy, fetchMetadata: boolean) {
    this.matcher = matcher
    this.missing = missing
    this.fetchMetadata = fetchMetadata
  }

  /** The stage's verdict: a denial, or undefined to allow. Never looks at `ctx.transport`. */
  evaluate (ctx: ConnectionContext): Denial | undefined {
    const r = this.decide(ctx)
    return typeof r === 'string' ? undefined : r
  }

  /**
   * Decide, and say how an allowed request was allowed. Order: header shape (RFC 6454 §7.1: one
   * origin, once), the list, `self`, then Fetch Metadata as a second opinion from the browser.
   */
  decide (ctx: ConnectionContext): Denial | Allowed {
    // Once per request: the core's Context keeps the decision of this policy, so the CORS answer
    // and the origin stage of the same request share it (a new request has a new Context).
    const memo = ctx as { memoKey?: unknown, memoValue?: unknown }
    if (memo.memoKey === this) return memo.memoValue as Denial | Allowed
    const r = this.#decide(ctx)
    if ('memoKey' in memo) {
      memo.memoKey = this
      memo.memoValue = r
    }
    return r
  }

  #decide (ctx: ConnectionContext): Denial | Allowed {
    const count = ctx.originHeaderCount
    // Two Origin lines: a proxy and the client disagree, or someone is probing which one we read.
    if (count > 1) return MALFORMED
    const site = this.fetchMetadata ? fetchSite(ctx.headers['sec-fetch-site']) : undefined
    if (count === 0) return this.#missing(ctx, site)

    const origin = ctx.origin as string
    let how: MatchKind
    // Fast paths: the list holds canonical serializations only, and so does selfOrigin (memoized
    // per Host), so a hit is also a well-formed header and needs no parsing.
    if (this.matcher.exact.has(origin)) {
      how = 'list'
    } else if (this.matcher.self && origin === selfOrigin(ctx.scheme, ctx.host)) {
      how = 'self'
    } else {
      const parsed = tryParseOrigin(origin)
      if (parsed === undefined) return MALFORMED
      if (!this.matcher.matchesList(parsed)) return NOT_ALLOWED
      how = 'list'
    }

    if (site !== undefined) {
      // The Origin equals our Host-derived `self`, yet the browser says the request left its
      // origin (cross-site, or same-site: another host of the site): the Host or the forwarded
      // headers were rewritten on the way (or trustProxy trusts too much). Refuse.
      if ((site === 'cross-site' || site === 'same-site') && how === 'self' && !this.#listed(origin)) return CROSS_SITE
      // A navigation or a no-cors request is never a WebSocket or fallback request (those are
      // made by script: modes websocket / cors / same-origin), yet it carries SameSite=Lax cookies.
      if (site !== 'same-origin' && site !== 'none') {
        const mode = ctx.headers['sec-fetch-mode']
        if (mode === 'navigate' || mode === 'no-cors') return CROSS_SITE
      }
    }
    return how
  }

  #listed (origin: string): boolean {
    const parsed = tryParseOrigin(origin)
    return parsed !== undefined && this.matcher.matchesList(parsed)
  }

  #missing (ctx: ConnectionContext, site: FetchSite | undefined): Denial | Allowed {
    if (site !== undefined) {
      // Browsers omit Origin on same-origin GET/HEAD fetches (Fetch §3.1 "append a request Origin
      // header") but always send Sec-Fetch-Site, a header no page can set: judge it as `self`.
      if (site === 'same-origin') {
        const self = selfOrigin(ctx.scheme, ctx.host)
        if (self === undefined) return NOT_ALLOWED
        if (this.matcher.self) return 'self'
        return this.#listed(self) ? 'list' : NOT_ALLOWED
      }
      // Any other Sec-Fetch-Site is a browser request without Origin: a navigation, an
      // <img>, a cross-site GET. `missing: 'allow'` is for non-browser clients, not for these.
      return MISSING
    }
    return this.missing === 'allow' ? 'missing' : MISSING
  }

  /**
   * Whether the request is a cross-origin request from an allowed origin: then, and only then,
   * the fallback answers CORS. Same-origin requests need no CORS headers.
   */
  corsAllows (ctx: ConnectionContext): boolean {
    const how = this.decide(ctx)
    if (typeof how !== 'string' || how === 'missing' || how === 'self') return false
    return ctx.origin !== selfOrigin(ctx.scheme, ctx.host)
  }

  /** One line for `describe()`. */
  describe (): string {
    const list = this.matcher.entries
    const shown = list.length === 0 ? 'nothing' : list.slice(0, 3).join(', ') + (list.length > 3 ? ` (+${list.length - 3})` : '')
    return `allow ${shown}; missing Origin: ${this.missing}; fetch metadata: ${this.fetchMetadata ? 'on' : 'off'}`
  }
}

type FetchSite = 'cross-site' | 'same-site' | 'same-origin' | 'none'

/** Known `Sec-Fetch-Site` values; anything else (unknown, duplicated) is ignored, as the spec asks. */
function fetchSite (v: string | string[] | undefined): FetchSite | undefined {
  return v === 'cross-site' || v === 'same-site' || v === 'same-origin' || v === 'none' ? v : undefined
}
