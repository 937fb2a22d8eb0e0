/**
 * The benchmark's lean client must speak RFC 6455 correctly, or the benchmark measures nothing:
 * its frame builder, its response check and its frame reader, tested on bytes and against a
 * real `ws` server.
 */
import { test } from 'tap'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { WebSocket, WebSocketServer } from 'ws'
import {
  FrameReader, OPCODE_CLOSE, OPCODE_TEXT, acceptFor, buildUpgrade, headerValue, maskedClose, maskedFrame, readHead
} from '../bench/lib/frames.js'
import { malformedProtocolRequest, manyHeadersRequest } from '../bench/lib/hostile.js'
import { latencySummary, median, percentile } from '../bench/lib/stats.js'
import { MESSAGE, PROTOCOL, WS_PATH } from '../bench/lib/fixture.js'
import { ABLATED_PARTS, startPortcullis, type AblatedPart } from '../bench/servers/portcullis.js'
import { buildEntries } from '../bench/lib/build.js'
import { pinTickObject } from '../bench/lib/pin-tick.js'

function unmask (frame: Buffer): { fin: boolean, opcode: number, payload: Buffer } {
  const masked = (frame[1] & 0x80) !== 0
  let len = frame[1] & 0x7f
  let off = 2
  if (len === 126) { len = frame.readUInt16BE(2); off = 4 } else if (len === 127) { len = Number(frame.readBigUInt64BE(2)); off = 10 }
  const key = masked ? frame.subarray(off, off + 4) : Buffer.alloc(4)
  off += masked ? 4 : 0
  const payload = Buffer.alloc(len)
  for (let i = 0; i < len; i++) payload[i] = frame[off + i] ^ key[i & 3]
  return { fin: (frame[0] & 0x80) !== 0, opcode: frame[0] & 0x0f, payload }
}

