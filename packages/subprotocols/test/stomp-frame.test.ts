import t from 'tap'
import fc from 'fast-check'
import { catchError } from './helpers.js'
import { parseStompFrames, stompHeader, StompSyntaxError, type StompFrame, type StompProblem } from '../src/stomp-frame.js'

const limits = { maxHeaders: 32, maxHeaderBytes: 8192 }
const parse = (s: string | Buffer, l = limits): StompFrame[] => parseStompFrames(typeof s === 'string' ? Buffer.from(s, 'utf8') : s, l)
const body = (s: string, f: StompFrame): string => Buffer.from(s, 'utf8').toString('utf8', f.bodyOffset, f.bodyOffset + f.bodyLength)

t.test('parses a CONNECT frame; CONNECT values are not unescaped and may hold colons', async (t) => {
  const [f] = parse('CONNECT\naccept-version:1.2\nhost:example.com\nlogin:a:b\\t\n\n\0')
  t.equal(f.command, 'CONNECT')
  t.same(f.headers, ['accept-version', '1.2', 'host', 'example.com', 'login', 'a:b\\t'])
  t.equal(f.bodyLength, 0)
})

t.test('accepts CRLF and LF line endings', async (t) => {
  const [f] = parse('SEND\r\ndestination:/queue/a\r\n\r\nhi\0')
  t.equal(f.command, 'SEND')
  t.equal(stompHeader(f, 'destination'), '/queue/a')
})

t.test('heart-beat EOLs alone are no frame; EOLs around frames are skipped', async (t) => {
  t.same(parse('\n'), [])
  t.same(parse('\r\n\n\r\n'), [])
  t.same(parse(''), [])
  const s = '\nSEND\ndestination:/a\n\nx\0\r\n\nSEND\ndestination:/b\n\ny\0\n'
  const frames = parse(s)
  t.same(frames.map(f => [stompHeader(f, 'destination'), body(s, f)]), [['/a', 'x'], ['/b', 'y']])
})

t.test('content-length reads exactly that many octets, NULs included', async (t) => {
  const s = 'SEND\ndestination:/q\ncontent-length:5\n\nhe\0lo\0'
  const [f] = parse(s)
  t.equal(body(s, f), 'he\0lo')
  const u = 'SEND\ndestination:/q\ncontent-length:2\n\n\u00e9\0'
  t.equal(body(u, parse(u)[0]), '\u00e9', 'octets, not characters')
})

t.test('decodes STOMP 1.2 escapes in names and values of other frames', async (t) => {
  const [f] = parse('SEND\ndestination:/a\\cb\\\\c\\nd\\re\nx\\cy:1\n\n\0')
  t.equal(stompHeader(f, 'destination'), '/a:b\\c\nd\re')
  t.equal(stompHeader(f, 'x:y'), '1')
})

t.test('only the first of repeated headers counts', async (t) => {
  const [f] = parse('SEND\ndestination:/first\ndestination:/second\n\n\0')
  t.equal(stompHeader(f, 'destination'), '/first')
  t.equal(stompHeader(f, 'missing'), undefined)
  const s = 'SEND\ndestination:/q\ncontent-length:1\ncontent-length:junk\n\nx\0'
  t.equal(body(s, parse(s)[0]), 'x', 'a repeated content-length is ignored too')
})

const invalid: Array<[string, string, StompProblem]> = [
  ['an unknown command', 'FOO\n\n\0', 'unknown-command'],
  ['a lower-case command', 'send\ndestination:/q\n\n\0', 'unknown-command'],
  ['a command with trailing space', 'SEND \ndestination:/q\n\n\0', 'unknown-command'],
  ['a very long first line', 'SUBSCRIBEXXXXXXXXXXXXXXXXX\n\n\0', 'unknown-command'],
  ['a command alone', 'SEND', 'incomplete-frame'],
  ['no blank line', 'SEND\ndestination:/q', 'incomplete-frame'],
  ['no NUL', 'SEND\ndestination:/q\n\nbody', 'incomplete-frame'],
  ['a header without colon', 'SEND\nnocolon\n\n\0', 'bad-header'],
  ['an empty header name', 'SEND\n:value\n\n\0', 'bad-header'],
  ['a raw colon in a value', 'SEND\ndestination:/a:b\n\n\0', 'bad-header'],
  ['an undefined escape', 'SEND\ndestination:/a\\tb\n\n\0', 'bad-escape'],
  ['a trailing backslash', 'SEND\ndestination:/a\\\n\n\0', 'bad-escape'],
  ['a bare CR in a header', 'SEND\ndesti\rnation:/q\n\n\0', 'bad-eol'],
  ['a bare CR between frames', '\r', 'bad-eol'],
  ['a short content-length', 'SEND\ndestination:/q\ncontent-length:3\n\nhello\0', 'content-length-mismatch'],
  ['a long content-length', 'SEND\ndestination:/q\ncontent-length:10\n\nhello\0', 'content-length-mismatch'],
  ['a non-numeric content-length', 'SEND\ndestination:/q\ncontent-length:5a\n\nhello\0', 'bad-content-length'],
  ['a negative content-length', 'SEND\ndestination:/q\ncontent-length:-1\n\n\0', 'bad-content-length'],
  ['an empty content-length', 'SEND\ndestination:/q\ncontent-length:\n\n\0', 'bad-content-length'],
  ['a huge content-length', 'SEND\ndestination:/q\ncontent-length:99999999999\n\n\0', 'bad-content-length'],
  ['a body on SUBSCRIBE', 'SUBSCRIBE\nid:1\ndestination:/q\n\nbody\0', 'unexpected-body'],
  ['a good frame then garbage', 'SEND\ndestination:/q\n\n\0GARBAGE\n\n\0', 'unknown-command']
]

