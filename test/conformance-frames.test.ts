/**
 * RFC 6455 framing conformance on a Portcullis-protected route, over raw TCP: every malformed
 * frame gets the RFC's close code (§7.4.1), the TCP connection is closed, the connection is
 * freed from the policy registry, and the inspection layer (message guards) never sees a
 * broken message. A well-formed client on the same server keeps working.
 */
import t, { type Test } from 'tap'
import { listen, waitFor } from './helpers/index.js'
import { rawConnect, frame, fragments, closePayload, Op, type RawWsClient } from './helpers/frames.js'
import { protectedApp, type ProtectedApp } from './load/app.js'
import type { PortcullisOptions } from '../packages/policy/src/index.js'

interface Setup extends ProtectedApp {
  port: number
  client: RawWsClient
  /** Cookie and subprotocol of a valid client (the full policy needs both). */
  creds: Record<string, string>
}

async function open (tt: Test, portcullisOpts: PortcullisOptions = {}): Promise<Setup> {
  const built = await protectedApp({ portcullis: portcullisOpts })
  tt.teardown(() => built.app.close())
  const { port } = await listen(built.app)
  const creds = { Cookie: built.cookieFor('alice'), 'Sec-WebSocket-Protocol': 'echo.v1' }
  const { client, refusal } = await rawConnect(port, { headers: creds })
  if (client === undefined) throw new Error(`handshake refused: ${JSON.stringify(refusal)}`)
  tt.teardown(() => client.destroy())
  return { ...built, port, client, creds }
}

/** The connection is gone from the registry and its guard was closed. */
async function freed (tt: Test, s: Setup): Promise<void> {
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'registry back to 0')
  tt.equal(s.probe.closedGuards, s.probe.opened, 'every guard was closed')
  tt.equal(s.probe.brokenText, 0, 'no invalid text reached a guard')
}

/** A valid round trip still works after an attack (fresh connection, same server). */
async function stillServes (tt: Test, s: Setup): Promise<void> {
  const { client } = await rawConnect(s.port, { headers: s.creds })
  tt.ok(client, 'a fresh client completes the handshake')
  client!.send(frame({ opcode: Op.TEXT, payload: 'still here' }))
  const echo = await client!.next(Op.TEXT)
  tt.equal(echo.payload.toString(), 'still here', 'and is served')
  client!.destroy()
}

interface Case {
  name: string
  bytes: () => Buffer[]
  code: number | number[]
  /** Messages the guard may legitimately see before the broken one. */
  seenBefore?: number
}

