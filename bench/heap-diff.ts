/**
 * Where does a connection's heap go? Opens N idle connections to two contenders (in this
 * process, one after the other) and prints, per connection, which kinds of heap object the
 * second retains beyond the first — from V8 heap snapshots taken before and after, after GCs.
 * The load client lives in the same process but is the same for both, so it cancels out.
 *
 *   node --conditions=portcullis-source --import=tsx bench/heap-diff.ts [n=1000] [base=fastify-ws] [other=portcullis] [--retainers]
 *
 * `--retainers` keys every object also by the field that holds it (`Owner.field`), to say whose it is.
 *
 * Run from source it compiles itself first (bench/lib/build.ts) and re-runs the compiled file:
 * under tsx every named closure carries an extra property store, which would be counted.
 */
import { spawnSync } from 'node:child_process'
import { getHeapSnapshot } from 'node:v8'
import { startFastifyWs, startWs } from './servers/bare.js'
import { startPortcullis } from './servers/portcullis.js'
import type { BenchServer } from './servers/types.js'
import { closeAll, openMany } from './lib/ws-load.js'
import { sign } from '@fastify/cookie'
import { browserHeaders, COOKIE_NAME, SECRET, SESSION_ID, WS_PATH } from './lib/fixture.js'

type Census = Map<string, { count: number, bytes: number }>

const starters: Record<string, () => Promise<BenchServer>> = {
  ws: startWs,
  'fastify-ws': startFastifyWs,
  'fastify-ws-cookie': () => startFastifyWs({ cookie: true }),
  portcullis: () => startPortcullis({ inspect: true }),
  'portcullis-relay': () => startPortcullis({ inspect: false }),
  'portcullis-otel': () => startPortcullis({ inspect: true, telemetry: true })
}

async function gc (): Promise<void> {
  const fn = (globalThis as { gc?: () => void }).gc
  if (fn === undefined) throw new Error('run with --expose-gc')
  for (let i = 0; i < 3; i++) {
    fn()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Count heap objects by kind and constructor (or closure) name. */
async function census (): Promise<Census> {
  await gc()
  const chunks: Buffer[] = []
  for await (const c of getHeapSnapshot()) chunks.push(c as Buffer)
  const snap = JSON.parse(Buffer.concat(chunks).toString()) as { snapshot: { meta: { node_fields: string[], node_types: [string[]], edge_fields: string[], edge_types: [string[]] } }, nodes: number[], edges: number[], strings: string[] }
  const fields = snap.snapshot.meta.node_fields
  const types = snap.snapshot.meta.node_types[0]
  const width = fields.length
  const ti = fields.indexOf('type')
  const ni = fields.indexOf('name')
  const si = fields.indexOf('self_size')
  const out: Census = new Map()
  // with --retainers: each small object is also keyed by the edge that holds it (owner.edge), so
  // the census says whose field a per-connection object sits in
  const via = retainers ? firstRetainers(snap, width) : undefined
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + ti]]
    const name = type.includes('string') ? '(string)' : type === 'code' ? '(code)' : snap.strings[snap.nodes[i + ni]].slice(0, 60)
    const key = via === undefined ? `${type}: ${name}` : `${type}: ${name} ← ${via[i / width] ?? '?'}`
    const e = out.get(key) ?? { count: 0, bytes: 0 }
    e.count++
    e.bytes += snap.nodes[i + si]
    out.set(key, e)
  }
  return out
}