test('computes the Sec-WebSocket-Accept of the RFC 6455 §1.3 example', async (t) => {
  t.equal(acceptFor('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=')
})

test('builds masked frames that unmask to the payload, for every length encoding', async (t) => {
  for (const len of [0, 1, 64, 125, 126, 127, 65535, 65536, 70000]) {
    const payload = Buffer.alloc(len, 0x61)
    const frame = maskedFrame(OPCODE_TEXT, payload, Buffer.from([1, 2, 3, 4]))
    t.equal(frame[1] & 0x80, 0x80, `length ${len}: mask bit set`)
    const back = unmask(frame)
    t.ok(back.fin, `length ${len}: FIN set`)
    t.equal(back.opcode, OPCODE_TEXT)
    t.ok(back.payload.equals(payload), `length ${len}: payload round-trips`)
    const header = len < 126 ? 2 : len < 65536 ? 4 : 10
    t.equal(frame.length, header + 4 + len, `length ${len}: ${header}-byte header`)
  }
  t.throws(() => maskedFrame(OPCODE_TEXT, 'x', Buffer.alloc(3)), RangeError)
  const close = unmask(maskedClose(1001))
  t.equal(close.opcode, OPCODE_CLOSE)
  t.equal(close.payload.readUInt16BE(0), 1001)
})

test('accepts only a 101 with the right Sec-WebSocket-Accept', async (t) => {
  const req = buildUpgrade('127.0.0.1:1', '/ws', [['Origin', 'https://a.example']], 'dGhlIHNhbXBsZSBub25jZQ==')
  t.match(req.bytes.toString(), /^GET \/ws HTTP\/1\.1\r\n[\s\S]*Origin: https:\/\/a\.example\r\n\r\n$/)
  const good = Buffer.concat([
    Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'),
    Buffer.from([0x81, 0x00])
  ])
  t.same(readHead(good.subarray(0, 20), req.accept), { done: false }, 'waits for the blank line')
  const ok = readHead(good, req.accept)
  t.ok(ok.done && ok.ok && ok.status === 101)
  t.ok(ok.done && ok.rest.equals(Buffer.from([0x81, 0x00])), 'keeps the bytes after the head')
  const wrong = readHead(Buffer.from('HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: AAAA\r\n\r\n'), req.accept)
  t.ok(wrong.done && !wrong.ok && wrong.reason === 'bad Sec-WebSocket-Accept')
  const refused = readHead(Buffer.from('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n'), req.accept)
  t.ok(refused.done && !refused.ok && refused.status === 403)
  t.equal(headerValue('HTTP/1.1 200 OK\r\nX-A: 1\r\nx-b:  two \r\n', 'x-b'), 'two')
})

test('reads server frames split at any byte boundary', async (t) => {
  const frames = [Buffer.from([0x81, 0x02, 0x68, 0x69]), Buffer.concat([Buffer.from([0x82, 0x7e, 0x01, 0x00]), Buffer.alloc(256, 7)]), Buffer.from([0x88, 0x02, 0x03, 0xe8])]
  const all = Buffer.concat(frames)
  for (let cut = 0; cut <= all.length; cut += 7) {
    const got: Array<[number, number]> = []
    const reader = new FrameReader((op, payload) => got.push([op, payload.length]))
    reader.push(all.subarray(0, cut))
    reader.push(all.subarray(cut))
    t.same(got, [[1, 2], [2, 256], [8, 2]], `cut at ${cut}`)
  }
  t.throws(() => new FrameReader(() => {}).push(Buffer.from([0x81, 0x81, 0, 0, 0, 0, 0])), /masked/)
})

test('builds the hostile requests to size and under the 16 KB header limit', async (t) => {
  const headers: Array<[string, string]> = [['Origin', 'https://app.example.com'], ['Sec-WebSocket-Protocol', 'chat.v1']]
  const proto = malformedProtocolRequest(1, '/ws', headers, 8192).toString('latin1')
  const line = proto.split('\r\n').find(l => l.startsWith('Sec-WebSocket-Protocol: ')) as string
  t.equal(line.length - 'Sec-WebSocket-Protocol: '.length, 8192)
  t.ok(line.endsWith('@'), 'malformed at the very end')
  t.equal(proto.split('\r\n').filter(l => l.startsWith('Sec-WebSocket-Protocol')).length, 1, 'the valid protocol line is replaced')
  const many = manyHeadersRequest(1, '/ws', headers, 2000).toString('latin1')
  const lines = many.split('\r\n\r\n')[0].split('\r\n').slice(1)
  t.equal(lines.length, 2000)
  t.equal(lines.filter(l => l.startsWith('Origin:')).length, 2)
  t.equal(new Set(lines.map(l => l.split(':')[0].toLowerCase())).size, 1999, 'filler names are distinct')
  t.ok(many.length < 16 * 1024)
})

test('speaks to a real ws server: upgrade, pre-masked echo, close', async (t) => {
  const server = createServer()
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { wss.close(); server.close() })
  const port = (server.address() as { port: number }).port
  const req = buildUpgrade(`127.0.0.1:${port}`, '/')
  const frame = maskedFrame(OPCODE_TEXT, MESSAGE)
  const result = await new Promise<{ texts: string[], closeCode: number }>((resolve, reject) => {
    const texts: string[] = []
    const s = connect(port, '127.0.0.1')
    let head: Buffer | undefined
    let upgraded = false
    const reader = new FrameReader((op, payload) => {
      if (op === OPCODE_TEXT) {
        texts.push(payload.toString())
        if (texts.length === 3) s.write(maskedClose(1000))
      } else if (op === OPCODE_CLOSE) {
        resolve({ texts, closeCode: payload.readUInt16BE(0) })
        s.destroy()
      }
    })
    s.on('data', (chunk: Buffer) => {
      if (upgraded) return reader.push(chunk)
      head = head === undefined ? chunk : Buffer.concat([head, chunk])
      const h = readHead(head, req.accept)
      if (!h.done) return
      if (!h.ok) return reject(new Error(h.reason))
      upgraded = true
      s.write(Buffer.concat([frame, frame, frame]))
    })
    s.on('error', reject)
    s.write(req.bytes)
  })
  t.same(result.texts, [MESSAGE, MESSAGE, MESSAGE], 'the same pre-masked buffer is valid every time')
  t.equal(result.closeCode, 1000)
})

test('summarizes samples with medians and nearest-rank percentiles', async (t) => {
  t.equal(median([3, 1, 2]), 2)
  t.equal(median([4, 1, 2, 3]), 2.5)
  t.equal(percentile([1, 2, 3, 4, 5], 100), 5)
  const s = latencySummary(Array.from({ length: 100 }, (_, i) => i + 1))
  t.same(s, { n: 100, p50: 50, p99: 99, max: 100 })
  t.ok(Number.isNaN(median([])))
})

