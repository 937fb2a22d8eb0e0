/**
 * Lean WebSocket load: raw TCP sockets, prebuilt upgrade requests (the 101 and
 * `Sec-WebSocket-Accept` are checked on every handshake), pre-masked frames. Every loop is
 * bounded by a deadline and every socket by a timeout, so no run can hang.
 */
import { connect, type Socket } from 'node:net'
import { FrameReader, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT, buildUpgrade, loopbackSource, maskedClose, maskedFrame, readHead, type UpgradeRequest } from './frames.js'
import { startWindow, type WindowResult } from './cpu.js'
import { latencySummary } from './stats.js'

const HOST = '127.0.0.1'
const SOCKET_TIMEOUT_MS = 5000

export interface Target {
  port: number
  serverPid: number
  path: string
  /** Extra upgrade headers (Origin, Cookie, Sec-WebSocket-Protocol for Portcullis). */
  headers: Array<[string, string]>
}

/** A pool of distinct upgrade requests (distinct keys), built before the run. */
export function requestPool (t: Target, n = 64): UpgradeRequest[] {
  const out: UpgradeRequest[] = []
  for (let i = 0; i < n; i++) out.push(buildUpgrade(`${HOST}:${t.port}`, t.path, t.headers))
  return out
}

const CLOSE = maskedClose(1000)

export interface Errors {
  count: number
  last?: string
}

function noteError (e: Errors, why: string): void {
  e.count++
  e.last = why
}

/**
 * One open→close cycle: connect, send the upgrade, verify 101 + accept, send a close frame,
 * wait for the server to close. Calls `done(ok, upgradeMs)`.
 */
function cycle (port: number, req: UpgradeRequest, errors: Errors, done: (ok: boolean, upgradeMs: number) => void): void {
  const t0 = process.hrtime.bigint()
  let upgradeMs = NaN
  let buf: Buffer | undefined
  let state: 'head' | 'closing' | 'failed' = 'head'
  const s: Socket = connect({ port, host: HOST, localAddress: loopbackSource() })
  s.setNoDelay(true)
  const timer = setTimeout(() => { noteError(errors, 'timeout'); state = 'failed'; s.destroy() }, SOCKET_TIMEOUT_MS)
  s.write(req.bytes)
  s.on('data', (chunk: Buffer) => {
    if (state !== 'head') return
    buf = buf === undefined ? chunk : Buffer.concat([buf, chunk])
    const h = readHead(buf, req.accept)
    if (!h.done) return
    if (!h.ok) {
      noteError(errors, h.reason ?? 'bad response')
      state = 'failed'
      s.destroy()
      return
    }
    upgradeMs = Number(process.hrtime.bigint() - t0) / 1e6
    state = 'closing'
    s.write(CLOSE)
  })
  s.on('error', (err) => { if (state !== 'failed') noteError(errors, err.message); state = 'failed' })
  s.on('close', () => {
    clearTimeout(timer)
    done(state === 'closing', upgradeMs)
  })
}

export interface ThroughputResult extends WindowResult {
  /** Completed operations per second in the window. */
  rate: number
  ops: number
  errors: number
  lastError?: string
}

/** Handshakes/s: `concurrency` loops of open→close, warm-up first, then a measured window. */
export async function handshakeThroughput (t: Target, concurrency: number, warmupMs: number, windowMs: number): Promise<ThroughputResult> {
  const pool = requestPool(t)
  const errors: Errors = { count: 0 }
  let next = 0
  let completed = 0
  let stopping = false
  let active = 0
  let drained: () => void = () => {}
  const allDone = new Promise<void>((resolve) => { drained = resolve })
  const loop = (): void => {
    if (stopping) {
      if (--active === 0) drained()
      return
    }
    cycle(t.port, pool[next++ & 63], errors, (ok) => {
      if (ok) completed++
      loop()
    })
  }
  for (let i = 0; i < concurrency; i++) { active++; loop() }
  await sleep(warmupMs)
  const base = completed
  const baseErrors = errors.count
  const win = startWindow(t.serverPid)
  await sleep(windowMs)
  // only cycles that completed inside the window count; those in flight finish uncounted
  const ops = completed - base
  const r = win.end()
  const errs = errors.count - baseErrors
  stopping = true
  await Promise.race([allDone, sleep(SOCKET_TIMEOUT_MS + 1000)])
  return { ...r, ops, rate: ops / r.seconds, errors: errs, lastError: errors.last }
}

export interface LatencyResult {
  n: number
  p50: number
  p99: number
  max: number
  errors: number
  lastError?: string
}

