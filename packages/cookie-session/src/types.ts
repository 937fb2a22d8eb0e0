import type { FastifyRequest } from 'fastify'
import type { PortcullisIdentity } from '@portcullis/policy'

/**
 * The route option `wsPolicy.session`:
 * - `'required'`: a connection without a resolved identity is denied with 401 before the handshake;
 * - `'optional'`: an identity is resolved when the request carries one, anonymous otherwise;
 * - `false`: the stage does not run for this route (no identity).
 */
export type SessionRequirement = 'required' | 'optional' | false

/** What an app's loader returns: the identity, or `null`/`undefined` when there is none. */
export type IdentityResult = PortcullisIdentity | null | undefined

export type MaybePromise<T> = T | Promise<T>

/**
 * Source 1: a session id in a cookie signed by `@fastify/cookie` (`reply.setCookie(name, id, { signed: true })`).
 * Verified with `fastify.unsignCookie`, so `@fastify/cookie`'s secret rotation applies: every secret
 * of `secret: [newest, ...older]` verifies, only the newest signs; a secret removed from the list
 * no longer verifies.
 */
export interface SignedCookieSource {
  /** The cookie's name. Required. Prefer a `__Host-` name on HTTPS (see the README). */
  cookieName: string
  /**
   * Load the session the verified id names. Return the identity, or `null` when the session does
   * not exist or has ended (→ `PORTCULLIS_SESSION_EXPIRED`). `sessionId` defaults to the cookie's
   * id. Called again when the identity's `expiresAt` passes and on re-validation, so a rolling
   * session that was extended keeps its connections. Required.
   */
  load: (sessionId: string) => MaybePromise<IdentityResult>
  /**
   * Size of the cache of verified signed values → session id, so a reconnect does not pay the HMAC
   * again. Only values that verified are ever inserted, keyed by the full signed value.
   * `0` disables it. Default `1000`.
   */
  cacheSize?: number
}

/** The parts of a `@fastify/session` store the adapter uses (its store API, callback style). */
export interface FastifySessionStoreLike {
  get: (sessionId: string, callback: (err: unknown, session?: Record<string, any> | null) => void) => void
  destroy: (sessionId: string, callback: (err?: unknown) => void) => void
}

/**
 * Source 2: `@fastify/session` (server-side store). Its own `onRequest` hook restores
 * `request.session` from the signed cookie; the adapter checks the cookie (tossing), takes the
 * restored session and maps it to an identity. `session.destroy()` and `session.regenerate()`
 * close the old session's live connections (4001), because the adapter wraps the store's `destroy`.
 */
export interface FastifySessionSource {
  /** Must equal `@fastify/session`'s `cookieName`. Default `'sessionId'` (its default). */
  cookieName?: string
  /** Must equal `@fastify/session`'s `cookiePrefix`. Default `''`. */
  cookiePrefix?: string
  /**
   * Map the session's data (its properties, e.g. `data.user`) to an identity, or `null` when the
   * session is not logged in. `sessionId` and `expiresAt` (the session cookie's expiry) are filled
   * in when you leave them out. Called again on re-validation with the store's copy. Required.
   */
  identify: (data: Record<string, any>, sessionId: string) => IdentityResult
}

/**
 * Source 3: `@fastify/secure-session` (stateless encrypted cookie), decoded with
 * `fastify.decodeSecureSession`. Stateless sessions cannot be looked up by id: to make one
 * revocable, store a random id in it at login and return it as `sessionId`.
 */
export interface SecureSessionSource {
  /** Must equal `@fastify/secure-session`'s `sessionName`. Default `'session'`. */
  sessionName?: string
  /** Must equal its `cookieName`. Default: `sessionName`. */
  cookieName?: string
  /** Must equal its `expiry` (seconds), to close live connections when the cookie stops decoding. Default `86401` (its default). */
  expiry?: number
  /** Set when its cookie options have `signed: true` (the value is then unsigned with `fastify.unsignCookie` first). Default `false`. */
  signed?: boolean
  /**
   * Map the decoded session data to an identity, or `null` when not logged in. `expiresAt`
   * defaults to the cookie's timestamp + `expiry`. Required.
   */
  identify: (data: Record<string, any>) => IdentityResult
}

