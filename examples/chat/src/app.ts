/**
 * The chat app, as a factory (the server and the tests build it the same way).
 *
 * One WebSocket route, `GET /chat`, and its long-poll twin share ONE policy:
 *   origin   — the allowlist (default: the server's own origin)      @portcullis/origin-guard
 *   session  — a signed session cookie set by POST /login            @portcullis/cookie-session
 *   protocol — `chat.v1` required, JSON messages checked by schema   @portcullis/subprotocols
 * and the same handler serves both doors: the long-poll twin at /chat/_lp/* (@portcullis/fallback).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import fastifyHelmet from '@fastify/helmet'
import fastifyStatic from '@fastify/static'
import fastifyRateLimit from '@fastify/rate-limit'
import portcullis, { type PortcullisOptions } from '@portcullis/policy'
import originGuard, { requireAllowedOrigin, selfOrigin } from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import subprotocols, { json } from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'
import fallbackRedis from '@portcullis/fallback-redis'
import { MAX_MESSAGE_BYTES, MAX_TEXT_CHARS, PROTOCOL, Room, parseSay } from './room.js'
import { memoryShared, redisShared, type Shared } from './shared.js'
import { LoginBackoff, type LoginBackoffOptions } from './login-backoff.js'

declare module 'fastify' {
  // @fastify/rate-limit adds an optional `rateLimit` to every route's config type, which makes
  // that interface a "weak type" (all-optional): TypeScript then refuses a config object holding
  // only symbol keys, as @portcullis/fallback's endpoints carry, when the whole repository is
  // compiled as one program. Declaring that symbol keys belong there keeps both well-typed.
  interface FastifyContextConfig {
    [key: symbol]: unknown
  }
}

export interface ChatOptions {
  /** Origins allowed to open the chat and to log in (`self` = the server's own origin). Default `['self']`. */
  allowedOrigins?: string[]
  /** Secret that signs the session cookie (at least 32 characters). Required. */
  sessionSecret: string
  /** TLS key pair: serve https + wss, and mark the cookie `Secure` with a `__Host-` name. Default: plain http. */
  https?: { key: Buffer | string, cert: Buffer | string }
  /** Fastify's logger option. Default `true`. */
  logger?: FastifyServerOptions['logger']
  /**
   * Test switch: answer every WebSocket upgrade with 503, as a proxy that cannot pass upgrades
   * would, so that clients must fall back to long-poll. Default `false`.
   */
  refuseUpgrades?: boolean
  /**
   * Redis URL for running several nodes: the fallback store (`@portcullis/fallback-redis`), the
   * login sessions, the room's messages and revocations are shared through it. Default: in memory.
   */
  redisUrl?: string
  /** Prefix of the Redis keys and channels. Default `'portcullis-chat:'`. */
  redisPrefix?: string
  /** The client's browser bundle, served at /client.js. Default: read `@portcullis/client/browser` (built by `start`). */
  clientBundle?: Buffer
  /** Session lifetime. Default 8 hours. */
  sessionTtlMs?: number
  /**
   * Per-address limit on `POST /login` (@fastify/rate-limit, keyed by `request.ip`): `max`
   * attempts per `timeWindowMs`, then 429 with `Retry-After`. Default 10 per minute.
   */
  loginRateLimit?: { max?: number, timeWindowMs?: number }
  /**
   * Backoff on repeated failed logins for one account, from any address (429 `LOGIN_BACKOFF`
   * with `Retry-After`). Default: 3 free failures, then 1 s doubling up to 5 minutes.
   */
  loginBackoff?: LoginBackoffOptions
  /** Where Portcullis records its metrics (see `startMetricsServer` in telemetry.ts). Default: the global OpenTelemetry provider (a no-op without an SDK). */
  meterProvider?: PortcullisOptions['meterProvider']
  /** Portcullis's audit sink for every security event (see `jsonLinesAudit` in telemetry.ts). Default: none. */
  audit?: PortcullisOptions['audit']
}

/** Demo accounts. Passwords compared in constant time; a real app would hash them. */
const USERS = new Map([['alice', 'demo'], ['bob', 'demo']])

const publicDir = fileURLToPath(new URL('../public/', import.meta.url))

