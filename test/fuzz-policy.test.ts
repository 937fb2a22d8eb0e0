/**
 * Property tests for the core's parsers: the `Cookie` header parser and the RFC 6455 handshake
 * check. Fixed seed (see test/load/properties.ts); `FC_SEED` / `FC_RUNS` for a longer hunt.
 */
import t from 'tap'
import fc from 'fast-check'
import type { IncomingMessage } from 'node:http'
import { cookieValues, parseCookieHeader, checkHandshake } from '../packages/policy/src/index.js'
import { params, hostileString, growth, CANARY } from './load/properties.js'

const cookieName = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&\'*+-.^_`|~'.split('')), minLength: 1, maxLength: 12 })
// RFC 6265 §4.1.1 cookie-octet: no CTLs, whitespace, DQUOTE, comma, semicolon or backslash
const cookieValue = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).filter(c => c !== 0x22 && c !== 0x2c && c !== 0x3b && c !== 0x5c).map(c => String.fromCharCode(c)), maxLength: 24 })

t.test('parseCookieHeader never throws and returns only trimmed, non-empty names', async (t) => {
  fc.assert(fc.property(fc.oneof(hostileString(400), fc.string({ unit: 'binary', maxLength: 200 })), (header) => {
    const out = parseCookieHeader(header)
    let values = 0
    for (const [name, list] of out) {
      if (name.length === 0 || name.includes(';') || name.includes('=')) return false
      if (/^[ \t]|[ \t]$/.test(name)) return false
      for (const v of list) {
        if (v.includes(';')) return false
        values++
      }
    }
    // one value at most per ';'-separated pair
    return values <= header.split(';').length
  }), params())
  t.pass('held for every input')
})

t.test('parseCookieHeader reads back what a browser serializes, every value of every name in order', async (t) => {
  fc.assert(fc.property(fc.array(fc.tuple(cookieName, cookieValue, fc.boolean()), { maxLength: 40 }), (pairs) => {
    const header = pairs.map(([n, v, quoted]) => `${n}=${quoted ? `"${v}"` : v}`).join('; ')
    const expected = new Map<string, string[]>()
    for (const [n, v] of pairs) expected.set(n, [...(expected.get(n) ?? []), v])
    const got = parseCookieHeader(header)
    if (got.size !== expected.size) return false
    for (const [n, list] of expected) {
      const g = got.get(n)
      if (g === undefined || g.length !== list.length || g.some((v, i) => v !== list[i])) return false
    }
    return true
  }), params())
  t.pass('round trip held')
})

t.test('cookieValues finds exactly what parseCookieHeader keeps under that name, on any header', async (t) => {
  const header = fc.oneof(
    hostileString(400),
    fc.string({ unit: 'binary', maxLength: 200 }),
    // browser-shaped headers whose names repeat, with padding and quotes around some pairs
    fc.array(fc.tuple(fc.constantFrom('sid', 'a', 'sid ', ' sid', 'sidx', 'xsid', 'a=sid', 'sid=a'), cookieValue, fc.constantFrom('', ' ', '\t', '"')), { maxLength: 12 })
      .map(ps => ps.map(([n, v, pad]) => pad === '"' ? `${n}="${v}"` : `${pad}${n}${pad}=${pad}${v}${pad}`).join(';'))
  )
  // names no pair can have (with '=' or ';', or OWS at an end) find nothing, as in the parse
  fc.assert(fc.property(header, fc.constantFrom('sid', 'a', 'x', 'sid x', 'a=sid', 'sid=a', 'sid;', ' sid', 'sid\t', ''), (h, name) => {
    const want = parseCookieHeader(h).get(name)
    const got = cookieValues(h, name)
    if (want === undefined) return got === undefined
    return got !== undefined && got.length === want.length && got.every((v, i) => v === want[i])
  }), params())
  t.equal(cookieValues('a=1; sid=x; b=2; sid="y"', 'sid')?.join(','), 'x,y', 'a second cookie with the name is kept (tossing)')
  t.equal(cookieValues('a=1; b=2', 'sid'), undefined, 'no cookie with the name')
  t.equal(cookieValues(undefined, 'sid'), undefined, 'no header')
  t.equal(cookieValues('a=x sid=1; b=sid=2;sid\t =3', 'sid')?.join(','), '3', 'the name inside another pair\'s value is not a cookie')
  t.equal(cookieValues('a=b=c', 'a=b'), undefined, 'a name with "=" is never a cookie\'s name')
})

