/**
 * Property tests for @portcullis/fallback: the wire parsers (PROTOCOL.md §2–8) throw only
 * `SyntaxError`, never quote their input and accept exactly the canonical forms; and the
 * delivery logic of the store (sequence numbers, acks, redelivery, inbound dedupe, gaps) loses,
 * duplicates and reorders nothing whatever responses and requests are lost on the way.
 * Fixed seed; `FC_SEED` / `FC_RUNS` for a longer hunt.
 */
import t from 'tap'
import fc from 'fast-check'
import {
  parseAck, parseSendBody, parseCloseBody, parseOpenBody, isJsonContentType, checkBase64, isSid,
  isValidCloseCode, MemoryStore, type InboundFrame, type OutboundFrame
} from '../packages/fallback/src/index.js'
import { params, hostileString, growth, CANARY } from './load/properties.js'

function onlySyntaxErrors (fn: () => unknown): { ok: true, value: unknown } | { ok: false, message: string } {
  try {
    return { ok: true, value: fn() }
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err
    return { ok: false, message: err.message }
  }
}

const jsonish = fc.oneof(
  fc.jsonValue(),
  fc.anything(),
  fc.record({ seq: fc.oneof(fc.integer(), fc.double(), fc.string()), messages: fc.array(fc.oneof(fc.record({ text: fc.string() }), fc.record({ binary: hostileString(20) }), fc.anything()), { maxLength: 5 }) }, { requiredKeys: [] }),
  fc.record({ code: fc.oneof(fc.integer({ min: 0, max: 6000 }), fc.double(), fc.string()), reason: fc.oneof(fc.string(), hostileString(200), fc.anything()) }, { requiredKeys: [] }),
  fc.record({ protocols: fc.oneof(fc.array(hostileString(20), { maxLength: 40 }), fc.anything()) }, { requiredKeys: [] }),
  fc.constant({ text: CANARY, [CANARY]: CANARY })
)

t.test('the body parsers throw only SyntaxError and never quote the body', async (t) => {
  fc.assert(fc.property(jsonish, (body) => {
    for (const parse of [() => parseSendBody(body, 64), () => parseCloseBody(body), () => parseOpenBody(body)]) {
      const r = onlySyntaxErrors(parse)
      if (!r.ok && r.message.includes(CANARY)) return false
    }
    return true
  }), params())
  t.pass('held')
})

t.test('an accepted send body numbers its messages contiguously from seq, each text or canonical base64', async (t) => {
  const msg = fc.oneof(fc.string().map(text => ({ text })), fc.uint8Array({ maxLength: 40 }).map(b => ({ binary: Buffer.from(b).toString('base64') })))
  fc.assert(fc.property(fc.integer({ min: 1, max: 2 ** 40 }), fc.array(msg, { minLength: 1, maxLength: 64 }), (seq, messages) => {
    const frames = parseSendBody({ seq, messages }, 64)
    return frames.length === messages.length && frames.every((f, i) => {
      const m = messages[i] as { text?: string, binary?: string }
      return f.seq === seq + i && (m.text !== undefined ? f.type === 'text' && f.data === m.text : f.type === 'binary' && f.data === m.binary)
    })
  }), params())
  t.throws(() => parseSendBody({ seq: 1, messages: new Array(65).fill({ text: 'x' }) }, 64), SyntaxError, 'more than maxMessages is refused')
})

t.test('an accepted close body has a code a peer may send and a reason of at most 123 UTF-8 bytes', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 6000 }), fc.string({ unit: 'grapheme', maxLength: 130 }), (code, reason) => {
    const r = onlySyntaxErrors(() => parseCloseBody({ code, reason }))
    if (!r.ok) return !isValidCloseCode(code) || Buffer.byteLength(reason) > 123
    const c = r.value as { code: number, reason: string }
    return isValidCloseCode(c.code) && Buffer.byteLength(c.reason) <= 123 && c.reason === reason
  }), params())
  t.pass('held')
})

