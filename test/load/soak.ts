/**
 * Load and soak: thousands of WebSocket connections and hundreds of long-poll clients through the
 * full Portcullis policy (origin, signed-cookie session, subprotocol, fallback, message guards),
 * for a fixed time, on loopback only. Every client sends numbered, timestamped messages that the
 * server echoes; the client checks each echo against what it sent. Reports connections held,
 * messages sent / delivered / lost / duplicated / reordered (all three must be 0), p50/p99
 * latency per door, and the server's RSS over time (the server runs in its own process).
 *
 *   pnpm soak                                              # 2000 WS + 200 LP for 60 s
 *   node --conditions=portcullis-source --import=tsx test/load/soak.ts --ws 5000 --lp 500 --seconds 300 --json out.json
 *
 * Bounded: at most 10000 WS, 2000 LP clients and 600 s; it stops by itself.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { Agent } from 'node:http'
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { sign } from '@fastify/cookie'
import { COOKIE_SECRET, PROTOCOLS } from './app.js'
import { LpClient } from './lp.js'

export interface SoakOptions {
  /** WebSocket clients. Default 2000, at most 10000. */
  ws?: number
  /** Long-poll clients. Default 200, at most 2000. */
  lp?: number
  /** Duration of the traffic phase in seconds (after the ramp). Default 60, at most 600. */
  seconds?: number
  /** Messages per client per second. Default 1. */
  rate?: number
  /** Memory sample interval in ms. Default 1000. */
  sampleMs?: number
  /** Print progress lines. Default false. */
  verbose?: boolean
}

export interface DoorReport {
  clients: number
  opened: number
  failedToOpen: number
  /** Open at the end of the traffic phase (none may drop on its own). */
  held: number
  sent: number
  delivered: number
  lost: number
  duplicated: number
  reordered: number
  latencyMs: { p50: number, p99: number, max: number }
}

export interface SoakReport {
  config: Required<Omit<SoakOptions, 'verbose'>>
  rampMs: number
  websocket: DoorReport
  longPoll: DoorReport & { protocolDuplicates: number, protocolGaps: number }
  server: {
    /** RSS and heap; `afterGc` samples were taken right after a full GC (retained memory). */
    samples: Array<{ t: number, rssMiB: number, heapMiB: number, connections: number, lpSessions: number, afterGc: boolean }>
    peakRssMiB: number
    /** Connections the registry still tracked after the clients left and the server closed. */
    connectionsAfterClose: number
    guardsLeftOpen: number
    closeMs: number
    faults: string[]
    errors: number
    /**
     * Long-poll echoes timed on the server: from a send's arrival to the poll answer carrying
     * messages (test-only hooks in soak-server.ts). `over1s`: answers more than 1 s after the send.
     */
    wakeToAnswerMs: {
      n: number
      p50: number
      p99: number
      max: number
      over1s: number
      /** TCP connections the server accepted over the run. */
      accepted: number
      /** From the client's stamp to the send reaching the server's onRequest. */
      toServer: { n: number, p50: number, p99: number, max: number }
      /** The server process's event-loop delay over the run. */
      serverLoopDelay: { p50: number, p99: number, max: number }
    } | undefined
  }
  clientRssMiB: number
  /** The client process's event-loop delay over the traffic phase (ms): how late its callbacks ran. */
  clientLoopDelayMs: { p50: number, p99: number, max: number }
}

interface Counter {
  sent: number
  delivered: number
  duplicated: number
  reordered: number
  expected: number
}

const MiB = 1024 * 1024
const round = (n: number, d = 1): number => Math.round(n * 10 ** d) / 10 ** d

