/**
 * The probe's own wire layer, over raw TCP/TLS sockets: request heads written byte by byte
 * (so duplicated, missing or malformed lines go out exactly as asked), a small HTTP/1.1
 * response reader, and RFC 6455 frames in both directions. Nothing here is a client library:
 * it must be able to send what no client library will.
 */
import { connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { createHash, randomBytes } from 'node:crypto'

/** Where the probe connects, from the URL the user gave. */
export interface Target {
  secure: boolean
  /** Host to connect to (IPv6 without brackets). */
  hostname: string
  port: number
  /** The `Host` header: host and port as in the URL (default port omitted). */
  host: string
  /** Path of the WebSocket route, without query. */
  path: string
  ca?: string | Buffer | Array<string | Buffer>
}

/** One header line; a name may repeat (duplicated headers are part of the attack surface). */
export type HeaderLines = Array<[string, string]>

export interface HttpAnswer {
  status: number
  /** Lower-cased names; every line kept, in order. */
  headers: Map<string, string[]>
  body: Buffer
  /** When the answer is a 101: the open socket and the bytes that followed the head. */
  upgraded?: { socket: Socket, rest: Buffer }
  /** The answer did not finish within the timeout (the head arrived; the body is partial). */
  truncated: boolean
}

/** The connection failed before any answer: refused, reset, TLS, or no answer in time. */
export class WireError extends Error {
  readonly kind: 'connect' | 'timeout' | 'closed'
  constructor (kind: 'connect' | 'timeout' | 'closed', message: string) {
    super(message)
    this.kind = kind
  }
}

const MAX_HEAD_BYTES = 64 * 1024
/** The probe reads at most this much of any body: it only looks for a code and a few headers. */
const MAX_BODY_BYTES = 256 * 1024

export function open (target: Target, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => { cleanup(); socket.destroy(); reject(new WireError('connect', err.message)) }
    const timer = setTimeout(() => onError(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs)
    const servername = /^[\d.]+$|:/.test(target.hostname) ? undefined : target.hostname
    const socket: Socket = target.secure
      ? tlsConnect({ host: target.hostname, port: target.port, servername, ca: target.ca, ALPNProtocols: ['http/1.1'] }, onConnect)
      : tcpConnect({ host: target.hostname, port: target.port }, onConnect)
    socket.once('error', onError)
    function onConnect (): void { cleanup(); socket.setNoDelay(true); resolve(socket) }
    function cleanup (): void { clearTimeout(timer); socket.off('error', onError) }
  })
}

/** Serialize a request head. Values are written as given: the caller decides what is valid. */
export function head (method: string, path: string, httpVersion: string, lines: HeaderLines): Buffer {
  let s = `${method} ${path} HTTP/${httpVersion}\r\n`
  for (const [name, value] of lines) s += `${name}: ${value}\r\n`
  return Buffer.from(s + '\r\n', 'latin1')
}

/**
 * Write `request` on a fresh connection and read one answer. A 101 leaves the socket open for
 * frames; any other answer is read to its end (Content-Length, chunked, or close) and the
 * socket destroyed.
 */
export async function exchange (target: Target, request: Buffer, timeoutMs: number): Promise<HttpAnswer> {
  const socket = await open(target, timeoutMs)
  return await new Promise<HttpAnswer>((resolve, reject) => {
    let buf = Buffer.alloc(0)
    let answer: HttpAnswer | undefined
    let bodyStart = 0
    let settled = false
    const timer = setTimeout(() => finish(true), timeoutMs)
    socket.on('data', onData)
    socket.on('end', () => finish(false))
    socket.on('close', () => finish(false))
    socket.on('error', () => finish(false))
    socket.write(request)

    function onData (chunk: Buffer): void {
      if (settled) return
      buf = Buffer.concat([buf, chunk])
      if (answer === undefined) {
        const end = buf.indexOf('\r\n\r\n')
        if (end === -1) {
          if (buf.length > MAX_HEAD_BYTES) finish(false)
          return
        }
        answer = parseHead(buf.subarray(0, end).toString('latin1'))
        bodyStart = end + 4
        if (answer.status === 101) {
          settled = true
          clearTimeout(timer)
          socket.off('data', onData)
          socket.removeAllListeners('end')
          socket.removeAllListeners('close')
          socket.removeAllListeners('error')
          socket.on('error', () => {})
          answer.upgraded = { socket, rest: buf.subarray(bodyStart) }
          resolve(answer)
          return
        }
      }
      if (bodyComplete()) finish(false)
    }

    function bodyComplete (): boolean {
      if (answer === undefined) return false
      const body = buf.subarray(bodyStart)
      if (body.length > MAX_BODY_BYTES) return true
      const te = (answer.headers.get('transfer-encoding') ?? []).join(',').toLowerCase()
      if (te.includes('chunked')) return dechunk(body) !== undefined
      const cl = answer.headers.get('content-length')
      if (cl !== undefined) return body.length >= Number(cl[0])
      // 1xx, 204 and 304 have no body (RFC 9112 §6.3)
      return answer.status === 204 || answer.status === 304 || answer.status < 200
    }

    function finish (timedOut: boolean): void {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      if (answer === undefined) {
        reject(new WireError(timedOut ? 'timeout' : 'closed', timedOut ? `no answer within ${timeoutMs} ms` : 'connection closed without an answer'))
        return
      }
      const raw = buf.subarray(bodyStart)
      const te = (answer.headers.get('transfer-encoding') ?? []).join(',').toLowerCase()
      answer.body = te.includes('chunked') ? (dechunk(raw) ?? raw) : raw
      answer.truncated = timedOut && !bodyComplete()
      resolve(answer)
    }
  })
}

