/**
 * Hostile upgrade requests and the loop that times their rejection. "Server time" is taken two
 * ways: server CPU per request over a window at a small concurrency (what a flood costs the
 * server), and client-observed latency at concurrency 1 (p50/p99, includes loopback).
 */
import { connect } from 'node:net'
import { buildUpgrade, loopbackSource, readHead } from './frames.js'
import { startWindow } from './cpu.js'
import { latencySummary } from './stats.js'
import { sleep } from './ws-load.js'

const HOST = '127.0.0.1'

/**
 * A `Sec-WebSocket-Protocol` of `bytes` length that is malformed only at its very end (a token
 * list of valid tokens, then a character a token may not hold), so a parser must read all of it
 * before it can refuse. Other headers are the valid reference ones.
 */
export function malformedProtocolRequest (port: number, path: string, headers: Array<[string, string]>, bytes: number): Buffer {
  const unit = 'chat.v0, '
  let value = unit.repeat(Math.ceil(bytes / unit.length)).slice(0, bytes - 2)
  value += ' @' // '@' is a separator (RFC 7230 §3.2.6), not a token character
  const rest = headers.filter(([name]) => name.toLowerCase() !== 'sec-websocket-protocol')
  return buildUpgrade(`${HOST}:${port}`, path, [...rest, ['Sec-WebSocket-Protocol', value]]).bytes
}

/**
 * A request with `count` header lines in total: the reference upgrade headers, filler lines with
 * short distinct names, and a second `Origin` line (a header-smuggling attempt: which Origin is
 * the real one?). Names are 3 characters so 2,000 lines stay under Node's 16 KB header limit and
 * the request reaches the application instead of being refused by the HTTP parser.
 */
export function manyHeadersRequest (port: number, path: string, headers: Array<[string, string]>, count: number): Buffer {
  const lines: Array<[string, string]> = [...headers, ['Origin', 'https://evil.example.net']]
  const head = buildUpgrade(`${HOST}:${port}`, path, lines).bytes.toString('latin1')
  // 5 fixed lines (Host, Upgrade, Connection, Key, Version) + the extras, then fillers written
  // without optional whitespace ("0ab:1") so each costs 7 bytes
  const fillers: string[] = []
  const digits = '0123456789'
  const alnum = 'abcdefghijklmnopqrstuvwxyz0123456789'
  for (let i = 0; 5 + lines.length + fillers.length < count; i++) {
    fillers.push(digits[Math.floor(i / 1296) % 10] + alnum[Math.floor(i / 36) % 36] + alnum[i % 36] + ':1')
  }
  return Buffer.from(head.slice(0, -2) + fillers.map(f => f + '\r\n').join('') + '\r\n', 'latin1')
}

/** The floor: a plain GET to an unknown path (404), one connection per request like the others. */
export function plainRequest (port: number): Buffer {
  return Buffer.from(`GET /nothing HTTP/1.1\r\nHost: ${HOST}:${port}\r\nConnection: close\r\n\r\n`, 'latin1')
}

/** One request: connect, write, read the response head, destroy. Resolves with status and ms. */
function once (port: number, bytes: Buffer): Promise<{ status: number, ms: number }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint()
    const s = connect({ port, host: HOST, localAddress: loopbackSource() })
    s.setNoDelay(true)
    let buf: Buffer | undefined
    let status = 0
    const timer = setTimeout(() => s.destroy(), 5000)
    s.on('data', (chunk: Buffer) => {
      buf = buf === undefined ? chunk : Buffer.concat([buf, chunk])
      const h = readHead(buf, undefined)
      if (!h.done) return
      status = h.status
      s.destroy()
    })
    s.on('error', () => {})
    s.on('close', () => {
      clearTimeout(timer)
      resolve({ status, ms: Number(process.hrtime.bigint() - t0) / 1e6 })
    })
    s.write(bytes)
  })
}

export interface HostileResult {
  /** Statuses seen, e.g. { "400": 1234 }. 0 = no response (connection dropped). */
  statuses: Record<string, number>
  p50: number
  p99: number
  n: number
  /** Server CPU microseconds per request (window at concurrency `parallel`), or null. */
  serverUsPerRequest: number | null
  rate: number
  serverCpu: number | null
  clientCpu: number
}

export async function hostileRun (port: number, serverPid: number, bytes: Buffer, latencyCount: number, windowMs: number, parallel = 4): Promise<HostileResult> {
  const statuses: Record<string, number> = {}
  const lat: number[] = []
  const deadline = Date.now() + windowMs * 2
  for (let i = 0; i < latencyCount && Date.now() < deadline; i++) {
    const r = await once(port, bytes)
    statuses[r.status] = (statuses[r.status] ?? 0) + 1
    lat.push(r.ms)
  }
  let n = 0
  const ctl = { stop: false }
  const win = startWindow(serverPid)
  const worker = async (): Promise<void> => {
    while (!ctl.stop) {
      const r = await once(port, bytes)
      if (ctl.stop) break
      statuses[r.status] = (statuses[r.status] ?? 0) + 1
      n++
    }
  }
  const workers = Array.from({ length: parallel }, worker)
  await sleep(windowMs)
  const w = win.end()
  ctl.stop = true
  await Promise.all(workers)
  const s = latencySummary(lat)
  return {
    statuses,
    p50: s.p50,
    p99: s.p99,
    n: s.n,
    serverUsPerRequest: w.serverCpuSeconds === null || n === 0 ? null : (w.serverCpuSeconds / n) * 1e6,
    rate: n / w.seconds,
    serverCpu: w.serverCpu,
    clientCpu: w.clientCpu
  }
}