const protocolErrors: Case[] = [
  { name: 'an unmasked client text frame (§5.1)', bytes: () => [frame({ opcode: Op.TEXT, payload: 'hi', mask: false })], code: 1002 },
  { name: 'an unmasked client ping (§5.1)', bytes: () => [frame({ opcode: Op.PING, payload: 'p', mask: false })], code: 1002 },
  { name: 'RSV1 without a negotiated extension (§5.2)', bytes: () => [frame({ opcode: Op.TEXT, payload: 'x', rsv1: true })], code: 1002 },
  { name: 'RSV2 set (§5.2)', bytes: () => [frame({ opcode: Op.TEXT, payload: 'x', rsv2: true })], code: 1002 },
  { name: 'RSV3 set (§5.2)', bytes: () => [frame({ opcode: Op.BINARY, payload: 'x', rsv3: true })], code: 1002 },
  ...[0x3, 0x4, 0x5, 0x6, 0x7].map((op): Case => ({ name: `reserved data opcode 0x${op.toString(16)} (§5.2)`, bytes: () => [frame({ opcode: op, payload: 'x' })], code: 1002 })),
  ...[0xb, 0xc, 0xd, 0xe, 0xf].map((op): Case => ({ name: `reserved control opcode 0x${op.toString(16)} (§5.2)`, bytes: () => [frame({ opcode: op })], code: 1002 })),
  { name: 'a ping with a 126-byte payload (§5.5: control frames ≤ 125)', bytes: () => [frame({ opcode: Op.PING, payload: Buffer.alloc(126, 0x61) })], code: 1002 },
  { name: 'a close with a 126-byte payload (§5.5)', bytes: () => [frame({ opcode: Op.CLOSE, payload: closePayload(1000, 'r'.repeat(124)) })], code: 1002 },
  { name: 'a fragmented ping (§5.5: control frames must not be fragmented)', bytes: () => [frame({ opcode: Op.PING, payload: 'a', fin: false })], code: 1002 },
  { name: 'a fragmented close (§5.5)', bytes: () => [frame({ opcode: Op.CLOSE, payload: closePayload(1000), fin: false })], code: 1002 },
  { name: 'a continuation frame with no message started (§5.4)', bytes: () => [frame({ opcode: Op.CONT, payload: 'x' })], code: 1002 },
  {
    name: 'a new text frame inside a fragmented message (§5.4)',
    bytes: () => [frame({ opcode: Op.TEXT, payload: 'part', fin: false }), frame({ opcode: Op.TEXT, payload: 'other' })],
    code: 1002
  },
  {
    name: 'a binary frame inside a fragmented text message (§5.4)',
    bytes: () => [frame({ opcode: Op.TEXT, payload: 'part', fin: false }), frame({ opcode: Op.BINARY, payload: 'x' })],
    code: 1002
  },
  { name: 'a close frame with a 1-byte payload (§5.5.1)', bytes: () => [frame({ opcode: Op.CLOSE, payload: Buffer.from([0x03]) })], code: 1002 },
  ...[0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535].map((c): Case => ({
    name: `close code ${c}, which an endpoint must not send (§7.4.2)`,
    bytes: () => [frame({ opcode: Op.CLOSE, payload: closePayload(c) })],
    code: 1002
  })),
  { name: 'invalid UTF-8 in a text message (§8.1)', bytes: () => [frame({ opcode: Op.TEXT, payload: Buffer.from([0x68, 0xc3, 0x28]) })], code: 1007 },
  { name: 'an overlong UTF-8 encoding (§8.1)', bytes: () => [frame({ opcode: Op.TEXT, payload: Buffer.from([0xc0, 0xaf]) })], code: 1007 },
  { name: 'a UTF-16 surrogate encoded in UTF-8 (§8.1)', bytes: () => [frame({ opcode: Op.TEXT, payload: Buffer.from([0xed, 0xa0, 0x80]) })], code: 1007 },
  { name: 'a code point above U+10FFFF (§8.1)', bytes: () => [frame({ opcode: Op.TEXT, payload: Buffer.from([0xf4, 0x90, 0x80, 0x80]) })], code: 1007 },
  {
    name: 'invalid UTF-8 split across fragments (§8.1)',
    bytes: () => [
      frame({ opcode: Op.TEXT, payload: Buffer.from('ok '), fin: false }),
      frame({ opcode: Op.CONT, payload: Buffer.from([0xe2, 0x82]), fin: false }),
      frame({ opcode: Op.CONT, payload: Buffer.from([0x28]) })
    ],
    code: 1007
  },
  {
    name: 'a text message that ends inside a multi-byte sequence (§8.1)',
    bytes: () => [frame({ opcode: Op.TEXT, payload: Buffer.from([0x61, 0xe2, 0x82]), fin: false }), frame({ opcode: Op.CONT, payload: Buffer.alloc(0) })],
    code: 1007
  },
  { name: 'invalid UTF-8 in a close reason (§5.5.1, §8.1)', bytes: () => [frame({ opcode: Op.CLOSE, payload: closePayload(1000, Buffer.from([0xff, 0xfe])) })], code: 1007 }
]