t.test('parseCookieHeader stops at maxPairs whatever follows', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 0, max: 300 }), (max, n) => {
    const header = Array.from({ length: n }, (_, i) => `c${i}=v`).join('; ')
    const out = parseCookieHeader(header, max)
    return out.size === Math.min(max, n)
  }), params())
  t.pass('bounded')
})

t.test('parseCookieHeader runs in linear time on hostile shapes', async (t) => {
  const shapes: Record<string, (n: number) => string> = {
    'separators only': n => ';'.repeat(n),
    'whitespace only': n => ' \t'.repeat(n / 2),
    'one huge value': n => 'a=' + 'b'.repeat(n),
    'equals signs': n => '='.repeat(n),
    'many pairs of one name': n => 'a=b;'.repeat(n / 4),
    'unterminated quote': n => 'a="' + 'x'.repeat(n),
    'pairs without =': n => 'ab;'.repeat(n / 3),
    'padding inside pairs': n => ('a' + ' '.repeat(30) + '=' + ' '.repeat(30) + 'b;').repeat(n / 64)
  }
  for (const [name, make] of Object.entries(shapes)) {
    // one name with every value kept: at 50 000 values the list leaves V8's young generation and
    // the large run pays old-generation GC (≈ 40×, not the parser's cost); 10 000 values stay young
    const { ratio } = growth(s => parseCookieHeader(s), make, name === 'many pairs of one name' ? 4_000 : 20_000)
    t.ok(ratio < 20, `${name}: 10× input costs ${ratio.toFixed(1)}×`)
    const one = growth(s => cookieValues(s, 'a'), make, name === 'many pairs of one name' ? 4_000 : 20_000)
    t.ok(one.ratio < 20, `cookieValues, ${name}: 10× input costs ${one.ratio.toFixed(1)}×`)
  }
})

const base64Key = fc.uint8Array({ minLength: 16, maxLength: 16 }).map(b => Buffer.from(b).toString('base64'))

function fakeRequest (h: { major?: number, minor?: number, upgrade?: unknown, key?: unknown, version?: unknown, host?: unknown }): IncomingMessage {
  return {
    httpVersionMajor: h.major ?? 1,
    httpVersionMinor: h.minor ?? 1,
    headers: { host: 'host' in h ? h.host : '127.0.0.1', upgrade: h.upgrade, 'sec-websocket-key': h.key, 'sec-websocket-version': h.version }
  } as unknown as IncomingMessage
}

t.test('checkHandshake accepts every well-formed version-13 handshake (any 16-byte key)', async (t) => {
  fc.assert(fc.property(base64Key, fc.constantFrom('websocket', 'WebSocket', 'WEBSOCKET'), fc.integer({ min: 1, max: 9 }), (key, upgrade, minor) => {
    return checkHandshake(fakeRequest({ key, upgrade, version: '13', minor })) === undefined
  }), params())
  t.pass('accepted')
})

t.test('checkHandshake refuses a handshake without Host (RFC 6455 §4.2.1 item 2)', async (t) => {
  t.same(checkHandshake(fakeRequest({ key: 'dGhlIHNhbXBsZSBub25jZQ==', upgrade: 'websocket', version: '13', host: undefined })), { status: 400, detail: 'Host required' })
  t.same(checkHandshake(fakeRequest({ key: 'dGhlIHNhbXBsZSBub25jZQ==', upgrade: 'websocket', version: '13', host: '' })), { status: 400, detail: 'Host required' })
})

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
/** Keys that look almost right: 24 characters of the alphabet with '=' padding in various places, other byte counts, URL-safe base64. */
const nearKey = fc.oneof(
  fc.string({ unit: fc.constantFrom(...B64.split('')), minLength: 22, maxLength: 22 }).map(k => k + '=='),
  fc.string({ unit: fc.constantFrom(...(B64 + '=-_ ').split('')), minLength: 24, maxLength: 24 }),
  fc.uint8Array({ minLength: 14, maxLength: 18 }).map(b => Buffer.from(b).toString('base64')),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map(b => Buffer.from(b).toString('base64url')),
  base64Key.map(k => k.slice(0, 23)),
  base64Key.map(k => ` ${k}`),
  base64Key.map(k => `${k}, ${k}`)
)

