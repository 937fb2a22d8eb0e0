/**
 * Server child process: `node bench/server.ts <contender>`. Listens on 127.0.0.1 port 0, tells
 * the parent its port over IPC, answers memory probes, and exits when told to (or when the
 * parent goes away, so no run can leave a server behind).
 */
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { startFastifyWs, startWs } from './servers/bare.js'
import { ABLATED_PARTS, startPortcullis, type AblatedPart } from './servers/portcullis.js'
import { startSocketIo } from './servers/socketio.js'
import { startFloor } from './servers/floor.js'
import type { BenchServer } from './servers/types.js'

export const CONTENDERS = ['ws', 'fastify-ws', 'fastify-ws-cookie', 'fastify-ws-json', 'portcullis', 'portcullis-relay', 'portcullis-nocache', 'portcullis-otel', 'portcullis-stream', 'node-http-floor', 'socketio-polling', 'socketio-ws'] as const
export type Contender = typeof CONTENDERS[number]
const WITHOUT = 'portcullis-without-'

function start (name: string): Promise<BenchServer> {
  switch (name) {
    case 'ws': return startWs()
    case 'fastify-ws': return startFastifyWs()
    case 'fastify-ws-cookie': return startFastifyWs({ cookie: true })
    case 'fastify-ws-json': return startFastifyWs({ parse: true })
    case 'portcullis': return startPortcullis({ inspect: true })
    case 'portcullis-relay': return startPortcullis({ inspect: false })
    case 'portcullis-nocache': return startPortcullis({ inspect: true, sessionCache: false })
    // BENCH_AA=1: this row runs the plain full-policy server, an A/A control that shows how far two
    // identical server processes differ in one run (the bench's resolution)
    case 'portcullis-otel': return startPortcullis({ inspect: true, telemetry: process.env.BENCH_AA !== '1' })
    // the same server as `portcullis`; the long-poll scenario's load client reads its stream
    case 'portcullis-stream': return startPortcullis({ inspect: true })
    case 'node-http-floor': return startFloor()
    case 'socketio-polling': return startSocketIo('polling')
    case 'socketio-ws': return startSocketIo('websocket')
    default: {
      // attribution only: the full-policy server with parts left out (see PortcullisVariant.without)
      const without = name.startsWith(WITHOUT) ? name.slice(WITHOUT.length).split('+') : []
      if (without.length > 0 && without.every((p): p is AblatedPart => (ABLATED_PARTS as readonly string[]).includes(p))) return startPortcullis({ inspect: true, without })
      throw new Error(`unknown contender ${name} (parts that portcullis-without- can leave out: ${ABLATED_PARTS.join(', ')})`)
    }
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
  // BENCH_CPU_PROFILE=<file>: profile from here (the server is listening) to exit, so the
  // profile holds the load and not the module loading of startup
  const profileFile = process.env.BENCH_CPU_PROFILE
  let profiler: Session | undefined
  // BENCH_PROFILE_KIND=heap: a sampling allocation profile (.heapprofile JSON) in the same file
  const heap = process.env.BENCH_PROFILE_KIND === 'heap'
  if (profileFile !== undefined && profileFile !== '') {
    profiler = new Session()
    profiler.connect()
    if (heap) {
      await profiler.post('HeapProfiler.enable')
      await profiler.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
    } else {
      await profiler.post('Profiler.enable')
      await profiler.post('Profiler.start')
    }
  }
  const stopProfiler = async (): Promise<void> => {
    if (profiler === undefined) return
    const { profile } = heap ? await profiler.post('HeapProfiler.stopSampling') : await profiler.post('Profiler.stop')
    writeFileSync(profileFile as string, JSON.stringify(profile))
  }
  process.on('message', (msg: { type: string, id?: number }) => {
    if (msg.type === 'mem') {
      memory().then((m) => process.send?.({ type: 'mem', id: msg.id, ...m }), () => {})
    } else if (msg.type === 'exit') {
      stopProfiler().catch((err) => console.error(err)).then(() => server.close()).finally(() => process.exit(0))
      // a sampling heap profile of a whole scenario takes seconds to serialize
      setTimeout(() => process.exit(0), profiler === undefined ? 5000 : 60_000).unref()
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready', port: server.port, pid: process.pid, info: server.info, clientHeaders: server.clientHeaders ?? [] })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