for (const c of protocolErrors) {
  t.test(`${c.name} is closed with ${String(c.code)} and never reaches a guard`, async (tt) => {
    const s = await open(tt)
    s.client.send(...c.bytes())
    const { code, reason, tcpClosed } = await s.client.closeFrame()
    const codes = Array.isArray(c.code) ? c.code : [c.code]
    tt.ok(codes.includes(code!), `close code ${String(code)} is ${codes.join(' or ')}`)
    tt.equal(reason, '', 'the close reason echoes nothing')
    tt.ok(tcpClosed, 'the server closed the TCP connection')
    tt.equal(s.probe.seen.length, c.seenBefore ?? 0, 'the guard saw no broken message')
    await freed(tt, s)
    await stillServes(tt, s)
  })
}

t.test('a ping between the fragments of a message is answered and the message is whole (§5.4, §5.5.2)', async (tt) => {
  const s = await open(tt)
  s.client.send(
    frame({ opcode: Op.TEXT, payload: 'hel', fin: false }),
    frame({ opcode: Op.PING, payload: 'are you there' }),
    frame({ opcode: Op.CONT, payload: 'lo', fin: false }),
    frame({ opcode: Op.PONG, payload: 'unsolicited' }),
    frame({ opcode: Op.CONT, payload: ' world' })
  )
  const pong = await s.client.next(Op.PONG)
  tt.equal(pong.payload.toString(), 'are you there', 'the pong carries the ping payload')
  const echo = await s.client.next(Op.TEXT)
  tt.equal(echo.payload.toString(), 'hello world')
  tt.same(s.probe.seen.map(m => m.data.toString()), ['hello world'], 'the guard saw one whole message')
})

t.test('a multi-byte character split across fragments is valid and delivered whole (§5.6)', async (tt) => {
  const s = await open(tt)
  const euro = Buffer.from('€ and ✓ and 😀') // 3-, 3- and 4-byte sequences
  // 1-byte fragments split every sequence at every position
  s.client.send(...fragments(Op.TEXT, euro, [1]))
  const echo = await s.client.next(Op.TEXT)
  tt.equal(echo.payload.toString(), '€ and ✓ and 😀')
  tt.equal(s.probe.seen.length, 1)
  tt.equal(s.probe.brokenText, 0)
})

t.test('valid close codes are echoed and the connection is freed (§5.5.1, §7.4)', async (tt) => {
  for (const code of [1000, 1001, 1003, 1007, 1008, 1011, 3000, 4999]) {
    const s = await open(tt)
    s.client.send(frame({ opcode: Op.CLOSE, payload: closePayload(code, 'bye') }))
    const got = await s.client.closeFrame()
    tt.equal(got.code, code, `close ${code} is echoed`)
    await freed(tt, s)
    await s.app.close()
  }
})

t.test('an empty close frame is answered with an empty close (1005 on the wire means no code)', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.CLOSE }))
  const got = await s.client.closeFrame()
  tt.equal(got.code, 1005)
  await freed(tt, s)
})

t.test('a message over the configured maxPayload is closed with 1009 before the guard sees it', async (tt) => {
  const s = await open(tt, { websocket: { maxPayload: 1024 } })
  s.client.send(frame({ opcode: Op.BINARY, payload: Buffer.alloc(1024, 1) }))
  await s.client.next(Op.BINARY)
  s.client.send(frame({ opcode: Op.BINARY, payload: Buffer.alloc(1025, 1) }))
  const got = await s.client.closeFrame()
  tt.equal(got.code, 1009)
  tt.equal(s.probe.seen.length, 1, 'only the message at the limit reached the guard')
  await freed(tt, s)
})

t.test('fragments that add up to more than maxPayload are closed with 1009', async (tt) => {
  const s = await open(tt, { websocket: { maxPayload: 1024 } })
  s.client.send(...fragments(Op.TEXT, 'x'.repeat(1100), [100]))
  const got = await s.client.closeFrame()
  tt.equal(got.code, 1009)
  tt.equal(s.probe.seen.length, 0)
  await freed(tt, s)
})