function parseHead (text: string): HttpAnswer {
  const lines = text.split('\r\n')
  const m = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(lines[0] ?? '')
  const headers = new Map<string, string[]>()
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const list = headers.get(name) ?? []
    list.push(line.slice(colon + 1).trim())
    headers.set(name, list)
  }
  return { status: m === null ? 0 : Number(m[1]), headers, body: Buffer.alloc(0), truncated: false }
}

/** Decode a complete chunked body (RFC 9112 §7.1), or undefined while it is incomplete. */
function dechunk (raw: Buffer): Buffer | undefined {
  const parts: Buffer[] = []
  let at = 0
  for (;;) {
    const eol = raw.indexOf('\r\n', at)
    if (eol === -1) return undefined
    const size = parseInt(raw.subarray(at, eol).toString('latin1').split(';')[0], 16)
    if (!Number.isFinite(size)) return raw
    if (size === 0) return Buffer.concat(parts)
    if (raw.length < eol + 2 + size + 2) return undefined
    parts.push(raw.subarray(eol + 2, eol + 2 + size))
    at = eol + 2 + size + 2
  }
}

export function header (answer: HttpAnswer, name: string): string | undefined {
  const v = answer.headers.get(name)
  return v === undefined ? undefined : v.join(', ')
}

/** A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1 item 7). */
export function newKey (): string {
  return randomBytes(16).toString('base64')
}

/** RFC 6455 §4.2.2 item 5.4: what the server must answer in `Sec-WebSocket-Accept`. */
export function acceptFor (key: string): string {
  return createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
}

/** RFC 6455 §5.2 opcodes. */
export const Op = Object.freeze({ CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa })

export interface FrameSpec {
  opcode: number
  payload?: Buffer | string
  /** FIN bit. Default true. */
  fin?: boolean
  /** RSV1..RSV3 as a 3-bit number (4 = RSV1). Default 0. */
  rsv?: number
  /** Client frames must be masked (RFC 6455 §5.3). Default true. */
  mask?: boolean
  /** Declare this payload length instead of the real one: only the header is sent for the rest. */
  declaredLength?: number
}

/** One client frame (RFC 6455 §5.2). */
export function frame (spec: FrameSpec): Buffer {
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : (spec.payload ?? Buffer.alloc(0))
  const length = spec.declaredLength ?? payload.length
  const masked = spec.mask !== false
  const b0 = (spec.fin === false ? 0 : 0x80) | (((spec.rsv ?? 0) & 7) << 4) | (spec.opcode & 0x0f)
  const m = masked ? 0x80 : 0
  let h: Buffer
  if (length < 126) {
    h = Buffer.from([b0, m | length])
  } else if (length < 65536) {
    h = Buffer.from([b0, m | 126, length >> 8, length & 0xff])
  } else {
    h = Buffer.alloc(10)
    h[0] = b0
    h[1] = m | 127
    h.writeBigUInt64BE(BigInt(length), 2)
  }
  if (!masked) return Buffer.concat([h, payload])
  const key = randomBytes(4)
  const out = Buffer.allocUnsafe(payload.length)
  for (let i = 0; i < payload.length; i++) out[i] = payload[i] ^ key[i & 3]
  return Buffer.concat([h, key, out])
}

export function closePayload (code: number, reason = ''): Buffer {
  const r = Buffer.from(reason)
  const b = Buffer.alloc(2 + r.length)
  b.writeUInt16BE(code, 0)
  r.copy(b, 2)
  return b
}

export interface ServerFrame {
  opcode: number
  payload: Buffer
}

