/**
 * Flawed servers for the probe's tests: the holes people ship, written the way they are
 * usually written (plain `ws`, a hand-rolled upgrade, a home-made long-poll in Fastify), each
 * on 127.0.0.1 port 0. None of them uses Portcullis.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'

export const APP_ORIGIN = 'http://app.test'
export const APP_PROTOCOL = 'chat.v1'
/** The one valid session; its value is long enough to be recognised if it ever leaks. */
export const APP_SID = randomBytes(24).toString('base64url')
export const APP_COOKIE = `sid=${APP_SID}`

export interface Running {
  url: string
  port: number
  close: () => Promise<void>
}

async function listen (server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as { port: number }).port
}

/** What most hand-written cookie readers do: split on ';', and the last pair of a name wins. */
function lastWins (header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim()
  }
  return out
}

function refuse (socket: Duplex, status: number, body = ''): void {
  socket.end(`HTTP/1.1 ${status} Refused\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
}

export interface WsFlaws {
  /** The origin test; default: none at all (every origin, and no origin, passes). */
  origin?: (origin: string | undefined) => boolean
  /** `none` (default): no session; `presence`: any `sid` cookie; `exact`: the right `sid`, read last-wins. */
  session?: 'none' | 'presence' | 'exact'
  /** Echo the client's first offer (default) or select chat.v1 only. */
  echoProtocol?: boolean
  /** ws options; default: ws's own (100 MiB, no fragment limit). */
  maxPayload?: number
  maxFragments?: number
  /** Upgrade on this path only; default every path. */
  path?: string
  /** Put the request's Origin and Cookie in the refusal body. */
  echoRefusal?: boolean
  /** Close every accepted connection at once with 1008 (an after-the-fact check). */
  closeOnConnect?: boolean
  /** Answer 429 to every upgrade after this many (a rate limiter in front of the route). */
  limitAfter?: number
}

/** A plain `ws` server with the checks (or lack of them) a route typically has. */
export async function wsServer (flaws: WsFlaws = {}): Promise<Running> {
  const server = createServer((_req, res) => { res.statusCode = 404; res.end() })
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: flaws.maxPayload,
    maxFragments: flaws.maxFragments,
    handleProtocols: (offers: Set<string>) => {
      if (flaws.echoProtocol === false) return offers.has(APP_PROTOCOL) ? APP_PROTOCOL : false
      return offers.values().next().value ?? false
    }
  } as ConstructorParameters<typeof WebSocketServer>[0])
  wss.on('connection', (ws) => {
    ws.on('error', () => {})
    if (flaws.closeOnConnect === true) ws.close(1008, 'policy')
    ws.on('message', (m) => ws.send(String(m)))
  })
  let upgrades = 0
  server.on('upgrade', function upgrade (req: IncomingMessage, socket: Duplex, head: Buffer) {
    socket.on('error', () => {})
    if (flaws.limitAfter !== undefined && ++upgrades > flaws.limitAfter) return refuse(socket, 429)
    const why = flaws.echoRefusal === true ? `refused: origin ${req.headers.origin ?? ''} cookie ${req.headers.cookie ?? ''}` : ''
    if (flaws.path !== undefined && req.url !== flaws.path) return refuse(socket, 404, why)
    if (flaws.origin !== undefined && !flaws.origin(req.headers.origin)) return refuse(socket, 403, why)
    const session = flaws.session ?? 'none'
    const sid = lastWins(req.headers.cookie).sid
    if (session === 'presence' && sid === undefined) return refuse(socket, 401, why)
    if (session === 'exact' && sid !== APP_SID) return refuse(socket, 401, why)
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req))
  })
  const port = await listen(server)
  return {
    url: `ws://127.0.0.1:${port}/chat`,
    port,
    close: async () => {
      for (const c of wss.clients) c.terminate()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/**
 * A hand-rolled upgrade: whatever asks to upgrade gets a 101 (the accept hash computed from
 * whatever key came, the first offered protocol echoed), and frames are never parsed.
 */
export async function handRolled (): Promise<Running> {
  const server = createServer({ requireHostHeader: false }, (_req, res) => { res.statusCode = 404; res.end() })
  const sockets = new Set<Duplex>()
  server.on('upgrade', function upgrade (req: IncomingMessage, socket: Duplex) {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.on('data', () => {})
    const key = String(req.headers['sec-websocket-key'])
    const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
    const proto = String(req.headers['sec-websocket-protocol'] ?? '').split(',')[0].trim()
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n` +
      (proto === '' ? '' : `Sec-WebSocket-Protocol: ${proto}\r\n`) + '\r\n')
  })
  const port = await listen(server)
  return {
    url: `ws://127.0.0.1:${port}/chat`,
    port,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

export interface FallbackFlaws {
  /** Skip the marker header check. */
  noMarker?: boolean
  /** Answer preflights and every response with `Access-Control-Allow-Origin: *`. */
  corsStar?: boolean
  /**
   * The lax long-poll: origin never checked, cookie checked for presence at open only, any
   * content type, query strings and JSONP served, no Cache-Control, counter sids, unknown sids
   * answered, the first offered protocol echoed.
   */
  lax?: boolean
}

/**
 * A home-made long-poll twin (the wire shape of packages/fallback/PROTOCOL.md) in Fastify,
 * beside a `ws` route with an exact origin and session check, so the baseline handshake passes.
 */
export async function fallbackServer (flaws: FallbackFlaws = {}): Promise<Running> {
  const app = Fastify({ logger: false })
  const lax = flaws.lax === true
  if (lax) {
    app.removeAllContentTypeParsers()
    app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
      try { done(null, body === '' ? {} : JSON.parse(String(body))) } catch (err) { done(err as Error) }
    })
  }
  const sessions = new Map<string, { origin: string | undefined, cookie: string | undefined }>()
  let counter = 0

  app.addHook('onRequest', async function lpGate (request: FastifyRequest, reply: FastifyReply) {
    if (!request.url.includes('/_lp/')) return
    if (flaws.corsStar === true) {
      reply.header('access-control-allow-origin', '*')
      if (request.method === 'OPTIONS') {
        reply.header('access-control-allow-headers', '*').header('access-control-allow-methods', 'GET, POST')
        return reply.code(204).send()
      }
    }
    if (!lax) reply.header('cache-control', 'no-store')
    if (request.url.includes('?') && !lax) return reply.code(400).send({ code: 'QUERY' })
    if (!flaws.noMarker && request.headers['x-portcullis-fallback'] !== '1') return reply.code(400).send({ code: 'MARKER' })
    const isOpen = request.url.startsWith('/chat/_lp/open')
    if (!lax || isOpen) {
      if (!lax && request.headers.origin !== APP_ORIGIN) return reply.code(403).send({ code: 'ORIGIN' })
      const sid = lastWins(request.headers.cookie).sid
      if (lax ? sid === undefined : sid !== APP_SID) return reply.code(401).send({ code: 'SESSION' })
    }
    if (!lax && request.method === 'POST' && !String(request.headers['content-type']).startsWith('application/json')) {
      return reply.code(415).send({ code: 'CONTENT_TYPE' })
    }
  })

  function known (request: FastifyRequest, reply: FastifyReply): boolean {
    const sid = String(request.headers['x-portcullis-sid'])
    const s = sessions.get(sid)
    if (lax) return true
    if (s === undefined || s.origin !== request.headers.origin || s.cookie !== request.headers.cookie) {
      reply.code(404).send({ code: 'UNKNOWN_SESSION' })
      return false
    }
    return true
  }

  app.post('/chat/_lp/open', async (request, reply) => {
    const offered = ((request.body ?? {}) as { protocols?: string[] }).protocols ?? []
    const protocol = lax ? (offered[0] ?? '') : offered.includes(APP_PROTOCOL) ? APP_PROTOCOL : undefined
    if (protocol === undefined) return reply.code(400).send({ code: 'SUBPROTOCOL' })
    const sid = lax ? String(++counter) : randomBytes(24).toString('base64url')
    sessions.set(sid, { origin: request.headers.origin, cookie: request.headers.cookie })
    return { v: 1, sid, protocol, pollTimeoutMs: 25000 }
  })
  app.get('/chat/_lp/poll', async (request, reply) => {
    if (!known(request, reply)) return reply
    const cb = (request.query as Record<string, string>).callback
    const body = { messages: [], ack: 0 }
    if (lax && cb !== undefined) return reply.type('application/javascript').send(`${cb}(${JSON.stringify(body)})`)
    return body
  })
  app.post('/chat/_lp/send', async (request, reply) => {
    if (!known(request, reply)) return reply
    return { ack: 1 }
  })
  app.post('/chat/_lp/close', async (request, reply) => {
    if (!known(request, reply)) return reply
    sessions.delete(String(request.headers['x-portcullis-sid']))
    return { close: { code: 1000, reason: '' } }
  })

  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, handleProtocols: (o: Set<string>) => o.has(APP_PROTOCOL) ? APP_PROTOCOL : false })
  await app.ready()
  app.server.on('upgrade', function upgrade (req: IncomingMessage, socket: Duplex, head: Buffer) {
    socket.on('error', () => {})
    if (req.url !== '/chat') return refuse(socket, 404)
    if (req.headers.origin !== APP_ORIGIN) return refuse(socket, 403)
    if (lastWins(req.headers.cookie).sid !== APP_SID) return refuse(socket, 401)
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('error', () => {}))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  return {
    url: `ws://127.0.0.1:${port}/chat`,
    port,
    close: async () => {
      for (const c of wss.clients) c.terminate()
      await app.close()
    }
  }
}