t.test('the core defaults maxPayload to 1 MiB: a header declaring 1 MiB + 1 is closed with 1009 before any payload', async (tt) => {
  const s = await open(tt)
  // only the header is sent: the server must decide from the declared length, not buffer first
  const head = frame({ opcode: Op.BINARY, declaredLength: BigInt(1024 * 1024 + 1), payload: Buffer.alloc(0) })
  s.client.send(head)
  const got = await s.client.closeFrame()
  tt.equal(got.code, 1009)
  tt.equal(s.probe.seen.length, 0)
  await freed(tt, s)
})

t.test('a message of exactly 1 MiB passes the default limit', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.BINARY, payload: Buffer.alloc(1024 * 1024, 7) }))
  const echo = await s.client.next(Op.BINARY, 10000)
  tt.equal(echo.payload.length, 1024 * 1024)
})

t.test('a 64-bit length with the most significant bit set is refused (§5.2: the MSB must be 0)', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.BINARY, declaredLength: 0x8000000000000000n, lengthBits: 64 }))
  const got = await s.client.closeFrame()
  // ws answers 1009 (length beyond 2^53 - 1) where a strict reading asks 1002; either stops it
  tt.ok(got.code === 1009 || got.code === 1002, `closed with ${String(got.code)}`)
  tt.equal(s.probe.seen.length, 0)
  await freed(tt, s)
})

t.test('a 64-bit length just under 2^53 is refused by the 1 MiB limit, not buffered', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.BINARY, declaredLength: 2n ** 53n - 1n, lengthBits: 64 }))
  const got = await s.client.closeFrame()
  tt.equal(got.code, 1009)
  await freed(tt, s)
})

t.test('endless empty fragments are cut off (ws maxFragments: 16384) with 1008', async (tt) => {
  const s = await open(tt)
  const parts: Buffer[] = [frame({ opcode: Op.TEXT, payload: 'a', fin: false })]
  const empty = frame({ opcode: Op.CONT, fin: false, mask: Buffer.alloc(4) })
  for (let i = 0; i < 20000; i++) parts.push(empty)
  s.client.send(...parts)
  const got = await s.client.closeFrame(10000)
  tt.equal(got.code, 1008)
  tt.equal(s.probe.seen.length, 0)
  await freed(tt, s)
  await stillServes(tt, s)
})

t.test('endless 1-byte fragments stop at maxPayload or maxFragments, whichever comes first', async (tt) => {
  const s = await open(tt, { websocket: { maxPayload: 8 * 1024 } })
  const parts: Buffer[] = [frame({ opcode: Op.BINARY, payload: 'a', fin: false })]
  for (let i = 0; i < 9000; i++) parts.push(frame({ opcode: Op.CONT, payload: 'b', fin: false }))
  s.client.send(...parts)
  const got = await s.client.closeFrame(10000)
  tt.equal(got.code, 1009)
  tt.equal(s.probe.seen.length, 0)
  await freed(tt, s)
})

t.test('frames with a zero mask key and non-minimal length encodings are accepted', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.TEXT, payload: 'zero', mask: Buffer.alloc(4) }))
  s.client.send(frame({ opcode: Op.TEXT, payload: 'sixteen', lengthBits: 16 }))
  s.client.send(frame({ opcode: Op.TEXT, payload: 'sixty-four', lengthBits: 64 }))
  const got = [await s.client.next(Op.TEXT), await s.client.next(Op.TEXT), await s.client.next(Op.TEXT)]
  tt.same(got.map(f => f.payload.toString()), ['zero', 'sixteen', 'sixty-four'])
})

t.test('server frames are unmasked and well formed (§5.1)', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.BINARY, payload: Buffer.alloc(70000, 3) }))
  const echo = await s.client.next(Op.BINARY)
  tt.equal(echo.masked, false)
  tt.equal(echo.rsv, 0)
  tt.equal(echo.payload.length, 70000)
  tt.equal(s.client.protocolError, undefined)
})

