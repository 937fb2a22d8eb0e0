/**
 * Pure parsers and validators of the fallback wire protocol (PROTOCOL.md). Linear time, hard
 * caps, char-code lookups, no regex on attacker input. They throw `SyntaxError` naming what and
 * where; the plugin turns that into `400 PORTCULLIS_FALLBACK_BAD_REQUEST`.
 */
import { randomBytes } from 'node:crypto'
import type { CloseFrame, InboundFrame } from './store.js'

/** 24 bytes = 192 bits from the OS CSPRNG, base64url without padding: 32 characters. */
export const SID_BYTES = 24
export const SID_LENGTH = 32

/**
 * At most this many offered protocols at open, each at most this long: loose shape caps only (the
 * body limit bounds the total). The subprotocol stage applies its own, tighter header caps to the
 * joined offer, so a too-long or too-many offer gets the same code on both doors.
 */
export const MAX_PROTOCOLS = 256
export const MAX_PROTOCOL_LENGTH = 8192

/** Close reasons are at most 123 UTF-8 bytes (RFC 6455 §5.5: 125-byte control payload − 2-byte code). */
export const MAX_CLOSE_REASON_BYTES = 123

/**
 * The WebSocket URL's query string, carried in the `open` body (never in a fallback URL, §2.1):
 * at most this many characters, each a printable ASCII character other than `#` — what a request
 * line can carry once the WHATWG URL serializer has percent-encoded the rest.
 */
export const MAX_QUERY_LENGTH = 8192

/** Ack and seq values: safe integers; the header form is at most 15 digits. */
const MAX_ACK_DIGITS = 15

export function newSid (): string {
  return randomBytes(SID_BYTES).toString('base64url')
}

// 1 = base64url character (RFC 4648 §5), 2 = standard base64 character (§4), 3 = both
const B64 = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c)
  const alnum = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
  if (alnum) B64[c] = 3
  else if (ch === '-' || ch === '_') B64[c] = 1
  else if (ch === '+' || ch === '/') B64[c] = 2
}

/** True when `s` has the exact shape of a session id (so a malformed one never reaches the store). */
export function isSid (s: unknown): s is string {
  if (typeof s !== 'string' || s.length !== SID_LENGTH) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 128 || (B64[c] & 1) === 0) return false
  }
  return true
}

/**
 * Strict standard base64 with padding (RFC 4648 §4): length a multiple of 4, alphabet only,
 * `=` only as the last one or two characters, and no non-zero bits in the padding positions
 * (§3.5: canonical encoding), so one byte string has exactly one accepted spelling.
 */
export function checkBase64 (s: string, what: string): void {
  if (s.length % 4 !== 0) throw new SyntaxError(`${what}: base64 length ${s.length} is not a multiple of 4`)
  let pad = 0
  if (s.length > 0 && s.charCodeAt(s.length - 1) === 61) pad = s.charCodeAt(s.length - 2) === 61 ? 2 : 1
  const end = s.length - pad
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i)
    if (c >= 128 || (B64[c] & 2) === 0) throw new SyntaxError(`${what}: invalid base64 character at index ${i}`)
  }
  if (pad > 0) {
    // the last data character carries 4 (pad 2) or 2 (pad 1) unused low bits, which must be zero
    const last = sextet(s.charCodeAt(end - 1))
    if ((pad === 2 && (last & 0x0f) !== 0) || (pad === 1 && (last & 0x03) !== 0)) {
      throw new SyntaxError(`${what}: non-canonical base64 at index ${end - 1}`)
    }
  }
}

function sextet (c: number): number {
  if (c >= 65 && c <= 90) return c - 65
  if (c >= 97 && c <= 122) return c - 71
  if (c >= 48 && c <= 57) return c + 4
  return c === 43 ? 62 : 63
}

/** Decoded length of a valid padded base64 string. */
export function base64Length (s: string): number {
  if (s.length === 0) return 0
  let pad = 0
  if (s.charCodeAt(s.length - 1) === 61) pad = s.charCodeAt(s.length - 2) === 61 ? 2 : 1
  return (s.length / 4) * 3 - pad
}

