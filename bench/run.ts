/**
 * Portcullis side-by-side benchmarks. `pnpm bench` (full, ≤ 10 min) or `pnpm bench:quick`
 * (CI smoke, ~90 s). Options: `--only=handshake,echo,idle,longpoll,hostile`,
 * `--out=<dir>` (default bench/results), `--no-write`, `--update-docs` (rewrite the table in
 * docs/BENCHMARKS.md), `--profile=<contender>[,…]` (CPU-profile those servers from listen to exit;
 * summarize with bench/profile-top.ts), `--tsx` (children run the TypeScript sources through
 * tsx instead of a compiled bundle; see bench/lib/build.ts for why that is slower).
 * Diagnostics by environment: `BENCH_THREADS=1` prints each server's CPU by thread (main vs V8's
 * helper threads) per window; `BENCH_PROFILE_KIND=heap` makes `--profile` a sampling allocation
 * profile; `BENCH_AA=1` runs the `portcullis-otel` row without telemetry, an A/A control of the
 * bench's resolution between two identical server processes. For attribution: `BENCH_CONTENDERS`
 * (the handshake and echo contenders, e.g. `portcullis-without-session`; see
 * servers/portcullis.ts), `BENCH_REPS` (repeats per row), `BENCH_NODE_FLAGS` (V8 flags for the
 * servers, e.g. `--trace-opt --trace-deopt`), `BENCH_PIN_TICK=1` (every server keeps one tick object
 * alive, which takes a V8 inline-cache lottery out of the comparison; bench/lib/pin-tick.ts). `bench/telemetry-cost.ts` measures
 * the telemetry's own work per handshake in one process, `bench/inspect-cost.ts` the JSON
 * inspection's per message.
 *
 * Servers run in their own processes on core 0, the load generator on core 1, on 127.0.0.1
 * only. Contenders are interleaved (A B C, then C B A, ...) and each repeat is compared with the
 * same repeat of the baseline, so drift on a shared machine shows up as spread, not as bias.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { startLoad, startServer, hasTaskset, useBuilt, type LoadHandle, type ServerHandle } from './lib/children.js'
import { buildBench } from './lib/build.js'
import { MESSAGE, WS_PATH } from './lib/fixture.js'
import { machine, version } from './lib/meta.js'
import type { Row, RunResult, Sample, ScenarioResult, TargetCheck } from './lib/model.js'
import { runMarkdown, scenarioMarkdown, summarize, fmt } from './lib/report.js'
import { median } from './lib/stats.js'
import type { Target } from './lib/ws-load.js'

const argv = process.argv.slice(2)
const flag = (name: string): boolean => argv.includes(`--${name}`)
const opt = (name: string): string | undefined => argv.find(a => a.startsWith(`--${name}=`))?.slice(name.length + 3)

const quick = flag('quick')
const mode: 'quick' | 'full' = quick ? 'quick' : 'full'
const ALL = ['handshake', 'echo', 'idle', 'longpoll', 'hostile'] as const
const only = opt('only')?.split(',') ?? [...ALL]
for (const o of only) if (!(ALL as readonly string[]).includes(o)) throw new Error(`unknown scenario "${o}" (known: ${ALL.join(', ')})`)
const root = new URL('../', import.meta.url)
const outDir = (opt('out') ?? fileURLToPath(new URL('bench/results', root))).replace(/\/+$/, '')
const profile = opt('profile')?.split(',')

const started = Date.now()

/**
 * BENCH_CONTENDERS=a,b,…: the handshake and echo scenarios run these contenders instead of their
 * own (attribution runs, e.g. `fastify-ws,portcullis,portcullis-without-session`). The baseline
 * stays `fastify-ws`, so keep it in the list.
 */
function chosenContenders (): string[] | undefined {
  const list = process.env.BENCH_CONTENDERS?.split(',').map(c => c.trim()).filter(c => c.length > 0)
  return list === undefined || list.length === 0 ? undefined : list
}

/** Every number that shapes a run, per mode. */
const config = quick
  ? { reps: 2, warmupMs: 250, windowMs: 1000, latencyCount: 200, latencyMaxMs: 800, idleConns: 1000, idleReps: 1, idleWarm: 100, pollWarmupMs: 300, pollWindowMs: 1000, hostileLatency: 100, hostileWindowMs: 500 }
  : { reps: 7, warmupMs: 500, windowMs: 2000, latencyCount: 600, latencyMaxMs: 1500, idleConns: 5000, idleReps: 3, idleWarm: 500, pollWarmupMs: 500, pollWindowMs: 2000, hostileLatency: 300, hostileWindowMs: 1000 }