function percentile (sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

function latencies (samples: number[]): DoorReport['latencyMs'] {
  const s = Float64Array.from(samples).sort()
  return { p50: round(percentile(s, 0.5), 2), p99: round(percentile(s, 0.99), 2), max: round(s.length > 0 ? s[s.length - 1] : 0, 2) }
}

/** Check one echo against the client's counter; record latency. */
function receive (c: Counter, text: string, lat: number[]): void {
  const space = text.indexOf(' ')
  const seq = Number(text.slice(0, space))
  const sentAt = Number(text.slice(space + 1))
  if (seq < c.expected) { c.duplicated++; return }
  if (seq > c.expected) c.reordered++
  c.expected = seq + 1
  c.delivered++
  lat.push(performance.now() - sentAt)
}

function startServer (): Promise<{ child: ChildProcess, port: number, request: (type: string, expect: string, extra?: object) => Promise<any>, faults: string[] }> {
  const child = fork(fileURLToPath(new URL('./soak-server.ts', import.meta.url)), [], {
    execArgv: ['--import=tsx', '--conditions=portcullis-source', '--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // the server times each send's arrival against the client's stamp (same machine clock)
    env: { ...process.env, SOAK_CLIENT_TIME_ORIGIN: String(performance.timeOrigin) }
  })
  const faults: string[] = []
  const waiting = new Map<string, (m: any) => void>()
  child.on('message', (m: any) => {
    if (m.type === 'fault') faults.push(`${m.kind}: ${m.message}`)
    const w = waiting.get(m.type)
    if (w !== undefined) { waiting.delete(m.type); w(m) }
  })
  const request = (type: string, expect: string, extra: object = {}): Promise<any> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`soak server: no ${expect}`)), 30_000)
    waiting.set(expect, (m) => { clearTimeout(timer); resolve(m) })
    if (type !== '') child.send({ type, ...extra })
  })
  return request('', 'listening').then(m => ({ child, port: m.port, request, faults }))
}

