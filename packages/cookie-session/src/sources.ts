import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ConnectionContext, PortcullisIdentity } from '@portcullis/policy'
import type {
  Authenticate, FastifySessionSource, FastifySessionStoreLike, IdentityResult, MaybePromise,
  SecureSessionSource, SignedCookieSource
} from './types.js'
import type { Recheck } from './clock.js'
import { Lru } from './lru.js'

/** Why a source produced no identity although the request carried something. */
export type Problem = 'ambiguous' | 'invalid' | 'auth-failed' | 'expired'

/**
 * What one source makes of a request: an identity, a problem, or `undefined` when the request
 * carries nothing for it (no cookie, no credentials).
 */
export type Outcome = { identity: PortcullisIdentity, recheck: Recheck | undefined } | { problem: Problem } | undefined

export interface Source {
  /** For `describe()`, e.g. `signed cookie "sid"`. Never a value. */
  readonly label: string
  resolve: (ctx: ConnectionContext) => MaybePromise<Outcome>
  /** Undo anything the source installed (Fastify `onClose`). */
  close?: () => void
}

// RFC 6265 §6.1: user agents store at least 4096 bytes per cookie; a longer value is not a
// session cookie we issued, and we do not spend an HMAC on it.
const MAX_COOKIE_VALUE = 4096

const AMBIGUOUS: Outcome = Object.freeze({ problem: 'ambiguous' as const })
const INVALID: Outcome = Object.freeze({ problem: 'invalid' as const })
const EXPIRED: Outcome = Object.freeze({ problem: 'expired' as const })
const AUTH_FAILED: Outcome = Object.freeze({ problem: 'auth-failed' as const })

type Unsign = (value: string) => { valid: boolean, renew: boolean, value: string | null }

/** The single value of cookie `name`, or a problem: none → undefined, two or more → tossing. */
function cookieValue (ctx: ConnectionContext, name: string): string | Outcome {
  const values = ctx.cookieValues(name)
  if (values === undefined) return undefined
  if (values.length > 1) {
    // Cookie tossing: a sibling subdomain (or an injected Set-Cookie) planted a second cookie
    // with our name (RFC 6265 §8.6, §8.7). Browsers send both and the order is not a signal we
    // can trust, so neither is used. Log the name and count, never the values.
    ctx.request.log.warn(
      { portcullis: { stage: 'session', cookie: name, count: values.length, route: ctx.route } },
      'portcullis: several cookies with the session cookie name (cookie tossing?); treated as no session'
    )
    return AMBIGUOUS
  }
  const raw = values[0]
  if (raw.length === 0) return undefined // a cleared cookie
  if (raw.length > MAX_COOKIE_VALUE) return INVALID
  // The core keeps values raw; @fastify/cookie serialises with encodeURIComponent, so a base64
  // signature arrives with %2B / %2F / %3D (and secure-session's ';' as %3B).
  if (raw.indexOf('%') === -1) return raw
  try {
    return decodeURIComponent(raw)
  } catch {
    return INVALID
  }
}

function isOutcome (v: string | Outcome): v is Outcome {
  return typeof v !== 'string'
}

/**
 * Check what an app's function returned and fill in what the source knows. A malformed identity
 * is a programming error: throwing makes the core fail the request closed (500), and the message
 * names the function, never a value.
 */
export function normalize (result: IdentityResult, fill: { sessionId?: string, expiresAt?: number }, what: string, recheck: Recheck | undefined): Outcome {
  if (result === null || result === undefined) return undefined
  if (typeof result !== 'object' || typeof result.id !== 'string' || result.id.length === 0) {
    throw new TypeError(`${what} must return an identity { id: string, ... }, null or undefined`)
  }
  if (result.sessionId !== undefined && (typeof result.sessionId !== 'string' || result.sessionId.length === 0)) {
    throw new TypeError(`${what}: identity.sessionId must be a non-empty string`)
  }
  if (result.expiresAt !== undefined && (typeof result.expiresAt !== 'number' || Number.isNaN(result.expiresAt))) {
    throw new TypeError(`${what}: identity.expiresAt must be epoch milliseconds`)
  }
  let identity = result
  if ((identity.sessionId === undefined && fill.sessionId !== undefined) || (identity.expiresAt === undefined && fill.expiresAt !== undefined)) {
    identity = { ...identity, sessionId: identity.sessionId ?? fill.sessionId, expiresAt: identity.expiresAt ?? fill.expiresAt }
  }
  if (identity.expiresAt !== undefined && identity.expiresAt <= Date.now()) return EXPIRED
  return { identity, recheck }
}

