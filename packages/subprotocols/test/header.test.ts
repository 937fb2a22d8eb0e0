import t from 'tap'
import fc from 'fast-check'
import { catchError } from './helpers.js'
import { isToken, parseProtocolHeader, ProtocolHeaderError, selectProtocol, type ProtocolHeaderProblem } from '../src/header.js'

const valid: Array<[string, string[]]> = [
  ['chat.v1', ['chat.v1']],
  ['chat.v1, chat.v0', ['chat.v1', 'chat.v0']],
  ['chat.v1,chat.v0', ['chat.v1', 'chat.v0']],
  ['  chat.v1 \t,\tchat.v0  ', ['chat.v1', 'chat.v0']],
  ['v12.stomp, v11.stomp, v10.stomp', ['v12.stomp', 'v11.stomp', 'v10.stomp']],
  ["!#$%&'*+-.^_`|~09AZaz", ["!#$%&'*+-.^_`|~09AZaz"]],
  ['Chat, chat', ['Chat', 'chat']] // names are case-sensitive: two different values
]

for (const [header, expected] of valid) {
  t.test(`parses ${JSON.stringify(header)}`, async (t) => {
    t.same(parseProtocolHeader(header), expected)
  })
}

const invalid: Array<[string, ProtocolHeaderProblem, number]> = [
  ['', 'empty-element', 0],
  ['   ', 'empty-element', 3],
  [',chat', 'empty-element', 0],
  ['chat,', 'empty-element', 5],
  ['chat, ', 'empty-element', 6],
  ['a,,b', 'empty-element', 2],
  ['a, ,b', 'empty-element', 3],
  ['chat v1', 'invalid-character', 5],
  ['chat;v1', 'invalid-character', 4],
  ['"chat"', 'invalid-character', 0],
  ['chat/1', 'invalid-character', 4],
  ['chat(1)', 'invalid-character', 4],
  ['chat\u00e9', 'invalid-character', 4],
  ['chat\r\nx', 'invalid-character', 4],
  ['chat\u0000', 'invalid-character', 4],
  ['a, b, a', 'duplicate', 6],
  ['chat.v1, chat.v1', 'duplicate', 9]
]

for (const [header, problem, index] of invalid) {
  t.test(`refuses ${JSON.stringify(header)} as ${problem} at ${index}`, async (t) => {
    const err = catchError(() => parseProtocolHeader(header))
    t.ok(err instanceof ProtocolHeaderError, 'a ProtocolHeaderError')
    t.ok(err instanceof SyntaxError, 'which is a SyntaxError')
    t.equal((err as ProtocolHeaderError).problem, problem)
    t.equal((err as ProtocolHeaderError).index, index)
    t.match((err as Error).message, `index ${index}`)
  })
}

t.test('refuses a header longer than maxLength before looking at it', async (t) => {
  const err = catchError(() => parseProtocolHeader('a'.repeat(4097)))
  t.equal((err as ProtocolHeaderError).problem, 'too-long')
  t.same(parseProtocolHeader('a'.repeat(4096)), ['a'.repeat(4096)])
  t.equal((catchError(() => parseProtocolHeader('abcdef', { maxLength: 5, maxCount: 32 })) as ProtocolHeaderError).problem, 'too-long')
})

t.test('refuses more than maxCount values and stops at the first extra one', async (t) => {
  const names = Array.from({ length: 33 }, (_, i) => `p${i}`)
  t.equal(parseProtocolHeader(names.slice(0, 32).join(', ')).length, 32)
  const err = catchError(() => parseProtocolHeader(names.join(', '))) as ProtocolHeaderError
  t.equal(err.problem, 'too-many')
  t.equal(err.index, names.slice(0, 32).join(', ').length + 2)
  t.equal((catchError(() => parseProtocolHeader('a, b, c', { maxLength: 100, maxCount: 2 })) as ProtocolHeaderError).problem, 'too-many')
})

