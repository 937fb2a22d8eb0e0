/**
 * Property tests for @portcullis/subprotocols' parsers: the `Sec-WebSocket-Protocol` header
 * (RFC 6455 §4.1) and STOMP 1.2 client frames. Fixed seed; `FC_SEED` / `FC_RUNS` for more.
 */
import t from 'tap'
import fc from 'fast-check'
import { parseProtocolHeader, ProtocolHeaderError, isToken, selectProtocol, defaultHeaderLimits } from '../packages/subprotocols/src/index.js'
import { parseStompFrames, StompSyntaxError, CLIENT_COMMANDS } from '../packages/subprotocols/src/index.js'
import { params, hostileString, growth, CANARY } from './load/properties.js'

const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".split('')
const token = fc.string({ unit: fc.constantFrom(...TCHARS), minLength: 1, maxLength: 20 })
const ows = fc.constantFrom('', ' ', '\t', '  ', ' \t ')

t.test('parseProtocolHeader throws only ProtocolHeaderError and never quotes the header', async (t) => {
  fc.assert(fc.property(fc.oneof(hostileString(300), fc.string({ unit: 'binary', maxLength: 100 })), (value) => {
    let out: string[]
    try {
      out = parseProtocolHeader(value)
    } catch (err) {
      if (!(err instanceof ProtocolHeaderError) || !(err instanceof SyntaxError)) throw err
      if (err.message.includes(CANARY)) return false
      return err.index >= 0 && err.index <= Math.max(value.length, defaultHeaderLimits.maxLength)
    }
    // accepted: unique tokens, within the count cap
    return out.length >= 1 && out.length <= defaultHeaderLimits.maxCount && out.every(isToken) && new Set(out).size === out.length
  }), params())
  t.pass('held')
})

t.test('parseProtocolHeader reads back any list of unique tokens with any optional whitespace', async (t) => {
  fc.assert(fc.property(fc.uniqueArray(token, { minLength: 1, maxLength: 32 }), fc.array(ows, { minLength: 66, maxLength: 66 }), (names, pad) => {
    const value = names.map((n, i) => `${pad[2 * i]}${n}${pad[2 * i + 1]}`).join(',')
    if (value.length > defaultHeaderLimits.maxLength) return true
    const got = parseProtocolHeader(value)
    return got.length === names.length && got.every((n, i) => n === names[i])
  }), params())
  t.pass('round trip held')
})

t.test('parseProtocolHeader refuses duplicates, empty elements and more than maxCount values', async (t) => {
  fc.assert(fc.property(fc.uniqueArray(token, { minLength: 1, maxLength: 10 }), fc.nat(), (names, k) => {
    const dup = [...names, names[k % names.length]].join(', ')
    const empty = [...names, ''].join(',')
    const threw = (v: string, problem: string): boolean => {
      try { parseProtocolHeader(v) } catch (err) { return (err as ProtocolHeaderError).problem === problem }
      return false
    }
    return threw(dup, 'duplicate') && threw(empty, 'empty-element')
  }), params())
  const many = Array.from({ length: 33 }, (_, i) => `p${i}`).join(',')
  let problem: string | undefined
  try { parseProtocolHeader(many) } catch (err) { problem = (err as ProtocolHeaderError).problem }
  t.equal(problem, 'too-many', '33 values are too many')
})

t.test('selectProtocol returns a server-side name or nothing, never client text', async (t) => {
  fc.assert(fc.property(fc.array(token, { maxLength: 10 }), fc.uniqueArray(token, { maxLength: 5 }), (offered, accept) => {
    const r = selectProtocol(offered, accept)
    if (r === undefined) return !accept.some(a => offered.includes(a))
    // the first of the server's list that the client offered (RFC 6455 §4.2.2 item 5.4)
    return r === accept.find(a => offered.includes(a))
  }), params())
  t.pass('held')
})

t.test('parseProtocolHeader runs in linear time up to its cap and in constant time beyond it', async (t) => {
  const big = { maxLength: 1 << 24, maxCount: defaultHeaderLimits.maxCount }
  const shapes: Record<string, (n: number) => string> = {
    'one long token': n => 'a'.repeat(n),
    'whitespace then a token': n => ' '.repeat(n) + 'a',
    'token then whitespace then junk': n => 'a' + ' '.repeat(n) + '@',
    'long tokens at the count cap': n => Array.from({ length: 32 }, (_, i) => `${i}` + 'x'.repeat(n / 32)).join(',')
  }
  for (const [name, make] of Object.entries(shapes)) {
    const { ratio } = growth(v => parseProtocolHeader(v, big), make, 20_000)
    t.ok(ratio < 20, `${name}: 10× input costs ${ratio.toFixed(1)}×`)
  }
  const capped = growth(v => parseProtocolHeader(v), n => 'a,'.repeat(n / 2), 10_000, 2)
  t.ok(capped.ratio < 5, `beyond the default 4096-char cap, 10× input costs ${capped.ratio.toFixed(1)}×`)
})

