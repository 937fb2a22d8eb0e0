/**
 * Raw RFC 6455 frames for tests that must send what no well-behaved client would: unmasked
 * frames, reserved bits, unknown opcodes, lying lengths, fragmented control frames. A frame
 * builder (client → server), a frame reader (server → client) and a raw TCP client that
 * completes the opening handshake itself (checking `Sec-WebSocket-Accept`, RFC 6455 §4.2.2)
 * and then exchanges bytes.
 */
import { connect as tcpConnect, type Socket } from 'node:net'
import { createHash, randomBytes } from 'node:crypto'

/** RFC 6455 §5.2 opcodes. */
export const Op = Object.freeze({ CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa })

/** RFC 6455 §1.3: the GUID appended to the key before hashing. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export function acceptFor (key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64')
}

export interface FrameSpec {
  opcode: number
  payload?: Buffer | string
  /** FIN bit, default true. */
  fin?: boolean
  rsv1?: boolean
  rsv2?: boolean
  rsv3?: boolean
  /** Mask the payload (default true: client frames must be masked, §5.3). A Buffer is the key. */
  mask?: boolean | Buffer
  /**
   * Force the length encoding: 7-bit, 16-bit (126) or 64-bit (127). Default: the smallest.
   * Non-minimal encodings are legal on the wire for tests (RFC 6455 §5.2 asks for minimal).
   */
  lengthBits?: 7 | 16 | 64
  /** Declare this length instead of the payload's (a lying header; the payload is sent as is). */
  declaredLength?: bigint
}

/** Build one frame (RFC 6455 §5.2) as a client sends it. */
export function frame (spec: FrameSpec): Buffer {
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : (spec.payload ?? Buffer.alloc(0))
  const length = spec.declaredLength ?? BigInt(payload.length)
  const bits = spec.lengthBits ?? (length < 126n ? 7 : length < 65536n ? 16 : 64)
  const maskKey = spec.mask === false ? undefined : Buffer.isBuffer(spec.mask) ? spec.mask : randomBytes(4)
  const head: number[] = []
  head.push((spec.fin === false ? 0 : 0x80) | (spec.rsv1 === true ? 0x40 : 0) | (spec.rsv2 === true ? 0x20 : 0) |
    (spec.rsv3 === true ? 0x10 : 0) | (spec.opcode & 0x0f))
  const maskBit = maskKey === undefined ? 0 : 0x80
  if (bits === 7) {
    head.push(maskBit | Number(length & 0x7fn))
  } else if (bits === 16) {
    head.push(maskBit | 126, Number((length >> 8n) & 0xffn), Number(length & 0xffn))
  } else {
    head.push(maskBit | 127)
    for (let shift = 56n; shift >= 0n; shift -= 8n) head.push(Number((length >> shift) & 0xffn))
  }
  const out: Buffer[] = [Buffer.from(head)]
  if (maskKey !== undefined) {
    out.push(maskKey)
    const masked = Buffer.allocUnsafe(payload.length)
    for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ maskKey[i & 3]
    out.push(masked)
  } else {
    out.push(payload)
  }
  return Buffer.concat(out)
}

/** A close frame's payload (§5.5.1): a 2-byte code and an optional reason (raw bytes allowed). */
export function closePayload (code: number, reason: Buffer | string = ''): Buffer {
  const r = typeof reason === 'string' ? Buffer.from(reason) : reason
  const b = Buffer.alloc(2 + r.length)
  b.writeUInt16BE(code, 0)
  r.copy(b, 2)
  return b
}

/**
 * Split one message into fragments (§5.4): the first frame carries the opcode, the rest are
 * continuations, only the last has FIN. `sizes` repeats cyclically until the payload is used up.
 */
export function fragments (opcode: number, payload: Buffer | string, sizes: number[]): Buffer[] {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const out: Buffer[] = []
  let at = 0
  let k = 0
  do {
    const n = Math.max(0, Math.min(sizes[k++ % sizes.length], data.length - at))
    const last = at + n >= data.length
    out.push(frame({ opcode: out.length === 0 ? opcode : Op.CONT, payload: data.subarray(at, at + n), fin: last }))
    at += n
  } while (at < data.length)
  return out
}

export interface ServerFrame {
  fin: boolean
  rsv: number
  opcode: number
  masked: boolean
  payload: Buffer
  /** For close frames: the status code (1005 when the payload is empty, §7.1.5). */
  closeCode?: number
  closeReason?: string
}