test('an attribution server answers the bench\'s handshake with what is left of the policy', async (t) => {
  const variants: AblatedPart[][] = [[], ...ABLATED_PARTS.map(p => [p]), [...ABLATED_PARTS]]
  for (const without of variants) {
    const server = await startPortcullis({ inspect: true, without })
    t.teardown(() => server.close())
    const headers = Object.fromEntries((server.clientHeaders ?? []).filter(([k]) => !/^sec-websocket-protocol$/i.test(k)))
    // without the registry no protocol is chosen, so none is answered (the ws client would refuse
    // a handshake that offered one and got none back; the bench's lean client does not check)
    const offers = without.includes('subprotocol') ? [] : [PROTOCOL]
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}${WS_PATH}`, offers, { headers })
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send(MESSAGE))
      ws.once('message', (data) => resolve(String(data)))
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)))
    })
    t.equal(echoed, MESSAGE, `without ${without.join('+') || 'nothing'}: admitted and echoed`)
    t.equal(ws.protocol, offers[0] ?? '', `without ${without.join('+') || 'nothing'}: the protocol answered`)
    ws.close()
    t.same(server.info.without ?? [], without, 'the server says what it left out')
  }
  // the full server still refuses a foreign origin: leaving a part out is the variant's choice only
  const full = await startPortcullis({ inspect: true })
  t.teardown(() => full.close())
  const headers = { ...Object.fromEntries(full.clientHeaders ?? []), Origin: 'https://evil.example' }
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${full.port}${WS_PATH}`, [PROTOCOL], { headers })
    ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); res.resume() })
    ws.once('open', () => { resolve(101); ws.close() })
    ws.once('error', () => {})
  })
  t.equal(status, 403)
})

/** Every module a compiled file of the bench loads at startup: its static imports, chunks followed. */
function staticGraph (dir: string, file: string, seen = new Set<string>()): Set<string> {
  for (const m of readFileSync(join(dir, file), 'utf8').matchAll(/^import\s(?:[^"']*\sfrom\s)?["']([^"']+)["'];?$/gm)) {
    const spec = m[1]
    if (seen.has(spec)) continue
    seen.add(spec)
    if (spec.startsWith('./')) staticGraph(dir, spec.slice(2), seen)
  }
  return seen
}

test('a bench server process loads only the modules of the contender it runs', async (t) => {
  // bench/server.ts: a process that also loaded socket.io, Portcullis and the OpenTelemetry SDK
  // measured differently from the same server alone (docs/BENCHMARKS.md, nextTick)
  const built = await buildEntries({ server: 'server.ts' })
  const dir = dirname(built.server)
  const entry = [...staticGraph(dir, 'server.mjs')]
  for (const heavy of ['socket.io', 'engine.io', 'sdk-metrics', 'fastify/', '@fastify/', 'ajv', 'ws/']) {
    t.notOk(entry.some(s => s.includes(heavy)), `the entry loads no ${heavy} before it knows its contender`)
  }
  const chunks = readdirSync(dir)
  const graphOf = (prefix: string): string[] => {
    const file = chunks.find(f => f.startsWith(prefix))
    if (file === undefined) throw new Error(`no chunk for ${prefix} in ${chunks.join(', ')}`)
    return [...staticGraph(dir, file)]
  }
  const bare = graphOf('bare-')
  t.ok(bare.some(s => s.includes('@fastify/websocket')), 'the bare servers load @fastify/websocket')
  for (const other of ['socket.io', 'sdk-metrics', 'ajv', '@fastify/cookie']) {
    t.notOk(bare.some(s => s.includes(other)), `the bare servers do not load ${other}`)
  }
  const portcullis = graphOf('portcullis-')
  t.ok(portcullis.some(s => s.includes('ajv')), 'the Portcullis servers load what their policy uses (Ajv for json())')
  for (const other of ['socket.io', 'sdk-metrics']) {
    t.notOk(portcullis.some(s => s.includes(other)), `the Portcullis servers do not load ${other}`)
  }
  t.ok(graphOf('socketio-').some(s => s.includes('socket.io')), 'the socket.io servers load socket.io')
})

test('the tick-object pin of BENCH_PIN_TICK holds one of Node\'s tick objects', async (t) => {
  t.ok(pinTickObject(), 'a TickObject was seen and kept')
  // nextTick still works afterwards: the hook was disabled
  await new Promise<void>((resolve) => process.nextTick(resolve))
})
