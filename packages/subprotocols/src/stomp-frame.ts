/**
 * STOMP 1.2 frame grammar (https://stomp.github.io/stomp-specification-1.2.html#Augmented_BNF),
 * for frames a client sends. A pure, linear scan over the octets of one WebSocket message:
 *
 *   frame  = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
 *   EOL    = [CR] LF
 *   header = header-name ":" header-value
 *
 * One message holds zero or more whole frames and heart-beat EOLs ("Heart-beating"); a frame
 * never spans messages (STOMP over WebSocket clients such as stompjs send one frame per message).
 */

import { isUtf8 } from 'node:buffer'

export const CLIENT_COMMANDS = Object.freeze([
  'CONNECT', 'STOMP', 'SEND', 'SUBSCRIBE', 'UNSUBSCRIBE', 'BEGIN', 'COMMIT', 'ABORT', 'ACK', 'NACK', 'DISCONNECT'
] as const)
export type StompClientCommand = typeof CLIENT_COMMANDS[number]
const SERVER_COMMANDS = ['CONNECTED', 'MESSAGE', 'RECEIPT', 'ERROR'] as const
const COMMANDS = new Set<string>([...CLIENT_COMMANDS, ...SERVER_COMMANDS])
/** "Only the SEND, MESSAGE, and ERROR frames MAY have a body." (STOMP 1.2, "Body") */
const BODY_COMMANDS = new Set(['SEND', 'MESSAGE', 'ERROR'])
/** "CONNECT and CONNECTED frames do not escape" (STOMP 1.2, "Value Encoding"); STOMP is CONNECT's alias. */
const UNESCAPED_COMMANDS = new Set(['CONNECT', 'CONNECTED', 'STOMP'])
const LONGEST_COMMAND = 11 // UNSUBSCRIBE

const LF = 0x0a
const CR = 0x0d
const NUL = 0x00
const COLON = 0x3a
const BACKSLASH = 0x5c

export interface StompFrameLimits {
  /** Most header lines in one frame. */
  maxHeaders: number
  /** Most octets from the command's first octet to the end of the blank line. */
  maxHeaderBytes: number
}

export type StompProblem =
  | 'incomplete-frame' | 'unknown-command' | 'bad-eol' | 'bad-header' | 'bad-escape'
  | 'too-many-headers' | 'headers-too-large' | 'bad-content-length' | 'content-length-mismatch' | 'unexpected-body'

/** The only error `parseStompFrames` throws. Names the problem and the octet index, never the data. */
export class StompSyntaxError extends SyntaxError {
  readonly problem: StompProblem
  readonly index: number

  constructor (problem: StompProblem, index: number) {
    super(`Invalid STOMP frame: ${problem} at index ${index}`)
    this.name = 'StompSyntaxError'
    this.problem = problem
    this.index = index
  }
}

export interface StompFrame {
  command: string
  /** Decoded header names and values, flat: [name0, value0, name1, value1, ...], in frame order. */
  headers: string[]
  /** Octet offset of the body in the message, and its length. */
  bodyOffset: number
  bodyLength: number
}

/**
 * The first value of header `name` (STOMP 1.2, "Repeated Header Entries": only the first one is
 * used), or undefined.
 */
export function stompHeader (frame: StompFrame, name: string): string | undefined {
  const h = frame.headers
  for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1]
  return undefined
}

/** Parse every frame of one message. @throws {StompSyntaxError} and nothing else. */
export function parseStompFrames (data: Uint8Array, limits: StompFrameLimits): StompFrame[] {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const frames: StompFrame[] = []
  const len = buf.length
  let i = skipEols(buf, 0)
  while (i < len) {
    const frame = parseFrame(buf, i, limits)
    frames.push(frame)
    // the NUL sits right after the body; heart-beat EOLs may follow
    i = skipEols(buf, frame.bodyOffset + frame.bodyLength + 1)
  }
  return frames
}

function skipEols (buf: Buffer, i: number): number {
  const len = buf.length
  for (;;) {
    if (i < len && buf[i] === LF) i++
    else if (i + 1 < len && buf[i] === CR && buf[i + 1] === LF) i += 2
    else if (i < len && buf[i] === CR) throw new StompSyntaxError('bad-eol', i)
    else return i
  }
}

/**
 * Index of the LF ending the line that starts at `i` (a CR may only come right before it).
 * The line must end before `limit` (the header-section cap).
 */
function lineEnd (buf: Buffer, i: number, limit: number, frameStart: number, maxHeaderBytes: number): number {
  const stop = Math.min(buf.length, limit)
  for (let j = i; j < stop; j++) {
    const c = buf[j]
    if (c === LF) return j
    if (c === CR && (j + 1 >= buf.length || buf[j + 1] !== LF)) throw new StompSyntaxError('bad-eol', j)
  }
  if (stop < buf.length) throw new StompSyntaxError('headers-too-large', frameStart + maxHeaderBytes)
  throw new StompSyntaxError('incomplete-frame', buf.length)
}