/** `X-Portcullis-Ack`: absent = 0; else 1–15 ASCII digits, one header line. */
export function parseAck (h: string | string[] | undefined): number {
  if (h === undefined) return 0
  if (typeof h !== 'string') throw new SyntaxError('X-Portcullis-Ack: more than one header line')
  if (h.length === 0 || h.length > MAX_ACK_DIGITS) throw new SyntaxError('X-Portcullis-Ack: expected 1 to 15 digits')
  let n = 0
  for (let i = 0; i < h.length; i++) {
    const d = h.charCodeAt(i) - 48
    if (d < 0 || d > 9) throw new SyntaxError(`X-Portcullis-Ack: not a digit at index ${i}`)
    n = n * 10 + d
  }
  return n
}

/**
 * `Content-Type` is `application/json`, optionally with `charset=utf-8` (RFC 8259 §8.1: JSON is
 * UTF-8; RFC 9110 §8.3.1: type, subtype and parameter names are case-insensitive). Anything else,
 * including every CORS-safelisted type (`text/plain`, form encodings), is refused.
 */
export function isJsonContentType (h: string | undefined): boolean {
  if (h === undefined || h.length > 64) return false
  const semi = h.indexOf(';')
  const type = (semi === -1 ? h : h.slice(0, semi)).trim().toLowerCase()
  if (type !== 'application/json') return false
  if (semi === -1) return true
  const param = h.slice(semi + 1).trim().toLowerCase()
  return param === 'charset=utf-8' || param === 'charset="utf-8"'
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function onlyKeys (o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k in o) {
    if (!allowed.includes(k)) throw new SyntaxError(`${what}: unexpected key`)
  }
}

/** Wire protocol versions this server speaks, highest first (PROTOCOL.md §12). */
export const VERSIONS: readonly number[] = Object.freeze([2, 1])
/** At most this many versions in an offer. */
export const MAX_VERSIONS = 8

/**
 * `open` body's `versions` (call after `parseOpenBody`): the highest version both sides speak.
 * Absent = a v1 client. An offer that is not an array of 1 to 8 safe integers, or that names no
 * version this server speaks, is refused (400) rather than guessed at.
 */
export function parseOpenVersions (body: Record<string, unknown>): number {
  const offer = body.versions
  if (offer === undefined) return 1
  if (!Array.isArray(offer) || offer.length === 0 || offer.length > MAX_VERSIONS) throw new SyntaxError(`open: versions must be an array of 1 to ${MAX_VERSIONS} integers`)
  let best = 0
  for (let i = 0; i < offer.length; i++) {
    const v = offer[i]
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new SyntaxError(`open: versions[${i}] must be an integer`)
    if (v > best && VERSIONS.includes(v)) best = v
  }
  if (best === 0) throw new SyntaxError(`open: no version this server speaks (${VERSIONS.join(', ')})`)
  return best
}

/** `open` body: `{ protocols?: string[], query?: string, versions?: number[] }`. Returns the offered list, as a header would join it. */
export function parseOpenBody (body: unknown): string | undefined {
  if (!isPlainObject(body)) throw new SyntaxError('open: body must be an object')
  onlyKeys(body, ['protocols', 'query', 'versions'], 'open')
  const list = body.protocols
  if (list === undefined) return undefined
  if (!Array.isArray(list)) throw new SyntaxError('open: protocols must be an array')
  if (list.length > MAX_PROTOCOLS) throw new SyntaxError(`open: more than ${MAX_PROTOCOLS} protocols`)
  // Only the shape is checked here: the values go, joined as a header would join them, to the
  // subprotocol stage, which judges them exactly as it judges Sec-WebSocket-Protocol (same code).
  for (let i = 0; i < list.length; i++) {
    if (typeof list[i] !== 'string' || list[i].length > MAX_PROTOCOL_LENGTH) throw new SyntaxError(`open: protocols[${i}] must be a string of at most ${MAX_PROTOCOL_LENGTH} characters`)
  }
  return list.length === 0 ? undefined : list.join(', ')
}

/**
 * The `query` of an `open` body (call after `parseOpenBody`): the WebSocket URL's query string
 * without its `?`, as the client would have put it in the upgrade's request line. `undefined`
 * when absent or empty.
 */
