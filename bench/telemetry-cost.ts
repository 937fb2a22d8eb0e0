/**
 * The telemetry's own work per handshake, measured in one process: what the core records for
 * one accepted handshake (two clock reads, the allowed decision with its duration, the open and
 * the close), into a real OpenTelemetry SDK MeterProvider with a periodic reader, and the same
 * into the API's no-op meter. `node --conditions=portcullis-source --import=tsx bench/telemetry-cost.ts`
 *
 * Why beside the bench rows: two server processes running identical code differ by up to ±5%
 * in the handshake scenario (run with BENCH_AA=1 to see it), which hides a 2% effect. This
 * measures the added work itself, and relates it to the last full run's server µs per handshake.
 */
import { Metrics } from '../packages/policy/src/telemetry.js'
import { discardingMeterProvider } from './servers/otel-discard.js'
import { latestMedian, medianOf } from './lib/latest.js'

function perHandshakeNs (metrics: Metrics, n: number): number {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    const start = performance.now()
    metrics.decision('/ws', 'websocket', 'allowed', '', '', (performance.now() - start) / 1000)
    metrics.opened('/ws', 'websocket')
    metrics.closed('/ws', 'websocket', 1000)
  }
  return Number(process.hrtime.bigint() - t0) / n
}

const provider = discardingMeterProvider(1000)
const sdk = new Metrics(provider, 'bench')
const N = 1_000_000
// the first call warms up the JIT and the SDK's first aggregations
const ns = medianOf(5, () => perHandshakeNs(sdk, N))
await provider.shutdown()
const handshakeUs = latestMedian('handshake', 'portcullis', 'server µs/op')
console.log(`telemetry work per handshake (SDK MeterProvider + reader): ${ns.toFixed(0)} ns (median of 5 × ${N.toLocaleString('en')})`)
if (typeof handshakeUs === 'number') console.log(`= ${(ns / 10 / handshakeUs).toFixed(2)}% of the last full run's ${handshakeUs.toFixed(0)} µs server CPU per Portcullis handshake (target ≤ 2%)`)
