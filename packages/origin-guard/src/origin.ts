/**
 * Origins per RFC 6454: parsing and serializing the `Origin` header (§7.1), normalizing allowlist
 * entries (§4), and the precompiled matcher (§5 comparison on the §6.2 ASCII serialization).
 *
 * Pure functions over character codes: linear time, hard length caps, no regular expressions on
 * attacker input. Two strictness levels share one scanner:
 * - `parseOrigin` (incoming header): the value must already BE the ASCII serialization a user
 *   agent produces (§6.2) — lowercase, no default port, no path — or `null`. Anything else is a
 *   `SyntaxError`: a server that "repairs" an origin before comparing it invites parser
 *   differentials, and browsers never send a non-canonical one.
 * - `normalizeOriginEntry` (allowlist, at startup): people write `HTTPS://App.Example.com:443`
 *   or `https://bücher.example`; those are folded to the serialization, anything that is not an
 *   origin (a path, a query, userinfo, a bad wildcard) fails startup with a message saying why.
 */
import { domainToASCII } from 'node:url'
import { isIPv6 } from 'node:net'

/** Longest incoming `Origin` value we parse: scheme (≤ 32) + `://` + host (≤ 253) + `:65535`. */
export const MAX_ORIGIN_LENGTH = 300
/** Longest allowlist entry (Unicode hosts are longer before punycode conversion). */
export const MAX_ENTRY_LENGTH = 1024
const MAX_SCHEME_LENGTH = 32
/** RFC 1035 §2.3.4: 253 characters in the text form, 63 per label. */
const MAX_HOST_LENGTH = 253
const MAX_LABEL_LENGTH = 63
/** The longest IPv6 literal text, `[` and `]` excluded (with an embedded IPv4 tail). */
const MAX_IPV6_LENGTH = 45

/** Default ports folded away by the serialization (RFC 6454 §4 step 5; WHATWG URL "special schemes"). */
const DEFAULT_PORTS: Readonly<Record<string, number>> = Object.freeze({ http: 80, https: 443, ws: 80, wss: 443 })

/** A tuple origin (RFC 6454 §4): scheme, host, port (undefined when it is the scheme's default). */
export interface TupleOrigin {
  readonly opaque: false
  readonly scheme: string
  /** ASCII host: a domain in punycode, a dotted-quad IPv4 address, or `[v6]`. */
  readonly host: string
  readonly port: number | undefined
  /** The ASCII serialization (RFC 6454 §6.2), e.g. `https://app.example.com:8443`. */
  readonly serialized: string
}

/** An opaque origin (RFC 6454 §4 step 1): serialized as `null` (§6.2 step 1). */
export interface OpaqueOrigin {
  readonly opaque: true
  readonly serialized: 'null'
}

export type ParsedOrigin = TupleOrigin | OpaqueOrigin

export const NULL_ORIGIN: OpaqueOrigin = Object.freeze({ opaque: true, serialized: 'null' })

/** Character classes, one lookup per character code below 128. */
const SCHEME_FIRST = 1 // ALPHA (RFC 3986 §3.1)
const SCHEME_REST = 2 // ALPHA / DIGIT / "+" / "-" / "."
const HOST_CHAR = 4 // LDH plus "_" (browsers serialize it), lowercase only
const DIGIT = 8
const HEX = 16
const UPPER = 32
const CLASS = new Uint8Array(128)
for (let c = 0x61; c <= 0x7a; c++) CLASS[c] |= SCHEME_FIRST | SCHEME_REST | HOST_CHAR
for (let c = 0x41; c <= 0x5a; c++) CLASS[c] |= UPPER
for (let c = 0x30; c <= 0x39; c++) CLASS[c] |= SCHEME_REST | HOST_CHAR | DIGIT | HEX
for (let c = 0x61; c <= 0x66; c++) CLASS[c] |= HEX
for (const c of '+-.') CLASS[c.charCodeAt(0)] |= SCHEME_REST
for (const c of '-_') CLASS[c.charCodeAt(0)] |= HOST_CHAR

interface Failure { index: number, message: string }

const COLON = 0x3a
const SLASH = 0x2f
const DOT = 0x2e

/**
 * Scan `scheme "://" host [ ":" port ]` (RFC 6454 §7.1 `serialized-origin`). `fold` is the
 * allowlist mode: an explicit default port is folded instead of refused. Never throws.
 */