export function parseOpenQuery (body: Record<string, unknown>): string | undefined {
  const q = body.query
  if (q === undefined) return undefined
  if (typeof q !== 'string' || q.length > MAX_QUERY_LENGTH) throw new SyntaxError(`open: query must be a string of at most ${MAX_QUERY_LENGTH} characters`)
  for (let i = 0; i < q.length; i++) {
    const c = q.charCodeAt(i)
    // printable ASCII, no '#' (a fragment never reaches a server)
    if (c < 0x21 || c > 0x7e || c === 0x23) throw new SyntaxError(`open: query: invalid character at index ${i}`)
  }
  return q.length === 0 ? undefined : q
}

/**
 * `send` body: `{ seq, messages: [{ text } | { binary }] }`. Returns the numbered frames.
 * `allowEmpty` (v2): `messages: []` is an ack-only send (PROTOCOL.md §12.2).
 */
export function parseSendBody (body: unknown, maxMessages: number, allowEmpty = false): InboundFrame[] {
  if (!isPlainObject(body)) throw new SyntaxError('send: body must be an object')
  onlyKeys(body, ['seq', 'messages'], 'send')
  const seq = body.seq
  const messages = body.messages
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) throw new SyntaxError('send: seq must be a positive integer')
  if (!Array.isArray(messages) || (messages.length === 0 && !allowEmpty)) throw new SyntaxError('send: messages must be a non-empty array')
  if (messages.length > maxMessages) throw new SyntaxError(`send: more than ${maxMessages} messages`)
  if (!Number.isSafeInteger(seq + messages.length)) throw new SyntaxError('send: seq out of range')
  const frames: InboundFrame[] = new Array(messages.length)
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]
    if (!isPlainObject(m)) throw new SyntaxError(`send: messages[${i}] must be an object`)
    if (Object.keys(m).length !== 1) throw new SyntaxError(`send: messages[${i}] must have exactly one key`)
    if (typeof m.text === 'string') {
      frames[i] = { seq: seq + i, type: 'text', data: m.text }
    } else if (typeof m.binary === 'string') {
      checkBase64(m.binary, `send: messages[${i}].binary`)
      frames[i] = { seq: seq + i, type: 'binary', data: m.binary }
    } else {
      throw new SyntaxError(`send: messages[${i}] must be { text: string } or { binary: string }`)
    }
  }
  return frames
}

/**
 * Close codes a peer may put in a close frame, as `ws` checks them (RFC 6455 §7.4.1–7.4.2):
 * 1000–1014 except 1004 (reserved), 1005 and 1006 (never sent: they mean "no code" and
 * "abnormal"); and 3000–4999.
 */
export function isValidCloseCode (code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999)
}

/** No status code received (RFC 6455 §7.4.1): what the handler sees for a close without a code. */
export const NO_STATUS = 1005

/** `close` body: `{ code?, reason? }`. */
export function parseCloseBody (body: unknown): CloseFrame {
  if (!isPlainObject(body)) throw new SyntaxError('close: body must be an object')
  onlyKeys(body, ['code', 'reason'], 'close')
  const { code, reason } = body
  if (code === undefined) {
    if (reason !== undefined) throw new SyntaxError('close: a reason needs a code')
    return { code: NO_STATUS, reason: '' }
  }
  if (typeof code !== 'number' || !Number.isInteger(code) || !isValidCloseCode(code)) throw new SyntaxError('close: invalid close code')
  if (reason !== undefined && typeof reason !== 'string') throw new SyntaxError('close: reason must be a string')
  const r = reason ?? ''
  if (!isWellFormed(r) || Buffer.byteLength(r) > MAX_CLOSE_REASON_BYTES) throw new SyntaxError('close: reason must be at most 123 UTF-8 bytes')
  return { code, reason: r }
}

/**
 * True when `s` has no lone surrogate, i.e. it encodes to valid UTF-8. A JSON string may carry
 * `"\ud800"`; a WebSocket text frame never can (RFC 6455 §8.1: invalid UTF-8 fails the
 * connection with 1007), so the fallback refuses it the same way.
 */
export function isWellFormed (s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0xd800 || c > 0xdfff) continue
    if (c >= 0xdc00) return false
    const next = s.charCodeAt(i + 1)
    if (!(next >= 0xdc00 && next <= 0xdfff)) return false
    i++
  }
  return true
}
