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
  // every segment counts towards maxPairs, named or not
  for (let i = 0, pairs = 0; pairs < maxPairs && (i = nextPair(header, i)) !== -1; pairs++) {
    if (bounds[0] === -1) continue
    const name = header.slice(bounds[0], bounds[1])
    const value = header.slice(bounds[2], bounds[3])
    const list = out.get(name)
    if (list === undefined) out.set(name, [value])
    else list.push(value)
  }
  return out
}

/**
 * Every value sent under cookie `name`, in order, or `undefined` when there is none — exactly
 * `parseCookieHeader(header).get(name)`, found without building a string or a map entry for any
 * other cookie (a browser sends all of its cookies for the host on every handshake; the session
 * stage wants one). All of the header is still searched, so a second cookie with the name
 * (tossing) is seen wherever it sits.
 *
 * The search is `indexOf` for the name, not a walk over every pair: an occurrence is a cookie
 * of that name when only separators and OWS stand between it and the header's start or a `;`
 * (where `nextPair` would begin a pair) and only OWS between it and an `=` (the pair's first, as
 * nothing else precedes it). Every other occurrence sits inside some other pair's name or value.
 * Linear: each step moves past the occurrence, and the look-backs stop at the first octet that
 * is not OWS. A property test holds this equal to the full parse.
 */
export function cookieValues (header: string | undefined, name: string): string[] | undefined {
  if (header === undefined || header.length === 0 || !isPairName(name)) return undefined
  const len = header.length
  let out: string[] | undefined
  for (let at = header.indexOf(name); at !== -1; at = header.indexOf(name, at)) {
    if (!startsPair(header, at)) {
      at++
      continue
    }
    const eq = skipOws(header, at + name.length, len)
    if (eq === len || header.charCodeAt(eq) !== 0x3d) {
      at++
      continue
    }
    let end = header.indexOf(';', eq + 1)
    if (end === -1) end = len
    readValue(header, eq + 1, end)
    const value = header.slice(bounds[2], bounds[3])
    if (out === undefined) out = [value]
    else out.push(value)
    at = end
  }
  return out
}

/** Whether `nextPair` can read `name` as a pair's name: non-empty, no `;` or `=`, no OWS at either end. */
function isPairName (name: string): boolean {
  const last = name.length - 1
  return last >= 0 && name.indexOf(';') === -1 && name.indexOf('=') === -1 &&
    !isOws(name.charCodeAt(0)) && !isOws(name.charCodeAt(last))
}

/** Whether a pair begins at `at`: before it, back to the start or a `;`, only OWS. */
function startsPair (header: string, at: number): boolean {
  let i = at - 1
  while (i >= 0 && isOws(header.charCodeAt(i))) i--
  return i < 0 || header.charCodeAt(i) === 0x3b
}

function isOws (c: number): boolean {
  return c === 0x20 || c === 0x09
}

/**
 * Where the pair `nextPair` last read sits: its name in [0, 1) (OWS trimmed, never empty) and its
 * value in [2, 3) (`readValue`'s, which `cookieValues` also calls); [0] is -1 for a segment with
 * no name. One module-wide scratch, not a callback per scan: both functions read it right after
 * each call, synchronously.
 */
const bounds = new Int32Array(4)

/**
 * The pair scan of `parseCookieHeader`: reads the segment that starts at or after `i` (after
 * separators and whitespace) into `bounds`, and returns the index just past it, or -1 when the
 * header has no segment left.
 */
function nextPair (header: string, i: number): number {
  const len = header.length
  // skip separators and optional whitespace before a pair
  while (i < len && (header.charCodeAt(i) === 0x20 || header.charCodeAt(i) === 0x3b || header.charCodeAt(i) === 0x09)) i++
  if (i >= len) return -1
  const start = i
  let eq = -1
  while (i < len && header.charCodeAt(i) !== 0x3b) {
    if (eq === -1 && header.charCodeAt(i) === 0x3d) eq = i
    i++
  }
  bounds[0] = -1
  if (eq === -1) return i // a pair with no '=' has no name (RFC 6265 §5.2 step 2, applied as "ignore")
  const nameStart = skipOws(header, start, eq)
  const nameEnd = trimOwsEnd(header, nameStart, eq)
  if (nameEnd === nameStart) return i
  bounds[0] = nameStart
  bounds[1] = nameEnd
  readValue(header, eq + 1, i)
  return i
}

/**
 * The value of a pair whose text after its `=` is [start, end): OWS trimmed, one pair of
 * surrounding quotes removed (RFC 6265 §4.1.1 cookie-value), into bounds [2, 3).
 */
function readValue (header: string, start: number, end: number): void {
  let valueStart = skipOws(header, start, end)
  let valueEnd = trimOwsEnd(header, valueStart, end)
  if (valueEnd - valueStart >= 2 && header.charCodeAt(valueStart) === 0x22 && header.charCodeAt(valueEnd - 1) === 0x22) {
    valueStart++
    valueEnd--
  }
  bounds[2] = valueStart
  bounds[3] = valueEnd
}

function skipOws (s: string, start: number, end: number): number {
  while (start < end && isOws(s.charCodeAt(start))) start++
  return start
}

function trimOwsEnd (s: string, start: number, end: number): number {
  while (end > start && isOws(s.charCodeAt(end - 1))) end--
  return end
}