const limits = { maxHeaders: 32, maxHeaderBytes: 8192 }
const stompText = fc.string({ unit: fc.oneof(fc.constantFrom(':', '\\', '\r', '\n', 'é', 'a', 'b'), fc.string({ maxLength: 1 })), maxLength: 16 })

function escapeStomp (s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\r/g, '\\r').replace(/\n/g, '\\n').replace(/:/g, '\\c')
}

t.test('parseStompFrames throws only StompSyntaxError and never quotes the message', async (t) => {
  const frameish = fc.tuple(fc.constantFrom(...CLIENT_COMMANDS, 'send', 'FOO', ''), hostileString(200))
    .map(([cmd, rest]) => Buffer.from(`${cmd}\n${rest}`))
  fc.assert(fc.property(fc.oneof(frameish, fc.uint8Array({ maxLength: 200 }).map(a => Buffer.from(a))), (buf) => {
    try {
      const frames = parseStompFrames(buf, limits)
      return frames.every(f => f.bodyOffset + f.bodyLength < buf.length && buf[f.bodyOffset + f.bodyLength] === 0)
    } catch (err) {
      if (!(err instanceof StompSyntaxError)) throw err
      return !err.message.includes(CANARY) && err.index >= 0 && err.index <= buf.length + limits.maxHeaderBytes
    }
  }), params())
  t.pass('held')
})

t.test('parseStompFrames reads back escaped headers and bodies, several frames and heart-beats per message', async (t) => {
  const header = fc.tuple(stompText.filter(s => s.length > 0), stompText)
  const oneFrame = fc.tuple(fc.array(header, { maxLength: 6 }), fc.string({ maxLength: 30 }).map(s => s.replace(/\0/g, '')), fc.boolean())
  fc.assert(fc.property(fc.array(oneFrame, { minLength: 1, maxLength: 4 }), fc.constantFrom('', '\n', '\r\n\n'), (frames, beat) => {
    const parts: Buffer[] = []
    for (const [headers, body, withLength] of frames) {
      const lines = ['SEND', ...headers.map(([n, v]) => `${escapeStomp(n)}:${escapeStomp(v)}`)]
      if (withLength) lines.push(`content-length:${Buffer.byteLength(body)}`)
      parts.push(Buffer.from(lines.join('\n') + '\n\n' + body + '\0' + beat))
    }
    const buf = Buffer.concat(parts)
    const got = parseStompFrames(buf, limits)
    return got.length === frames.length && got.every((f, k) => {
      const [headers, body] = frames[k]
      const flat = headers.flatMap(([n, v]) => [n, v])
      return f.command === 'SEND' && flat.every((x, i) => f.headers[i] === x) &&
        buf.subarray(f.bodyOffset, f.bodyOffset + f.bodyLength).toString() === body
    })
  }), params())
  t.pass('round trip held')
})

t.test('parseStompFrames runs in linear time on hostile shapes', async (t) => {
  const big = { maxHeaders: 1 << 20, maxHeaderBytes: 1 << 26 }
  const shapes: Record<string, (n: number) => Buffer> = {
    'heart-beats only': n => Buffer.from('\n'.repeat(n)),
    'many empty frames': n => Buffer.from('DISCONNECT\n\n\0'.repeat(n / 13)),
    'a long body without NUL': n => Buffer.from('SEND\n\n' + 'x'.repeat(n)),
    'a long escaped header value': n => Buffer.from('SEND\na:' + '\\n'.repeat(n / 2) + '\n\n\0'),
    // at the inspector's default caps (32 headers): many frames of 32 headers each
    'frames full of headers': n => Buffer.from(('SEND\n' + 'a:b\n'.repeat(32) + '\n\0').repeat(n / 134)),
    'a header line with no end': n => Buffer.from('SEND\na:' + 'b'.repeat(n))
  }
  // Shapes that yield one object per few bytes (frames) start smaller: once the result outgrows
  // V8's young generation, every scavenge copies it, which measures the GC, not the parser.
  const objectHeavy = new Set(['many empty frames', 'frames full of headers'])
  for (const [name, make] of Object.entries(shapes)) {
    const n = objectHeavy.has(name) ? 4_000 : 20_000
    const { ratio } = growth(s => parseStompFrames(Buffer.from(s, 'latin1'), big), x => make(x).toString('latin1'), n)
    t.ok(ratio < 20, `${name}: 10× input costs ${ratio.toFixed(1)}×`)
  }
})