export async function buildChat (opts: ChatOptions): Promise<FastifyInstance> {
  if (typeof opts.sessionSecret !== 'string' || opts.sessionSecret.length < 32) {
    throw new TypeError('sessionSecret must be a string of at least 32 characters')
  }
  const allowedOrigins = opts.allowedOrigins ?? ['self']
  const ttl = opts.sessionTtlMs ?? 8 * 3600_000
  const secure = opts.https !== undefined
  // RFC 6265bis §4.1.3.2: a `__Host-` cookie is Secure, host-only and path=/ — nobody can toss one in.
  const cookieName = secure ? '__Host-chat' : 'chat'
  const clientJs = loadClientBundle(opts.clientBundle)
  const loginLimit = { max: opts.loginRateLimit?.max ?? 10, timeWindow: opts.loginRateLimit?.timeWindowMs ?? 60_000 }
  if (!Number.isInteger(loginLimit.max) || loginLimit.max < 1) throw new TypeError('loginRateLimit.max must be a whole number ≥ 1')
  if (!Number.isInteger(loginLimit.timeWindow) || loginLimit.timeWindow < 1) throw new TypeError('loginRateLimit.timeWindowMs must be a whole number ≥ 1')
  const backoff = new LoginBackoff(opts.loginBackoff)

  const app = Fastify({ logger: opts.logger ?? true, ...(opts.https !== undefined ? { https: opts.https } : {}) })

  const redisUrl = opts.redisUrl === '' ? undefined : opts.redisUrl
  const prefix = opts.redisPrefix ?? 'portcullis-chat:'
  const shared: Shared = redisUrl === undefined ? memoryShared() : await redisShared(redisUrl, prefix, app.log)
  app.addHook('onClose', async function closeShared () { await shared.close() })

  await app.register(portcullis, { websocket: { maxPayload: 64 * 1024 }, meterProvider: opts.meterProvider, audit: opts.audit })
  // after the core, so that @fastify/websocket has marked upgrades (request.ws) and closes the
  // socket once the refusal is sent
  if (opts.refuseUpgrades === true) {
    app.addHook('onRequest', function refuseUpgrades (request, reply, done) {
      if (request.ws) {
        reply.code(503).header('connection', 'close').send({ code: 'UPGRADES_DISABLED', message: 'WebSocket upgrades are disabled on this server' })
        return
      }
      done()
    })
  }

  // Security headers for everything the app serves (the page, its files, the JSON routes and the
  // fallback's responses, which set their own Cache-Control: no-store and nosniff on top).
  await app.register(fastifyHelmet, {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'"],
        // the page talks to its own origin only, over http(s) (login, the fallback) and ws(s)
        connectSrc: [(req: IncomingMessage) => ownOrigin(req, secure ? 'https' : 'http'), (req: IncomingMessage) => ownOrigin(req, secure ? 'wss' : 'ws')],
        baseUri: ["'none'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"]
      }
    },
    // HSTS only where it means something: a browser ignores it over plain http (RFC 6797 §8.1)
    strictTransportSecurity: secure ? { maxAge: 31_536_000, includeSubDomains: false } : false,
    referrerPolicy: { policy: 'no-referrer' },
    xFrameOptions: { action: 'deny' },
    crossOriginOpenerPolicy: { policy: 'same-origin' },
    crossOriginResourcePolicy: { policy: 'same-origin' }
  })
  await app.register(fastifyRateLimit, { global: false })

  await app.register(originGuard, { allow: allowedOrigins })
  await app.register(fastifyCookie, { secret: opts.sessionSecret })
  await app.register(cookieSession, {
    signedCookie: {
      cookieName,
      load (sessionId) {
        const found = shared.getSession(sessionId)
        return found instanceof Promise ? found.then((s) => identity(sessionId, s)) : identity(sessionId, found)
      }
    }
  })
  await app.register(subprotocols, {
    protocols: {
      // `both`: the contract closes a binary message with 1008 like any other wrong message,
      // so the handler refuses binary rather than the type check's 1003.
      [PROTOCOL]: json({
        dataTypes: 'both',
        limits: { maxMessageBytes: MAX_MESSAGE_BYTES },
        schemas: {
          say: {
            type: 'object',
            properties: { type: { const: 'say' }, text: { type: 'string', minLength: 1, maxLength: MAX_TEXT_CHARS } },
            required: ['type', 'text'],
            additionalProperties: false
          }
        }
      })
    }
  })

  if (redisUrl === undefined) {
    await app.register(fallback, {})
  } else {
    // long-poll sessions in Redis: any node can answer any poll; revocations reach every node
    await app.register(fallbackRedis, { redis: redisUrl, keyPrefix: prefix + 'lp:' })
    await app.register(fallback, { store: app.portcullisRedis.store })
  }

  const room = new Room((text) => shared.publish(text))
  shared.onMessage((text) => room.broadcast(text))

  app.get('/chat', {
    websocket: true,
    wsPolicy: { session: 'required', protocols: [PROTOCOL], fallback: true }
  }, function chatHandler (socket, request) {
    const user = request.portcullis?.state.identity?.id
    if (user === undefined) return socket.close(1011, 'no identity')
    room.join(socket, user)
  })

  // Login and logout are state-changing POSTs riding the cookie: the origin guard's own allowlist
  // and decision refuse them from other origins (CSRF), exactly as it refuses the sockets. A
  // client without Origin (curl) is not a browser riding a victim's cookie: let it in.
  const sameAllowlist = requireAllowedOrigin({ missing: 'allow' })

  app.post('/login', {
    config: {
      rateLimit: {
        ...loginLimit,
        errorResponseBuilder: (_request: FastifyRequest, context: { after: string, statusCode: number }) => rateLimited(context)
      }
    },
    preHandler: sameAllowlist,
    schema: {
      body: {
        type: 'object',
        properties: { user: { type: 'string', maxLength: 64 }, password: { type: 'string', maxLength: 256 } },
        required: ['user', 'password'],
        additionalProperties: false
      }
    }
  }, async function login (request, reply) {
    const { user, password } = request.body as { user: string, password: string }
    // refused before the password is checked: a guess made during the wait tells nothing
    const wait = backoff.wait(user)
    if (wait > 0) return tooSoon(reply, wait)
    if (!checkPassword(user, password)) {
      const next = backoff.fail(user)
      reply.code(401)
      if (next > 0) reply.header('retry-after', String(Math.ceil(next / 1000)))
      return { code: 'LOGIN_FAILED', message: 'Unknown user or wrong password' }
    }
    backoff.succeed(user)
    // A new id on every login (no session fixation); the old session, if any, ends.
    await endSession(request, 'logged in again')
    const id = randomBytes(24).toString('base64url')
    await shared.setSession(id, { user, expiresAt: Date.now() + ttl })
    reply.setCookie(cookieName, id, { signed: true, httpOnly: true, sameSite: 'lax', secure, path: '/', maxAge: Math.floor(ttl / 1000) })
    return { user }
  })

  app.post('/logout', { preHandler: sameAllowlist }, async function logout (request, reply) {
    const closed = await endSession(request, 'session revoked')
    reply.clearCookie(cookieName, { path: '/', secure, sameSite: 'lax', httpOnly: true })
    return { closed }
  })

  app.get('/me', async function me (request, reply) {
    const id = sessionIdOf(request)
    const s = id === undefined ? undefined : await shared.getSession(id)
    if (s === undefined || s.expiresAt <= Date.now()) return reply.code(401).send({ code: 'NOT_LOGGED_IN', message: 'Not logged in' })
    return { user: s.user }
  })

  // the page, its script and style, the favicon: revalidated on every load (ETag), so a new
  // version of the page is never mixed with an old script
  await app.register(fastifyStatic, {
    root: publicDir,
    index: ['index.html'],
    cacheControl: false,
    setHeaders (reply) { reply.header('cache-control', 'no-cache') }
  })
  app.get('/favicon.ico', function faviconIco (_request, reply) {
    return reply.redirect('/favicon.svg', 301)
  })
  app.get('/client.js', function clientBundle (_request, reply) {
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(clientJs)
  })

  function sessionIdOf (request: FastifyRequest): string | undefined {
    const raw = request.cookies[cookieName]
    if (raw === undefined) return undefined
    const u = request.unsignCookie(raw)
    return u.valid && u.value !== null ? u.value : undefined
  }

  async function endSession (request: FastifyRequest, reason: string): Promise<number> {
    const id = sessionIdOf(request)
    if (id === undefined) return 0
    await shared.deleteSession(id)
    // closes its live connections on both doors with 4001 (on every node, with Redis)
    return app.portcullisSessions.revoke(id, reason)
  }

  return app
}