t.test('checkBase64 accepts exactly the canonical padded encoding of some bytes', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
    checkBase64(Buffer.from(bytes).toString('base64'), 'x')
    return true
  }), params())
  fc.assert(fc.property(fc.oneof(hostileString(40), fc.string({ unit: fc.constantFrom(...'AQgw+/=-_aZ09'.split('')), maxLength: 24 })), (s) => {
    const r = onlySyntaxErrors(() => checkBase64(s, 'x'))
    const canonical = Buffer.from(s, 'base64').toString('base64') === s
    if (!r.ok && r.message.includes(CANARY)) return false
    return r.ok === canonical
  }), params())
  t.pass('held')
})

t.test('parseAck accepts 1–15 digits on one line and nothing else', async (t) => {
  fc.assert(fc.property(fc.oneof(hostileString(30), fc.bigInt({ min: 0n, max: 10n ** 16n }).map(String), fc.array(fc.string(), { maxLength: 3 }), fc.constant(undefined)), (h) => {
    const r = onlySyntaxErrors(() => parseAck(h as string | string[] | undefined))
    if (h === undefined) return r.ok && r.value === 0
    const valid = typeof h === 'string' && h.length >= 1 && h.length <= 15 && /^[0-9]+$/.test(h)
    if (!r.ok) return !valid && !r.message.includes(CANARY)
    return valid && r.value === Number(h)
  }), params())
  t.pass('held')
})

/** The accepted Content-Type shape, stated on its own (PROTOCOL.md §2.3): the oracle of the property below. */
function isJsonTypeOracle (h: string): boolean {
  if (h.length > 64) return false
  const semi = h.indexOf(';')
  const type = semi === -1 ? h : h.slice(0, semi)
  if (type.trim().toLowerCase() !== 'application/json') return false
  if (semi === -1) return true
  return ['charset=utf-8', 'charset="utf-8"'].includes(h.slice(semi + 1).trim().toLowerCase())
}

/** Any mix of upper and lower case of `s`. */
function anyCase (s: string): fc.Arbitrary<string> {
  return fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length })
    .map(up => [...s].map((c, i) => up[i] ? c.toUpperCase() : c.toLowerCase()).join(''))
}

const ows = fc.constantFrom('', ' ', '  ', '\t', ' \t ')
/** Every spelling of a JSON content type the server must accept. */
const jsonTypes = fc.tuple(ows, anyCase('application/json'), ows,
  fc.option(fc.tuple(ows, fc.constantFrom('charset=utf-8', 'charset="utf-8"').chain(anyCase), ows), { nil: undefined }))
  .map(([a, type, b, param]) => param === undefined ? `${a}${type}${b}` : `${a}${type}${b};${param.join('')}`)
/** Near misses: one character changed, added or dropped in an accepted spelling, or a foreign type. */
const nearMisses = fc.oneof(
  fc.tuple(jsonTypes, fc.nat(), fc.constantFrom('x', '+', ';', ',', '/', '=', '"', 'é', '\u0000'), fc.constantFrom('replace', 'insert', 'drop'))
    .map(([s, at, c, how]) => {
      const i = at % (s.length + 1)
      return how === 'insert' ? s.slice(0, i) + c + s.slice(i) : how === 'drop' ? s.slice(0, i) + s.slice(i + 1) : s.slice(0, i) + c + s.slice(i + 1)
    }),
  fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json;charset=latin1',
    'application/json+x', 'application/jsonp', 'application/json; charset=utf-8; q=1', 'application/json;', 'json', ''),
  hostileString(80)
)