for (const [what, s, problem] of invalid) {
  t.test(`refuses ${what} (${problem})`, async (t) => {
    const err = catchError(() => parse(s))
    t.ok(err instanceof StompSyntaxError, 'a StompSyntaxError')
    t.ok(err instanceof SyntaxError, 'which is a SyntaxError')
    t.equal((err as StompSyntaxError).problem, problem)
    t.match((err as Error).message, /at index \d+$/)
  })
}

t.test('caps the header count and the header section size', async (t) => {
  const many = 'SEND\n' + Array.from({ length: 5 }, (_, i) => `h${i}:v`).join('\n') + '\n\n\0'
  t.equal(parse(many, { maxHeaders: 5, maxHeaderBytes: 8192 })[0].headers.length, 10)
  t.equal((catchError(() => parse(many, { maxHeaders: 4, maxHeaderBytes: 8192 })) as StompSyntaxError).problem, 'too-many-headers')
  const big = `SEND\ndestination:/${'q'.repeat(100)}\n\n\0`
  t.equal((catchError(() => parse(big, { maxHeaders: 32, maxHeaderBytes: 64 })) as StompSyntaxError).problem, 'headers-too-large')
  t.equal(parse(big, { maxHeaders: 32, maxHeaderBytes: big.length - 1 }).length, 1, 'the cap counts up to the blank line, not the body')
})

t.test('parses hostile input in linear time', async (t) => {
  const inputs = [
    Buffer.from('\n'.repeat(1 << 18)),
    Buffer.from('SEND\ndestination:/q\n\n' + 'x'.repeat(1 << 18)),
    Buffer.from('SEND\n' + 'a:b\n'.repeat(1 << 16)),
    Buffer.from('SEND\ndestination:' + '\\\\'.repeat(1 << 17) + '\n\n\0')
  ]
  const started = process.hrtime.bigint()
  for (const b of inputs) catchError(() => parseStompFrames(b, { maxHeaders: 1 << 20, maxHeaderBytes: 1 << 22 }))
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  // generous: a quadratic scan of these 1 MB would take minutes, a linear one takes milliseconds
  t.ok(ms < 5000, `1 MB of worst cases in ${ms.toFixed(1)} ms`)
})

const MARK = 'QZJMARK'

t.test('property: never throws anything but StompSyntaxError, never echoes input', async (t) => {
  const stompish = fc.array(fc.constantFrom('SEND', 'CONNECT', 'SUBSCRIBE', '\n', '\r\n', '\r', ':', '\\', '\\c', '\0', 'destination', 'content-length:', '3', 'id:1', MARK), { maxLength: 30 })
    .map(parts => parts.join(''))
  fc.assert(fc.property(fc.oneof(stompish, fc.string({ maxLength: 100 }).map(s => MARK + s), fc.uint8Array({ maxLength: 200 }).map(a => Buffer.from(a))), (input) => {
    try {
      parse(input)
      return true
    } catch (err) {
      return err instanceof StompSyntaxError && !err.message.includes(MARK)
    }
  }), { numRuns: 3000 })
  t.pass('3000 runs')
})

t.test('property: an escaped SEND frame round-trips its headers and body', async (t) => {
  const text = fc.string({ minLength: 1, maxLength: 20 })
  const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\r/g, '\\r').replace(/\n/g, '\\n').replace(/:/g, '\\c')
  fc.assert(fc.property(fc.array(fc.tuple(text, fc.string({ maxLength: 20 })), { maxLength: 10 }), fc.string({ maxLength: 50 }), (headers, b) => {
    const payload = Buffer.from(b, 'utf8')
    const lines = ['SEND', 'destination:/q', ...headers.map(([k, v]) => `${esc(k)}:${esc(v)}`), `content-length:${payload.length}`]
    const s = Buffer.concat([Buffer.from(lines.join('\n') + '\n\n'), payload, Buffer.from([0])])
    const [f] = parseStompFrames(s, limits)
    const flat = ['destination', '/q', ...headers.flat(), 'content-length', String(payload.length)]
    return f.headers.length === flat.length && f.headers.every((h, i) => h === flat[i]) &&
      s.subarray(f.bodyOffset, f.bodyOffset + f.bodyLength).equals(payload)
  }), { numRuns: 1000 })
  t.pass('1000 runs')
})

t.test('refuses header names and values that are not UTF-8, escaped or not; a correct U+FFFD passes', async (t) => {
  const bad = (head: string, tail: string): Buffer => Buffer.concat([Buffer.from(head), Buffer.from([0xff, 0xfe]), Buffer.from(tail)])
  for (const [what, buf] of [
    ['a value', bad('SEND\ndestination:/topic/', '\n\n\0')],
    ['an escaped value', bad('SEND\ndestination:/a\\c', '\n\n\0')],
    ['a name', bad('SEND\ndestination:/a\nx', ':1\n\n\0')],
    ['a CONNECT value', bad('CONNECT\naccept-version:1.2\nlogin:', '\n\n\0')]
  ] as Array<[string, Buffer]>) {
    const err = catchError(() => parse(buf))
    t.ok(err instanceof StompSyntaxError, what)
    t.equal((err as StompSyntaxError).problem, 'bad-header', what)
  }
  const [f] = parse('SEND\ndestination:/a\uFFFDb\n\n\0')
  t.equal(stompHeader(f, 'destination'), '/a\uFFFDb', 'an encoded U+FFFD is valid UTF-8')
  const [g] = parse(Buffer.concat([Buffer.from('SEND\ndestination:/a\n\n'), Buffer.from([0xff]), Buffer.from('\0')]))
  t.equal(g.bodyLength, 1, 'a body is octets: not checked')
})