t.test('parses the worst inputs under the caps in linear time', async (t) => {
  const hostile = [
    'a,'.repeat(2048),
    ' '.repeat(4095) + 'a',
    ('x'.repeat(126) + ', ').repeat(31) + 'x'.repeat(100),
    'a' + '\t'.repeat(4094) + ','
  ]
  const started = process.hrtime.bigint()
  for (let i = 0; i < 200; i++) {
    for (const h of hostile) catchError(() => parseProtocolHeader(h))
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  t.ok(ms < 2000, `800 worst-case parses took ${ms.toFixed(1)} ms`)
})

t.test('selects by the route\'s preference order, never the client\'s', async (t) => {
  t.equal(selectProtocol(['chat.v0', 'chat.v1'], ['chat.v1', 'chat.v0']), 'chat.v1')
  t.equal(selectProtocol(['chat.v1', 'chat.v0'], ['chat.v0', 'chat.v1']), 'chat.v0')
  t.equal(selectProtocol(['x', 'chat.v0'], ['chat.v1', 'chat.v0']), 'chat.v0')
  t.equal(selectProtocol(['CHAT.V1'], ['chat.v1']), undefined, 'exact, case-sensitive match')
  t.equal(selectProtocol([], ['chat.v1']), undefined)
  const accept = ['chat.v1']
  t.equal(selectProtocol(['chat.v1'], accept), accept[0], 'returns the route\'s own string')
})

t.test('isToken accepts exactly the RFC 7230 tchar set', async (t) => {
  const tchar = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
  for (let c = 0; c < 256; c++) {
    const ch = String.fromCharCode(c)
    if (isToken(ch) !== tchar.includes(ch)) t.fail(`wrong answer for code ${c}`)
  }
  t.notOk(isToken(''))
  t.ok(isToken('chat.v1'))
  t.pass('every code point 0-255 classified')
})

// Properties: whatever the client sends, the parser answers a list of tokens or throws its own
// SyntaxError; the error message never carries the client's text.
const MARK = 'QZJ'
const headerish = fc.string({ unit: fc.constantFrom('a', 'Z', '0', ' ', ',', '\t', '.', ';', '"', '\u00e9', '\u0000', '-'), maxLength: 80 })

t.test('property: never throws anything but ProtocolHeaderError, never echoes input', async (t) => {
  fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 200 }), headerish, fc.string({ unit: 'binary', maxLength: 100 })), (raw) => {
    const header = MARK + raw
    try {
      const out = parseProtocolHeader(header)
      for (const v of out) if (!isToken(v)) return false
      return new Set(out).size === out.length
    } catch (err) {
      return err instanceof ProtocolHeaderError && err instanceof SyntaxError && !err.message.includes(MARK)
    }
  }), { numRuns: 2000 })
  t.pass('2000 runs')
})

t.test('property: any list of distinct tokens joined with OWS and commas round-trips', async (t) => {
  const token = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}$/)
  const ows = fc.stringMatching(/^[ \t]{0,3}$/)
  fc.assert(fc.property(fc.uniqueArray(token, { minLength: 1, maxLength: 32 }), ows, ows, (names, a, b) => {
    const header = names.join(`${a},${b}`)
    const out = parseProtocolHeader(header)
    return out.length === names.length && out.every((v, i) => v === names[i])
  }), { numRuns: 1000 })
  t.pass('1000 runs')
})

t.test('property: selection is always one of the route\'s names and one the client offered', async (t) => {
  const name = fc.constantFrom('a', 'b', 'c', 'd', 'chat.v1', 'chat.v0')
  fc.assert(fc.property(fc.uniqueArray(name), fc.uniqueArray(name, { minLength: 1 }), (offered: string[], accept: string[]) => {
    const chosen = selectProtocol(offered, accept)
    if (chosen === undefined) return !accept.some(a => offered.includes(a))
    return accept.includes(chosen) && offered.includes(chosen) && accept.findIndex(a => offered.includes(a)) === accept.indexOf(chosen)
  }), { numRuns: 1000 })
  t.pass('1000 runs')
})
