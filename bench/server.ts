/**
 * Server child process: `node bench/server.ts <contender>`. Listens on 127.0.0.1 port 0, tells
 * the parent its port over IPC, answers memory probes, and exits when told to (or when the
 * parent goes away, so no run can leave a server behind).
 */
import { startFastifyWs, startWs } from './servers/bare.js'
import { startPortcullis } from './servers/portcullis.js'
import { startSocketIo } from './servers/socketio.js'
import type { BenchServer } from './servers/types.js'

export const CONTENDERS = ['ws', 'fastify-ws', 'portcullis', 'portcullis-relay', 'socketio-polling', 'socketio-ws'] as const
export type Contender = typeof CONTENDERS[number]

function start (name: string): Promise<BenchServer> {
  switch (name) {
    case 'ws': return startWs()
    case 'fastify-ws': return startFastifyWs()
    case 'portcullis': return startPortcullis({ inspect: true })
    case 'portcullis-relay': return startPortcullis({ inspect: false })
    case 'socketio-polling': return startSocketIo('polling')
    case 'socketio-ws': return startSocketIo('websocket')
    default: throw new Error(`unknown contender ${name}`)
  }
}

async function memory (): Promise<{ heapUsed: number, rss: number, external: number }> {
  const gc = (globalThis as { gc?: () => void }).gc
  // several passes with turns of the event loop in between: sockets closed a moment ago
  // release their buffers only after their close callbacks ran
  for (let i = 0; i < 3; i++) {
    gc?.()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const m = process.memoryUsage()
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external }
}

async function main (): Promise<void> {
  const name = process.argv[2]
  if (process.send === undefined) throw new Error('bench/server.ts runs as a child of bench/run.ts (IPC required)')
  const server = await start(name)
  process.on('message', (msg: { type: string, id?: number }) => {
    if (msg.type === 'mem') {
      memory().then((m) => process.send?.({ type: 'mem', id: msg.id, ...m }), () => {})
    } else if (msg.type === 'exit') {
      server.close().finally(() => process.exit(0))
      setTimeout(() => process.exit(0), 2000).unref()
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready', port: server.port, pid: process.pid, info: server.info, clientHeaders: server.clientHeaders ?? [] })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