function scan (input: string, fold: boolean): TupleOrigin | Failure {
  const len = input.length
  // §4 step 2/3: the scheme, lowercase (i;ascii-casemap)
  if (len === 0) return fail(0, 'empty origin')
  if ((CLASS[input.charCodeAt(0)] & SCHEME_FIRST) === 0 || input.charCodeAt(0) >= 128) return fail(0, describeChar(input, 0, 'a scheme must start with a lowercase letter'))
  let i = 1
  while (i < len) {
    const c = input.charCodeAt(i)
    if (c === COLON) break
    if (c >= 128 || (CLASS[c] & SCHEME_REST) === 0) return fail(i, describeChar(input, i, 'invalid character in scheme'))
    if (i >= MAX_SCHEME_LENGTH) return fail(i, 'scheme too long')
    i++
  }
  if (i === len) return fail(i, 'expected "://" after the scheme')
  const scheme = input.slice(0, i)
  if (input.charCodeAt(i + 1) !== SLASH || input.charCodeAt(i + 2) !== SLASH) return fail(i + 1, 'expected "://" after the scheme')
  i += 3
  const hostStart = i
  // RFC 3986 §3.2.1 userinfo (`user:pass@`): found anywhere in the authority, it is named as
  // such rather than as a bad port or host character
  for (let j = i; j < len; j++) {
    const c = input.charCodeAt(j)
    if (c === 0x40) return fail(j, 'userinfo is not allowed in an origin')
    if (c === SLASH || c === 0x3f || c === 0x23) break
  }
  let host: string
  if (input.charCodeAt(i) === 0x5b) {
    // RFC 3986 §3.2.2 IP-literal; the serialization is WHATWG's compressed lowercase form
    i++
    while (i < len && input.charCodeAt(i) !== 0x5d) {
      const c = input.charCodeAt(i)
      if (c >= 128 || ((CLASS[c] & HEX) === 0 && c !== COLON && c !== DOT)) return fail(i, describeChar(input, i, 'invalid character in IPv6 address'))
      if (i - hostStart > MAX_IPV6_LENGTH) return fail(i, 'IPv6 address too long')
      i++
    }
    if (i === len) return fail(i, 'unterminated IPv6 address')
    const literal = input.slice(hostStart + 1, i)
    if (!isIPv6(literal)) return fail(hostStart, 'invalid IPv6 address')
    const canonical = canonicalIPv6(literal)
    if (canonical !== literal) return fail(hostStart, `IPv6 address not in canonical form (${canonical})`)
    host = `[${literal}]`
    i++
  } else {
    // reg-name or IPv4address, label by label (a trailing dot is an empty last label: refused)
    let labelStart = i
    let lastLabelNumeric = true
    let labels = 0
    for (;;) {
      const c = i < len ? input.charCodeAt(i) : -1
      if (c === DOT || c === COLON || c === -1 || c === SLASH || c === 0x3f || c === 0x23) {
        if (i === labelStart) {
          if (c === -1 && labels === 0) return fail(i, 'missing host')
          return fail(i, c === DOT || labels > 0 ? 'empty label in host (leading, trailing or double dot)' : 'missing host')
        }
        if (i - labelStart > MAX_LABEL_LENGTH) return fail(labelStart, 'host label longer than 63 characters')
        labels++
        if (c !== DOT) break
        labelStart = i + 1
        lastLabelNumeric = true
        i++
        continue
      }
      if (c === 0x40) return fail(i, 'userinfo is not allowed in an origin')
      if (c >= 128) return fail(i, 'raw Unicode in host (a serialized origin is ASCII; use punycode)')
      if ((CLASS[c] & HOST_CHAR) === 0) {
        if ((CLASS[c] & UPPER) !== 0) return fail(i, 'uppercase in host (a serialized origin is lowercase)')
        return fail(i, describeChar(input, i, 'invalid character in host'))
      }
      if ((CLASS[c] & DIGIT) === 0) lastLabelNumeric = false
      if (i - hostStart >= MAX_HOST_LENGTH) return fail(i, 'host longer than 253 characters')
      i++
    }
    host = input.slice(hostStart, i)
    // WHATWG URL: a host whose last label is a number is an IPv4 address; only the dotted-quad
    // decimal form is a serialization (no `0x7f.1`, no `127.1`, no leading zeros).
    const lastDot = host.lastIndexOf('.')
    const last = host.slice(lastDot + 1)
    if (lastLabelNumeric || (last.length >= 2 && last.charCodeAt(0) === 0x30 && last.charCodeAt(1) === 0x78)) {
      const bad = checkIPv4(host)
      if (bad !== undefined) return fail(hostStart, bad)
    }
  }
  let port: number | undefined
  if (i < len && input.charCodeAt(i) === COLON) {
    const portStart = ++i
    let value = 0
    while (i < len && (CLASS[input.charCodeAt(i)] & DIGIT) !== 0 && input.charCodeAt(i) < 128) {
      value = value * 10 + input.charCodeAt(i) - 0x30
      if (i - portStart >= 5 || value > 65535) return fail(portStart, 'port out of range (0-65535)')
      i++
    }
    if (i === portStart) return fail(i, i === len ? 'empty port' : describeChar(input, i, 'invalid character in port'))
    if (i - portStart > 1 && input.charCodeAt(portStart) === 0x30) return fail(portStart, 'port with a leading zero')
    port = value
    if (DEFAULT_PORTS[scheme] === value) {
      if (!fold) return fail(portStart - 1, `default port ${value} must be omitted (RFC 6454 §6.2)`)
      port = undefined
    }
  }
  if (i < len) {
    const c = input.charCodeAt(i)
    if (c === SLASH) return fail(i, i === len - 1 ? 'a path is not allowed in an origin (drop the trailing "/")' : 'a path is not allowed in an origin')
    if (c === 0x3f) return fail(i, 'a query is not allowed in an origin')
    if (c === 0x23) return fail(i, 'a fragment is not allowed in an origin')
    if (c === 0x20) return fail(i, 'a list of origins or padding is not allowed')
    return fail(i, describeChar(input, i, 'unexpected character after the host'))
  }
  // strict mode refused every non-canonical spelling above, so the input IS the serialization
  return { opaque: false, scheme, host, port, serialized: fold ? serializeOrigin(scheme, host, port) : input }
}

