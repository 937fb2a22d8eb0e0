import type {} from '@portcullis/policy'

/** What to do with a request that carries no `Origin` header. */
export type MissingOriginPolicy = 'deny' | 'allow'

/** CORS answers for the fallback's HTTP endpoints (cross-origin browser clients only). */
export interface OriginGuardCorsOptions {
  /** `Access-Control-Max-Age` of preflight answers, in seconds. Default `600`. */
  maxAge?: number
}

/** Plugin options: app-wide defaults, overridden per route by `wsPolicy.origin`. */
export interface OriginGuardOptions {
  /**
   * Allowed origins: serialized origins (`https://app.example.com`, `http://localhost:3000`),
   * subdomain wildcards (`https://*.example.com`), and the keywords `self` (the request's own
   * origin, from its scheme and `Host`, honouring `trustProxy`) and `null` (opaque origins —
   * sandboxed frames, `file:` pages; almost never what you want). Validated and normalized at
   * startup. Default `['self']`: same-origin only.
   */
  allow?: readonly string[]
  /**
   * A request without `Origin` (a non-browser client: browsers always send it on upgrades and
   * cross-origin requests). Default `'deny'`. A same-origin browser request that carries
   * `Sec-Fetch-Site: same-origin` instead is judged as coming from `self` whatever this says.
   */
  missing?: MissingOriginPolicy
  /**
   * Cross-check Fetch Metadata (`Sec-Fetch-Site`, `Sec-Fetch-Mode`) when the browser sends it.
   * Default `true`.
   */
  fetchMetadata?: boolean
  /** Report-only for every route: log and audit would-be denials, let them through. Default `false`. */
  reportOnly?: boolean
  /**
   * Answer CORS (via `@fastify/cors`) for the fallback's endpoints from the same allowlist.
   * `false` registers no CORS at all (use `corsOptionsFor` in your own `@fastify/cors`). Default `true`.
   */
  cors?: boolean | OriginGuardCorsOptions
}

/**
 * Options of `requireAllowedOrigin(options)`: overrides of the plugin's app-wide values for the
 * ordinary HTTP routes that use the hook (same syntax, same meaning as the plugin options).
 */
export interface HttpOriginOptions {
  /** Allowed origins for these routes; replaces the plugin's `allow`. Default: the plugin's. */
  allow?: readonly string[]
  /**
   * A request without `Origin`. Default: the plugin's (`'deny'`). `'allow'` lets non-browser
   * clients (curl) through; a browser request without `Origin` that Fetch Metadata marks as
   * cross-site is refused either way.
   */
  missing?: MissingOriginPolicy
  /** Cross-check Fetch Metadata. Default: the plugin's (`true`). */
  fetchMetadata?: boolean
}

declare module '@portcullis/policy' {
  interface PortcullisOriginPolicy {
    /** This route's allowlist; replaces the plugin's `allow` (same syntax). Default: the plugin's. */
    allow?: readonly string[]
    /** This route's answer to a missing `Origin`. Default: the plugin's (`'deny'`). */
    missing?: MissingOriginPolicy
    /** Cross-check Fetch Metadata on this route. Default: the plugin's (`true`). */
    fetchMetadata?: boolean
  }
}
