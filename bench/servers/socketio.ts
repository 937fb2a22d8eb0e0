/**
 * socket.io 4 on a plain node:http server, restricted to one transport so each run measures
 * exactly that transport: `polling` (the long-poll opponent) or `websocket` (context).
 */
import { createServer } from 'node:http'
import { Server } from 'socket.io'
import { version } from '../lib/meta.js'
import type { BenchServer } from './types.js'

export async function startSocketIo (transport: 'polling' | 'websocket'): Promise<BenchServer> {
  const http = createServer()
  const io = new Server(http, { transports: [transport], serveClient: false })
  io.on('connection', (socket) => {
    socket.on('echo', (msg: unknown) => socket.emit('echo', msg))
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  const addr = http.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return {
    port: addr.port,
    info: { stack: `socket.io ${version('socket.io')} (${transport} only)` },
    close: () => new Promise<void>((resolve) => { io.close(() => resolve()) })
  }
}