function fail (index: number, message: string): Failure {
  return { index, message }
}

function isFailure (r: TupleOrigin | Failure): r is Failure {
  return (r as Failure).message !== undefined
}

function describeChar (input: string, i: number, what: string): string {
  const c = input.charCodeAt(i)
  const shown = c > 0x20 && c < 0x7f ? `"${input[i]}"` : `U+${c.toString(16).toUpperCase().padStart(4, '0')}`
  return `${what} (${shown})`
}

/** Dotted-quad decimal, 4 parts, 0-255, no leading zeros: the only IPv4 serialization. */
function checkIPv4 (host: string): string | undefined {
  let parts = 0
  let start = 0
  for (let i = 0; i <= host.length; i++) {
    if (i < host.length && host.charCodeAt(i) !== DOT) continue
    const part = host.slice(start, i)
    parts++
    if (part.length === 0 || part.length > 3) return 'invalid IPv4 address'
    for (let j = 0; j < part.length; j++) if ((CLASS[part.charCodeAt(j)] & DIGIT) === 0) return 'IPv4 address not in dotted-decimal form'
    if (part.length > 1 && part.charCodeAt(0) === 0x30) return 'IPv4 address part with a leading zero'
    if (Number(part) > 255) return 'IPv4 address part above 255'
    start = i + 1
  }
  return parts === 4 ? undefined : 'IPv4 address must have 4 parts'
}

/** WHATWG's IPv6 serializer (RFC 5952 compressed, lowercase), by way of Node's URL parser. */
function canonicalIPv6 (literal: string): string {
  try {
    const h = new URL(`http://[${literal}]/`).hostname
    return h.slice(1, -1)
  } catch {
    return ''
  }
}

/** RFC 6454 §6.2: `scheme "://" host [ ":" port ]`, the port only when not the default. */
export function serializeOrigin (scheme: string, host: string, port: number | undefined): string {
  return port === undefined || DEFAULT_PORTS[scheme] === port ? `${scheme}://${host}` : `${scheme}://${host}:${port}`
}

/**
 * Parse an incoming `Origin` header value. It must be exactly one serialized origin in its
 * canonical form, or `null` (RFC 6454 §7.1). Throws a `SyntaxError` naming the index otherwise.
 */
export function parseOrigin (input: string): ParsedOrigin {
  const r = parseOriginResult(input)
  if (r.ok) return r.origin
  throw new SyntaxError(`Invalid origin at index ${r.index}: ${r.message}`)
}

