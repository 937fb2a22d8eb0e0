/**
 * Server child process: `node bench/server.ts <contender>`. Listens on 127.0.0.1 port 0, tells
 * the parent its port over IPC, answers memory probes, and exits when told to (or when the
 * parent goes away, so no run can leave a server behind).
 */
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import type { AblatedPart, PortcullisVariant } from './servers/portcullis.js'
import { pinTickObject } from './lib/pin-tick.js'
import type { BenchServer } from './servers/types.js'

export const CONTENDERS = ['ws', 'fastify-ws', 'fastify-ws-cookie', 'fastify-ws-json', 'portcullis', 'portcullis-relay', 'portcullis-nocache', 'portcullis-otel', 'portcullis-stream', 'node-http-floor', 'socketio-polling', 'socketio-ws'] as const
export type Contender = typeof CONTENDERS[number]
const WITHOUT = 'portcullis-without-'

async function fastifyWs (opts: { cookie?: boolean, parse?: boolean }): Promise<BenchServer> {
  return (await import('./servers/bare.js')).startFastifyWs(opts)
}

async function portcullis (variant: PortcullisVariant): Promise<BenchServer> {
  return (await import('./servers/portcullis.js')).startPortcullis(variant)
}

async function socketIo (transport: 'polling' | 'websocket'): Promise<BenchServer> {
  return (await import('./servers/socketio.js')).startSocketIo(transport)
}

/**
 * Each server process loads only the modules its contender runs, as an app of that kind would:
 * the imports are dynamic (and the bundle is split, bench/lib/build.ts). With one bundle, every
 * process also loaded socket.io, Portcullis and the OpenTelemetry SDK. That cost a plain
 * `@fastify/websocket` server about 15 % of its handshakes/s, and it changed the odds of the V8
 * inline-cache lottery that makes `process.nextTick` cost about 1 µs a call instead of about
 * 0.1 µs (bench/lib/pin-tick.ts, docs/BENCHMARKS.md).
 */
async function start (name: string): Promise<BenchServer> {
  switch (name) {
    case 'ws': return (await import('./servers/bare.js')).startWs()
    case 'fastify-ws': return fastifyWs({})
    case 'fastify-ws-cookie': return fastifyWs({ cookie: true })
    case 'fastify-ws-json': return fastifyWs({ parse: true })
    case 'portcullis': return portcullis({ inspect: true })
    case 'portcullis-relay': return portcullis({ inspect: false })
    case 'portcullis-nocache': return portcullis({ inspect: true, sessionCache: false })
    // BENCH_AA=1: this row runs the plain full-policy server, an A/A control that shows how far two
    // identical server processes differ in one run (the bench's resolution)
    case 'portcullis-otel': return portcullis({ inspect: true, telemetry: process.env.BENCH_AA !== '1' })
    // the same server as `portcullis`; the long-poll scenario's load client reads its stream
    case 'portcullis-stream': return portcullis({ inspect: true })
    case 'node-http-floor': return (await import('./servers/floor.js')).startFloor()
    case 'socketio-polling': return socketIo('polling')
    case 'socketio-ws': return socketIo('websocket')
    default: {
      // attribution only: the full-policy server with parts left out (see PortcullisVariant.without)
      const { ABLATED_PARTS } = await import('./servers/portcullis.js')
      const without = name.startsWith(WITHOUT) ? name.slice(WITHOUT.length).split('+') : []
      if (without.length > 0 && without.every((p): p is AblatedPart => (ABLATED_PARTS as readonly string[]).includes(p))) return portcullis({ inspect: true, without })
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
  // BENCH_PIN_TICK=1: every contender alike, before its modules load (bench/lib/pin-tick.ts)
  if (process.env.BENCH_PIN_TICK === '1' && !pinTickObject()) throw new Error('BENCH_PIN_TICK: no tick object was seen')
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
