import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import {
  addConnectionGuard, CloseCodes, denialOf, type ConnectionContext, type ConnectionGuard, type ConnectionGuardFactory,
  type Denial, type PortcullisIdentity, type StageResult
} from '@portcullis/policy'
import type { CookieSessionOptions, PortcullisSessions, RevokeListener, SessionRequirement } from './types.js'
import { SessionClock, type Recheck } from './clock.js'
import {
  authenticateSource, fastifySessionSource, isPromise, secureSessionSource, signedCookieSource,
  type Outcome, type Problem, type Source
} from './sources.js'
import {
  PORTCULLIS_AUTH_FAILED, PORTCULLIS_COOKIE_SESSION_INVALID_OPTION, PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN,
  PORTCULLIS_SESSION_AMBIGUOUS, PORTCULLIS_SESSION_EXPIRED, PORTCULLIS_SESSION_INVALID, PORTCULLIS_SESSION_REQUIRED
} from './errors.js'

const defaults = Object.freeze({
  session: 'required' as SessionRequirement,
  revalidateMs: 0,
  // a session store that never answers a re-check must not keep connections open
  recheckTimeoutMs: 5000
})

const REQUIREMENTS: readonly unknown[] = ['required', 'optional', false]
const OPTION_KEYS = new Set(['session', 'signedCookie', 'fastifySession', 'secureSession', 'authenticate', 'revalidateMs', 'revalidate', 'recheckTimeoutMs', 'onRevoke', 'challenge'])
const SOURCE_KEYS = {
  signedCookie: new Set(['cookieName', 'load', 'cacheSize']),
  fastifySession: new Set(['cookieName', 'cookiePrefix', 'identify']),
  secureSession: new Set(['sessionName', 'cookieName', 'expiry', 'signed', 'identify'])
}
const REVOKED_REASON = 'session revoked'
// A revocation that lands between a handshake's check and its open must still close it: ids
// revoked in the last 30 s are refused when a connection attaches (bounded).
const RECENT_REVOKE_MS = 30_000
const RECENT_REVOKE_MAX = 10_000

// Denials are built once: the same frozen values on every request, both doors.
const DENIALS = Object.freeze({
  none: Object.freeze(denialOf(new PORTCULLIS_SESSION_REQUIRED())),
  ambiguous: Object.freeze(denialOf(new PORTCULLIS_SESSION_AMBIGUOUS())),
  invalid: Object.freeze(denialOf(new PORTCULLIS_SESSION_INVALID())),
  'auth-failed': Object.freeze(denialOf(new PORTCULLIS_AUTH_FAILED())),
  expired: Object.freeze(denialOf(new PORTCULLIS_SESSION_EXPIRED()))
})

type Denials = typeof DENIALS

/** The same denials carrying a `WWW-Authenticate` challenge (RFC 9110 §11.6.1), built once. */
function withChallenge (challenge: string | undefined): Denials {
  if (challenge === undefined) return DENIALS
  const headers = Object.freeze({ 'www-authenticate': challenge })
  const out: Record<string, Readonly<Denial>> = {}
  for (const [key, d] of Object.entries(DENIALS)) out[key] = Object.freeze({ ...d, headers })
  return Object.freeze(out) as Denials
}

// When several sources fail, the denial names the most telling problem.
const SEVERITY: Record<Problem, number> = { ambiguous: 4, invalid: 3, 'auth-failed': 2, expired: 1 }

// checks no message and closes nothing: the core keeps no guard for it (no call per message)
const PASS: ConnectionGuard = Object.freeze({})