/** Incremental reader of server frames. Throws on a frame a server must never send. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0)

  push (chunk: Buffer): ServerFrame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk])
    const out: ServerFrame[] = []
    for (;;) {
      const f = this.#next()
      if (f === undefined) break
      out.push(f)
    }
    return out
  }

  #next (): ServerFrame | undefined {
    const b = this.#buf
    if (b.length < 2) return undefined
    const masked = (b[1] & 0x80) !== 0
    let len = b[1] & 0x7f
    let at = 2
    if (len === 126) {
      if (b.length < 4) return undefined
      len = b.readUInt16BE(2)
      at = 4
    } else if (len === 127) {
      if (b.length < 10) return undefined
      const big = b.readBigUInt64BE(2)
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('server frame length out of range')
      len = Number(big)
      at = 10
    }
    const maskKey = masked ? b.subarray(at, at + 4) : undefined
    if (masked) at += 4
    if (b.length < at + len) return undefined
    const payload: Buffer = Buffer.from(b.subarray(at, at + len))
    if (maskKey !== undefined) for (let i = 0; i < payload.length; i++) payload[i] ^= maskKey[i & 3]
    this.#buf = b.subarray(at + len)
    const f: ServerFrame = { fin: (b[0] & 0x80) !== 0, rsv: (b[0] >> 4) & 0x7, opcode: b[0] & 0x0f, masked, payload }
    if (f.opcode === Op.CLOSE) {
      f.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005
      f.closeReason = payload.subarray(2).toString('utf8')
    }
    return f
  }
}

export interface HandshakeOptions {
  path?: string
  /** Extra or overriding header lines; `null` deletes a default header. */
  headers?: Record<string, string | string[] | null>
  /** Bytes written right after the request head, in the same write (pipelined frames). */
  pipelined?: Buffer
  /** Split the request into writes of this many bytes, each in its own tick (headers across packets). */
  splitEvery?: number
  method?: string
  httpVersion?: string
  timeoutMs?: number
}

export interface HttpRefusal {
  status: number
  headers: Record<string, string>
  body: string
}

/**
 * A raw WebSocket client on a TCP socket: the handshake is written by hand, server frames are
 * parsed with `FrameReader`, anything can be written with `send`.
 */
export class RawWsClient {
  readonly socket: Socket
  readonly frames: ServerFrame[] = []
  /** Set when the TCP connection ended or closed (either side). */
  ended = false
  /** Set if the server sent a masked frame or a malformed one. */
  protocolError: Error | undefined
  readonly #reader = new FrameReader()
  #waiters: Array<() => void> = []

  constructor (socket: Socket, leftover: Buffer) {
    this.socket = socket
    socket.on('data', (c: Buffer) => this.#feed(c))
    socket.on('close', () => { this.ended = true; this.#wake() })
    socket.on('error', () => { this.ended = true; this.#wake() })
    if (leftover.length > 0) this.#feed(leftover)
  }

  #feed (c: Buffer): void {
    try {
      this.frames.push(...this.#reader.push(c))
    } catch (err) {
      this.protocolError = err as Error
    }
    this.#wake()
  }

  #wake (): void {
    const w = this.#waiters
    this.#waiters = []
    for (const fn of w) fn()
  }

  /** Write raw bytes (frames built with `frame()`); ignored once the socket is gone. */
  send (...chunks: Buffer[]): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(Buffer.concat(chunks))
  }

  /** Resolves when `pred` holds (checked on every inbound frame and on close), rejects after `ms`. */
  until (pred: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`raw client: timed out waiting for ${what}`)), ms)
      const check = (): void => {
        if (pred()) { clearTimeout(timer); resolve() } else this.#waiters.push(check)
      }
      check()
    })
  }

  /** The next frame with this opcode (consumed from `frames`). */
  async next (opcode: number, ms = 5000): Promise<ServerFrame> {
    await this.until(() => this.frames.some(f => f.opcode === opcode), ms, `opcode ${opcode}`)
    const i = this.frames.findIndex(f => f.opcode === opcode)
    return this.frames.splice(i, 1)[0]
  }

  /**
   * Waits for the server's close frame and the end of the TCP connection (§7.1.1: the server
   * closes TCP first). Resolves with the code, or `undefined` when TCP closed without a close frame.
   */
  async closeFrame (ms = 5000): Promise<{ code: number | undefined, reason: string, tcpClosed: boolean }> {
    await this.until(() => this.ended || this.frames.some(f => f.opcode === Op.CLOSE), ms, 'close frame')
    const f = this.frames.find(f => f.opcode === Op.CLOSE)
    // answer the close like a client should, then wait for TCP to end
    if (f !== undefined) this.send(frame({ opcode: Op.CLOSE, payload: f.payload.subarray(0, 2) }))
    await this.until(() => this.ended, ms, 'TCP close').catch(() => {})
    return { code: f?.closeCode, reason: f?.closeReason ?? '', tcpClosed: this.ended }
  }

  /** Frames received, minus close: what the app sent back. */
  dataFrames (): ServerFrame[] {
    return this.frames.filter(f => f.opcode !== Op.CLOSE)
  }

  destroy (): void {
    this.socket.destroy()
  }

  /** Send a TCP RST instead of a FIN. */
  reset (): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy()
  }
}

