/**
 * The bare contenders: `ws` on a plain node:http server, and Fastify with `@fastify/websocket`
 * (alone, and with `@fastify/cookie` or a JSON-parsing handler as context rows). All run the same
 * echo handler as the Portcullis server, and nothing else.
 */
import { createServer, type Server } from 'node:http'
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import { WebSocketServer, type WebSocket, type RawData } from 'ws'
import { SECRET, WS_PATH } from '../lib/fixture.js'
import type { BenchServer } from './types.js'
import { version } from '../lib/meta.js'

/** Echo each message back with the opcode it came with (text stays text). */
export function echo (socket: WebSocket): void {
  socket.on('message', (data: RawData, isBinary: boolean) => socket.send(data, { binary: isBinary }))
}

/**
 * The echo of an app that speaks JSON (row `fastify-ws-json`, context only): each message is
 * parsed with plain `JSON.parse` before it is echoed, as a handler that reads its messages must.
 * With Portcullis's JSON inspection the handler gets that parse from `parsedMessage()` instead.
 */
export function echoParsed (socket: WebSocket): void {
  socket.on('message', (data: RawData, isBinary: boolean) => {
    try {
      JSON.parse((data as Buffer).toString())
    } catch {
      socket.close(1007, 'invalid JSON')
      return
    }
    socket.send(data, { binary: isBinary })
  })
}

export async function startWs (): Promise<BenchServer> {
  const server: Server = createServer((_req, res) => { res.statusCode = 404; res.end() })
  const wss = new WebSocketServer({ server, path: WS_PATH })
  wss.on('connection', echo)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return {
    port: addr.port,
    info: { stack: `ws ${version('ws')}` },
    close: async () => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/**
 * `cookie: true` (row `fastify-ws-cookie`, context only): `@fastify/cookie` registered as the
 * Portcullis server registers it. Its onRequest hook parses the Cookie header into
 * `request.cookies` and gives the reply a Set-Cookie map, and `@fastify/websocket` keeps the
 * request and reply alive for the connection's life, so every app that uses both pays this
 * part of the Portcullis row's handshake and idle cost whether or not it uses Portcullis.
 */
export async function startFastifyWs (opts: { cookie?: boolean, parse?: boolean } = {}): Promise<BenchServer> {
  const app = Fastify({ logger: false })
  // loaded only by the row that registers it
  if (opts.cookie === true) await app.register((await import('@fastify/cookie')).default, { secret: SECRET })
  await app.register(fastifyWebsocket)
  app.get(WS_PATH, { websocket: true }, (socket) => opts.parse === true ? echoParsed(socket) : echo(socket))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return {
    port: addr.port,
    info: { stack: `fastify ${app.version} + @fastify/websocket ${version('@fastify/websocket')}${opts.cookie === true ? ` + @fastify/cookie ${version('@fastify/cookie')}` : ''}`, handler: opts.parse === true ? 'JSON.parse, then echo' : 'echo' },
    close: () => app.close()
  }
}
