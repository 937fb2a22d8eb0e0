/**
 * Property tests for @portcullis/origin-guard's parser and matcher (RFC 6454): the `Origin`
 * header parser accepts exactly canonical serializations, throws only `SyntaxError`, never
 * quotes the header, runs in linear time with a hard cap; the matcher never lets a lookalike
 * host through a wildcard. Fixed seed; `FC_SEED` / `FC_RUNS` for a longer hunt.
 */
import t from 'tap'
import fc from 'fast-check'
import {
  parseOrigin, tryParseOrigin, serializeOrigin, normalizeOriginEntry, OriginMatcher, MAX_ORIGIN_LENGTH
} from '../packages/origin-guard/src/index.js'
import { params, hostileString, growth, CANARY } from './load/properties.js'

const label = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'.split('')), minLength: 1, maxLength: 12 })
  .filter(l => !/^[0-9]+$/.test(l))
const hyphenLabel = fc.tuple(label, fc.option(label)).map(([a, b]) => b === null ? a : `${a}-${b}`)
const domain = fc.array(hyphenLabel, { minLength: 1, maxLength: 4 }).map(ls => ls.join('.'))
const scheme = fc.constantFrom('http', 'https', 'ws', 'wss', 'chrome-extension', 'app')
const port = fc.option(fc.integer({ min: 1, max: 65535 }))
const canonical = fc.tuple(scheme, domain, port).map(([s, h, p]) => serializeOrigin(s, h, p ?? undefined))

t.test('every canonical serialized origin parses and serializes to itself (RFC 6454 §6.2)', async (t) => {
  fc.assert(fc.property(canonical, (o) => {
    const parsed = parseOrigin(o)
    return !parsed.opaque && parsed.serialized === o && tryParseOrigin(o)?.serialized === o
  }), params())
  t.pass('held')
})

t.test('parseOrigin throws only SyntaxError, never quotes the header, and agrees with tryParseOrigin', async (t) => {
  const mutated = fc.tuple(canonical, hostileString(40), fc.nat()).map(([o, junk, at]) => {
    const i = at % (o.length + 1)
    return o.slice(0, i) + junk + o.slice(i)
  })
  fc.assert(fc.property(fc.oneof(hostileString(400), mutated, fc.string({ unit: 'binary', maxLength: 60 })), (input) => {
    const soft = tryParseOrigin(input)
    try {
      const hard = parseOrigin(input)
      // accepted: canonical, so it is its own serialization, and tryParseOrigin agrees
      return soft !== undefined && hard.serialized === input && input.length <= MAX_ORIGIN_LENGTH
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err
      if (err.message.includes(CANARY)) return false
      return soft === undefined
    }
  }), params())
  t.pass('held')
})

t.test('non-canonical spellings of an allowed origin are refused, not repaired', async (t) => {
  fc.assert(fc.property(fc.tuple(fc.constantFrom('http', 'https'), domain), fc.constantFrom('upper', 'port', 'slash', 'dot', 'space'), ([s, h], how) => {
    const o = `${s}://${h}`
    const variant = how === 'upper'
      ? o.toUpperCase()
      : how === 'port'
        ? `${o}:${s === 'http' ? 80 : 443}`
        : how === 'slash'
          ? `${o}/`
          : how === 'dot'
            ? `${o}.`
            : ` ${o}`
    return tryParseOrigin(variant) === undefined
  }), params())
  t.pass('held')
})

t.test('a wildcard entry matches exactly the subdomains, never a lookalike or the apex', async (t) => {
  const m = new OriginMatcher(['https://*.example.com', 'https://app.example.org'])
  const lookalike = fc.oneof(
    domain.map(d => `${d}.example.com`),
    domain.map(d => `${d}-example.com`),
    domain.map(d => `example.com.${d}`),
    domain.map(d => `${d}example.com`),
    fc.constant('example.com'),
    domain
  )
  fc.assert(fc.property(lookalike, fc.constantFrom('https', 'http', 'wss'), (host, s) => {
    const o = tryParseOrigin(`${s}://${host}`)
    if (o === undefined) return true
    const expected = (s === 'https' && host.endsWith('.example.com')) || `${s}://${host}` === 'https://app.example.org'
    return m.matchesList(o) === expected
  }), params())
  t.pass('held')
})

t.test('normalizeOriginEntry throws only TypeError and its result always parses back', async (t) => {
  fc.assert(fc.property(fc.oneof(hostileString(120), canonical.map(o => o.toUpperCase()), canonical), (entry) => {
    try {
      const e = normalizeOriginEntry(entry)
      if (e.kind === 'exact') return tryParseOrigin(e.origin)?.serialized === e.origin
      return true
    } catch (err) {
      if (!(err instanceof TypeError)) throw err
      return true
    }
  }), params())
  t.pass('held')
})

t.test('parseOrigin runs in linear time below its cap and in constant time above it', async (t) => {
  const shapes: Record<string, (n: number) => string> = {
    'long host': n => 'https://' + 'a'.repeat(n),
    'many labels': n => 'https://' + 'a.'.repeat(n / 2) + 'a',
    'long port': n => 'https://a:' + '1'.repeat(n),
    'long IPv6': n => 'https://[' + ':'.repeat(n),
    'long scheme': n => 'h'.repeat(n) + '://a'
  }
  for (const [name, make] of Object.entries(shapes)) {
    const below = growth(tryParseOrigin, make, 25)
    t.ok(below.ratio < 20, `${name}, up to the ${MAX_ORIGIN_LENGTH}-char cap: 10× input costs ${below.ratio.toFixed(1)}×`)
    const above = growth(tryParseOrigin, make, 10_000, 2)
    t.ok(above.ratio < 5, `${name}, beyond the cap: 10× input costs ${above.ratio.toFixed(1)}×`)
  }
})