/** Source 1: a session id in a `@fastify/cookie` signed cookie, loaded by the app. */
export function signedCookieSource (fastify: FastifyInstance, opts: SignedCookieSource): Source {
  const name = opts.cookieName
  const load = opts.load
  const unsign = (fastify as unknown as { unsignCookie: Unsign }).unsignCookie
  const cache = new Lru<string>(opts.cacheSize ?? 1000)
  const recheck: Recheck = (identity) => identity.sessionId === undefined ? null : load(identity.sessionId)

  function loaded (result: IdentityResult, sessionId: string): Outcome {
    // verified but unknown: the session ended (logout, expiry, store flush)
    if (result === null || result === undefined) return EXPIRED
    return normalize(result, { sessionId }, 'signedCookie.load()', recheck)
  }

  return {
    label: `signed cookie "${name}"`,
    resolve (ctx) {
      const value = cookieValue(ctx, name)
      if (isOutcome(value)) return value
      let sessionId = cache.get(value)
      if (sessionId === undefined) {
        // constant-time HMAC comparison over every configured secret (newest first); a value
        // signed with a retired secret, tampered, or unsigned does not verify
        const r = unsign(value)
        if (!r.valid || r.value === null || r.value.length === 0) return INVALID
        sessionId = r.value
        cache.set(value, sessionId)
      }
      const id = sessionId
      const result = load(id)
      return isPromise(result) ? result.then((r) => loaded(r, id)) : loaded(result, id)
    },
    close: () => cache.clear()
  }
}

interface FastifySessionLike {
  sessionId?: unknown
  encryptedSessionId?: unknown
  cookie?: { expires?: unknown, originalExpires?: unknown, toJSON?: () => { expires?: unknown } } | null
  [key: string]: unknown
}

type DecryptSession = (signed: string, request: FastifyRequest, done: (err?: Error) => void) => void

const kRevokers = Symbol.for('portcullis.cookie-session.store-revokers')
type HookedStore = FastifySessionStoreLike & { [kRevokers]?: Set<(sessionId: string) => void> }

/**
 * Source 2: `@fastify/session`. Its `onRequest` hook has already restored `request.session` from
 * the signed cookie (app-level hooks run before the route's); the adapter only checks that the
 * cookie was one, unambiguous, and is the one the session was restored from.
 */
export function fastifySessionSource (fastify: FastifyInstance, opts: FastifySessionSource, onDestroy: (sessionId: string) => void): Source {
  const name = opts.cookieName ?? 'sessionId'
  const prefix = opts.cookiePrefix ?? ''
  const identify = opts.identify
  const decrypt = (fastify as unknown as { decryptSession: DecryptSession }).decryptSession
  let store: HookedStore | undefined
  const hooked = new Set<HookedStore>()

  const recheck: Recheck = (identity) => new Promise((resolve, reject) => {
    const sessionId = identity.sessionId
    if (store === undefined || sessionId === undefined) return resolve(null)
    store.get(sessionId, (err, data) => {
      if (err !== null && err !== undefined && (err as { code?: string }).code !== 'ENOENT') return reject(err)
      if (data === null || data === undefined) return resolve(null)
      try {
        const out = normalize(identify(data, sessionId), { sessionId, expiresAt: storedExpiry(data) }, 'fastifySession.identify()', recheck)
        resolve(out !== undefined && 'identity' in out ? out.identity : null)
      } catch (e) {
        reject(e)
      }
    })
  })

  function hookStore (s: HookedStore): void {
    // regenerate() and destroy() both end the old session through store.destroy(id): wrapping it
    // once closes the old session's live connections whichever path ended it (logout, login's
    // fixation defence, an expired session found at restore).
    let revokers = s[kRevokers]
    if (revokers === undefined) {
      const set = new Set<(sessionId: string) => void>()
      revokers = set
      const original = s.destroy
      s[kRevokers] = set
      s.destroy = function portcullisSessionDestroy (this: FastifySessionStoreLike, sessionId, callback) {
        // closing sockets must never stop the session itself from ending (logout fails open else)
        for (const fn of set) {
          try {
            fn(sessionId)
          } catch (err) {
            fastify.log.error({ err }, 'portcullis: closing a destroyed session\'s connections failed')
          }
        }
        return original.call(this, sessionId, callback)
      }
    }
    revokers.add(onDestroy)
    hooked.add(s)
  }

  function fromSession (request: FastifyRequest, signed: string): Outcome {
    const session = (request as unknown as { session?: FastifySessionLike | null }).session
    const s = (request as unknown as { sessionStore?: HookedStore }).sessionStore
    if (s !== undefined && s !== store) {
      store = s
      if (!hooked.has(s)) hookStore(s)
    }
    // a restored session carries the signed id it was restored from; anything else (bad
    // signature, unknown or expired id) was replaced by a fresh session by @fastify/session
    if (session === null || session === undefined || typeof session.sessionId !== 'string' || session.encryptedSessionId !== signed) return INVALID
    const sessionId = session.sessionId
    return normalize(identify(session, sessionId), { sessionId, expiresAt: requestExpiry(session) }, 'fastifySession.identify()', recheck)
  }

  return {
    label: `@fastify/session cookie "${name}"`,
    resolve (ctx) {
      const value = cookieValue(ctx, name)
      if (isOutcome(value)) return value
      if (prefix.length > 0 && !value.startsWith(prefix)) return INVALID
      const signed = value.slice(prefix.length)
      if (signed.length === 0) return undefined
      const request = ctx.request
      if ((request as unknown as { session?: unknown }).session != null) return fromSession(request, signed)
      // its hook did not run for this request (registered in another context): restore now
      return new Promise<Outcome>((resolve, reject) => {
        decrypt(signed, request, (err) => {
          if (err !== undefined && err !== null) return reject(err)
          try {
            resolve(fromSession(request, signed))
          } catch (e) {
            reject(e)
          }
        })
      })
    },
    close () {
      for (const s of hooked) s[kRevokers]?.delete(onDestroy)
      hooked.clear()
    }
  }
}

