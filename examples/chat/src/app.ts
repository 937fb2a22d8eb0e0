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
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import portcullis from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import subprotocols, { json } from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'
import fallbackRedis from '@portcullis/fallback-redis'
import { MAX_MESSAGE_BYTES, MAX_TEXT_CHARS, PROTOCOL, Room, parseSay } from './room.js'
import { memoryShared, redisShared, type Shared } from './shared.js'

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
  const files = loadStaticFiles(opts.clientBundle)

  const app = Fastify({ logger: opts.logger ?? true, ...(opts.https !== undefined ? { https: opts.https } : {}) })

  const redisUrl = opts.redisUrl === '' ? undefined : opts.redisUrl
  const prefix = opts.redisPrefix ?? 'portcullis-chat:'
  const shared: Shared = redisUrl === undefined ? memoryShared() : await redisShared(redisUrl, prefix, app.log)
  app.addHook('onClose', async function closeShared () { await shared.close() })

  await app.register(portcullis, { websocket: { maxPayload: 64 * 1024 } })
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

  app.post('/login', {
    schema: {
      body: {
        type: 'object',
        properties: { user: { type: 'string', maxLength: 64 }, password: { type: 'string', maxLength: 256 } },
        required: ['user', 'password'],
        additionalProperties: false
      }
    }
  }, async function login (request, reply) {
    if (!originAllowed(request)) return reply.code(403).send({ code: 'ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' })
    const { user, password } = request.body as { user: string, password: string }
    if (!checkPassword(user, password)) return reply.code(401).send({ code: 'LOGIN_FAILED', message: 'Unknown user or wrong password' })
    // A new id on every login (no session fixation); the old session, if any, ends.
    await endSession(request, 'logged in again')
    const id = randomBytes(24).toString('base64url')
    await shared.setSession(id, { user, expiresAt: Date.now() + ttl })
    reply.setCookie(cookieName, id, { signed: true, httpOnly: true, sameSite: 'lax', secure, path: '/', maxAge: Math.floor(ttl / 1000) })
    return { user }
  })

  app.post('/logout', async function logout (request, reply) {
    if (!originAllowed(request)) return reply.code(403).send({ code: 'ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' })
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

  for (const [path, file] of Object.entries(files)) {
    app.get(path, function staticFile (request, reply) {
      securityHeaders(request, reply)
      reply.type(file.type).send(file.body)
    })
  }

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

  // Login and logout are state-changing POSTs: refuse them from other origins (CSRF). Browsers
  // send Origin on every POST; a client without one (curl) is not a browser riding a cookie.
  function originAllowed (request: FastifyRequest): boolean {
    const origin = request.headers.origin
    if (origin === undefined) return true
    return allowedOrigins.some((o) => o === 'self' ? origin === `${request.protocol}://${request.host}` : o === origin)
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

interface StaticFile {
  type: string
  body: Buffer
}

function loadStaticFiles (bundle: Buffer | undefined): Record<string, StaticFile> {
  let client = bundle
  if (client === undefined) {
    try {
      client = readFileSync(fileURLToPath(import.meta.resolve('@portcullis/client/browser')))
    } catch {
      throw new Error('the client bundle is missing: run `node packages/client/scripts/bundle.mjs` (the start script does)')
    }
  }
  return {
    '/': { type: 'text/html; charset=utf-8', body: readFileSync(publicDir + 'index.html') },
    '/app.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(publicDir + 'app.js') },
    '/style.css': { type: 'text/css; charset=utf-8', body: readFileSync(publicDir + 'style.css') },
    '/client.js': { type: 'text/javascript; charset=utf-8', body: client }
  }
}

function securityHeaders (request: FastifyRequest, reply: FastifyReply): void {
  const ws = request.protocol === 'https' ? 'wss' : 'ws'
  reply.header('content-security-policy',
    `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' ${ws}://${request.host}; ` +
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
  reply.header('x-content-type-options', 'nosniff')
  reply.header('referrer-policy', 'no-referrer')
  reply.header('cache-control', 'no-store')
}

export { parseSay }