export async function runSoak (opts: SoakOptions = {}): Promise<SoakReport> {
  const config = {
    ws: Math.min(opts.ws ?? 2000, 10_000),
    lp: Math.min(opts.lp ?? 200, 2000),
    seconds: Math.min(opts.seconds ?? 60, 600),
    rate: opts.rate ?? 1,
    sampleMs: opts.sampleMs ?? 1000
  }
  const log = (s: string): void => { if (opts.verbose === true) process.stderr.write(`soak: ${s}\n`) }
  const server = await startServer()
  log('server listening')
  const { port } = server
  const origin = `http://127.0.0.1:${port}`
  const cookie = (user: string): string => `sid=${encodeURIComponent(sign(user, COOKIE_SECRET))}`
  const samples: SoakReport['server']['samples'] = []
  const t0 = performance.now()
  let sampleNo = 0
  const sampler = setInterval(() => {
    // a full GC before every 10th sample: those heap figures are retained memory (marked *)
    server.request('sample', 'sample', { gc: ++sampleNo % 10 === 0 }).then((m) => {
      samples.push({ t: round((performance.now() - t0) / 1000), rssMiB: round(m.rss / MiB), heapMiB: round(m.heapUsed / MiB), connections: m.connections, lpSessions: m.lpSessions, afterGc: m.gc })
    }, () => {})
  }, config.sampleMs)

  // ---- ramp: open every client, in batches
  const wsLat: number[] = []
  const lpLat: number[] = []
  const wsCounters: Counter[] = []
  const wsSockets: WebSocket[] = []
  let wsFailed = 0
  let wsDropped = 0
  let stopping = false
  for (let i = 0; i < config.ws; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, config.ws - i) }, (_, k) => new Promise<void>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, PROTOCOLS, { origin, headers: { cookie: cookie(`ws${i + k}`) }, perMessageDeflate: false })
      const c: Counter = { sent: 0, delivered: 0, duplicated: 0, reordered: 0, expected: 1 }
      ws.on('open', () => { wsCounters.push(c); wsSockets.push(ws); resolve() })
      ws.on('message', (d) => receive(c, String(d), wsLat))
      ws.on('error', () => { if (ws.readyState !== WebSocket.OPEN) { wsFailed++; resolve() } })
      ws.on('close', () => { if (!stopping) wsDropped++ })
    })))
  }
  log(`${wsSockets.length} WebSocket clients open (${wsFailed} failed)`)

  // maxFreeSockets: Node's default (256) closes every idle keep-alive socket beyond 256, so with
  // a poll and a send per client the next send opened a new TCP connection: churn that, on top of
  // a busy accept queue, cost seconds (docs/RELIABILITY.md §4)
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: Infinity })
  const lpClients: LpClient[] = []
  const lpCounters: Counter[] = []
  let lpFailed = 0
  for (let i = 0; i < config.lp; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, config.lp - i) }, async (_, k) => {
      const c = new LpClient(port, '/ws', { origin, cookie: cookie(`lp${i + k}`) }, agent)
      try {
        const r = await c.open(['echo.v1'])
        if (r.status !== 200) { lpFailed++; return }
        lpClients.push(c)
        lpCounters.push({ sent: 0, delivered: 0, duplicated: 0, reordered: 0, expected: 1 })
      } catch { lpFailed++ }
    }))
  }
  const rampMs = performance.now() - t0
  log(`${lpClients.length} long-poll clients open (${lpFailed} failed), ramp ${Math.round(rampMs)} ms`)

  // ---- traffic: each client sends `rate` numbered messages per second; LP clients keep a poll in flight
  let lpErrors = 0
  // how late the client process runs its callbacks: an echo that the server answered at once but
  // that waited here shows as loop delay, not as server time
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  const pollLoops = lpClients.map(async (c, i) => {
    const counter = lpCounters[i]
    // first polls in batches of 50 every 20 ms: each opens a TCP connection, and a thousand at
    // once overflow the server's accept queue (backlog 511): the dropped SYNs are retransmitted
    // after 1 s and 3 s, which showed as the long-poll p99 (see docs/RELIABILITY.md §4)
    await new Promise(resolve => setTimeout(resolve, Math.floor(i / 50) * 20))
    for (;;) {
      // set asynchronously by the main flow when the traffic phase ends
      if (stopping && counter.delivered + counter.duplicated >= counter.sent) break
      try {
        const r = await c.poll({ timeoutMs: 30_000 })
        if (r.status !== 200) { lpErrors++; await new Promise(resolve => setTimeout(resolve, 100)) }
      } catch { lpErrors++; await new Promise(resolve => setTimeout(resolve, 100)) }
      for (const m of c.inbox.splice(0)) receive(counter, m.text ?? '', lpLat)
      if (c.closed !== undefined) break
      if (stopping && performance.now() > drainDeadline) break
    }
  })
  let drainDeadline = Infinity
  const sendBusy = new Array<boolean>(lpClients.length).fill(false)
  const tickMs = 50
  const slots = Math.max(1, Math.round(1000 / config.rate / tickMs))
  let tick = 0
  const ticker = setInterval(() => {
    const slot = tick++ % slots
    for (let i = slot; i < wsSockets.length; i += slots) {
      const ws = wsSockets[i]
      if (ws.readyState !== WebSocket.OPEN) continue
      const c = wsCounters[i]
      ws.send(`${++c.sent} ${performance.now()}`)
    }
    for (let i = slot; i < lpClients.length; i += slots) {
      if (sendBusy[i]) continue // one send in flight per client (PROTOCOL.md §7)
      const c = lpCounters[i]
      const seq = ++c.sent
      sendBusy[i] = true
      lpClients[i].send([`${seq} ${performance.now()}`]).then(
        (r) => { if (r.status !== 200) lpErrors++ },
        () => { lpErrors++ }
      ).finally(() => { sendBusy[i] = false })
    }
  }, tickMs)
  const progress = setInterval(() => log(`t=${round((performance.now() - t0) / 1000)} s, WS delivered ${wsCounters.reduce((a, c) => a + c.delivered, 0)}, LP delivered ${lpCounters.reduce((a, c) => a + c.delivered, 0)}`), 5000)
  await new Promise(resolve => setTimeout(resolve, config.seconds * 1000))
  clearInterval(ticker)
  loopDelay.disable()

  // ---- drain: wait for every echo (bounded), then count
  stopping = true
  drainDeadline = performance.now() + 10_000
  const allIn = (): boolean => wsCounters.every(c => c.delivered + c.duplicated >= c.sent) && lpCounters.every(c => c.delivered + c.duplicated >= c.sent) && sendBusy.every(b => !b)
  while (!allIn() && performance.now() < drainDeadline) await new Promise(resolve => setTimeout(resolve, 50))
  clearInterval(progress)
  const wsHeld = wsSockets.filter(ws => ws.readyState === WebSocket.OPEN).length
  const lpHeld = lpClients.filter(c => c.closed === undefined).length

  // ---- leave: clients close, the LP polls end with their session's close, then the server closes
  await Promise.all(wsSockets.map(ws => new Promise<void>((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve()
    ws.once('close', () => resolve())
    ws.close(1000)
  })))
  log('WebSocket clients closed')
  await Promise.all(lpClients.map(c => c.close().catch(() => {})))
  log('long-poll sessions closed')
  await Promise.race([Promise.all(pollLoops), new Promise(resolve => setTimeout(resolve, 15_000))])
  log('poll loops ended')
  clearInterval(sampler)
  // two more samples after a full GC, 2 s apart: what the server keeps once every client left
  let final: any
  for (let k = 0; k < 2; k++) {
    if (k > 0) await new Promise(resolve => setTimeout(resolve, 2000))
    final = await server.request('sample', 'sample', { gc: true })
    samples.push({ t: round((performance.now() - t0) / 1000), rssMiB: round(final.rss / MiB), heapMiB: round(final.heapUsed / MiB), connections: final.connections, lpSessions: final.lpSessions, afterGc: true })
  }
  const closed = await server.request('close', 'closed')
  log('server closed')
  agent.destroy()
  await new Promise<void>((resolve) => {
    if (server.child.exitCode !== null) return resolve()
    const timer = setTimeout(() => { server.child.kill('SIGKILL'); resolve() }, 5000)
    server.child.once('exit', () => { clearTimeout(timer); resolve() })
  })

  const sum = (cs: Counter[], k: keyof Counter): number => cs.reduce((a, c) => a + c[k], 0)
  const door = (clients: number, opened: number, failed: number, held: number, cs: Counter[], lat: number[]): DoorReport => ({
    clients,
    opened,
    failedToOpen: failed,
    held,
    sent: sum(cs, 'sent'),
    delivered: sum(cs, 'delivered'),
    lost: sum(cs, 'sent') - sum(cs, 'delivered'),
    duplicated: sum(cs, 'duplicated'),
    reordered: sum(cs, 'reordered'),
    latencyMs: latencies(lat)
  })
  return {
    config,
    rampMs: Math.round(rampMs),
    websocket: { ...door(config.ws, wsSockets.length, wsFailed, wsHeld, wsCounters, wsLat), ...(wsDropped > 0 ? { dropped: wsDropped } : {}) },
    longPoll: {
      ...door(config.lp, lpClients.length, lpFailed, lpHeld, lpCounters, lpLat),
      protocolDuplicates: lpClients.reduce((a, c) => a + c.stats.duplicates, 0),
      protocolGaps: lpClients.reduce((a, c) => a + c.stats.gaps, 0)
    },
    server: {
      samples,
      peakRssMiB: Math.max(...samples.map(s => s.rssMiB)),
      connectionsAfterClose: closed.connections ?? -1,
      guardsLeftOpen: closed.guardsOpen ?? -1,
      closeMs: closed.ms ?? -1,
      faults: server.faults,
      errors: final.errors + lpErrors,
      wakeToAnswerMs: final.wake
    },
    clientRssMiB: round(process.memoryUsage().rss / MiB),
    clientLoopDelayMs: { p50: round(loopDelay.percentile(50) / 1e6, 2), p99: round(loopDelay.percentile(99) / 1e6, 2), max: round(loopDelay.max / 1e6, 2) }
  }
}