// BENCH_REPS=n: interleaved repeats per row (attribution runs that want more pairs than the mode's)
const repsOverride = Number(process.env.BENCH_REPS)
if (Number.isInteger(repsOverride) && repsOverride > 0) config.reps = repsOverride
/** Wall-clock budget: past it, remaining repeats are skipped (and the report says so). */
const BUDGET_MS = quick ? 110_000 : 570_000
let budgetHit = false
function overBudget (): boolean {
  if (Date.now() - started > BUDGET_MS) {
    if (!budgetHit) log(`time budget of ${BUDGET_MS / 1000} s reached: skipping remaining repeats`)
    budgetHit = true
  }
  return budgetHit
}

const LABELS: Record<string, string> = {
  ws: 'bare `ws`',
  'fastify-ws': 'bare `@fastify/websocket`',
  'fastify-ws-cookie': '`@fastify/websocket` + `@fastify/cookie` (context: the cookie plugin alone)',
  'fastify-ws-json': '`@fastify/websocket`, the handler parses each message with JSON.parse (context: what an app speaking JSON does anyway)',
  portcullis: 'Portcullis full policy',
  'portcullis-relay': 'Portcullis full policy, relay (no inspection)',
  'portcullis-nocache': 'Portcullis full policy, session cache off (HMAC every handshake)',
  'portcullis-otel': 'Portcullis full policy, telemetry on (OpenTelemetry SDK MeterProvider + reader)',
  'socketio-polling': 'socket.io, polling only',
  'socketio-ws': 'socket.io, websocket only (context)'
}

let load: LoadHandle
let reference: { headers: Array<[string, string]>, info: Record<string, unknown> } = { headers: [], info: {} }

