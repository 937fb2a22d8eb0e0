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
    const name = trimOws(header, start, eq)
    if (name.length === 0) continue
    let value = trimOws(header, eq + 1, i)
    // a quoted value is the value without its quotes (RFC 6265 §4.1.1 cookie-value)
    if (value.length >= 2 && value.charCodeAt(0) === 0x22 && value.charCodeAt(value.length - 1) === 0x22) {
      value = value.slice(1, -1)
    }
    const list = out.get(name)
    if (list === undefined) out.set(name, [value])
    else list.push(value)
  }
  return out
}

function trimOws (s: string, start: number, end: number): string {
  while (start < end && (s.charCodeAt(start) === 0x20 || s.charCodeAt(start) === 0x09)) start++
  while (end > start && (s.charCodeAt(end - 1) === 0x20 || s.charCodeAt(end - 1) === 0x09)) end--
  return s.slice(start, end)
}
