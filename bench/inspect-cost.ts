/**
 * The JSON inspection's own work per message, measured in one process: what the echo row's
 * inspector does with each 64-byte message (the byte-level fast path, which proves the bench
 * message valid without parsing it), the same when the handler reads `parsedMessage()` (one
 * parse, on that read), and the same message's bare decode and parse. `node --conditions=portcullis-source --import=tsx bench/inspect-cost.ts`
 *
 * Why beside the bench rows: on a shared machine the echo scenario's per-repeat ratios spread
 * by ±20%, which hides a few per cent. This measures the added work itself, and relates it to
 * the last full run's server µs per echoed message of bare @fastify/websocket.
 */
import type { PortcullisSocket } from '@portcullis/policy'
import { json } from '../packages/subprotocols/src/json.js'
import { kInspect, parsedMessage, type StatelessInspector } from '../packages/subprotocols/src/guard.js'
import { MESSAGE, MESSAGE_SCHEMA } from './lib/fixture.js'
import { latestMedian, medianOf } from './lib/latest.js'

const def = json({ schema: MESSAGE_SCHEMA as object }) as unknown as { [kInspect]: { inspect: StatelessInspector } }
const inspect = def[kInspect].inspect
// the inspector keeps its parse for `parsedMessage(socket, data)`: any object stands for the socket here
const socket = {} as unknown as PortcullisSocket

// a fresh Buffer per message, as `ws` hands over
const N = 1_000_000
const buffers = Array.from({ length: 1024 }, () => Buffer.from(MESSAGE))
function perMessageNs (fn: (b: Buffer) => unknown): number {
  let sink = 0
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) if (fn(buffers[i & 1023]) === undefined) sink++
  const ns = Number(process.hrtime.bigint() - t0) / N
  if (sink < 0) console.log(sink)
  return ns
}

const inspected = medianOf(5, () => perMessageNs(b => inspect(b, false, socket)))
if (parsedMessage(socket, buffers[(N - 1) & 1023]) === undefined) throw new Error('the inspector did not expose its parse')
// what a handler that reads every message pays in all: the check, then the parse on its read
const inspectedAndRead = medianOf(5, () => perMessageNs(b => inspect(b, false, socket) ?? parsedMessage(socket, b) ?? undefined))
const parseOnly = medianOf(5, () => perMessageNs(b => JSON.parse(b.toString())))
const echoUs = latestMedian('echo', 'fastify-ws', 'server µs/op')
console.log(`JSON inspection per 64-byte message: ${inspected.toFixed(0)} ns (median of 5 × ${N.toLocaleString('en')}); with the handler reading parsedMessage(): ${inspectedAndRead.toFixed(0)} ns; toString + JSON.parse alone: ${parseOnly.toFixed(0)} ns`)
if (typeof echoUs === 'number') console.log(`= ${(inspected / 10 / echoUs).toFixed(2)}% of the last full run's ${echoUs.toFixed(2)} µs server CPU per echoed message of bare @fastify/websocket (target: the row ≥ 0.90×, i.e. ≤ 11% added)`)