function identity (sessionId: string, s: { user: string, expiresAt: number } | undefined): { id: string, sessionId: string, expiresAt: number } | null {
  if (s === undefined || s.expiresAt <= Date.now()) return null
  return { id: s.user, sessionId, expiresAt: s.expiresAt }
}

function checkPassword (user: string, password: string): boolean {
  const expected = USERS.get(user)
  const a = Buffer.from(password)
  const b = Buffer.from(expected ?? 'x'.repeat(password.length))
  return expected !== undefined && a.length === b.length && timingSafeEqual(a, b)
}

function loadClientBundle (bundle: Buffer | undefined): Buffer {
  if (bundle !== undefined) return bundle
  try {
    return readFileSync(fileURLToPath(import.meta.resolve('@portcullis/client/browser')))
  } catch {
    throw new Error('the client bundle is missing: run `node packages/client/scripts/bundle.mjs` (the start script does)')
  }
}

/**
 * The page's own origin for its CSP, in `scheme` (http/https, ws/wss), from the request's Host.
 * The Host is the one the browser used to load the page; it is parsed as an origin first, so a
 * crafted Host cannot inject a directive, and an unparsable one falls back to `'self'`.
 */
function ownOrigin (req: IncomingMessage, scheme: string): string {
  return selfOrigin(scheme, req.headers.host) ?? "'self'"
}

function rateLimited (context: { after: string, statusCode: number }): Error {
  const err = new Error(`Too many login attempts from this address: try again in ${context.after}`) as Error & { statusCode: number, code: string }
  err.statusCode = context.statusCode
  err.code = context.statusCode === 429 ? 'LOGIN_RATE_LIMITED' : 'LOGIN_BANNED'
  return err
}

function tooSoon (reply: FastifyReply, waitMs: number): FastifyReply {
  const seconds = Math.ceil(waitMs / 1000)
  return reply.code(429).header('retry-after', String(seconds))
    .send({ code: 'LOGIN_BACKOFF', message: `Too many failed attempts for this account: try again in ${seconds} s` })
}

export { parseSay }