async function portcullisCookieSession (fastify: FastifyInstance, opts: CookieSessionOptions): Promise<void> {
  validateOptions(opts)
  // keys set to undefined keep their default (`session: undefined` is `'required'`)
  const options: CookieSessionOptions & typeof defaults = { ...defaults }
  for (const key of Object.keys(opts) as Array<keyof CookieSessionOptions>) {
    if (opts[key] !== undefined) Object.assign(options, { [key]: opts[key] })
  }

  const denials = withChallenge(options.challenge)
  const listeners = new Set<RevokeListener>()
  if (options.onRevoke !== undefined) listeners.add(options.onRevoke)
  const recentlyRevoked = new Map<string, number>()
  const clock = new SessionClock({ revalidateMs: options.revalidateMs, recheckTimeoutMs: options.recheckTimeoutMs, log: fastify.log })

  const sources: Source[] = []
  if (options.signedCookie !== undefined) {
    if (!fastify.hasDecorator('unsignCookie')) {
      throw new PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN('signedCookie needs @fastify/cookie registered with a secret before this plugin')
    }
    sources.push(signedCookieSource(fastify, options.signedCookie))
  }
  if (options.fastifySession !== undefined) {
    if (!fastify.hasDecorator('decryptSession')) {
      throw new PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN('fastifySession needs @fastify/session registered before this plugin')
    }
    sources.push(fastifySessionSource(fastify, options.fastifySession, function portcullisSessionDestroyed (sessionId) {
      sessions.revoke(sessionId)
    }))
  }
  if (options.secureSession !== undefined) {
    if (!fastify.hasDecorator('decodeSecureSession')) {
      throw new PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN('secureSession needs @fastify/secure-session registered before this plugin')
    }
    if (options.secureSession.signed === true && !fastify.hasDecorator('unsignCookie')) {
      throw new PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN('secureSession.signed needs @fastify/cookie registered with a secret')
    }
    sources.push(secureSessionSource(fastify, options.secureSession))
  }
  if (options.authenticate !== undefined) sources.push(authenticateSource(options.authenticate))
  const labels = sources.map(s => s.label).join(', ')

  function revokeLocal (sessionId: string, reason: string = REVOKED_REASON): number {
    if (typeof sessionId !== 'string' || sessionId.length === 0) throw new TypeError('revoke(sessionId): sessionId must be a non-empty string')
    const text = closeReason(reason)
    rememberRevoked(sessionId)
    const closed = fastify.wsPolicy.closeSession(sessionId, CloseCodes.SESSION_REVOKED, text)
    // the id is a credential for some stores: log the count, not the id
    if (closed > 0) fastify.log.info({ portcullis: { stage: 'session', revoked: closed } }, 'portcullis: session revoked, live connections closed')
    return closed
  }

  const sessions: PortcullisSessions = {
    revoke (sessionId, reason = REVOKED_REASON) {
      const closed = revokeLocal(sessionId, reason)
      const event = { sessionId, reason: closeReason(reason), closed }
      for (const listener of listeners) {
        try {
          listener(event)
        } catch (err) {
          fastify.log.error({ err }, 'portcullis: onRevoke listener failed')
        }
      }
      return closed
    },
    revokeLocal,
    onRevoke (listener) {
      if (typeof listener !== 'function') throw new TypeError('onRevoke(listener): listener must be a function')
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    get tracked () {
      return clock.size
    }
  }

  fastify.decorate('portcullisSessions', sessions)

  fastify.wsPolicy.addStage<SessionRequirement, SessionRequirement>({
    name: 'session',
    phase: 'identity',
    option: 'session',
    compile (value) {
      const v = value === undefined ? options.session : value
      if (!REQUIREMENTS.includes(v)) throw new TypeError('session must be \'required\', \'optional\' or false')
      return v
    },
    evaluate (ctx, mode) {
      if (mode === false) return undefined
      return run(ctx, mode, 0, undefined)
    },
    describe: (mode) => mode === false ? 'off' : `${mode} (${labels})`
  })

  fastify.addHook('onClose', function portcullisCookieSessionClose (_instance, done) {
    clock.stop()
    recentlyRevoked.clear()
    for (const s of sources) s.close?.()
    done()
  })

  /**
   * Try the sources in order (cookie sources, then `authenticate`); the first identity wins and
   * the rest do not run. Synchronous while the sources answer synchronously.
   */
  function run (ctx: ConnectionContext, mode: 'required' | 'optional', from: number, worst: Problem | undefined): StageResult | Promise<StageResult> {
    for (let i = from; i < sources.length; i++) {
      const out = sources[i].resolve(ctx)
      if (isPromise(out)) {
        const next = i + 1
        return out.then((o) => o !== undefined && 'identity' in o ? accept(ctx, o) : run(ctx, mode, next, worse(worst, o)))
      }
      if (out !== undefined && 'identity' in out) return accept(ctx, out)
      worst = worse(worst, out)
    }
    if (mode === 'required') return denials[worst ?? 'none']
    if (worst !== undefined) {
      ctx.request.log.info({ portcullis: { stage: 'session', code: denials[worst].code, route: ctx.route } }, 'portcullis: unusable credentials ignored on an optional-session route')
    }
    return undefined
  }

  function accept (ctx: ConnectionContext, out: { identity: PortcullisIdentity, recheck: Recheck | undefined }): undefined {
    const identity = out.identity
    ctx.state.identity = identity
    const recheck = options.revalidate ?? out.recheck
    if (identity.sessionId !== undefined || clock.needs(identity, recheck)) {
      addConnectionGuard(ctx.state, sessionGuard(recheck))
    }
    return undefined
  }

  /**
   * The core creates connection guards when a connection opens (either door) and closes them when
   * it closes: that is where a connection joins and leaves the expiry clock. The guard itself
   * passes every message.
   */
  // one factory per re-check function (a source's lookup or the app's revalidate: a handful, made
  // at startup), not a closure per handshake; the identity is the one the core indexes the
  // connection by (state.identity)
  const guardFactories = new Map<Recheck | undefined, ConnectionGuardFactory>()
  function sessionGuard (recheck: Recheck | undefined): ConnectionGuardFactory {
    let factory = guardFactories.get(recheck)
    if (factory === undefined) guardFactories.set(recheck, (factory = makeSessionGuard(recheck)))
    return factory
  }

  function makeSessionGuard (recheck: Recheck | undefined): ConnectionGuardFactory {
    return function portcullisSessionGuard ({ socket, state }) {
      const identity = state.identity as PortcullisIdentity
      const sessionId = identity.sessionId
      if (sessionId !== undefined && wasRevoked(sessionId)) {
        // revoked while this handshake was in flight; closed after attach has wired its listeners
        setImmediate(() => { if (socket.readyState <= 1) socket.close(CloseCodes.SESSION_REVOKED, REVOKED_REASON) })
        return PASS
      }
      if (!clock.needs(identity, recheck)) return PASS
      const unwatch = clock.watch(identity, socket, recheck)
      return { close: unwatch }
    }
  }

  function rememberRevoked (sessionId: string): void {
    const now = Date.now()
    recentlyRevoked.delete(sessionId)
    recentlyRevoked.set(sessionId, now + RECENT_REVOKE_MS)
    // insertion order is expiry order: drop from the front
    for (const [id, until] of recentlyRevoked) {
      if (until > now && recentlyRevoked.size <= RECENT_REVOKE_MAX) break
      recentlyRevoked.delete(id)
    }
  }

  function wasRevoked (sessionId: string): boolean {
    const until = recentlyRevoked.get(sessionId)
    return until !== undefined && until > Date.now()
  }
}

function worse (a: Problem | undefined, out: Outcome): Problem | undefined {
  if (out === undefined || !('problem' in out)) return a
  return a === undefined || SEVERITY[out.problem] > SEVERITY[a] ? out.problem : a
}

/** A close reason is at most 123 bytes (RFC 6455 §5.5: control frame payload ≤ 125, minus the code). */
function closeReason (reason: string): string {
  if (typeof reason !== 'string' || reason.length === 0) return REVOKED_REASON
  // 123 UTF-16 units are at least 123 UTF-8 bytes: only that prefix is ever encoded (linear
  // whatever the app passes), and a surrogate pair is never split
  if (reason.length <= 41) return reason // 41 × 3 bytes ≤ 123
  let head = reason.length > 123 ? reason.slice(0, 123) : reason
  const last = head.charCodeAt(head.length - 1)
  if (last >= 0xd800 && last <= 0xdbff) head = head.slice(0, -1)
  const bytes = Buffer.from(head, 'utf8')
  if (bytes.length <= 123) return head
  // back off to the first byte of a UTF-8 sequence (continuation bytes are 10xxxxxx)
  let end = 123
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--
  return bytes.toString('utf8', 0, end)
}

function validateOptions (opts: CookieSessionOptions): void {
  const bad = (why: string): never => { throw new PORTCULLIS_COOKIE_SESSION_INVALID_OPTION(why) }
  if (opts === null || typeof opts !== 'object') bad('options must be an object')
  // a misspelt key (`revalidatems`, `cachesize`) would otherwise be ignored: a check silently off
  for (const key of Object.keys(opts)) {
    if (!OPTION_KEYS.has(key)) bad(`unknown option "${key}" (known: ${[...OPTION_KEYS].join(', ')})`)
  }
  for (const source of ['signedCookie', 'fastifySession', 'secureSession'] as const) {
    const value = opts[source]
    if (value === null || typeof value !== 'object') continue
    for (const key of Object.keys(value)) {
      if (!SOURCE_KEYS[source].has(key)) bad(`${source}: unknown key "${key}" (known: ${[...SOURCE_KEYS[source]].join(', ')})`)
    }
  }
  if (opts.session !== undefined && !REQUIREMENTS.includes(opts.session)) bad('session must be \'required\', \'optional\' or false')
  const sc = opts.signedCookie
  if (sc !== undefined) {
    if (sc === null || typeof sc !== 'object') bad('signedCookie must be an object { cookieName, load }')
    if (!isCookieName(sc.cookieName)) bad('signedCookie.cookieName must be a cookie name (RFC 6265 token)')
    if (typeof sc.load !== 'function') bad('signedCookie.load must be a function (sessionId) => identity | null')
    if (sc.cacheSize !== undefined && !(Number.isInteger(sc.cacheSize) && sc.cacheSize >= 0)) bad('signedCookie.cacheSize must be an integer ≥ 0')
  }
  const fs = opts.fastifySession
  if (fs !== undefined) {
    if (fs === null || typeof fs !== 'object') bad('fastifySession must be an object { identify }')
    if (typeof fs.identify !== 'function') bad('fastifySession.identify must be a function (data, sessionId) => identity | null')
    if (fs.cookieName !== undefined && !isCookieName(fs.cookieName)) bad('fastifySession.cookieName must be a cookie name (RFC 6265 token)')
    if (fs.cookiePrefix !== undefined && typeof fs.cookiePrefix !== 'string') bad('fastifySession.cookiePrefix must be a string')
  }
  const ss = opts.secureSession
  if (ss !== undefined) {
    if (ss === null || typeof ss !== 'object') bad('secureSession must be an object { identify }')
    if (typeof ss.identify !== 'function') bad('secureSession.identify must be a function (data) => identity | null')
    if (ss.sessionName !== undefined && (typeof ss.sessionName !== 'string' || ss.sessionName.length === 0)) bad('secureSession.sessionName must be a non-empty string')
    if (ss.cookieName !== undefined && !isCookieName(ss.cookieName)) bad('secureSession.cookieName must be a cookie name (RFC 6265 token)')
    if (ss.expiry !== undefined && !(typeof ss.expiry === 'number' && ss.expiry > 0)) bad('secureSession.expiry must be a number of seconds > 0')
    if (ss.signed !== undefined && typeof ss.signed !== 'boolean') bad('secureSession.signed must be a boolean')
  }
  if (opts.authenticate !== undefined && typeof opts.authenticate !== 'function') bad('authenticate must be a function (request) => identity | null | false')
  if (sc === undefined && fs === undefined && ss === undefined && opts.authenticate === undefined) {
    bad('configure at least one of signedCookie, fastifySession, secureSession, authenticate')
  }
  if (opts.revalidateMs !== undefined && !(Number.isInteger(opts.revalidateMs) && opts.revalidateMs >= 0 && opts.revalidateMs <= 0x7fffffff)) {
    bad('revalidateMs must be an integer number of milliseconds ≥ 0 (0 = off)')
  }
  if (opts.recheckTimeoutMs !== undefined && !(Number.isInteger(opts.recheckTimeoutMs) && opts.recheckTimeoutMs > 0 && opts.recheckTimeoutMs <= 0x7fffffff)) {
    bad('recheckTimeoutMs must be an integer number of milliseconds from 1 to 2147483647')
  }
  if (opts.revalidate !== undefined && typeof opts.revalidate !== 'function') bad('revalidate must be a function (identity) => identity | boolean | null')
  if (opts.onRevoke !== undefined && typeof opts.onRevoke !== 'function') bad('onRevoke must be a function (event) => void')
  if (opts.challenge !== undefined && !isChallenge(opts.challenge)) {
    bad('challenge must be a WWW-Authenticate value: 1 to 1024 printable ASCII characters, e.g. \'Bearer realm="chat"\'')
  }
}

// RFC 9110 §5.5 field-value, restricted to visible ASCII and spaces: no CR/LF (header injection)
function isChallenge (v: unknown): boolean {
  if (typeof v !== 'string' || v.length === 0 || v.length > 1024) return false
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (c < 0x20 || c > 0x7e) return false
  }
  return true
}

// RFC 6265 §4.1.1: cookie-name is an RFC 2616 token (no separators, controls or spaces).
function isCookieName (name: unknown): boolean {
  if (typeof name !== 'string' || name.length === 0 || name.length > 256) return false
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f || '()<>@,;:\\"/[]?={}'.includes(name[i])) return false
  }
  return true
}

const plugin = fp(portcullisCookieSession, {
  name: '@portcullis/cookie-session',
  fastify: '5.x',
  dependencies: ['@portcullis/policy']
})

export default plugin
export { plugin as portcullisCookieSession }
export * as errors from './errors.js'
export type * from './types.js'