/** What an open connection did after the probe wrote to it. */
export type Outcome =
  | { kind: 'close', code: number }
  | { kind: 'dropped' }
  | { kind: 'pong' }
  | { kind: 'timeout' }

/** The open side of an accepted handshake: write frames, watch for a close, a drop or a pong. */
export class Connection {
  readonly socket: Socket
  #buf: Buffer
  #waiters: Array<{ ping: string | undefined, wake: (o: Outcome) => void }> = []
  #ended: Outcome | undefined
  /** Payloads of the pongs received: a pong counts only for the ping that asked for it. */
  readonly #pongs = new Set<string>()

  constructor (socket: Socket, rest: Buffer) {
    this.socket = socket
    this.#buf = Buffer.alloc(0)
    socket.on('data', (c: Buffer) => this.#push(c))
    const drop = (): void => this.#end({ kind: 'dropped' })
    socket.on('end', drop)
    socket.on('close', drop)
    socket.on('error', drop)
    if (rest.length > 0) this.#push(rest)
  }

  get closed (): boolean { return this.#ended !== undefined }

  write (bytes: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || !this.socket.writable) { resolve(); return }
      this.socket.write(bytes, () => resolve())
    })
  }

  /**
   * Wait for the server's verdict: a close frame or a dropped connection (it refused what was
   * sent), the pong to the ping with payload `ping` (it carried on), or nothing within `ms`.
   */
  outcome (ms: number, ping?: string): Promise<Outcome> {
    if (this.#ended !== undefined) return Promise.resolve(this.#ended)
    if (ping !== undefined && this.#pongs.has(ping)) return Promise.resolve({ kind: 'pong' })
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.#waiters = this.#waiters.filter((w) => w !== waiter); resolve({ kind: 'timeout' }) }, ms)
      const waiter = { ping, wake: (o: Outcome): void => { clearTimeout(timer); resolve(o) } }
      this.#waiters.push(waiter)
    })
  }

  /** Send a ping with a fresh payload; returns the payload to wait for with `outcome`. */
  async ping (): Promise<string> {
    const id = 'probe-' + randomBytes(6).toString('hex')
    await this.write(frame({ opcode: Op.PING, payload: id }))
    return id
  }

  /** Say goodbye politely (a masked close 1000) and free the socket. */
  async close (): Promise<void> {
    if (!this.socket.destroyed) {
      if (this.#ended === undefined) await Promise.race([this.write(frame({ opcode: Op.CLOSE, payload: closePayload(1000) })), delay(200)])
      this.socket.end()
      setTimeout(() => this.socket.destroy(), 200).unref()
    }
  }

  #push (chunk: Buffer): void {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk])
    for (;;) {
      const f = this.#next()
      if (f === undefined) return
      if (f.opcode === Op.CLOSE) {
        // answer the close (RFC 6455 §5.5.1) before letting the connection go
        if (this.socket.writable) this.socket.write(frame({ opcode: Op.CLOSE, payload: f.payload.subarray(0, 2) }))
        this.#end({ kind: 'close', code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005 })
        return
      }
      if (f.opcode === Op.PONG) {
        const id = f.payload.toString('latin1')
        this.#pongs.add(id)
        for (const w of this.#waiters.filter((x) => x.ping === id)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1)
          w.wake({ kind: 'pong' })
        }
      }
      // server data frames and pings are not the probe's business
    }
  }

  #end (o: Outcome): void {
    if (this.#ended !== undefined) return
    this.#ended = o
    for (const w of this.#waiters.splice(0)) w.wake(o)
    this.socket.end()
    setTimeout(() => this.socket.destroy(), 100).unref()
  }

  #next (): ServerFrame | undefined {
    const b = this.#buf
    if (b.length < 2) return undefined
    let len = b[1] & 0x7f
    let at = 2
    if (len === 126) {
      if (b.length < 4) return undefined
      len = b.readUInt16BE(2)
      at = 4
    } else if (len === 127) {
      if (b.length < 10) return undefined
      const big = b.readBigUInt64BE(2)
      // a server frame this large is not something the probe reads: treat it as a drop
      if (big > BigInt(MAX_BODY_BYTES * 64)) { this.#end({ kind: 'dropped' }); return undefined }
      len = Number(big)
      at = 10
    }
    const masked = (b[1] & 0x80) !== 0
    const key = masked ? b.subarray(at, at + 4) : undefined
    if (masked) at += 4
    if (b.length < at + len) return undefined
    const payload = Buffer.from(b.subarray(at, at + len))
    if (key !== undefined) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3]
    this.#buf = b.subarray(at + len)
    return { opcode: b[0] & 0x0f, payload }
  }
}

export function delay (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