t.test('a frame trickled one byte per write is reassembled', async (tt) => {
  const s = await open(tt)
  const bytes = frame({ opcode: Op.TEXT, payload: 'slow but valid' })
  for (const b of bytes) {
    s.client.send(Buffer.from([b]))
    await new Promise(resolve => setImmediate(resolve))
  }
  const echo = await s.client.next(Op.TEXT)
  tt.equal(echo.payload.toString(), 'slow but valid')
})

t.test('data after a close frame is ignored (§5.5.1)', async (tt) => {
  const s = await open(tt)
  s.client.send(frame({ opcode: Op.CLOSE, payload: closePayload(1000) }), frame({ opcode: Op.TEXT, payload: 'too late' }))
  const got = await s.client.closeFrame()
  tt.equal(got.code, 1000)
  tt.equal(s.probe.seen.length, 0, 'the late message never reached the guard')
  tt.equal(s.client.dataFrames().length, 0, 'nor the handler')
  await freed(tt, s)
})

async function openJson (tt: Test): Promise<Setup & { handled: string[] }> {
  const handled: string[] = []
  const built = await protectedApp({ handler: (socket) => socket.on('message', (d: Buffer) => { handled.push(d.toString()); socket.send(d.toString()) }) })
  tt.teardown(() => built.app.close())
  const { port } = await listen(built.app)
  const creds = { Cookie: built.cookieFor('bob'), 'Sec-WebSocket-Protocol': 'json.v1' }
  const { client, headers } = await rawConnect(port, { headers: creds })
  if (client === undefined) throw new Error('handshake refused')
  tt.equal(headers?.['sec-websocket-protocol'], 'json.v1')
  tt.teardown(() => client.destroy())
  return { ...built, port, client, creds, handled }
}

t.test('json.v1: a JSON message fragmented around a ping is inspected once, whole', async (tt) => {
  const s = await openJson(tt)
  s.client.send(
    frame({ opcode: Op.TEXT, payload: '{"type":', fin: false }),
    frame({ opcode: Op.PING, payload: 'x' }),
    frame({ opcode: Op.CONT, payload: '"hi"}' })
  )
  tt.equal((await s.client.next(Op.TEXT)).payload.toString(), '{"type":"hi"}')
  tt.same(s.handled, ['{"type":"hi"}'])
})

t.test('json.v1: invalid UTF-8 inside a JSON string is 1007 from the framing layer, before the inspector', async (tt) => {
  const s = await openJson(tt)
  s.client.send(frame({ opcode: Op.TEXT, payload: Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc3]), Buffer.from('"}')]) }))
  tt.equal((await s.client.closeFrame()).code, 1007)
  tt.equal(s.probe.seen.length, 0)
  tt.same(s.handled, [])
  await freed(tt, s)
})

t.test('json.v1: a prototype-poisoning message is refused with 1008 and reaches no later guard or handler', async (tt) => {
  const s = await openJson(tt)
  s.client.send(frame({ opcode: Op.TEXT, payload: '{"__proto__":{"admin":true}}' }))
  const { code, reason } = await s.client.closeFrame()
  tt.equal(code, 1008)
  tt.notOk(reason.includes('admin'), 'the reason does not echo the message')
  tt.equal(s.probe.seen.length, 0, 'the probe (a later guard) never saw it')
  tt.same(s.handled, [])
  await freed(tt, s)
})

t.test('json.v1: a binary frame is refused with 1003 (unsupported data, §7.4.1)', async (tt) => {
  const s = await openJson(tt)
  s.client.send(frame({ opcode: Op.BINARY, payload: '{}' }))
  tt.equal((await s.client.closeFrame()).code, 1003)
  tt.same(s.handled, [])
  await freed(tt, s)
})

t.test('json.v1: a message over the protocol limit (64 KiB) is refused with 1009 even below maxPayload', async (tt) => {
  const s = await openJson(tt)
  s.client.send(frame({ opcode: Op.TEXT, payload: JSON.stringify({ a: 'x'.repeat(70_000) }) }))
  tt.equal((await s.client.closeFrame()).code, 1009)
  tt.same(s.handled, [])
  await freed(tt, s)
})
