import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import { Ajv } from 'ajv'
import fc from 'fast-check'
import secureJsonParse from 'secure-json-parse'
import type WebSocket from 'ws'
import type { PortcullisSocket } from '@portcullis/policy'
import { protoApp } from './helpers.js'
import { json, parsedMessage, type SubprotocolsOptions } from '../src/index.js'
import { parseJsonSecure } from '../src/json.js'
import { listen, wsOpen, nextMessages, closed } from '../../../test/helpers/index.js'

const chatSchema = {
  type: 'object',
  properties: { text: { type: 'string', maxLength: 200 }, room: { type: 'string' } },
  required: ['text'],
  additionalProperties: false
}

/** An echo app on chat.v1; `seen` is every message the handler's listener received. */
async function echoApp (t: Test, opts: SubprotocolsOptions = { protocols: { 'chat.v1': json({ schema: chatSchema }) } }, route: unknown = ['chat.v1']) {
  const app = await protoApp(t, opts)
  const seen: string[] = []
  app.get('/chat', { websocket: true, wsPolicy: { protocols: route as string[] } }, (socket) => {
    socket.on('message', (data: Buffer) => {
      seen.push(String(data))
      socket.send(String(data))
    })
  })
  const { ws } = await listen(app)
  return { seen, url: `${ws}/chat` }
}

/** Open, send one valid message and wait for its echo, then send `bad`; resolve with the close. */
async function sendAfterValid (t: Test, url: string, bad: string | Buffer, opts: { binary?: boolean } = {}) {
  const r = await wsOpen(url, { protocols: ['chat.v1'] })
  t.ok(r.ws, 'opened')
  const ws = r.ws as WebSocket
  ws.send('{"text":"hello"}')
  t.same(await nextMessages(ws), ['{"text":"hello"}'], 'a valid message reaches the handler')
  const done = closed(ws)
  ws.send(bad, { binary: opts.binary ?? false })
  ws.send('{"text":"after"}') // never delivered: the connection is closing
  return done
}

const cases: Array<[string, string | Buffer, number, string, boolean?]> = [
  ['invalid JSON', '{"text":', 1008, 'invalid JSON'],
  ['a JSON value that is not UTF-8 text-safe', '\u0000', 1008, 'invalid JSON'],
  ['a schema violation (missing key)', '{"room":"a"}', 1008, 'message does not match the schema'],
  ['a schema violation (extra key)', '{"text":"a","admin":true}', 1008, 'message does not match the schema'],
  ['a schema violation (wrong type)', '["text"]', 1008, 'message does not match the schema'],
  ['a __proto__ key', '{"text":"a","__proto__":{"admin":true}}', 1008, 'forbidden key in JSON'],
  ['an escaped __proto__ key', '{"text":"a","\\u005f_proto__":{"admin":true}}', 1008, 'forbidden key in JSON'],
  ['a nested __proto__ key', '{"text":"a","room":"r","x":[{"__proto__":{}}]}', 1008, 'forbidden key in JSON'],
  ['a constructor.prototype key', '{"constructor":{"prototype":{"admin":true}}}', 1008, 'forbidden key in JSON'],
  ['an oversized message', JSON.stringify({ text: 'x'.repeat(70 * 1024) }), 1009, 'message too big'],
  ['a binary message to a text protocol', Buffer.from('{"text":"bin"}'), 1003, 'binary messages are not accepted', true]
]

for (const [what, bad, code, reason, binary] of cases) {
  t.test(`closes on ${what} with ${code}, and the handler never sees it`, async (t) => {
    const { seen, url } = await echoApp(t)
    const c = await sendAfterValid(t, url, bad, { binary })
    t.same(c, { code, reason })
    t.same(seen, ['{"text":"hello"}'], 'only the valid message reached the handler')
  })
}