/** `parseOrigin` without the exception, for the request path (no stack trace per bad header). */
export function tryParseOrigin (input: string): ParsedOrigin | undefined {
  const r = parseOriginResult(input)
  return r.ok ? r.origin : undefined
}

type Result = { ok: true, origin: ParsedOrigin } | { ok: false, index: number, message: string }

function parseOriginResult (input: string): Result {
  if (typeof input !== 'string') return { ok: false, index: 0, message: 'not a string' }
  if (input.length > MAX_ORIGIN_LENGTH) return { ok: false, index: MAX_ORIGIN_LENGTH, message: `longer than ${MAX_ORIGIN_LENGTH} characters` }
  // §7.1 origin-list-or-null: the four lowercase octets "null"
  if (input === 'null') return { ok: true, origin: NULL_ORIGIN }
  const r = scan(input, false)
  if (isFailure(r)) return { ok: false, index: r.index, message: r.message }
  return { ok: true, origin: r }
}

/** A normalized allowlist entry. */
export type OriginEntry =
  | { kind: 'exact', origin: string }
  | { kind: 'wildcard', scheme: string, port: number | undefined, suffix: string, origin: string }
  | { kind: 'self', origin: 'self' }
  | { kind: 'null', origin: 'null' }

/**
 * Validate and normalize one allowlist entry (RFC 6454 §4): lowercase scheme and host, default
 * port folded, Unicode host to punycode (`node:url` `domainToASCII`, UTS #46), `*.` wildcard
 * label. Keywords: `self` (the request's own origin) and `null` (opaque origins, literally).
 * Throws a `TypeError` that quotes the entry and says what is wrong.
 */
export function normalizeOriginEntry (entry: unknown): OriginEntry {
  if (typeof entry !== 'string') throw new TypeError(`an origin must be a string, got ${entry === null ? 'null' : typeof entry}`)
  const bad = (why: string): never => {
    throw new TypeError(`"${entry.length > 80 ? entry.slice(0, 80) + '…' : entry}" is not an origin: ${why}`)
  }
  if (entry === 'self') return { kind: 'self', origin: 'self' }
  if (entry === 'null') return { kind: 'null', origin: 'null' }
  if (entry.length > MAX_ENTRY_LENGTH) bad(`longer than ${MAX_ENTRY_LENGTH} characters`)
  if (entry === '*') bad('"*" would allow every site; list the origins, or opt out with origin: false')
  const sep = entry.indexOf('://')
  if (sep <= 0) bad('expected scheme://host[:port], e.g. https://app.example.com')
  const scheme = entry.slice(0, sep).toLowerCase()
  // the host runs to the first port, path, query, fragment or userinfo delimiter
  let hostEnd = sep + 3
  const bracketed = entry.charCodeAt(hostEnd) === 0x5b
  while (hostEnd < entry.length) {
    const c = entry.charCodeAt(hostEnd)
    if (c === SLASH || c === 0x3f || c === 0x23 || c === 0x40 || (c === COLON && !bracketed) || (c === 0x5d && bracketed)) break
    hostEnd++
  }
  if (bracketed && entry.charCodeAt(hostEnd) === 0x5d) hostEnd++
  if (entry.charCodeAt(hostEnd) === 0x40) bad('userinfo is not allowed in an origin')
  let rawHost = entry.slice(sep + 3, hostEnd)
  const rest = entry.slice(hostEnd)
  let wildcard = false
  if (rawHost.startsWith('*.')) {
    wildcard = true
    rawHost = rawHost.slice(2)
  }
  if (rawHost.includes('*')) bad('a wildcard must be the whole first label, as in https://*.example.com')
  let host: string
  if (bracketed) {
    const literal = rawHost.slice(1, -1)
    if (rawHost.charCodeAt(rawHost.length - 1) !== 0x5d || !isIPv6(literal)) bad('invalid IPv6 address')
    host = `[${canonicalIPv6(literal.toLowerCase())}]`
  } else if (hasNonAscii(rawHost)) {
    // IDN (RFC 5890): compare in the A-label form browsers serialize
    host = domainToASCII(rawHost)
    if (host === '') bad('the host is not a valid internationalized domain name')
  } else {
    host = rawHost.toLowerCase()
    // an A-label must decode (RFC 5891 §5.4): `xn--a` is no domain a browser would send
    if (host.includes('xn--') && domainToASCII(host) !== host) bad('the host is not a valid internationalized domain name')
  }
  const r = scan(`${scheme}://${host}${rest}`, true)
  if (isFailure(r)) bad(r.message)
  const origin = r as TupleOrigin
  if (!wildcard) return { kind: 'exact', origin: origin.serialized }
  if (bracketed || isIPv4Like(origin.host)) bad('a wildcard needs a domain, not an IP address')
  // *.com, *.localhost: a wildcard over a single label would match every site under a TLD
  if (!origin.host.includes('.')) bad('a wildcard needs at least two labels after "*." (e.g. *.example.com)')
  return {
    kind: 'wildcard',
    scheme: origin.scheme,
    port: origin.port,
    suffix: origin.host,
    origin: serializeOrigin(origin.scheme, `*.${origin.host}`, origin.port)
  }
}

