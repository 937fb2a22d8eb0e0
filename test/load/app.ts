/**
 * The Portcullis-protected app that the conformance, fault and load suites attack, with the full
 * policy of real plugins: the core, `@portcullis/origin-guard` (same-origin plus a list),
 * `@portcullis/cookie-session` (a `@fastify/cookie` signed session cookie is required),
 * `@portcullis/subprotocols` (`echo.v1`, type-checked, and `json.v1`, JSON-inspected, one of
 * which must be negotiated), `@portcullis/fallback` (the long-poll twin), and a probe stage whose
 * message guard records every message the inspection layer is shown — so a test can assert that
 * no broken message ever reached it.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import portcullis from '../../packages/policy/src/index.js'
import type { PortcullisOptions, PortcullisSocket, StageDefinition } from '../../packages/policy/src/index.js'
import originGuard from '../../packages/origin-guard/src/index.js'
import cookieSession from '../../packages/cookie-session/src/index.js'
import subprotocols, { json } from '../../packages/subprotocols/src/index.js'
import fallback, { type FallbackOptions } from '../../packages/fallback/src/index.js'

export const COOKIE_SECRET = 'reliability-suite-secret-0123456789abcdef'
/** The subprotocols `/ws` accepts, in preference order. */
export const PROTOCOLS = ['echo.v1', 'json.v1']

/** What the probe guard saw: every message handed to the inspection layer. */
export interface Probe {
  /** Messages the guard saw, in order. */
  seen: Array<{ isBinary: boolean, data: Buffer }>
  /** Text messages that were not valid UTF-8 when the guard saw them (must stay 0). */
  brokenText: number
  /** Guards created (one per connection that opened, either door). */
  opened: number
  /** Guards whose `close` ran (the core frees every connection). */
  closedGuards: number
  /** When false, the probe stops copying messages (load runs): it only counts. */
  record: boolean
  count: number
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true })

function isUtf8 (b: Buffer): boolean {
  try {
    fatalUtf8.decode(b)
    return true
  } catch {
    return false
  }
}

/** A custom-phase stage that installs a recording guard on every allowed connection. */
export function probeStage (probe: Probe): StageDefinition<undefined, undefined> {
  return {
    name: 'reliability-probe',
    phase: 'custom',
    evaluate (ctx) {
      const guards = (ctx.state.guards ??= [])
      guards.push(() => {
        probe.opened++
        return {
          message (data, isBinary) {
            probe.count++
            if (!probe.record) return undefined
            const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data)
            if (!isBinary && !isUtf8(buf)) probe.brokenText++
            probe.seen.push({ isBinary, data: buf })
            return undefined
          },
          close () { probe.closedGuards++ }
        }
      })
    }
  }
}

export interface ProtectedApp {
  app: FastifyInstance
  probe: Probe
  /** A `Cookie` header value carrying a signed session for `user` (the session id is `user`). */
  cookieFor: (user: string) => string
}

export interface ProtectedAppOptions {
  portcullis?: PortcullisOptions
  fastify?: FastifyServerOptions
  fallback?: FallbackOptions
  /** Origins allowed on `/ws` besides the server's own. */
  origins?: string[]
  /** Route handler; default echoes every message (text as text, binary as binary). */
  handler?: (socket: PortcullisSocket) => void
  /** Copy every message the probe sees (default true; load runs turn it off). */
  record?: boolean
}

/** The default handler: echo each message back with its type. */
export function echo (socket: PortcullisSocket): void {
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    socket.send(isBinary ? data : data.toString('utf8'))
  })
}

/**
 * Build the protected app: `/ws` (WebSocket and its long-poll twin at `/ws/_lp/*`), a plain
 * `GET /plain` route, and the probe. Sessions: any id signed with `COOKIE_SECRET` is valid.
 */
export async function protectedApp (opts: ProtectedAppOptions = {}): Promise<ProtectedApp> {
  const probe: Probe = { seen: [], brokenText: 0, opened: 0, closedGuards: 0, record: opts.record ?? true, count: 0 }
  const app = Fastify({ logger: false, ...opts.fastify })
  await app.register(fastifyCookie, { secret: COOKIE_SECRET })
  await app.register(portcullis, opts.portcullis ?? {})
  await app.register(originGuard, { allow: ['self', ...(opts.origins ?? [])] })
  await app.register(cookieSession, {
    signedCookie: { cookieName: 'sid', load: (sessionId) => ({ id: `user:${sessionId}`, sessionId }) }
  })
  await app.register(subprotocols, {
    // the echo protocol leaves size to ws's maxPayload, so framing limits are what is tested
    protocols: { 'echo.v1': { dataTypes: 'both', limits: { maxMessageBytes: false } }, 'json.v1': json() }
  })
  await app.register(fallback, { ...opts.fallback })
  app.wsPolicy.addStage(probeStage(probe))
  app.get('/plain', async () => ({ ok: true }))
  const handler = opts.handler ?? echo
  app.get('/ws', { websocket: true, wsPolicy: { protocols: PROTOCOLS, fallback: true } }, (socket) => handler(socket))
  return {
    app,
    probe,
    cookieFor: (user) => `sid=${encodeURIComponent(app.signCookie(user))}`
  }
}

/**
 * Records every `unhandledRejection`, `uncaughtException` and `warning` of the process while
 * armed, so a fault test can assert that none fired. `stop()` removes the listeners.
 */
export function watchProcess (): { rejections: unknown[], exceptions: unknown[], warnings: string[], stop: () => void } {
  const seen = { rejections: [] as unknown[], exceptions: [] as unknown[], warnings: [] as string[] }
  const onRejection = (reason: unknown): void => { seen.rejections.push(reason) }
  const onException = (err: unknown): void => { seen.exceptions.push(err) }
  // MaxListenersExceededWarning and friends point at leaked listeners
  const onWarning = (w: Error): void => { seen.warnings.push(`${w.name}: ${w.message}`) }
  process.on('unhandledRejection', onRejection)
  process.on('uncaughtException', onException)
  process.on('warning', onWarning)
  return {
    ...seen,
    stop () {
      process.removeListener('unhandledRejection', onRejection)
      process.removeListener('uncaughtException', onException)
      process.removeListener('warning', onWarning)
    }
  }
}