t.test('a binary JSON message that is not UTF-8 closes with 1008, and the handler never sees it', async (t) => {
  const { seen, url } = await echoApp(t, { protocols: { 'chat.v1': json({ schema: chatSchema, dataTypes: 'both' }) } })
  const r = await wsOpen(url, { protocols: ['chat.v1'] })
  const ws = r.ws as WebSocket
  ws.send(Buffer.from('{"text":"bin"}'), { binary: true })
  t.same(await nextMessages(ws), ['{"text":"bin"}'], 'valid UTF-8 in a binary message passes')
  const done = closed(ws)
  // decoded leniently this would be {"text":"\uFFFD"} and match the schema
  ws.send(Buffer.concat([Buffer.from('{"text":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), { binary: true })
  t.same(await done, { code: 1008, reason: 'invalid JSON' })
  t.same(seen, ['{"text":"bin"}'])
})

t.test('closes with 4008 past the rate limit; the burst gets through', async (t) => {
  const { seen, url } = await echoApp(t, {
    protocols: { 'chat.v1': json({ schema: chatSchema, limits: { rate: { messagesPerSecond: 1, burst: 3 } } }) }
  })
  const r = await wsOpen(url, { protocols: ['chat.v1'] })
  const ws = r.ws as WebSocket
  const done = closed(ws)
  for (let i = 0; i < 6; i++) ws.send(`{"text":"m${i}"}`)
  t.same(await done, { code: 4008, reason: 'rate limit exceeded' })
  t.same(seen, ['{"text":"m0"}', '{"text":"m1"}', '{"text":"m2"}'], 'the burst of 3, nothing more')
})

t.test('route limits override the protocol\'s and the plugin\'s', async (t) => {
  const { seen, url } = await echoApp(t, {
    limits: { maxMessageBytes: 10 },
    protocols: { 'chat.v1': json({ schema: chatSchema, limits: { maxMessageBytes: 20 } }) }
  }, { accept: ['chat.v1'], limits: { maxMessageBytes: 1000 } })
  const r = await wsOpen(url, { protocols: ['chat.v1'] })
  const ws = r.ws as WebSocket
  const medium = JSON.stringify({ text: 'y'.repeat(150) })
  ws.send(medium)
  t.same(await nextMessages(ws), [medium], '161 bytes pass under the route\'s 1000')
  const done = closed(ws)
  ws.send(JSON.stringify({ text: 'z'.repeat(1000) }))
  t.same(await done, { code: 1009, reason: 'message too big' })
  t.equal(seen.length, 1)
})

t.test('the protocol\'s limit applies when the route sets none', async (t) => {
  const { url } = await echoApp(t, {
    limits: { maxMessageBytes: 10 },
    protocols: { 'chat.v1': json({ schema: chatSchema, limits: { maxMessageBytes: 30 } }) }
  })
  const r = await wsOpen(url, { protocols: ['chat.v1'] })
  const ws = r.ws as WebSocket
  ws.send('{"text":"0123456789abc"}')
  t.same(await nextMessages(ws), ['{"text":"0123456789abc"}'], '24 bytes: over the plugin\'s 10, under the protocol\'s 30')
  const done = closed(ws)
  ws.send('{"text":"0123456789012345678901234"}')
  t.same((await done).code, 1009)
})

t.test('schemas by message type: each type its schema, unknown types refused', async (t) => {
  const { seen, url } = await echoApp(t, {
    protocols: {
      'chat.v1': json({
        schemas: {
          say: { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string' } }, required: ['type', 'text'], additionalProperties: false },
          join: { type: 'object', properties: { type: { const: 'join' }, room: { type: 'string', pattern: '^[a-z]{1,16}$' } }, required: ['type', 'room'], additionalProperties: false }
        }
      })
    }
  })
  for (const [bad, reason] of [
    ['{"type":"join","room":"NOPE!"}', 'message does not match the schema'],
    ['{"type":"kick","who":"bob"}', 'unknown message type'],
    ['{"type":"constructor"}', 'unknown message type'],
    ['{"type":"toString"}', 'unknown message type'],
    ['{"text":"no type"}', 'unknown message type'],
    ['"say"', 'unknown message type']
  ]) {
    const r = await wsOpen(url, { protocols: ['chat.v1'] })
    const ws = r.ws as WebSocket
    ws.send('{"type":"join","room":"lobby"}')
    ws.send('{"type":"say","text":"hi"}')
    t.same(await nextMessages(ws, 2), ['{"type":"join","room":"lobby"}', '{"type":"say","text":"hi"}'])
    const done = closed(ws)
    ws.send(bad)
    t.same(await done, { code: 1008, reason }, bad)
  }
  t.equal(seen.length, 12, 'only the 12 valid messages reached the handler')
})

t.test('the handler can read the parsed value instead of parsing again', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json({ schema: chatSchema }), 'raw.v1': json({ expose: false }) } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1', 'raw.v1'] } }, (socket) => {
    socket.on('message', (data: Buffer) => {
      const msg = parsedMessage<{ text: string }>(socket, data)
      socket.send(JSON.stringify({ parsed: msg?.text ?? null, stale: parsedMessage(socket, Buffer.from(data)) ?? null }))
    })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'] })
  r.ws!.send('{"text":"one"}')
  r.ws!.send('{"text":"two"}')
  t.same((await nextMessages(r.ws!, 2)).map(m => JSON.parse(m)), [{ parsed: 'one', stale: null }, { parsed: 'two', stale: null }],
    'the parsed value for exactly this message object, nothing for another')
  r.ws!.close()
  const raw = await wsOpen(`${ws}/chat`, { protocols: ['raw.v1'] })
  raw.ws!.send('{"text":"three"}')
  t.same(JSON.parse((await nextMessages(raw.ws!))[0]), { parsed: null, stale: null }, 'expose: false keeps nothing')
  raw.ws!.close()
})

t.test('a message the fast path accepted is parsed when the handler reads it, once, to what the full path gives', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json({ schema: chatSchema }) } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket) => {
    socket.on('message', (data: Buffer) => {
      const first = parsedMessage<{ text: string, room?: string }>(socket, data)
      const again = parsedMessage(socket, data)
      socket.send(JSON.stringify({ value: first ?? null, same: first === again }))
    })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'] })
  // ASCII without escapes (the fast path), then non-ASCII and an escape (the full path)
  const sent = ['{ "text" : "one", "room": "lobby" }', '{"text":"caf\u00e9"}', '{"text":"café ☕"}', '{"text":"a\\"b"}']
  for (const m of sent) r.ws!.send(m)
  const got = (await nextMessages(r.ws!, sent.length)).map(m => JSON.parse(m) as { value: unknown, same: boolean })
  t.same(got.map(g => g.value), sent.map(m => JSON.parse(m)), 'each value is the parse of its message')
  t.ok(got.every(g => g.same), 'a second read returns the same object: one parse per message')
  r.ws!.close()
})

t.test('a closed connection\'s parsed value is let go: parsedMessage finds nothing once the socket has closed', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json({ schema: chatSchema }) } })
  const reads: Array<[string, unknown]> = []
  let closedAll: () => void
  const bothClosed = new Promise<void>((resolve) => { closedAll = resolve })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket) => {
    let last: Buffer | undefined
    socket.on('message', (data: Buffer) => {
      last = data
      reads.push(['message', parsedMessage<{ text: string }>(socket, data)?.text ?? null])
      socket.send('ok')
    })
    socket.on('close', () => {
      reads.push(['close', parsedMessage(socket, last) ?? null])
      closedAll()
    })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'] })
  r.ws!.send('{"text":"last words"}')
  await nextMessages(r.ws!)
  r.ws!.close()
  await bothClosed
  t.same(reads, [['message', 'last words'], ['close', null]], 'read while delivered, gone after the close')
})