t.test('isJsonContentType accepts every spelling of a JSON type and refuses everything else', async (t) => {
  let accepted = 0
  let refused = 0
  fc.assert(fc.property(jsonTypes, (h) => {
    const yes = isJsonContentType(h)
    if (yes) accepted++
    return yes === isJsonTypeOracle(h) && yes === (h.length <= 64)
  }), params())
  fc.assert(fc.property(nearMisses, (h) => {
    const yes = isJsonContentType(h)
    if (!yes) refused++
    return yes === isJsonTypeOracle(h)
  }), params())
  t.equal(isJsonContentType(undefined), false, 'no header: refused')
  // both directions were really exercised, not vacuously true
  t.ok(accepted > 0, `${accepted} JSON spellings accepted`)
  t.ok(refused > 0, `${refused} near misses refused`)
  for (const h of ['application/json', ' Application/JSON ; Charset="UTF-8" ']) t.ok(isJsonContentType(h), h)
  for (const h of ['text/plain', 'application/json;charset=latin1', 'application/json+x', 'application/json; charset=utf-8; x=y']) t.notOk(isJsonContentType(h), h)
})

t.test('isSid never throws and accepts only its exact shape', async (t) => {
  let valid = 0
  fc.assert(fc.property(fc.oneof(hostileString(40), fc.uint8Array({ minLength: 24, maxLength: 24 }).map(b => Buffer.from(b).toString('base64url'))), (s) => {
    const yes = isSid(s)
    if (yes) valid++
    return yes === (s.length === 32 && Buffer.from(s, 'base64url').toString('base64url') === s)
  }), params())
  t.ok(valid > 0, `${valid} well-formed ids accepted`)
  t.pass('held')
})

t.test('the wire parsers run in linear time (and the header ones in constant time beyond their caps)', async (t) => {
  const b64 = growth(s => checkBase64(s, 'x'), n => 'A'.repeat(n - (n % 4)), 40_000)
  t.ok(b64.ratio < 20, `checkBase64: 10× input costs ${b64.ratio.toFixed(1)}×`)
  const ack = growth(parseAck, n => '1'.repeat(n), 10_000, 2)
  t.ok(ack.ratio < 5, `parseAck beyond 15 digits: 10× input costs ${ack.ratio.toFixed(1)}×`)
  const ct = growth(isJsonContentType, n => 'application/json;' + ' '.repeat(n), 10_000, 2)
  t.ok(ct.ratio < 5, `isJsonContentType beyond 64 chars: 10× input costs ${ct.ratio.toFixed(1)}×`)
  const text = growth(s => parseSendBody({ seq: 1, messages: [{ text: s }] }, 64), n => '\ud83d\ude00'.repeat(n / 2), 40_000)
  t.ok(text.ratio < 20, `parseSendBody with a long text: 10× input costs ${text.ratio.toFixed(1)}×`)
  const reason = growth(s => parseCloseBody({ code: 1000, reason: s }), n => 'é'.repeat(n), 40_000)
  t.ok(reason.ratio < 20, `parseCloseBody with a long reason: 10× input costs ${reason.ratio.toFixed(1)}×`)
})

// ---- delivery logic: a client and an owner talking through the store, with losses ----

type Step =
  | { kind: 'push', n: number }
  | { kind: 'poll', loseAnswer: boolean, max: number }
  | { kind: 'send', n: number, loseRequest: boolean, loseAnswer: boolean }

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('push' as const), n: fc.integer({ min: 1, max: 5 }) }),
  fc.record({ kind: fc.constant('poll' as const), loseAnswer: fc.boolean(), max: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('send' as const), n: fc.integer({ min: 1, max: 4 }), loseRequest: fc.boolean(), loseAnswer: fc.boolean() })
)

