import t from 'tap'
import { sseParser } from '../src/sse.js'

function parse (chunks: string[]): Array<[string, string]> {
  const got: Array<[string, string]> = []
  const p = sseParser((type, data) => got.push([type, data]))
  for (const c of chunks) p.push(c)
  return got
}

t.test('the prelude and its padding comment dispatch nothing', async (t) => {
  t.same(parse([': portcullis v2\n\n', ': ' + ' '.repeat(2048) + '\n\n']), [])
})

t.test('messages, acks, reopen and close come out with their event type and data', async (t) => {
  const text = 'data: {"seq":1,"text":"a"}\n\nevent: ack\ndata: {"ack":3}\n\nevent: reopen\ndata: {}\n\nevent: close\ndata: {"code":1000,"reason":"bye"}\n\n'
  t.same(parse([text]), [['message', '{"seq":1,"text":"a"}'], ['ack', '{"ack":3}'], ['reopen', '{}'], ['close', '{"code":1000,"reason":"bye"}']])
})

t.test('an event split at every byte, with CRLF, CR or LF line ends, parses the same', async (t) => {
  for (const eol of ['\n', '\r\n', '\r']) {
    const text = `: c${eol}${eol}event: ack${eol}data: {"ack":12}${eol}${eol}data: {"seq":2,"text":"b"}${eol}${eol}`
    t.same(parse(text.split('')), [['ack', '{"ack":12}'], ['message', '{"seq":2,"text":"b"}']], JSON.stringify(eol))
  }
})

t.test('several data lines join with a newline; a field without a space, id and retry are read as the standard says', async (t) => {
  t.same(parse(['data:x\ndata: y\nid: 4\nretry: 10\nunknown: z\n\n']), [['message', 'x\ny']])
})

t.test('an event without data is not dispatched, and an unfinished event waits for its blank line', async (t) => {
  t.same(parse(['event: ack\n\n', 'data: {"seq":3}\n']), [])
})