function isKey16 (key: unknown): boolean {
  return typeof key === 'string' && key.length === 24 && Buffer.from(key, 'base64').length === 16 &&
    Buffer.from(key, 'base64').toString('base64') === key
}

t.test('checkHandshake refuses every key that is not exactly 16 bytes of base64 in an otherwise valid handshake', async (t) => {
  // everything but the key is valid, so every case reaches the key check (RFC 6455 §4.2.1 item 5)
  const anyKey = fc.oneof(nearKey, base64Key, hostileString(60), fc.constant(undefined), fc.array(fc.string(), { maxLength: 3 }), fc.integer())
  let valid = 0
  let refused = 0
  fc.assert(fc.property(anyKey, (key) => {
    const r = checkHandshake(fakeRequest({ key, upgrade: 'websocket', version: '13' }))
    if (isKey16(key)) {
      valid++
      return r === undefined
    }
    refused++
    return r !== undefined && r.status === 400 && r.detail === 'Sec-WebSocket-Key must be one base64-encoded 16-byte value'
  }), params())
  t.ok(valid > 0 && refused > 0, `both sides exercised: ${valid} valid keys accepted, ${refused} others refused at the key check`)
})

t.test('checkHandshake never throws on any request and answers every malformed one with 400 or 426, never quoting it', async (t) => {
  const anyValue = fc.oneof(hostileString(60), base64Key, fc.constant(undefined), fc.array(fc.string(), { maxLength: 3 }), fc.integer())
  fc.assert(fc.property(anyValue, anyValue, anyValue, fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 }), (key, upgrade, version, major, minor) => {
    const r = checkHandshake(fakeRequest({ key, upgrade, version, major, minor }))
    const ok = major === 1 && minor >= 1 && typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket' && isKey16(key) && version === '13'
    if (ok) return r === undefined
    if (r === undefined) return false
    // the detail is fixed text: it never quotes the request
    if (typeof key === 'string' && key.length > 3 && r.detail.includes(key)) return false
    return (r.status === 400 || r.status === 426) && !r.detail.includes(CANARY)
  }), params())
  t.pass('refused exactly the malformed ones')
})

// constant: 10× the header costs < 5× (linear costs ≈ 10×; see the next test). growth's `good` of
// 2 retries noisy samples until the ratio is clearly flat.
const CONSTANT = 5

t.test('checkHandshake costs the same for a huge header as for a small one', async (t) => {
  const key = growth(key => checkHandshake(fakeRequest({ key, upgrade: 'websocket', version: '13' })), n => 'A'.repeat(n), 10_000, 2)
  t.ok(key.ratio < CONSTANT, `10× key costs ${key.ratio.toFixed(1)}×`)
  const up = growth(upgrade => checkHandshake(fakeRequest({ key: 'AAAAAAAAAAAAAAAAAAAAAA==', upgrade, version: '13' })), n => 'w'.repeat(n), 10_000, 2)
  t.ok(up.ratio < CONSTANT, `10× Upgrade costs ${up.ratio.toFixed(1)}×`)
  const version = growth(version => checkHandshake(fakeRequest({ key: 'AAAAAAAAAAAAAAAAAAAAAA==', upgrade: 'websocket', version })), n => '1'.repeat(n), 10_000, 2)
  t.ok(version.ratio < CONSTANT, `10× version costs ${version.ratio.toFixed(1)}×`)
})

t.test('the constant-cost bound fails a check whose cost grows linearly', async (t) => {
  // what checkHandshake did with the Upgrade header before it compared lengths first
  const linear = growth(upgrade => upgrade.toLowerCase() === 'websocket', n => 'w'.repeat(n), 10_000, 2)
  t.ok(linear.ratio >= CONSTANT, `a linear check costs ${linear.ratio.toFixed(1)}× for 10× input`)
})

t.test('the linear-time check itself tells a quadratic parser from a linear one', async (t) => {
  // a naive duplicate scan: for each comma, look back over everything before it
  const quadratic = (s: string): number => {
    let n = 0
    for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) === 0x2c) n += s.lastIndexOf('a', i) >= 0 ? s.slice(0, i).split(',').length : 0
    return n
  }
  const { ratio } = growth(quadratic, n => 'a,'.repeat(n / 2), 200)
  t.ok(ratio > 30, `a quadratic scan costs ${ratio.toFixed(0)}× for 10× input`)
})
