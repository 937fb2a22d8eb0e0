/**
 * A real Portcullis server for the client's tests: the core, the origin guard, a session from an
 * `Authorization: Bearer <user>` header (cookie-session's `authenticate` source), the `echo.v1`
 * subprotocol and the long-poll fallback. Switches make the WebSocket door fail the ways the
 * client must survive: refused upgrades, hanging upgrades.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import portcullis, { type PortcullisSocket as ServerSocket } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import subprotocols from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'
import { PortcullisSocket, type PortcullisCloseEvent, type PortcullisSocketOptions } from '../src/index.js'
import { listen } from '../../../test/helpers/index.js'

export interface EchoServerOptions {
  /** Answer every upgrade with 503 (a proxy that cannot pass WebSockets). */
  refuseUpgrades?: boolean
  /** Never answer upgrades (a proxy that strips `Upgrade` and holds the request). */
  hangUpgrades?: boolean
  /** Options for the fallback plugin (limits). */
  fallback?: Record<string, unknown>
}

export interface EchoServer {
  app: FastifyInstance
  /** `ws://127.0.0.1:<port>/echo` */
  url: string
  origin: string
  /** Upgrade requests seen, and fallback requests seen by endpoint. */
  counts: { upgrades: number, opens: number, polls: number, sends: number, streams: number }
  /** Live server-side sockets, in connection order. */
  sockets: ServerSocket[]
  /** `request.query` as each handler call saw it, with its door. */
  queries: Array<{ transport: string, query: unknown }>
  /** Resolves with the next server-side socket. */
  nextSocket: () => Promise<ServerSocket>
}

export const USERS = new Set(['alice', 'bob'])

export async function echoServer (t: { teardown: (fn: () => unknown) => void }, opts: EchoServerOptions = {}): Promise<EchoServer> {
  // Teardown must not wait on a client's keep-alive connections: a retrying long-poll client
  // (429/503 backoff) can keep one busy past Fastify's keep-alive timeout while the app closes.
  // These tests are about the client; graceful shutdown is tested in test/faults-shutdown.test.ts.
  const app = Fastify({ forceCloseConnections: true })
  const counts = { upgrades: 0, opens: 0, polls: 0, sends: 0, streams: 0 }
  const sockets: ServerSocket[] = []
  const queries: EchoServer['queries'] = []
  const waiting: Array<(s: ServerSocket) => void> = []
  const hung: Array<() => void> = []
  t.teardown(async () => {
    for (const release of hung) release()
    await app.close()
  })

  await app.register(portcullis)
  // after the core (and @fastify/websocket's own hook, which sets request.ws and destroys the
  // upgrade socket once a refusal has been answered)
  app.addHook('onRequest', function countAndBreak (request, reply, done) {
    if (request.url.endsWith('/_lp/open')) counts.opens++
    else if (request.url.endsWith('/_lp/poll')) counts.polls++
    else if (request.url.endsWith('/_lp/send')) counts.sends++
    else if (request.url.endsWith('/_lp/stream')) counts.streams++
    if (!request.ws) return done()
    counts.upgrades++
    if (opts.refuseUpgrades === true) {
      reply.code(503).header('connection', 'close').send({ code: 'NO_UPGRADES', message: 'upgrades refused' })
      return
    }
    // never call done: the upgrade hangs until teardown destroys the socket
    if (opts.hangUpgrades === true) hung.push(() => request.raw.socket.destroy())
    else done()
  })

  await app.register(originGuard)
  await app.register(cookieSession, {
    authenticate (request) {
      const h = request.headers.authorization
      if (h === undefined || !h.startsWith('Bearer ')) return null
      const user = h.slice(7)
      return USERS.has(user) ? { id: user, sessionId: `session-${user}` } : false
    }
  })
  await app.register(subprotocols, { protocols: { 'echo.v1': { dataTypes: 'both' } } })
  await app.register(fallback, { pollTimeoutMs: 2000, idleTimeoutMs: 5000, ...opts.fallback })

  app.get('/echo', { websocket: true, wsPolicy: { protocols: ['echo.v1'], fallback: true } }, function echo (socket, request) {
    sockets.push(socket)
    queries.push({ transport: request.portcullis?.transport ?? '', query: { ...(request.query as object) } })
    waiting.shift()?.(socket)
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      const text = isBinary ? undefined : data.toString()
      // commands let a test drive the server side through the socket itself
      if (text === 'close-me') return socket.close(4321, 'as asked')
      if (text === 'restart') return socket.close(1012, 'service restart')
      socket.send(data, { binary: isBinary } as never)
    })
  })

  const { ws, origin } = await listen(app)
  return {
    app,
    url: `${ws}/echo`,
    origin,
    counts,
    sockets,
    queries,
    nextSocket: () => new Promise((resolve) => waiting.push(resolve))
  }
}

/** A client socket for `server`, as a Node.js app would create it (ws, Origin, Bearer token). */
export function client (t: { teardown: (fn: () => unknown) => void }, server: EchoServer, options: PortcullisSocketOptions & { user?: string | null } = {}): PortcullisSocket {
  const { user = 'alice', ...rest } = options
  const headers: Record<string, string> = { origin: server.origin, ...rest.headers }
  if (user !== null) headers.authorization = `Bearer ${user}`
  const s = new PortcullisSocket(server.url, 'echo.v1', { WebSocket, openTimeoutMs: 2000, ...rest, headers })
  t.teardown(() => s.close())
  return s
}

/** Resolves on the next `type` event of the socket (rejects after `ms`). */
export function next<T extends Event = Event> (s: PortcullisSocket, type: string, ms = 8000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event within ${ms} ms`)), ms)
    s.addEventListener(type, (ev) => { clearTimeout(timer); resolve(ev as T) }, { once: true })
  })
}

export function nextClose (s: PortcullisSocket, ms?: number): Promise<PortcullisCloseEvent> {
  return next<PortcullisCloseEvent>(s, 'close', ms)
}

/** Collect `n` message payloads. */
export function messages (s: PortcullisSocket, n: number, ms = 8000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const got: unknown[] = []
    const timer = setTimeout(() => reject(new Error(`expected ${n} messages, got ${got.length}`)), ms)
    function onMessage (ev: Event): void {
      got.push((ev as MessageEvent).data)
      if (got.length === n) {
        clearTimeout(timer)
        s.removeEventListener('message', onMessage)
        resolve(got)
      }
    }
    s.addEventListener('message', onMessage)
  })
}
