/**
 * Parses a `Cookie` request header (RFC 6265 §4.2.1, §5.4) into name → every value sent under
 * that name. Keeping every value is the point: two cookies with the session's name is cookie
 * tossing (a sibling subdomain planting its own), and the identity stage must see it.
 *
 * Linear time, one pass over char codes, no regex. The whole header is read by default: it is
 * already bounded by the server's header size limit (Node: 16 KiB), and a cap that silently
 * ignored the tail would let a planted cookie hide a second one behind padding (tossing).
 * Values are returned raw (not URI-decoded): signatures are computed over the raw value.
 */
export function parseCookieHeader (header: string | undefined, maxPairs = Infinity): Map<string, string[]> {
  const out = new Map<string, string[]>()
  if (header === undefined || header.length === 0) return out
  scanPairs(header, maxPairs, (nameStart, nameEnd, valueStart, valueEnd) => {
    const name = header.slice(nameStart, nameEnd)
    const value = header.slice(valueStart, valueEnd)
    const list = out.get(name)
    if (list === undefined) out.set(name, [value])
    else list.push(value)
  })
  return out
}

/**
 * Every value sent under cookie `name`, in order, or `undefined` when there is none — exactly
 * `parseCookieHeader(header).get(name)`, found by the same scan without building a string or a
 * map entry for any other cookie (a browser sends all of its cookies for the host on every
 * handshake; the session stage wants one). All of the header is still read, so a second cookie
 * with the name (tossing) is seen wherever it sits.
 */
export function cookieValues (header: string | undefined, name: string): string[] | undefined {
  if (header === undefined || header.length === 0 || name.length === 0) return undefined
  let out: string[] | undefined
  scanPairs(header, Infinity, (nameStart, nameEnd, valueStart, valueEnd) => {
    if (nameEnd - nameStart !== name.length || !header.startsWith(name, nameStart)) return
    const value = header.slice(valueStart, valueEnd)
    if (out === undefined) out = [value]
    else out.push(value)
  })
  return out
}

type Pair = (nameStart: number, nameEnd: number, valueStart: number, valueEnd: number) => void

/**
 * The one pair scan of both functions: calls `pair` with the bounds of each pair's name (OWS
 * trimmed, never empty) and value (OWS trimmed, one pair of surrounding quotes removed).
 */
function scanPairs (header: string, maxPairs: number, pair: Pair): void {
  const len = header.length
  let pairs = 0
  let i = 0
  while (i < len && pairs < maxPairs) {
    // skip separators and optional whitespace before a pair
    while (i < len && (header.charCodeAt(i) === 0x20 || header.charCodeAt(i) === 0x3b || header.charCodeAt(i) === 0x09)) i++
    if (i >= len) break
    const start = i
    let eq = -1
    while (i < len && header.charCodeAt(i) !== 0x3b) {
      if (eq === -1 && header.charCodeAt(i) === 0x3d) eq = i
      i++
    }
    pairs++
    if (eq === -1) continue // a pair with no '=' has no name (RFC 6265 §5.2 step 2, applied as "ignore")
    const nameStart = skipOws(header, start, eq)
    const nameEnd = trimOwsEnd(header, nameStart, eq)
    if (nameEnd === nameStart) continue
    let valueStart = skipOws(header, eq + 1, i)
    let valueEnd = trimOwsEnd(header, valueStart, i)
    // a quoted value is the value without its quotes (RFC 6265 §4.1.1 cookie-value)
    if (valueEnd - valueStart >= 2 && header.charCodeAt(valueStart) === 0x22 && header.charCodeAt(valueEnd - 1) === 0x22) {
      valueStart++
      valueEnd--
    }
    pair(nameStart, nameEnd, valueStart, valueEnd)
  }
}

function skipOws (s: string, start: number, end: number): number {
  while (start < end && (s.charCodeAt(start) === 0x20 || s.charCodeAt(start) === 0x09)) start++
  return start
}

function trimOwsEnd (s: string, start: number, end: number): number {
  while (end > start && (s.charCodeAt(end - 1) === 0x20 || s.charCodeAt(end - 1) === 0x09)) end--
  return end
}
