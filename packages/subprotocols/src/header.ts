/**
 * `Sec-WebSocket-Protocol` parsing and selection (RFC 6455 §4.1, §4.2.1 item 10, §4.2.2 item 5.4,
 * §11.3.4). Pure functions over character codes: one pass, no regex, hard caps on the total length
 * and on the number of values, so a hostile header costs at most `maxLength` steps.
 */

/** `tchar` of RFC 7230 §3.2.6, indexed by character code (0 = not a token character). */
const TCHAR = new Uint8Array(128)
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1

const SP = 0x20
const HTAB = 0x09
const COMMA = 0x2c

/** Longest subprotocol name the registry accepts (a registry name is server text, not client text). */
export const MAX_NAME_LENGTH = 256

export interface HeaderLimits {
  /** Longest accepted header value (all lines joined), in characters. Default 4096. */
  maxLength: number
  /** Most values accepted in one handshake. Default 32 (the plugin allows at most 256: duplicates are found pairwise). */
  maxCount: number
}

export const defaultHeaderLimits: Readonly<HeaderLimits> = Object.freeze({ maxLength: 4096, maxCount: 32 })

/** Why a header was refused; each kind maps to one stable denial code. */
export type ProtocolHeaderProblem = 'too-long' | 'too-many' | 'empty-element' | 'invalid-character' | 'duplicate'

/**
 * The only error `parseProtocolHeader` throws. The message names the problem and the index,
 * never the header's text.
 */
export class ProtocolHeaderError extends SyntaxError {
  readonly problem: ProtocolHeaderProblem
  readonly index: number

  constructor (problem: ProtocolHeaderProblem, index: number) {
    super(`Invalid Sec-WebSocket-Protocol: ${problem} at index ${index}`)
    this.name = 'ProtocolHeaderError'
    this.problem = problem
    this.index = index
  }
}

/** True when `name` is an RFC 7230 token (the grammar of a subprotocol name, RFC 6455 §4.1). */
export function isToken (name: string): boolean {
  if (typeof name !== 'string' || name.length === 0) return false
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c >= 128 || TCHAR[c] === 0) return false
  }
  return true
}

/**
 * Parse the offered subprotocols: `1#token` with optional whitespace around commas. Several
 * header lines arrive already joined with `, ` (RFC 6455 §11.3.4: several lines are one list).
 *
 * Stricter than the generic `#rule` of RFC 7230 §7, which tolerates empty elements: RFC 6455
 * §4.1 says the values "MUST be non-empty strings ... and MUST all be unique", and no browser
 * sends anything else, so an empty element or a duplicate is a malformed request, not noise.
 *
 * @throws {ProtocolHeaderError} a `SyntaxError`; nothing else.
 */
export function parseProtocolHeader (value: string, limits: HeaderLimits = defaultHeaderLimits): string[] {
  const len = value.length
  if (len > limits.maxLength) throw new ProtocolHeaderError('too-long', limits.maxLength)
  // made at the first name: most clients offer one, and a push onto [] allocates 17 slots
  let out: string[] | undefined
  let i = 0
  for (;;) {
    while (i < len && isOws(value.charCodeAt(i))) i++
    const start = i
    while (i < len) {
      const c = value.charCodeAt(i)
      if (c >= 128 || TCHAR[c] === 0) break
      i++
    }
    if (i === start) {
      // nothing before a comma, or at the very end: an empty element (or a stray character)
      if (i === len || value.charCodeAt(i) === COMMA) throw new ProtocolHeaderError('empty-element', i)
      throw new ProtocolHeaderError('invalid-character', i)
    }
    const count = out === undefined ? 0 : out.length
    if (count === limits.maxCount) throw new ProtocolHeaderError('too-many', start)
    const name = value.slice(start, i)
    // at most maxCount (32 by default, 256 at most) earlier values: bounded, not quadratic in the input
    for (let k = 0; k < count; k++) {
      if ((out as string[])[k] === name) throw new ProtocolHeaderError('duplicate', start)
    }
    if (out === undefined) out = [name]
    else out.push(name)
    while (i < len && isOws(value.charCodeAt(i))) i++
    if (i === len) return out
    if (value.charCodeAt(i) !== COMMA) throw new ProtocolHeaderError('invalid-character', i)
    i++
  }
}

/**
 * The server's choice (RFC 6455 §4.2.2 item 5.4): the first of `accept` — the route's preference
 * order — that the client offered. Never "the client's first". Returns the route's own string
 * (a registered name), never the client's, or `undefined` when nothing matches. Names compare
 * exactly: subprotocol names are case-sensitive.
 */
export function selectProtocol (offered: readonly string[], accept: readonly string[]): string | undefined {
  for (let a = 0; a < accept.length; a++) {
    const name = accept[a]
    for (let o = 0; o < offered.length; o++) {
      if (offered[o] === name) return name
    }
  }
  return undefined
}

function isOws (c: number): boolean {
  return c === SP || c === HTAB
}