// @fastify/session restores a session whose stored cookie had `expires` with that date as
// `originalExpires`, and moves `expires` forward (rolling); the store's date is the real end.
function requestExpiry (session: FastifySessionLike): number | undefined {
  const c = session.cookie
  if (c === null || c === undefined) return undefined
  return toEpoch(c.originalExpires ?? c.expires)
}

function storedExpiry (data: FastifySessionLike): number | undefined {
  const c = data.cookie
  if (c === null || c === undefined) return undefined
  return toEpoch(typeof c.toJSON === 'function' ? c.toJSON().expires : c.expires)
}

function toEpoch (v: unknown): number | undefined {
  if (v === null || v === undefined) return undefined
  const t = v instanceof Date ? v.getTime() : typeof v === 'string' || typeof v === 'number' ? new Date(v).getTime() : NaN
  return Number.isNaN(t) ? undefined : t
}

interface SecureSessionLike {
  get: (key: string) => unknown
  data: () => Record<string, any> | undefined
}
type DecodeSecureSession = (cookie: string, log?: unknown, sessionName?: string) => SecureSessionLike | null

/** Source 3: `@fastify/secure-session`, decoded (authenticated decryption) with its own API. */
export function secureSessionSource (fastify: FastifyInstance, opts: SecureSessionSource): Source {
  const sessionName = opts.sessionName ?? 'session'
  const name = opts.cookieName ?? sessionName
  const expiry = opts.expiry ?? 86401
  const signed = opts.signed === true
  const identify = opts.identify
  const decode = (fastify as unknown as { decodeSecureSession: DecodeSecureSession }).decodeSecureSession
  const unsign = signed ? (fastify as unknown as { unsignCookie: Unsign }).unsignCookie : undefined

  return {
    label: `@fastify/secure-session cookie "${name}"`,
    resolve (ctx) {
      let value = cookieValue(ctx, name)
      if (isOutcome(value)) return value
      if (unsign !== undefined) {
        const r = unsign(value)
        if (!r.valid || r.value === null) return INVALID
        value = r.value
      }
      // null: malformed, not decryptable with any configured key (tampered, retired key), or past
      // its expiry — secure-session does not say which, and none of them is a session
      const session = decode(value, ctx.request.log, sessionName)
      if (session === null) return INVALID
      const ts = session.get('__ts')
      const expiresAt = typeof ts === 'number' ? (ts + expiry) * 1000 : undefined
      return normalize(identify(session.data() ?? {}), { expiresAt }, 'secureSession.identify()', undefined)
    }
  }
}

/** Source 4: the app's HTTP authentication (Basic, Bearer, API key headers). */
export function authenticateSource (authenticate: Authenticate): Source {
  function settle (r: IdentityResult | false): Outcome {
    if (r === false) return AUTH_FAILED
    return normalize(r, {}, 'authenticate()', undefined)
  }
  return {
    label: 'authenticate()',
    resolve (ctx) {
      const r = authenticate(ctx.request)
      return isPromise(r) ? r.then(settle) : settle(r)
    }
  }
}

export function isPromise<T> (v: MaybePromise<T>): v is Promise<T> {
  return v !== null && typeof v === 'object' && typeof (v as Promise<T>).then === 'function'
}