/** Upgrade latency (connect → verified 101) at concurrency 1, bounded by count and time. */
export async function handshakeLatency (t: Target, count: number, maxMs: number): Promise<LatencyResult> {
  const pool = requestPool(t)
  const errors: Errors = { count: 0 }
  const samples: number[] = []
  const deadline = Date.now() + maxMs
  for (let i = 0; i < count && Date.now() < deadline; i++) {
    const ms = await new Promise<number>((resolve) => cycle(t.port, pool[i & 63], errors, (ok, upgradeMs) => resolve(ok ? upgradeMs : NaN)))
    if (!Number.isNaN(ms)) samples.push(ms)
  }
  return { ...latencySummary(samples), errors: errors.count, lastError: errors.last }
}

interface OpenSocket {
  socket: Socket
  reader?: FrameReader
}

/** Open one upgraded connection; resolves with the socket and any bytes after the 101. */
function openOne (port: number, req: UpgradeRequest): Promise<{ socket: Socket, rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: HOST, localAddress: loopbackSource() })
    s.setNoDelay(true)
    let buf: Buffer | undefined
    const timer = setTimeout(() => { s.destroy(); reject(new Error('upgrade timeout')) }, SOCKET_TIMEOUT_MS)
    const onData = (chunk: Buffer): void => {
      buf = buf === undefined ? chunk : Buffer.concat([buf, chunk])
      const h = readHead(buf, req.accept)
      if (!h.done) return
      clearTimeout(timer)
      s.off('data', onData)
      s.off('error', onError)
      if (!h.ok) {
        s.destroy()
        reject(new Error(h.reason))
        return
      }
      resolve({ socket: s, rest: h.rest })
    }
    const onError = (err: Error): void => { clearTimeout(timer); reject(err) }
    s.on('data', onData)
    s.on('error', onError)
    s.write(req.bytes)
  })
}

/** Open `n` connections, `parallel` at a time. */
export async function openMany (t: Target, n: number, parallel: number): Promise<Array<{ socket: Socket, rest: Buffer }>> {
  const pool = requestPool(t)
  const out: Array<{ socket: Socket, rest: Buffer }> = []
  let i = 0
  const worker = async (): Promise<void> => {
    while (i < n) {
      const k = i++
      out.push(await openOne(t.port, pool[k & 63]))
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker))
  return out
}

/** Close connections politely (close frame), then destroy whatever has not closed after a moment. */
export async function closeAll (sockets: Socket[]): Promise<void> {
  await Promise.all(sockets.map((s) => new Promise<void>((resolve) => {
    if (s.destroyed) return resolve()
    const timer = setTimeout(() => { s.destroy(); resolve() }, 1000)
    s.once('close', () => { clearTimeout(timer); resolve() })
    s.on('error', () => {})
    s.write(CLOSE)
  })))
}

/**
 * Echo messages/s: `conns` connections, each keeping `inFlight` 64-byte text messages in
 * flight (a new one is written for every echo received). Echoes are checked for opcode and size.
 */
export async function echoThroughput (t: Target, message: string, conns: number, inFlight: number, warmupMs: number, windowMs: number): Promise<ThroughputResult> {
  const frame = maskedFrame(OPCODE_TEXT, message)
  const flen = frame.length
  const payloadLen = Buffer.byteLength(message)
  const batch = Buffer.concat(Array.from({ length: inFlight }, () => frame))
  const errors: Errors = { count: 0 }
  const opened = await openMany(t, conns, 20)
  let received = 0
  let running = true
  const all: OpenSocket[] = []
  for (const { socket, rest } of opened) {
    const entry: OpenSocket = { socket }
    let k = 0
    entry.reader = new FrameReader((opcode, payload) => {
      if (opcode === OPCODE_TEXT && payload.length === payloadLen) {
        k++
      } else if (opcode === OPCODE_CLOSE) {
        // after the window the client closes first; a close before that is the server's doing
        if (running) noteError(errors, `server closed: ${payload.length >= 2 ? payload.readUInt16BE(0) : 1005} ${payload.subarray(2).toString()}`)
      } else if (opcode === OPCODE_PING) {
        socket.write(maskedFrame(OPCODE_PONG, Buffer.from(payload)))
      } else {
        noteError(errors, `unexpected frame opcode ${opcode} length ${payload.length}`)
      }
    })
    socket.on('data', (chunk: Buffer) => {
      k = 0
      entry.reader?.push(chunk)
      if (k === 0) return
      received += k
      if (running) socket.write(k === inFlight ? batch : batch.subarray(0, k * flen))
    })
    socket.on('error', (err) => noteError(errors, err.message))
    all.push(entry)
    if (rest.length > 0) entry.reader.push(rest)
  }
  for (const e of all) e.socket.write(batch)
  await sleep(warmupMs)
  const base = received
  const baseErrors = errors.count
  const win = startWindow(t.serverPid)
  await sleep(windowMs)
  const ops = received - base
  const r = win.end()
  running = false
  const errs = errors.count - baseErrors
  await closeAll(all.map(e => e.socket))
  return { ...r, ops, rate: ops / r.seconds, errors: errs, lastError: errors.last }
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