function parseFrame (buf: Buffer, start: number, limits: StompFrameLimits): StompFrame {
  const limit = start + limits.maxHeaderBytes
  // command line: a known command and nothing else
  let cmdEnd = start
  while (cmdEnd < buf.length && cmdEnd - start <= LONGEST_COMMAND && buf[cmdEnd] !== LF) cmdEnd++
  if (cmdEnd === buf.length) throw new StompSyntaxError('incomplete-frame', buf.length)
  const command = asciiCommand(buf, start, cmdEnd > start && buf[cmdEnd - 1] === CR ? cmdEnd - 1 : cmdEnd)
  if (command === undefined || buf[cmdEnd] !== LF) throw new StompSyntaxError('unknown-command', start)
  const escaped = !UNESCAPED_COMMANDS.has(command)

  const headers: string[] = []
  let i = cmdEnd + 1
  let contentLength = -1
  let seenContentLength = false
  for (;;) {
    const lf = lineEnd(buf, i, limit, start, limits.maxHeaderBytes)
    const end = lf > i && buf[lf - 1] === CR ? lf - 1 : lf
    if (end === i) { i = lf + 1; break } // the blank line
    if (headers.length / 2 === limits.maxHeaders) throw new StompSyntaxError('too-many-headers', i)
    let colon = -1
    for (let j = i; j < end; j++) {
      if (buf[j] === COLON) { colon = j; break }
    }
    // header-name = 1*<any OCTET except CR or LF or ":">
    if (colon <= i) throw new StompSyntaxError('bad-header', i)
    const name = escaped ? unescape(buf, i, colon) : utf8(buf, i, colon)
    // header-value excludes ":" — escaped as \c — except in CONNECT frames, which do not escape
    if (escaped) {
      for (let j = colon + 1; j < end; j++) if (buf[j] === COLON) throw new StompSyntaxError('bad-header', j)
    }
    const value = escaped ? unescape(buf, colon + 1, end) : utf8(buf, colon + 1, end)
    if (name === 'content-length' && !seenContentLength) {
      seenContentLength = true
      contentLength = parseLength(value, colon + 1)
    }
    headers.push(name, value)
    i = lf + 1
  }

  let bodyLength: number
  if (contentLength >= 0) {
    // "octets ... MUST be followed by a NULL": the declared length must land exactly on a NUL
    if (i + contentLength >= buf.length || buf[i + contentLength] !== NUL) throw new StompSyntaxError('content-length-mismatch', i)
    bodyLength = contentLength
  } else {
    const nul = buf.indexOf(NUL, i)
    if (nul === -1) throw new StompSyntaxError('incomplete-frame', buf.length)
    bodyLength = nul - i
  }
  if (bodyLength > 0 && !BODY_COMMANDS.has(command)) throw new StompSyntaxError('unexpected-body', i)
  return { command, headers, bodyOffset: i, bodyLength }
}

function asciiCommand (buf: Buffer, from: number, to: number): string | undefined {
  if (to - from > LONGEST_COMMAND || to === from) return undefined
  for (let j = from; j < to; j++) {
    const c = buf[j]
    if (c < 0x41 || c > 0x5a) return undefined // commands are upper-case ASCII letters
  }
  const s = buf.toString('latin1', from, to)
  return COMMANDS.has(s) ? s : undefined
}

/** content-length: 1 to 9 decimal digits (a message is far below 1 GB anyway). */
function parseLength (value: string, index: number): number {
  if (value.length === 0 || value.length > 9) throw new StompSyntaxError('bad-content-length', index)
  let n = 0
  for (let j = 0; j < value.length; j++) {
    const c = value.charCodeAt(j)
    if (c < 0x30 || c > 0x39) throw new StompSyntaxError('bad-content-length', index)
    n = n * 10 + (c - 0x30)
  }
  return n
}

/**
 * Header names and values are UTF-8 (STOMP 1.2, "Value Encoding"). A binary message is not
 * validated by `ws`, and decoding invalid octets yields U+FFFD: the ACL would judge a destination
 * other than the bytes the handler reads. Only a decoded U+FFFD needs the exact check.
 */
function utf8 (buf: Buffer, from: number, to: number, index: number = from): string {
  const s = buf.toString('utf8', from, to)
  if (s.indexOf('\uFFFD') !== -1 && !isUtf8(buf.subarray(from, to))) throw new StompSyntaxError('bad-header', index)
  return s
}

/**
 * Decode STOMP 1.2 escapes ("Value Encoding"): \r \n \c \\ ; "Undefined escape sequences such as
 * \t MUST be treated as a fatal protocol error."
 */
function unescape (buf: Buffer, from: number, to: number): string {
  let j = from
  while (j < to && buf[j] !== BACKSLASH) j++
  if (j === to) return utf8(buf, from, to)
  const out = Buffer.allocUnsafe(to - from)
  let n = 0
  for (let k = from; k < to; k++) {
    const c = buf[k]
    if (c !== BACKSLASH) { out[n++] = c; continue }
    const e = k + 1 < to ? buf[k + 1] : -1
    if (e === 0x72) out[n++] = CR
    else if (e === 0x6e) out[n++] = LF
    else if (e === 0x63) out[n++] = COLON
    else if (e === BACKSLASH) out[n++] = BACKSLASH
    else throw new StompSyntaxError('bad-escape', k)
    k++
  }
  return utf8(out, 0, n, from)
}