async function simulate (steps: Step[]): Promise<{ outbound: number[], pushed: number, inbound: number[], sent: number }> {
  const owner: InboundFrame[] = []
  const store = new MemoryStore()
  await store.start({ inbound: (_sid, frames) => owner.push(...frames), clientClose: () => {}, revocation: () => {} })
  const sid = 'A'.repeat(32)
  await store.create({ sid, node: 'local', route: '/ws', protocol: '', identityId: 'u', sessionId: 's', origin: undefined, ip: '127.0.0.1', createdAt: Date.now(), ttlMs: 60_000 }, { perIdentity: 0, perIp: 0, total: 0 })

  let lastOut = 0 // owner side: last seq pushed
  const delivered: number[] = [] // client side: what the app got, after the client's own dedupe
  let highest = 0 // client: highest seq delivered = the ack it sends
  let nextIn = 1 // client: next seq to assign
  const unacked: InboundFrame[] = [] // client: sent but not acknowledged
  const sendRetry = async (loseRequest: boolean, loseAnswer: boolean): Promise<void> => {
    if (unacked.length === 0 || loseRequest) return
    const r = await store.pushInbound(sid, unacked)
    if (loseAnswer) return
    if (r.status === 'ok' || r.status === 'gap') {
      // the answer's ack tells the client what it can forget; a gap means "resend from ack + 1"
      while (unacked.length > 0 && unacked[0].seq <= r.inAck) unacked.shift()
    }
  }

  for (const s of steps) {
    if (s.kind === 'push') {
      const frames: OutboundFrame[] = []
      for (let i = 0; i < s.n; i++) frames.push({ seq: ++lastOut, type: 'text', data: `m${lastOut}`, bytes: 4 })
      await store.pushOutbound(sid, frames)
    } else if (s.kind === 'poll') {
      const r = await store.readOutbound(sid, highest, { messages: s.max, bytes: 1 << 20 })
      if (!r.found) throw new Error('session lost')
      // the store answers contiguously from ack + 1
      r.frames.forEach((f, i) => { if (f.seq !== highest + 1 + i) throw new Error(`gap: ${f.seq} after ${highest}`) })
      if (s.loseAnswer) continue
      for (const f of r.frames) {
        if (f.seq <= highest) continue // PROTOCOL.md §6: ignore what was already delivered
        delivered.push(f.seq)
        highest = f.seq
      }
    } else {
      for (let i = 0; i < s.n; i++) unacked.push({ seq: nextIn++, type: 'text', data: `c${nextIn - 1}` })
      await sendRetry(s.loseRequest, s.loseAnswer)
    }
  }
  // drain: the network heals; poll and resend until everything is through
  for (let guard = 0; guard < 10_000 && (highest < lastOut || unacked.length > 0); guard++) {
    const r = await store.readOutbound(sid, highest, { messages: 64, bytes: 1 << 20 })
    if (r.found) for (const f of r.frames) if (f.seq > highest) { delivered.push(f.seq); highest = f.seq }
    await sendRetry(false, false)
  }
  await store.stop()
  return { outbound: delivered, pushed: lastOut, inbound: owner.map(f => f.seq), sent: nextIn - 1 }
}

t.test('store delivery: lost poll answers and lost or retried sends never lose, duplicate or reorder', async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(step, { maxLength: 60 }), async (steps) => {
    const r = await simulate(steps)
    const inOrder = (xs: number[], n: number): boolean => xs.length === n && xs.every((x, i) => x === i + 1)
    return inOrder(r.outbound, r.pushed) && inOrder(r.inbound, r.sent)
  }), params())
  t.pass('exactly once, in order, both directions')
})

t.test('store delivery: a gap is refused and nothing after it is accepted', async (t) => {
  await fc.assert(fc.asyncProperty(fc.integer({ min: 2, max: 50 }), async (gapAt) => {
    const owner: number[] = []
    const store = new MemoryStore()
    await store.start({ inbound: (_s, f) => owner.push(...f.map(x => x.seq)), clientClose: () => {}, revocation: () => {} })
    const sid = 'B'.repeat(32)
    await store.create({ sid, node: 'local', route: '/ws', protocol: '', identityId: undefined, sessionId: undefined, origin: undefined, ip: '::1', createdAt: Date.now(), ttlMs: 60_000 }, { perIdentity: 0, perIp: 0, total: 0 })
    const r = await store.pushInbound(sid, [{ seq: gapAt, type: 'text', data: 'x' }])
    await store.stop()
    return r.status === 'gap' && r.inAck === 0 && owner.length === 0
  }), params())
  t.pass('held')
})
