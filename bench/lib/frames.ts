/**
 * Wire-level pieces for the lean load clients: a prebuilt upgrade request with its expected
 * `Sec-WebSocket-Accept`, pre-masked client frames, a parser for the 101 response head and a
 * parser for (unmasked) server frames. Everything is built once, before a run, so the load
 * generator spends its CPU on the socket and not on formatting.
 */
import { createHash, randomBytes } from 'node:crypto'

/** RFC 6455 §1.3: the GUID the server appends to the key before hashing. */
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export const OPCODE_TEXT = 0x1
export const OPCODE_BINARY = 0x2
export const OPCODE_CLOSE = 0x8
export const OPCODE_PING = 0x9
export const OPCODE_PONG = 0xa

/** The `Sec-WebSocket-Accept` a server must answer for `key` (RFC 6455 §4.2.2 step 5.4). */
export function acceptFor (key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64')
}

/** A random `Sec-WebSocket-Key`: base64 of 16 random bytes (RFC 6455 §4.1). */
export function randomKey (): string {
  return randomBytes(16).toString('base64')
}

export interface UpgradeRequest {
  /** The complete request head, ready to write. */
  bytes: Buffer
  /** What the server must answer in `Sec-WebSocket-Accept`. */
  accept: string
}

/**
 * Builds a complete upgrade request head. `headers` are extra lines, written as given (so a
 * benchmark can send duplicate or hostile lines); a value of `null` drops a default line.
 */
export function buildUpgrade (host: string, path: string, headers: Array<[string, string]> = [], key = randomKey()): UpgradeRequest {
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: ${host}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${key}`,
    'Sec-WebSocket-Version: 13'
  ]
  for (const [name, value] of headers) lines.push(`${name}: ${value}`)
  return { bytes: Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), accept: acceptFor(key) }
}

/**
 * One client frame, FIN set, masked with `maskKey` (RFC 6455 §5.2, §5.3: every client frame is
 * masked). The bytes are final: write the same buffer as often as you like.
 */
export function maskedFrame (opcode: number, payload: Buffer | string, maskKey: Buffer = randomBytes(4)): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  if (maskKey.length !== 4) throw new RangeError('mask key must be 4 bytes')
  const len = data.length
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8
  const head = 2 + lenBytes + 4
  const out = Buffer.allocUnsafe(head + len)
  out[0] = 0x80 | (opcode & 0x0f)
  if (lenBytes === 0) {
    out[1] = 0x80 | len
  } else if (lenBytes === 2) {
    out[1] = 0x80 | 126
    out.writeUInt16BE(len, 2)
  } else {
    out[1] = 0x80 | 127
    out.writeBigUInt64BE(BigInt(len), 2)
  }
  maskKey.copy(out, 2 + lenBytes)
  for (let i = 0; i < len; i++) out[head + i] = data[i] ^ maskKey[i & 3]
  return out
}

/** A masked close frame with a status code (RFC 6455 §5.5.1). */
export function maskedClose (code = 1000, maskKey?: Buffer): Buffer {
  const body = Buffer.allocUnsafe(2)
  body.writeUInt16BE(code, 0)
  return maskedFrame(OPCODE_CLOSE, body, maskKey)
}

export type HeadResult =
  | { done: false }
  | { done: true, status: number, ok: boolean, rest: Buffer, reason?: string }

/**
 * Reads the server's response head. Call with the bytes received so far; returns `done:false`
 * until the blank line arrives. `ok` is true only for a 101 whose `Sec-WebSocket-Accept` equals
 * `accept` (pass `undefined` to accept any status: hostile-request runs only want the status).
 * `rest` holds bytes after the head (frames the server sent right after the 101).
 */
export function readHead (buf: Buffer, accept: string | undefined): HeadResult {
  const end = buf.indexOf('\r\n\r\n')
  if (end === -1) return { done: false }
  const head = buf.toString('latin1', 0, end)
  const rest = buf.subarray(end + 4)
  // "HTTP/1.1 101 ..." — the status is the three digits after the first space
  const sp = head.indexOf(' ')
  const status = sp === -1 ? 0 : Number(head.slice(sp + 1, sp + 4))
  if (accept === undefined) return { done: true, status, ok: true, rest }
  if (status !== 101) return { done: true, status, ok: false, rest, reason: `status ${status}` }
  const got = headerValue(head, 'sec-websocket-accept')
  if (got !== accept) return { done: true, status, ok: false, rest, reason: 'bad Sec-WebSocket-Accept' }
  return { done: true, status, ok: true, rest }
}

/** The value of the first header line named `name` (lowercase) in a response head. */
export function headerValue (head: string, name: string): string | undefined {
  const lower = head.toLowerCase()
  let at = lower.indexOf('\r\n' + name + ':')
  if (at === -1) return undefined
  at += name.length + 3
  const eol = head.indexOf('\r\n', at)
  return head.slice(at, eol === -1 ? head.length : eol).trim()
}

/**
 * Incremental parser of server frames (unmasked, RFC 6455 §5.2). Calls `onFrame` per complete
 * frame. Only copies when a frame straddles two reads, so the common case allocates nothing.
 */
export class FrameReader {
  #pending: Buffer | undefined
  readonly #onFrame: (opcode: number, payload: Buffer) => void

  constructor (onFrame: (opcode: number, payload: Buffer) => void) {
    this.#onFrame = onFrame
  }

  push (chunk: Buffer): void {
    let buf = chunk
    if (this.#pending !== undefined) {
      buf = Buffer.concat([this.#pending, chunk])
      this.#pending = undefined
    }
    let off = 0
    const n = buf.length
    while (n - off >= 2) {
      const b0 = buf[off]
      const b1 = buf[off + 1]
      if ((b1 & 0x80) !== 0) throw new Error('server frames must not be masked (RFC 6455 §5.1)')
      let len = b1 & 0x7f
      let hdr = 2
      if (len === 126) {
        if (n - off < 4) break
        len = buf.readUInt16BE(off + 2)
        hdr = 4
      } else if (len === 127) {
        if (n - off < 10) break
        len = Number(buf.readBigUInt64BE(off + 2))
        hdr = 10
      }
      if (n - off < hdr + len) break
      this.#onFrame(b0 & 0x0f, buf.subarray(off + hdr, off + hdr + len))
      off += hdr + len
    }
    if (off < n) this.#pending = Buffer.from(buf.subarray(off))
  }
}

let nextLocal = 0
/**
 * A loopback source address for the next connection, rotating over 127.0.0.2–127.0.0.251.
 * Connection-per-request runs open ~100k connections in a few minutes; when the server closes
 * first (as `ws` does after a close handshake) the TIME_WAIT state sits on the server's side, and
 * a new SYN that reuses a 4-tuple still in TIME_WAIT can be answered with an ACK instead of a
 * SYN-ACK and retried only after a second. Spreading the source address over 250 addresses
 * makes that reuse, and so those stalls, practically disappear. Loopback only (127.0.0.0/8).
 */
export function loopbackSource (): string {
  nextLocal = (nextLocal + 1) % 250
  return `127.0.0.${2 + nextLocal}`
}