t.test('a custom Ajv instance is used to compile, once, at startup', async (t) => {
  const ajv = new Ajv({ strict: true })
  let compiled = 0
  ajv.addKeyword({ keyword: 'even', type: 'number', compile: () => { compiled++; return (n: number) => n % 2 === 0 } })
  const { url } = await echoApp(t, {
    protocols: { 'chat.v1': json({ ajv, schema: { type: 'object', properties: { n: { type: 'number', even: true } }, required: ['n'] } }) }
  })
  t.equal(compiled, 1, 'compiled at json()')
  for (let i = 0; i < 2; i++) {
    const r = await wsOpen(url, { protocols: ['chat.v1'] })
    r.ws!.send('{"n":2}')
    t.same(await nextMessages(r.ws!), ['{"n":2}'])
    const done = closed(r.ws!)
    r.ws!.send('{"n":3}')
    t.equal((await done).code, 1008)
  }
  t.equal(compiled, 1, 'never compiled again per connection or message')
})

t.test('json() refuses bad options at startup', async (t) => {
  t.throws(() => json({ schema: { type: 'object', properties: { a: { type: 'strng' } } } }), { code: 'PORTCULLIS_SUBPROTOCOL_INVALID_OPTION' })
  t.throws(() => json({ schema: { type: 'object', unknownKeyword: 1 } }), /does not compile/)
  t.throws(() => json({ schema: {}, schemas: { a: {} } }), /not both/)
  t.throws(() => json({ schemas: {} }), /at least one/)
  t.throws(() => json({ schemas: { a: {} }, typeKey: '' }), /typeKey/)
})

