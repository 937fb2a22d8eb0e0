/**
 * The Portcullis-protected app that the conformance, fault and load suites attack: the core,
 * an origin stage, and a probe stage whose message guard records every message the inspection
 * layer is shown — so a test can assert that no broken message ever reached it.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import portcullis from '../../packages/policy/src/index.js'
import type { PortcullisOptions, PortcullisSocket, StageDefinition } from '../../packages/policy/src/index.js'
import { testOriginStage } from '../../packages/policy/test/helpers.js'

/** What the probe guard saw: every message handed to the inspection layer. */
export interface Probe {
  /** Messages the guard saw, in order. */
  seen: Array<{ isBinary: boolean, data: Buffer }>
  /** Text messages that were not valid UTF-8 when the guard saw them (must stay 0). */
  brokenText: number
  /** Guards created (one per connection that opened). */
  opened: number
  /** Guards whose `close` ran (the core frees every connection). */
  closedGuards: number
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
}

export interface ProtectedAppOptions {
  portcullis?: PortcullisOptions
  fastify?: FastifyServerOptions
  /** Origins allowed on `/ws` besides the server's own (added once the port is known). */
  origins?: string[]
  /** Route handler; default echoes every message (text as text, binary as binary). */
  handler?: (socket: PortcullisSocket) => void
  /** Register extra routes before `/ws` is added (e.g. a plain HTTP route). */
  extraRoutes?: (app: FastifyInstance) => void
}

/** The default handler: echo each message back with its type. */
export function echo (socket: PortcullisSocket): void {
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    socket.send(isBinary ? data : data.toString('utf8'))
  })
}

/**
 * Build the protected app: `/ws` allows the origins given (tests add their own origin,
 * `http://127.0.0.1:<port>`, via `allowAnyLoopback`), a plain `GET /plain` route, and the probe.
 */
export async function protectedApp (opts: ProtectedAppOptions = {}): Promise<ProtectedApp> {
  const probe: Probe = { seen: [], brokenText: 0, opened: 0, closedGuards: 0 }
  const app = Fastify({ logger: false, ...opts.fastify })
  await app.register(portcullis, opts.portcullis ?? {})
  app.wsPolicy.addStage(loopbackOriginStage)
  app.wsPolicy.addStage(probeStage(probe))
  app.get('/plain', async () => ({ ok: true }))
  opts.extraRoutes?.(app)
  const handler = opts.handler ?? echo
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: opts.origins ?? [] } }, (socket) => handler(socket))
  return { app, probe }
}

/**
 * The stand-in origin stage (the core's test stage) widened to accept the server's own
 * loopback origin on any port, since tests only learn the port after `listen`.
 */
const loopbackOriginStage: StageDefinition<string[], Set<string>> = {
  ...testOriginStage,
  name: 'loopback-origin',
  evaluate (ctx, allowed) {
    const o = ctx.origin
    if (o !== undefined && (allowed.has(o) || o === `http://${ctx.host}`)) return
    return { status: 403, code: 'TEST_ORIGIN_DENIED', reason: 'Origin not allowed' }
  }
}