function log (msg: string): void {
  process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${msg}\n`)
}

function target (server: ServerHandle): Target {
  return { port: server.port, serverPid: server.pid, path: WS_PATH, headers: reference.headers }
}

/** Run a load job; a job that times out or crashes the generator gets a fresh generator. */
async function job (j: unknown, timeoutMs: number, onStep?: (step: any) => Promise<void>): Promise<any> {
  try {
    return await load.run(j, timeoutMs, onStep)
  } catch (err) {
    log(`job failed: ${(err as Error).message.split('\n')[0]}`)
    await load.close().catch(() => {})
    load = await startLoad()
    throw err
  }
}

function order<T> (list: T[], rep: number): T[] {
  return rep % 2 === 0 ? list : [...list].reverse()
}

/**
 * Interleaved repeats against long-lived servers (one per contender, all started up front and
 * idle while another is measured). `measure` returns one sample per (row, rep).
 */
async function interleaved (contenders: string[], rows: Row[], measure: (server: ServerHandle, rep: number) => Promise<Array<{ key: string, sample: Sample }>>): Promise<void> {
  const servers = new Map<string, ServerHandle>()
  try {
    await Promise.all(contenders.map(async (c) => {
      try {
        const cpuProfile = profile?.includes(c) === true ? `${outDir}/${new Date().toISOString().replace(/[:.]/g, '-')}-${c}.cpuprofile` : undefined
        servers.set(c, await startServer(c, { cpuProfile }))
        if (cpuProfile !== undefined) log(`profiling ${c} → ${cpuProfile} (summarize: node --import=tsx bench/profile-top.ts <file>)`)
      } catch (err) {
        for (const r of rows.filter(r => r.contender === c)) r.failures.push(`server did not start: ${(err as Error).message}`)
      }
    }))
    // a repeat is skipped whole when over budget, so every repeat pairs all contenders
    for (let rep = 0; rep < config.reps && (rep === 0 || !overBudget()); rep++) {
      for (const c of order(contenders, rep)) {
        const server = servers.get(c)
        if (server === undefined) continue
        try {
          for (const { key, sample } of await measure(server, rep)) rows.find(r => r.key === key)?.samples.push(sample)
        } catch (err) {
          for (const r of rows.filter(r => r.contender === c)) r.failures.push((err as Error).message.split('\n')[0])
        }
      }
    }
  } finally {
    for (const s of servers.values()) await s.close()
  }
}

function rowsFor (contenders: string[], label: (c: string) => string = (c) => LABELS[c] ?? c): Row[] {
  return contenders.map(c => ({ key: c, contender: c, label: label(c), samples: [], failures: [] }))
}

function partialParts (): string[] {
  const parts = (reference.info.parts ?? {}) as Record<string, string>
  return Object.entries(parts).filter(([, v]) => v === 'inline').map(([k]) => `${k} is an inline stand-in stage (plugin not landed when this ran)`)
}

/** Server CPU microseconds per completed operation in the window (null when /proc was unreadable). */
function usPerOp (r: { serverCpuSeconds: number | null, ops: number }): number {
  return r.serverCpuSeconds === null || r.ops === 0 ? NaN : (r.serverCpuSeconds / r.ops) * 1e6
}

function ratioCheck (sc: ScenarioResult, key: string, name: string, goal: number): TargetCheck[] {
  const r = summarize(sc).find(x => x.key === key)?.ratio
  const checks: TargetCheck[] = [{ name, target: `≥ ${goal.toFixed(2)}×`, value: r === undefined ? 'not measured' : `${r.median.toFixed(3)}× (${r.min.toFixed(2)}–${r.max.toFixed(2)})`, met: r === undefined ? null : r.median >= goal }]
  // Cross-check from CPU cost: baseline µs/op ÷ contender µs/op, paired per repeat. It does not
  // depend on how much of the core the server got, which on a shared machine varies run to run.
  const c = costRatio(sc, key)
  if (c !== undefined) checks.push({ name: `${name} — from server CPU per op`, target: `≥ ${goal.toFixed(2)}×`, value: `${c.median.toFixed(3)}× (${c.min.toFixed(2)}–${c.max.toFixed(2)})`, met: c.median >= goal })
  return checks
}

function costRatio (sc: ScenarioResult, key: string, baseKey: string | null = sc.baseline): { median: number, min: number, max: number } | undefined {
  const row = sc.rows.find(r => r.key === key)
  const base = sc.rows.find(r => r.key === baseKey)
  if (row === undefined || base === undefined) return undefined
  const ratios: number[] = []
  for (const s of row.samples) {
    const b = base.samples.find(x => x.rep === s.rep)
    const mine = s.extra['server µs/op']
    const theirs = b?.extra['server µs/op']
    if (typeof mine === 'number' && typeof theirs === 'number' && mine > 0 && Number.isFinite(mine) && Number.isFinite(theirs)) ratios.push(theirs / mine)
  }
  if (ratios.length === 0) return undefined
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) }
}

/**
 * Issue 16: with a real OpenTelemetry SDK installed, the WebSocket rows move by at most 2%. The
 * telemetry row against the default row (no-op meter), paired per repeat, both ways.
 */
function telemetryCheck (sc: ScenarioResult, what: string): TargetCheck[] {
  const on = sc.rows.find(r => r.key === 'portcullis-otel')
  const off = sc.rows.find(r => r.key === 'portcullis')
  if (on === undefined || off === undefined) return []
  const ratios: number[] = []
  for (const s of on.samples) {
    const b = off.samples.find(x => x.rep === s.rep)
    if (b !== undefined && b.value > 0 && Number.isFinite(s.value)) ratios.push(sc.higherIsBetter ? s.value / b.value : b.value / s.value)
  }
  const fmtR = (r: { median: number, min: number, max: number }): string => `${r.median.toFixed(3)}× (${r.min.toFixed(2)}–${r.max.toFixed(2)})`
  const r = ratios.length === 0 ? undefined : { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) }
  const checks: TargetCheck[] = [{ name: `${what}: telemetry on vs off (metrics: true with no SDK)`, target: '≥ 0.98×', value: r === undefined ? 'not measured' : fmtR(r), met: r === undefined ? null : r.median >= 0.98 }]
  const c = sc.higherIsBetter ? costRatio(sc, 'portcullis-otel', 'portcullis') : undefined
  if (c !== undefined) checks.push({ name: `${what}: telemetry on vs off — from server CPU per op`, target: '≥ 0.98×', value: fmtR(c), met: c.median >= 0.98 })
  return checks
}

function scenario (id: string, title: string, metric: string, unit: string, higherIsBetter: boolean, baseline: string | null, rows: Row[]): ScenarioResult {
  return { id, title, metric, unit, higherIsBetter, baseline, rows, notes: [], targets: [], partial: [], seconds: 0 }
}

// ── 1. handshakes ─────────────────────────────────────────────────────────────────────────────
async function handshakes (): Promise<ScenarioResult> {
  // the no-cache row shows what the verified-cookie cache saves; full mode only (time)
  const contenders = chosenContenders() ?? (quick ? ['ws', 'fastify-ws', 'portcullis', 'portcullis-otel'] : ['ws', 'fastify-ws', 'fastify-ws-cookie', 'portcullis', 'portcullis-nocache', 'portcullis-otel'])
  const sc = scenario('handshake', '1. Handshakes — open→close cycles/s at 50 concurrent; upgrade latency at concurrency 1', 'handshakes/s', 'handshakes/s', true, 'fastify-ws', rowsFor(contenders))
  await interleaved(contenders, sc.rows, async (server, rep) => {
    const r = await job({ kind: 'handshake', target: target(server), concurrency: 50, warmupMs: config.warmupMs, windowMs: config.windowMs, latencyCount: config.latencyCount, latencyMaxMs: config.latencyMaxMs }, 60_000)
    const t = r.throughput
    return [{ key: server.contender, sample: { rep, value: t.rate, serverCpu: t.serverCpu, clientCpu: t.clientCpu, errors: t.errors + r.latency.errors, lastError: t.lastError ?? r.latency.lastError, extra: { 'server µs/op': usPerOp(t), 'p50 ms (c=1)': r.latency.p50, 'p99 ms (c=1)': r.latency.p99 } } }]
  })
  sc.targets.push(...ratioCheck(sc, 'portcullis', 'Handshakes, full policy vs bare @fastify/websocket', 0.95))
  sc.targets.push(...telemetryCheck(sc, 'Handshakes'))
  sc.partial = partialParts().filter(p => !p.startsWith('inspection'))
  sc.notes.push('Every handshake sends the same browser-like request to every contender (Origin, User-Agent, Accept-Language, Cache-Control/Pragma, a Cookie header of three cookies with the signed session between two unrelated ones, the permessage-deflate offer, Sec-WebSocket-Protocol), checks the 101 and Sec-WebSocket-Accept, sends a masked close frame and waits for the server to close. Latency is connect → verified 101. All handshakes carry the same session cookie, so the Portcullis row verifies its HMAC once and then hits the cookie-session plugin\'s cache of verified values (what a reconnecting client costs); the cache-off row pays HMAC-SHA256 on every handshake.')
  return sc
}

// ── 2. echo ───────────────────────────────────────────────────────────────────────────────────
async function echo (): Promise<ScenarioResult> {
  const contenders = chosenContenders() ?? (quick ? ['ws', 'fastify-ws', 'portcullis', 'portcullis-relay', 'portcullis-otel'] : ['ws', 'fastify-ws', 'fastify-ws-json', 'portcullis', 'portcullis-relay', 'portcullis-otel'])
  const sc = scenario('echo', '2. Echo — messages/s, 100 connections × 10 in flight, 64-byte JSON text', 'messages/s', 'messages/s', true, 'fastify-ws',
    rowsFor(contenders, (c) => c === 'portcullis' ? 'Portcullis full policy + JSON-Schema inspection' : c === 'portcullis-otel' ? 'Portcullis full policy + JSON-Schema inspection, telemetry on (OpenTelemetry SDK)' : LABELS[c]))
  await interleaved(contenders, sc.rows, async (server, rep) => {
    const r = await job({ kind: 'echo', target: target(server), message: MESSAGE, conns: 100, inFlight: 10, warmupMs: config.warmupMs, windowMs: config.windowMs }, 60_000)
    return [{ key: server.contender, sample: { rep, value: r.rate, serverCpu: r.serverCpu, clientCpu: r.clientCpu, errors: r.errors, lastError: r.lastError, extra: { 'server µs/op': usPerOp(r) } } }]
  })
  sc.targets.push(...ratioCheck(sc, 'portcullis', 'Echo with inspection vs bare @fastify/websocket', 0.90))
  sc.targets.push(...ratioCheck(sc, 'portcullis-relay', 'Relay without inspection vs bare @fastify/websocket', 0.98))
  sc.targets.push(...telemetryCheck(sc, 'Echo'))
  const vsParsing = costRatio(sc, 'portcullis', 'fastify-ws-json')
  if (vsParsing !== undefined) sc.targets.push({ name: 'Echo with inspection vs an app that parses each message itself (context) — from server CPU per op', target: 'context', value: `${vsParsing.median.toFixed(3)}× (${vsParsing.min.toFixed(2)}–${vsParsing.max.toFixed(2)})`, met: null })
  if (contenders.includes('fastify-ws-json')) sc.notes.push('The `fastify-ws-json` row is context, not a target: its handler parses every message with plain JSON.parse before echoing it, as an app that reads JSON messages must. The Portcullis inspection row checks every message against the JSON Schema: the bench message takes the inspector\'s byte-level fast path, which proves it valid without parsing it, and its handler here echoes without reading parsedMessage() (like the baseline\'s), so no parse happens at all; a handler that reads parsedMessage() pays one JSON.parse per message, as the fastify-ws-json row does.')
  sc.partial = partialParts()
  return sc
}

// ── 3. idle memory ────────────────────────────────────────────────────────────────────────────
async function idle (): Promise<ScenarioResult> {
  const contenders = ['ws', 'fastify-ws', 'fastify-ws-cookie', 'portcullis', 'portcullis-otel']
  const sc = scenario('idle', `3. Idle memory — heap per connection at ${config.idleConns.toLocaleString('en-US')} open connections`, 'heap bytes/conn', 'bytes', false, 'fastify-ws', rowsFor(contenders))
  for (let rep = 0; rep < config.idleReps && (rep === 0 || !overBudget()); rep++) {
    for (const c of order(contenders, rep)) {
      const row = sc.rows.find(r => r.key === c) as Row
      let server: ServerHandle | undefined
      try {
        // a fresh server per measurement: the baseline must not carry an earlier run's garbage
        server = await startServer(c)
        const s = server
        let before = { heapUsed: 0, rss: 0, external: 0 }
        let after = before
        const r = await job({ kind: 'idle', target: target(s), n: config.idleConns, warm: config.idleWarm }, 120_000, async (step) => {
          if (step.step === 'baseline') before = await s.memory()
          if (step.step === 'loaded') after = await s.memory()
        })
        const n = r.opened as number
        row.samples.push({
          rep,
          value: (after.heapUsed - before.heapUsed) / n,
          serverCpu: null,
          clientCpu: null,
          errors: config.idleConns - n,
          extra: { 'RSS bytes/conn': (after.rss - before.rss) / n, 'external bytes/conn': (after.external - before.external) / n, 'open ms': r.openMs }
        })
      } catch (err) {
        row.failures.push((err as Error).message.split('\n')[0])
      } finally {
        await server?.close()
      }
    }
  }
  const sum = summarize(sc)
  const p = sum.find(r => r.key === 'portcullis')
  const f = sum.find(r => r.key === 'fastify-ws')
  const delta = p !== undefined && f !== undefined && p.n > 0 && f.n > 0 ? p.median - f.median : undefined
  sc.targets.push({ name: 'Idle heap, full policy over bare @fastify/websocket', target: '≤ +512 bytes/conn', value: delta === undefined ? 'not measured' : `${delta >= 0 ? '+' : ''}${fmt(delta, 0)} bytes/conn`, met: delta === undefined ? null : delta <= 512 })
  const o = sum.find(r => r.key === 'portcullis-otel')
  const odelta = p !== undefined && o !== undefined && p.n > 0 && o.n > 0 ? o.median - p.median : undefined
  sc.targets.push({ name: 'Idle heap, telemetry on over telemetry off', target: '≤ +2% of the full-policy figure', value: odelta === undefined || p === undefined ? 'not measured' : `${odelta >= 0 ? '+' : ''}${fmt(odelta, 0)} bytes/conn (${(odelta / p.median * 100).toFixed(1)}%)`, met: odelta === undefined || p === undefined ? null : odelta <= 0.02 * p.median })
  sc.partial = partialParts()
  sc.notes.push('Heap and RSS are read in the server after three forced GCs, before (after a warm-up of opened and closed connections) and after opening every connection; the difference is divided by the connection count. RSS per connection includes kernel-visible buffers and is noisier.')
  return sc
}

// ── 4. long-poll ──────────────────────────────────────────────────────────────────────────────
async function longpoll (): Promise<ScenarioResult> {
  const contenders = ['portcullis', 'portcullis-stream', 'socketio-polling', 'node-http-floor', 'socketio-ws']
  const POLL_LABELS: Record<string, string> = {
    portcullis: 'Portcullis long-poll (wire v2: the send answer carries the reply), full policy',
    'portcullis-stream': 'Portcullis stream (wire v2: one held SSE response, sends carry acks), full policy',
    'node-http-floor': 'raw node:http, the two v1 exchanges per echo, no policy (context)'
  }
  const sc = scenario('longpoll', '4. Long-poll fallback — echo messages/s and round trip, 50 clients × 1 in flight', 'echoes/s', 'messages/s', true, 'socketio-polling',
    rowsFor(contenders, (c) => POLL_LABELS[c] ?? LABELS[c]))
  const hasFallback = reference.info.fallback === true
  const measured = hasFallback ? contenders : contenders.filter(c => !c.startsWith('portcullis'))
  if (!hasFallback) for (const r of sc.rows.filter(r => r.key.startsWith('portcullis'))) r.failures.push('the @portcullis/fallback plugin had not landed when this ran')
  await interleaved(measured, sc.rows, async (server, rep) => {
    const flavor = server.contender
    const r = await job({ kind: 'poll', flavor, target: target(server), message: MESSAGE, clients: 50, warmupMs: config.pollWarmupMs, windowMs: config.pollWindowMs }, 90_000)
    return [{ key: server.contender, sample: { rep, value: r.rate, serverCpu: r.serverCpu, clientCpu: r.clientCpu, errors: r.errors, lastError: r.lastError, extra: { 'server µs/op': usPerOp(r), 'RTT p50 ms': r.p50, 'RTT p99 ms': r.p99 } } }]
  })
  const sum = summarize(sc)
  // issue 14: the best fallback row ≥ 2×, the long-poll row ≥ 1.3×, the best row's p99 ≤ 0.5×
  const fallbackRows = sum.filter(r => r.key === 'portcullis' || r.key === 'portcullis-stream').filter(r => r.ratio !== undefined)
  const best = fallbackRows.sort((a, b) => (b.ratio?.median ?? 0) - (a.ratio?.median ?? 0))[0]
  const bestKey = best?.key ?? 'portcullis-stream'
  sc.targets.push(...ratioCheck(sc, bestKey, `Best fallback row (${bestKey}) echoes/s vs socket.io polling`, 2.0))
  sc.targets.push(...ratioCheck(sc, 'portcullis', 'Long-poll row echoes/s vs socket.io polling', 1.3))
  const p = sum.find(r => r.key === bestKey)
  const s = sum.find(r => r.key === 'socketio-polling')
  const p99p = p?.extra['RTT p99 ms']
  const p99s = s?.extra['RTT p99 ms']
  sc.targets.push({
    name: `Best fallback row (${bestKey}) p99 round trip vs socket.io polling`,
    target: '≤ 0.50×',
    value: typeof p99p === 'number' && typeof p99s === 'number' ? `${p99p.toFixed(2)} ms vs ${p99s.toFixed(2)} ms (${(p99p / p99s).toFixed(2)}×)` : 'not measured',
    met: typeof p99p === 'number' && typeof p99s === 'number' ? p99p <= 0.5 * p99s : null
  })
  sc.partial = partialParts().filter(x => !x.startsWith('inspection'))
  sc.notes.push('Both long-poll clients are lean keep-alive HTTP clients (node:http Agent with keepAlive): the socket.io one speaks engine.io v4 polling (one GET held, POSTs for events, pings answered), the Portcullis ones speak the fallback protocol v2 (packages/fallback/PROTOCOL.md): on long-poll one exchange per echo (the send answer carries the reply; a poll stays held for pushes), on stream a send per echo with the reply on the held SSE response. Every Portcullis request runs the full policy (origin, signed cookie, subprotocol) and the JSON inspection. The node:http floor does the two v1 exchanges (send, then poll answer) with no policy: what Node\'s HTTP machinery alone costs for them. The socket.io WebSocket row uses raw TCP with pre-masked frames and is there for context only.')
  return sc
}

// ── 5. hostile headers ────────────────────────────────────────────────────────────────────────
async function hostile (): Promise<ScenarioResult> {
  const contenders = ['ws', 'fastify-ws', 'portcullis']
  const variants: Array<{ variant: 'plain' | 'protocol' | 'headers', size: number, name: string }> = [
    { variant: 'plain', size: 0, name: 'floor: plain GET → 404 (not hostile)' },
    { variant: 'protocol', size: 2048, name: '2 KB malformed Sec-WebSocket-Protocol' },
    { variant: 'protocol', size: 8192, name: '8 KB malformed Sec-WebSocket-Protocol' },
    { variant: 'headers', size: 500, name: '500 header lines, 2 Origin lines' },
    { variant: 'headers', size: 2000, name: '2,000 header lines, 2 Origin lines' }
  ]
  const rows: Row[] = []
  for (const v of variants) for (const c of contenders) rows.push({ key: `${c}@${v.variant}${v.size}`, contender: c, label: `${LABELS[c]}: ${v.name}`, samples: [], failures: [] })
  const sc = scenario('hostile', '5. Hostile headers — server CPU time per rejected request', 'server µs/request', 'µs', false, null, rows)
  const reps = quick ? 1 : 3
  const saved = config.reps
  config.reps = reps
  try {
    await interleaved(contenders, sc.rows, async (server, rep) => {
      const out: Array<{ key: string, sample: Sample }> = []
      for (const v of variants) {
        const r = await job({ kind: 'hostile', target: target(server), variant: v.variant, size: v.size, latencyCount: config.hostileLatency, windowMs: config.hostileWindowMs, parallel: 8 }, 60_000)
        const statuses = Object.entries(r.statuses as Record<string, number>).map(([k, n]) => `${k === '0' ? 'dropped' : k}×${n}`).join(' ')
        out.push({ key: `${server.contender}@${v.variant}${v.size}`, sample: { rep, value: r.serverUsPerRequest ?? NaN, serverCpu: r.serverCpu, clientCpu: r.clientCpu, errors: 0, extra: { 'latency p50 ms (c=1)': r.p50, 'latency p99 ms (c=1)': r.p99, 'request bytes': r.requestBytes, answer: statuses.replace(/×\d+/g, '') } } })
      }
      return out
    })
  } finally {
    config.reps = saved
  }
  const sum = summarize(sc)
  const us = (key: string): number | undefined => { const r = sum.find(x => x.key === key); return r === undefined || r.n === 0 ? undefined : r.median }
  // The target is the server time a hostile request costs beyond any request: CPU per request
  // minus the plain-404 floor measured on the same server in the same run (the floor holds TCP
  // accept/close and HTTP parsing, and on a loaded machine it is most of the figure).
  const floor = us('portcullis@plain0')
  for (const v of variants.filter(x => x.size >= 2000)) {
    const u = us(`portcullis@${v.variant}${v.size}`)
    const over = u === undefined || floor === undefined ? undefined : u - floor
    sc.targets.push({
      name: `Portcullis rejects ${v.name}`,
      target: '≪ 1 ms server time over the floor',
      value: over === undefined ? 'not measured' : `${over >= 0 ? '+' : ''}${fmt(over, 0)} µs over the floor (${fmt(u, 0)} µs CPU/request in all; floor ${fmt(floor, 0)} µs)`,
      met: over === undefined ? null : over < 1000
    })
  }
  const lin = (a: string, b: string, factor: number, what: string): void => {
    const x = us(a)
    const y = us(b)
    sc.targets.push({ name: `Linear: ${what}`, target: `cost ratio ≤ ${factor}× (input ×${factor})`, value: x === undefined || y === undefined ? 'not measured' : `${(y / x).toFixed(2)}×`, met: x === undefined || y === undefined ? null : y / x <= factor })
  }
  lin('portcullis@protocol2048', 'portcullis@protocol8192', 4, 'Sec-WebSocket-Protocol 2 KB → 8 KB')
  lin('portcullis@headers500', 'portcullis@headers2000', 4, '500 → 2,000 header lines')
  sc.partial = partialParts().filter(x => !x.startsWith('inspection'))
  sc.notes.push('Server time is the server process\'s CPU (from /proc) over a window of back-to-back requests at concurrency 8, divided by the requests answered; it includes accepting and closing the TCP connection. Latency is what the client saw at concurrency 1. The bare contenders have no origin policy: the 2-Origin request is upgraded (101) there, so their rows measure an accepted handshake, not a rejection. Every request stays under Node\'s 16 KB header limit so it reaches the application. The floor rows (a plain GET answered 404, one connection per request) show what any request costs here before a policy runs.')
  return sc
}

async function main (): Promise<void> {
  mkdirSync(outDir, { recursive: true })
  const machineAtStart = machine()
  log(`${mode} run: ${only.join(', ')}; pinning ${hasTaskset() ? 'server → core 0, load → core 1 (taskset)' : 'unavailable (no taskset)'}`)
  // compiled children by default; --tsx runs the TypeScript sources through tsx (slower: keepNames)
  const fromSource = flag('tsx')
  if (!fromSource) useBuilt(await buildBench())
  log(fromSource ? 'children run the TypeScript sources through tsx' : 'children run a compiled bundle (esbuild, no keepNames)')
  load = await startLoad()
  // the reference request headers and the Portcullis build come from a Portcullis server, so
  // every contender receives the same bytes (same Origin, same cookie, same subprotocol)
  const probe = await startServer('portcullis')
  reference = { headers: probe.clientHeaders, info: probe.info }
  await probe.close()
  log(`Portcullis parts: ${JSON.stringify(reference.info.parts)}`)

  const runners: Record<string, () => Promise<ScenarioResult>> = { handshake: handshakes, echo, idle, longpoll, hostile }
  const scenarios: ScenarioResult[] = []
  try {
    for (const id of ALL) {
      if (!only.includes(id)) continue
      const t0 = Date.now()
      log(`scenario ${id}`)
      const sc = await runners[id]()
      sc.seconds = (Date.now() - t0) / 1000
      scenarios.push(sc)
      process.stderr.write('\n' + scenarioMarkdown(sc) + '\n\n')
    }
  } finally {
    await load.close()
  }

  const run: RunResult = {
    version: 1,
    date: new Date().toISOString(),
    mode,
    seconds: (Date.now() - started) / 1000,
    machine: { ...machineAtStart, loadavgEnd: loadavg().map(n => Math.round(n * 100) / 100) },
    versions: {
      node: process.version,
      fastify: version('fastify'),
      '@fastify/websocket': version('@fastify/websocket'),
      ws: version('ws'),
      'socket.io': version('socket.io')
    },
    build: fromSource ? 'TypeScript sources through tsx (keepNames)' : 'esbuild bundle of bench/server.ts and bench/load.ts, split so each server loads only its contender\'s modules, Portcullis packages from source, keepNames off; third-party packages as installed',
    ...(process.env.BENCH_PIN_TICK === '1' ? { tickObjectPinned: 'BENCH_PIN_TICK=1: every server kept one tick object alive (bench/lib/pin-tick.ts)' } : {}),
    pinning: hasTaskset() ? 'Server pinned to core 0 and load generator to core 1 with taskset' : 'No taskset: processes not pinned',
    portcullis: reference.info,
    config: { ...config, only, budgetSeconds: BUDGET_MS / 1000, budgetHit },
    scenarios
  }
  const md = runMarkdown(run)
  if (!flag('no-write')) {
    const stamp = run.date.slice(0, 16).replace(/[:T]/g, '-')
    writeFileSync(`${outDir}/${stamp}-${mode}.json`, JSON.stringify(run, null, 2) + '\n')
    writeFileSync(`${outDir}/${stamp}-${mode}.md`, md + '\n')
    writeFileSync(`${outDir}/latest-${mode}.json`, JSON.stringify(run, null, 2) + '\n')
    writeFileSync(`${outDir}/latest-${mode}.md`, md + '\n')
    log(`wrote ${outDir}/${stamp}-${mode}.{json,md} and latest-${mode}.{json,md}`)
  }
  if (flag('update-docs')) updateDocs(md)
  const missed = scenarios.flatMap(s => s.targets.filter(t => t.met === false).map(t => t.name))
  log(`done in ${Math.round(run.seconds)} s; targets missed: ${missed.length === 0 ? 'none' : missed.join('; ')}`)
  const failed = scenarios.flatMap(s => s.rows.filter(r => r.samples.length === 0 && r.failures.length > 0 && !r.failures[0].includes('had not landed')))
  if (failed.length > 0) {
    log(`rows with no sample: ${failed.map(r => `${r.key} (${r.failures[0]})`).join('; ')}`)
    process.exitCode = 1
  }
}

/** Replace the generated block of docs/BENCHMARKS.md with this run's tables. */
function updateDocs (md: string): void {
  const file = new URL('docs/BENCHMARKS.md', root)
  const start = '<!-- bench:results:start -->'
  const end = '<!-- bench:results:end -->'
  const doc = readFileSync(file, 'utf8')
  const a = doc.indexOf(start)
  const b = doc.indexOf(end)
  if (a === -1 || b === -1) throw new Error('docs/BENCHMARKS.md has no bench:results markers')
  writeFileSync(file, doc.slice(0, a + start.length) + '\n\n' + md.replace(/^## /m, '### ').replace(/^### (\d)/gm, '#### $1') + '\n' + doc.slice(b))
  log('updated docs/BENCHMARKS.md')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