/** For each node, `owner-name.edge-name` of one retaining edge (the first found). */
function firstRetainers (snap: { snapshot: { meta: { node_fields: string[], edge_fields: string[], edge_types: [string[]] } }, nodes: number[], edges: number[], strings: string[] }, width: number): string[] {
  const nf = snap.snapshot.meta.node_fields
  const ef = snap.snapshot.meta.edge_fields
  const etypes = snap.snapshot.meta.edge_types[0]
  const ec = nf.indexOf('edge_count')
  const oti = nf.indexOf('type')
  const otypes = (snap.snapshot.meta as unknown as { node_types: [string[]] }).node_types[0]
  const ni = nf.indexOf('name')
  const ew = ef.length
  const eti = ef.indexOf('type')
  const eni = ef.indexOf('name_or_index')
  const eto = ef.indexOf('to_node')
  const out: string[] = []
  let e = 0
  for (let i = 0; i < snap.nodes.length; i += width) {
    // owners are named as the census names nodes (a string's name is its text: too many keys)
    const ot = otypes[snap.nodes[i + oti]]
    const owner = ot.includes('string') ? '(string)' : ot === 'code' || ot === 'number' ? `(${ot})` : snap.strings[snap.nodes[i + ni]].slice(0, 40)
    for (let k = 0; k < snap.nodes[i + ec]; k++, e += ew) {
      const to = snap.edges[e + eto] / width
      const t = etypes[snap.edges[e + eti]]
      if (t === 'weak' || t === 'shortcut') continue
      if (out[to] !== undefined) continue
      const n = snap.edges[e + eni]
      // only an object's or closure's own fields are named (other edge names are too many keys)
      out[to] = `${owner}.${t === 'property' && (ot === 'object' || ot === 'closure') ? snap.strings[n].slice(0, 40) : `[${t}]`}`
    }
  }
  return out
}

async function perConnection (name: string, n: number): Promise<Census> {
  const server = await starters[name]()
  // the same bytes for every contender (the bare servers mint no cookie: the same signed one)
  const headers = browserHeaders(`${COOKIE_NAME}=${sign(SESSION_ID, SECRET)}`)
  const target = { port: server.port, serverPid: process.pid, path: WS_PATH, headers }
  await closeAll((await openMany(target, 100, 20)).map(o => o.socket))
  const before = await census()
  const open = await openMany(target, n, 50)
  const after = await census()
  await closeAll(open.map(o => o.socket))
  await server.close()
  const delta: Census = new Map()
  for (const [k, v] of after) {
    const b = before.get(k) ?? { count: 0, bytes: 0 }
    delta.set(k, { count: (v.count - b.count) / n, bytes: (v.bytes - b.bytes) / n })
  }
  return delta
}

if (import.meta.url.endsWith('.ts')) {
  const { buildEntries } = await import('./lib/build.js')
  const out = await buildEntries({ 'heap-diff': 'heap-diff.ts' })
  const r = spawnSync(process.execPath, ['--expose-gc', out['heap-diff'], ...process.argv.slice(2)], { stdio: 'inherit' })
  process.exit(r.status ?? 1)
}

const args = process.argv.slice(2).filter(a => a !== '--retainers')
const retainers = process.argv.includes('--retainers')
const n = Number(args[0] ?? 1000)
const baseName = args[1] ?? 'fastify-ws'
const otherName = args[2] ?? 'portcullis'
const base = await perConnection(baseName, n)
const other = await perConnection(otherName, n)
const keys = new Set([...base.keys(), ...other.keys()])
const rows = [...keys].map((k) => ({
  k,
  count: (other.get(k)?.count ?? 0) - (base.get(k)?.count ?? 0),
  bytes: (other.get(k)?.bytes ?? 0) - (base.get(k)?.bytes ?? 0)
})).sort((a, b) => b.bytes - a.bytes)
const total = (c: Census): number => [...c.values()].reduce((a, v) => a + v.bytes, 0)
console.log(`heap per connection at ${n}: ${baseName} ${total(base).toFixed(0)} B, ${otherName} ${total(other).toFixed(0)} B, difference ${(total(other) - total(base)).toFixed(0)} B`)
console.log(`\nwhat ${otherName} holds per connection beyond ${baseName} (|Δ| ≥ 16 B):`)
for (const r of rows.filter(r => Math.abs(r.bytes) >= 16)) console.log(`${r.bytes.toFixed(0).padStart(6)} B  ${r.count.toFixed(2).padStart(6)} objects  ${r.k}`)
process.exit(0)