t.test('the same guard protects a long-poll socket fed with strings (the fallback door)', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json({ schema: chatSchema, limits: { maxMessageBytes: 64 } }) } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, () => {})
  // stands in for @portcullis/fallback: evaluate the twin route, attach its own socket, emit strings
  app.get('/open', async (request) => {
    const d = await app.wsPolicy.route('/chat')!.evaluate(request, 'long-poll', 'chat.v1')
    if (!d.allowed) return { denied: d.denial.code }
    const socket = Object.assign(new EventEmitter(), {
      readyState: 1,
      protocol: d.state.protocol ?? '',
      bufferedAmount: 0,
      closes: [] as unknown[],
      send () {},
      close (code: number, reason: string) { socket.closes.push([code, reason]) },
      terminate () {}
    })
    app.wsPolicy.attach(socket as unknown as PortcullisSocket, d.state, request.log)
    const seen: unknown[] = []
    socket.on('message', (data: string) => seen.push([data, parsedMessage(socket as unknown as PortcullisSocket, data) ?? null]))
    socket.emit('message', '{"text":"ok"}', false)
    socket.emit('message', `{"text":"${'\u00e9'.repeat(40)}"}`, false) // 40 chars, 90 UTF-8 bytes: too big
    return { protocol: socket.protocol, seen, closes: socket.closes }
  })
  const res = await app.inject('/open')
  t.same(res.json(), { protocol: 'chat.v1', seen: [['{"text":"ok"}', { text: 'ok' }]], closes: [[1009, 'message too big']] })
})

t.test('property: the fast path answers exactly what secure-json-parse answers', async (t) => {
  const key = fc.constantFrom('a', 'text', '__proto__', 'constructor', 'prototype', '\\u005f_proto__', 'c\\u006fnstructor', '__pro\\u0074o__')
  const leaf = fc.oneof(fc.integer().map(String), fc.string({ maxLength: 5 }).map(s => JSON.stringify(s)), fc.constant('null'))
  const value: fc.Arbitrary<string> = fc.letrec<{ v: string }>(tie => ({
    v: fc.oneof({ depthSize: 'small' },
      leaf,
      fc.array(fc.tuple(key, tie('v')), { maxLength: 4 }).map(kv => `{${kv.map(([k, v]) => `"${k}":${v}`).join(',')}}`),
      fc.array(tie('v'), { maxLength: 3 }).map(a => `[${a.join(',')}]`))
  })).v
  const outcome = (fn: () => unknown): string => {
    try {
      return `ok ${JSON.stringify(fn())}`
    } catch (err) {
      return `throws ${(err as Error).message === 'Object contains forbidden prototype property' ? 'forbidden' : 'syntax'}`
    }
  }
  fc.assert(fc.property(fc.oneof(value, value.map(v => '\ufeff' + v), fc.string({ maxLength: 40 })), (text) =>
    outcome(() => parseJsonSecure(text)) === outcome(() => secureJsonParse(text, null, { protoAction: 'error', constructorAction: 'error' }))
  ), { numRuns: 3000 })
  t.pass('3000 runs')
})