/**
 * Open a TCP connection, write an upgrade request by hand, and either return a `RawWsClient`
 * (101 with the right `Sec-WebSocket-Accept`) or the HTTP refusal. Rejects when the server
 * answers 101 with a wrong accept value or nothing at all.
 */
export function rawConnect (port: number, opts: HandshakeOptions = {}): Promise<{ client?: RawWsClient, refusal?: HttpRefusal, headers?: Record<string, string> }> {
  const key = randomBytes(16).toString('base64')
  const base: Record<string, string | string[] | null> = {
    Host: `127.0.0.1:${port}`,
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': key,
    Origin: `http://127.0.0.1:${port}`,
    ...opts.headers
  }
  const lines = [`${opts.method ?? 'GET'} ${opts.path ?? '/ws'} HTTP/${opts.httpVersion ?? '1.1'}`]
  for (const [k, v] of Object.entries(base)) {
    if (v === null) continue
    for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`)
  }
  const head = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1')
  const request = opts.pipelined === undefined ? head : Buffer.concat([head, opts.pipelined])
  const sentKey = typeof base['Sec-WebSocket-Key'] === 'string' ? base['Sec-WebSocket-Key'] : undefined

  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ port, host: '127.0.0.1', noDelay: true })
    let raw: Buffer = Buffer.alloc(0)
    let settled = false
    const timer = setTimeout(() => fail(new Error('raw handshake timed out')), opts.timeoutMs ?? 5000)
    function fail (err: Error): void {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    }
    function onData (c: Buffer): void {
      raw = Buffer.concat([raw, c])
      const end = raw.indexOf('\r\n\r\n')
      if (end === -1) return
      const text = raw.subarray(0, end).toString('latin1')
      const [statusLine, ...hl] = text.split('\r\n')
      const headers: Record<string, string> = {}
      for (const l of hl) {
        const i = l.indexOf(':')
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim()
      }
      const status = Number(statusLine.split(' ')[1])
      if (status === 101) {
        settled = true
        clearTimeout(timer)
        socket.removeListener('data', onData)
        socket.removeListener('end', onEnd)
        socket.removeListener('close', onEnd)
        if (sentKey === undefined || headers['sec-websocket-accept'] !== acceptFor(sentKey)) {
          socket.destroy()
          reject(new Error(`101 with a wrong Sec-WebSocket-Accept: ${headers['sec-websocket-accept']}`))
          return
        }
        resolve({ client: new RawWsClient(socket, raw.subarray(end + 4)), headers })
      }
      // otherwise a refusal: complete once the body is in (keep-alive answers do not close)
      const length = headers['content-length']
      if (length !== undefined && raw.length >= end + 4 + Number(length)) {
        onEnd()
        socket.destroy()
      }
    }
    function onEnd (): void {
      if (settled) return
      settled = true
      clearTimeout(timer)
      const end = raw.indexOf('\r\n\r\n')
      if (end === -1) {
        reject(new Error(`connection closed without a response (${raw.length} bytes)`))
        return
      }
      const text = raw.subarray(0, end).toString('latin1')
      const [statusLine, ...hl] = text.split('\r\n')
      const headers: Record<string, string> = {}
      for (const l of hl) {
        const i = l.indexOf(':')
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim()
      }
      resolve({ refusal: { status: Number(statusLine.split(' ')[1]), headers, body: raw.subarray(end + 4).toString('utf8') } })
    }
    socket.on('data', onData)
    socket.on('end', onEnd)
    socket.on('close', onEnd)
    socket.on('error', (err) => { if (!settled) fail(err) })
    socket.on('connect', () => {
      if (opts.splitEvery === undefined) {
        socket.write(request)
        return
      }
      // one write per tick with Nagle off: separate TCP segments on loopback in practice
      let at = 0
      const step = opts.splitEvery
      const writeNext = (): void => {
        if (socket.destroyed || at >= request.length) return
        socket.write(request.subarray(at, at + step))
        at += step
        setTimeout(writeNext, 1)
      }
      writeNext()
    })
  })
}