export function formatReport (r: SoakReport): string {
  const row = (name: string, d: DoorReport): string =>
    `${name.padEnd(10)} ${String(d.opened).padStart(6)}/${String(d.clients).padEnd(6)} held ${String(d.held).padStart(6)}  sent ${String(d.sent).padStart(8)}  delivered ${String(d.delivered).padStart(8)}  lost ${d.lost}  dup ${d.duplicated}  reordered ${d.reordered}  p50 ${d.latencyMs.p50} ms  p99 ${d.latencyMs.p99} ms  max ${d.latencyMs.max} ms`
  const rss = r.server.samples.map(s => `${s.t}s:${s.rssMiB}/${s.heapMiB}${s.afterGc ? '*' : ''}MiB/${s.connections}c`).join(' ')
  return [
    `soak: ${r.config.ws} WS + ${r.config.lp} LP clients, ${r.config.seconds} s at ${r.config.rate} msg/s each (ramp ${r.rampMs} ms)`,
    row('websocket', r.websocket),
    row('long-poll', r.longPoll),
    `long-poll protocol: duplicates ${r.longPoll.protocolDuplicates}, gaps ${r.longPoll.protocolGaps}`,
    `server: peak RSS ${r.server.peakRssMiB} MiB; close ${r.server.closeMs} ms; connections after close ${r.server.connectionsAfterClose}; guards left open ${r.server.guardsLeftOpen}; errors ${r.server.errors}; faults ${r.server.faults.length === 0 ? 'none' : r.server.faults.join('; ')}`,
    `server over time (t: RSS / heap, * = right after a full GC / live connections): ${rss}`,
    `long-poll send → poll answer on the server: ${r.server.wakeToAnswerMs === undefined ? 'n/a' : `n ${r.server.wakeToAnswerMs.n}, p50 ${r.server.wakeToAnswerMs.p50} ms, p99 ${r.server.wakeToAnswerMs.p99} ms, max ${r.server.wakeToAnswerMs.max} ms, over 1 s ${r.server.wakeToAnswerMs.over1s}; TCP connections accepted ${r.server.wakeToAnswerMs.accepted}; client stamp → server onRequest p50 ${r.server.wakeToAnswerMs.toServer.p50} ms, p99 ${r.server.wakeToAnswerMs.toServer.p99} ms, max ${r.server.wakeToAnswerMs.toServer.max} ms; server event-loop delay p50 ${r.server.wakeToAnswerMs.serverLoopDelay.p50} ms, p99 ${r.server.wakeToAnswerMs.serverLoopDelay.p99} ms, max ${r.server.wakeToAnswerMs.serverLoopDelay.max} ms`}`,
    `client event-loop delay: p50 ${r.clientLoopDelayMs.p50} ms, p99 ${r.clientLoopDelayMs.p99} ms, max ${r.clientLoopDelayMs.max} ms`,
    `client process RSS ${r.clientRssMiB} MiB`
  ].join('\n')
}

function arg (name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? undefined : process.argv[i + 1]
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const num = (name: string): number | undefined => arg(name) === undefined ? undefined : Number(arg(name))
  runSoak({ ws: num('ws'), lp: num('lp'), seconds: num('seconds'), rate: num('rate'), verbose: true }).then((report) => {
    process.stdout.write(formatReport(report) + '\n')
    const out = arg('json')
    if (out !== undefined) writeFileSync(out, JSON.stringify(report, null, 2))
    const bad = report.websocket.lost + report.websocket.duplicated + report.websocket.reordered +
      report.longPoll.lost + report.longPoll.duplicated + report.longPoll.reordered + report.server.faults.length
    process.exitCode = bad === 0 ? 0 : 1
  }, (err: Error) => {
    process.stderr.write(`soak failed: ${err.stack ?? err.message}\n`)
    process.exitCode = 1
  })
}