function hasNonAscii (s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 128) return true
  return false
}

function isIPv4Like (host: string): boolean {
  const c = host.charCodeAt(host.length - 1)
  return c >= 0x30 && c <= 0x39
}

/**
 * The request's own origin from its scheme and `Host` (RFC 6454 §4 applied to the request URI),
 * or undefined when `Host` is not a valid `host[:port]`. `Host` is case-insensitive, so it is
 * lowercased; a default port is folded.
 */
export function selfOrigin (scheme: string, hostHeader: string | undefined): string | undefined {
  if (typeof hostHeader !== 'string' || hostHeader.length === 0 || hostHeader.length > MAX_ORIGIN_LENGTH) return undefined
  if (scheme === lastSelf.scheme && hostHeader === lastSelf.host) return lastSelf.origin
  const r = scan(`${scheme}://${hostHeader.toLowerCase()}`, true)
  const origin = isFailure(r) ? undefined : r.serialized
  // one-entry memo: nearly every request of a server carries the same Host
  lastSelf = { scheme, host: hostHeader, origin }
  return origin
}
let lastSelf: { scheme: string, host: string, origin: string | undefined } = { scheme: '', host: '', origin: undefined }

/** How an origin was allowed: by a list entry, or only as the request's own origin. */
export type MatchKind = 'list' | 'self'

/**
 * A precompiled allowlist. Exact origins live in a `Set` (one hash lookup whatever the list
 * length); wildcards in a `Set` of suffixes per `scheme|port`, probed once per label boundary of
 * the incoming host, so `*.example.com` never matches `evil-example.com`,
 * `example.com.evil.net` or the apex `example.com`.
 */
export class OriginMatcher {
  readonly exact: ReadonlySet<string>
  readonly self: boolean
  readonly entries: readonly string[]
  readonly #wildcards: ReadonlyMap<string, ReadonlySet<string>>

  constructor (list: readonly unknown[]) {
    const exact = new Set<string>()
    const wildcards = new Map<string, Set<string>>()
    const entries: string[] = []
    let self = false
    for (let i = 0; i < list.length; i++) {
      let e: OriginEntry
      try {
        e = normalizeOriginEntry(list[i])
      } catch (err) {
        throw new TypeError(`allow[${i}]: ${(err as Error).message}`)
      }
      if (!entries.includes(e.origin)) entries.push(e.origin)
      if (e.kind === 'self') self = true
      else if (e.kind === 'wildcard') {
        const key = wildcardKey(e.scheme, e.port)
        let set = wildcards.get(key)
        if (set === undefined) wildcards.set(key, set = new Set())
        set.add(e.suffix)
      } else exact.add(e.origin)
    }
    this.exact = exact
    this.self = self
    this.entries = Object.freeze(entries)
    this.#wildcards = wildcards
  }

  /** Does a parsed (canonical) origin match a list entry (exact or wildcard)? */
  matchesList (origin: ParsedOrigin): boolean {
    if (this.exact.has(origin.serialized)) return true
    if (origin.opaque || this.#wildcards.size === 0) return false
    const suffixes = this.#wildcards.get(wildcardKey(origin.scheme, origin.port))
    if (suffixes === undefined || origin.host.charCodeAt(0) === 0x5b) return false
    const host = origin.host
    // probe every proper suffix that starts right after a dot: a label boundary
    for (let i = host.indexOf('.'); i !== -1; i = host.indexOf('.', i + 1)) {
      if (suffixes.has(host.slice(i + 1))) return true
    }
    return false
  }

  get hasWildcards (): boolean {
    return this.#wildcards.size > 0
  }
}

function wildcardKey (scheme: string, port: number | undefined): string {
  return port === undefined ? scheme : `${scheme}|${port}`
}