/**
 * Source 4: HTTP authentication for clients that are not browsers (Basic, Bearer, API keys).
 * Return the identity; `null`/`undefined` when the request carries no credentials this function
 * understands; `false` when it carries credentials that are wrong (→ `PORTCULLIS_AUTH_FAILED`).
 * Never put a token in an error you throw: a throw fails the request with a 500 and is logged.
 */
export type Authenticate = (request: FastifyRequest) => MaybePromise<IdentityResult | false>

/** What a re-check returns: a fresh identity (its `expiresAt` replaces the old), `true` to keep, `null`/`false` to close. */
export type RecheckResult = PortcullisIdentity | boolean | null | undefined

export interface RevokeEvent {
  sessionId: string
  /** The close reason sent to clients. */
  reason: string
  /** How many live connections this node closed. */
  closed: number
}

export type RevokeListener = (event: RevokeEvent) => void

export interface CookieSessionOptions {
  /**
   * The value for routes whose `wsPolicy` (and the core's `defaults`) do not set `session`.
   * Default `'required'`: registering this plugin protects every WebSocket route unless it opts out.
   */
  session?: SessionRequirement
  /** Session id in a `@fastify/cookie` signed cookie + your loader. Default: off. */
  signedCookie?: SignedCookieSource
  /** Adapter for `@fastify/session`. Default: off. */
  fastifySession?: FastifySessionSource
  /** Adapter for `@fastify/secure-session`. Default: off. */
  secureSession?: SecureSessionSource
  /** HTTP authentication from headers. Tried after the cookie sources. Default: off. */
  authenticate?: Authenticate
  /**
   * Re-check every live session this often (milliseconds) and close those no longer valid with
   * 4003. Uses `revalidate` when given, else the source's own lookup (`load`, the session store).
   * Default `0` (off).
   */
  revalidateMs?: number
  /**
   * Custom re-check for expiry and re-validation (overrides the source's). Needed for sources
   * that cannot look a session up (secure-session, `authenticate`). Default: the source's lookup.
   */
  revalidate?: (identity: PortcullisIdentity) => MaybePromise<RecheckResult>
  /**
   * How long a re-check of a live session (the loader or `revalidate`, at expiry and at each
   * re-validation) may take, in milliseconds. One that has not answered by then closes the
   * session's connections: with 4002 at expiry (so a connection never outlives its expiry by
   * more than this), with 4003 on re-validation (4002 if the expiry came first). A store that
   * hangs never keeps a connection open. The handshake's own lookup is bounded by the core's
   * `stageTimeoutMs`. Default `5000`.
   */
  recheckTimeoutMs?: number
  /** Told about every `revoke()` on this node (e.g. to broadcast it to other nodes). Default: none. */
  onRevoke?: RevokeListener
  /**
   * The `WWW-Authenticate` challenge sent with every 401 of this stage, on both doors, e.g.
   * `'Bearer realm="chat"'` (RFC 9110 §11.6.1: a 401 must carry one; clients of `authenticate`
   * read it). Printable ASCII, at most 1024 characters, never a secret. Default: none (no
   * standard scheme names a cookie session).
   */
  challenge?: string
}

/**
 * `fastify.portcullisSessions`: revocation and the expiry clock. This plugin's own decorator —
 * the shared `fastify.wsPolicy` stays the core's.
 */
export interface PortcullisSessions {
  /**
   * Close every live connection of the session on this node, both doors, with 4001 and `reason`
   * (default `'session revoked'`), then tell the `onRevoke` listeners (a multi-node package
   * broadcasts from there). Ending the session itself (deleting it from your store) is the
   * app's job; `@fastify/session`'s `destroy()` does both. Returns how many connections closed.
   */
  revoke: (sessionId: string, reason?: string) => number
  /** Like `revoke` without telling listeners: for applying a revocation received from another node. */
  revokeLocal: (sessionId: string, reason?: string) => number
  /** Subscribe to revocations made on this node. Returns an unsubscribe function. */
  onRevoke: (listener: RevokeListener) => () => void
  /** How many sessions (or session-less connections) the expiry clock is watching. */
  readonly tracked: number
}

declare module '@portcullis/policy' {
  interface PortcullisRoutePolicy {
    /**
     * Whether this route needs a session (`@portcullis/cookie-session`). Default: the plugin's
     * `session` option (`'required'`).
     */
    session?: SessionRequirement
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Revocation and expiry of live connections (`@portcullis/cookie-session`). */
    portcullisSessions: PortcullisSessions
  }
}
