import t from 'tap'
import fc from 'fast-check'
import { checkBase64, isJsonContentType, isSid, isValidCloseCode, parseAck, parseCloseBody, parseOpenBody, parseSendBody } from '../src/index.js'
import { base64Length, isWellFormed, newSid } from '../src/wire.js'

t.test('session ids are 32 base64url characters and unique', async (t) => {
  const seen = new Set<string>()
  const malformed: string[] = []
  for (let i = 0; i < 1000; i++) {
    const s = newSid()
    if (!isSid(s)) malformed.push(s)
    seen.add(s)
  }
  t.same(malformed, [], 'every id has the documented shape')
  t.equal(seen.size, 1000)
  for (const bad of ['', 'a'.repeat(31), 'a'.repeat(33), 'a'.repeat(31) + '+', 'a'.repeat(31) + '=', 'a'.repeat(31) + 'é', 42, undefined, ['a'.repeat(32)]]) {
    t.notOk(isSid(bad), `refuses ${JSON.stringify(bad)}`)
  }
})

t.test('the JSON content type is accepted alone or with charset=utf-8, nothing else', async (t) => {
  for (const ok of ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'application/json;charset=UTF-8', 'application/json; charset="utf-8"']) {
    t.ok(isJsonContentType(ok), ok)
  }
  for (const bad of [undefined, '', 'text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x',
    'application/json-patch+json', 'application/jsonp', 'application/json; charset=latin1', 'application/json; foo=bar', 'text/json', 'application/json, text/plain', 'application/json;' + ' '.repeat(100)]) {
    t.notOk(isJsonContentType(bad), String(bad))
  }
})

t.test('acks are 1 to 15 ASCII digits in one header line', async (t) => {
  t.equal(parseAck(undefined), 0)
  t.equal(parseAck('0'), 0)
  t.equal(parseAck('123'), 123)
  t.equal(parseAck('999999999999999'), 999999999999999)
  for (const bad of ['', '-1', '+1', '1.5', '1e3', ' 1', '0x10', '1234567890123456', '١']) {
    t.throws(() => parseAck(bad), SyntaxError, JSON.stringify(bad))
  }
  t.throws(() => parseAck(['1', '2']), SyntaxError)
})

t.test('strict base64: canonical, padded, standard alphabet', async (t) => {
  for (const ok of ['', 'AA==', 'AAE=', 'AAEC', 'AAECAw==', '+/+/']) t.doesNotThrow(() => checkBase64(ok, 'x'), ok)
  for (const bad of ['A', 'AA', 'AA=', 'A===', 'AB==', 'AAF=', 'AA-_', 'AA==AA==', '=AAA', 'AA\n=']) {
    t.throws(() => checkBase64(bad, 'x'), SyntaxError, bad)
  }
})

t.test('base64 round-trips every byte string, and only its canonical spelling is accepted (property)', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
    const s = Buffer.from(bytes).toString('base64')
    checkBase64(s, 'x')
    return base64Length(s) === bytes.length && Buffer.from(s, 'base64').equals(Buffer.from(bytes))
  }))
  fc.assert(fc.property(fc.string({ maxLength: 16 }), (s) => {
    let ok = true
    try { checkBase64(s, 'x') } catch { ok = false }
    // accepted ⇒ it is exactly what Node would encode for the bytes it decodes to
    return !ok || Buffer.from(Buffer.from(s, 'base64')).toString('base64') === s
  }))
  t.pass('properties hold')
})

t.test('open bodies: an optional list of at most 256 strings', async (t) => {
  t.equal(parseOpenBody({}), undefined)
  t.equal(parseOpenBody({ protocols: [] }), undefined)
  t.equal(parseOpenBody({ protocols: ['chat.v1', 'chat.v0'] }), 'chat.v1, chat.v0')
  t.equal(parseOpenBody({ protocols: ['a b', ''] }), 'a b, ', 'values are judged by the subprotocol stage, as a header would be')
  for (const bad of [null, [], 'x', { protocols: 'chat' }, { protocols: [1] }, { protocols: [null] },
    { protocols: ['x'.repeat(8193)] }, { protocols: Array(257).fill('a') }, { protocols: [], extra: 1 }]) {
    t.throws(() => parseOpenBody(bad), SyntaxError, JSON.stringify(bad))
  }
})

t.test('send bodies: seq ≥ 1, 1..max messages of exactly one text or binary key', async (t) => {
  t.same(parseSendBody({ seq: 3, messages: [{ text: 'a' }, { binary: 'AA==' }] }, 64), [
    { seq: 3, type: 'text', data: 'a' }, { seq: 4, type: 'binary', data: 'AA==' }
  ])
  for (const bad of [null, 'x', { seq: 1 }, { messages: [{ text: 'a' }] }, { seq: 0, messages: [{ text: 'a' }] }, { seq: 1.5, messages: [{ text: 'a' }] },
    { seq: '1', messages: [{ text: 'a' }] }, { seq: 1, messages: [] }, { seq: 1, messages: [{}] }, { seq: 1, messages: [{ text: 'a', binary: 'AA==' }] },
    { seq: 1, messages: [{ text: 1 }] }, { seq: 1, messages: [{ binary: 'A' }] }, { seq: 1, messages: [{ json: {} }] }, { seq: 1, messages: [{ text: 'a' }], callback: 'x' },
    { seq: Number.MAX_SAFE_INTEGER, messages: [{ text: 'a' }] }, { seq: 1, messages: ['a'] }]) {
    t.throws(() => parseSendBody(bad, 64), SyntaxError, JSON.stringify(bad))
  }
  t.throws(() => parseSendBody({ seq: 1, messages: [{ text: 'a' }, { text: 'b' }, { text: 'c' }] }, 2), /more than 2/)
})

t.test('close bodies: a code a peer may send, a reason of at most 123 bytes', async (t) => {
  t.same(parseCloseBody({}), { code: 1005, reason: '' })
  t.same(parseCloseBody({ code: 1000 }), { code: 1000, reason: '' })
  t.same(parseCloseBody({ code: 4000, reason: 'x'.repeat(123) }), { code: 4000, reason: 'x'.repeat(123) })
  for (const bad of [{ code: 1005 }, { code: 1006 }, { code: 1004 }, { code: 1015 }, { code: 999 }, { code: 2999 }, { code: 5000 }, { code: 1000.5 }, { code: '1000' },
    { reason: 'x' }, { code: 1000, reason: 'x'.repeat(124) }, { code: 1000, reason: 'é'.repeat(62) }, { code: 1000, reason: 1 }, { code: 1000, reason: '\ud800' }, { code: 1000, x: 1 }]) {
    t.throws(() => parseCloseBody(bad), SyntaxError, JSON.stringify(bad))
  }
})

t.test('valid close codes are those ws accepts', async (t) => {
  const valid = []
  for (let c = 0; c < 6000; c++) if (isValidCloseCode(c)) valid.push(c)
  t.same(valid.filter(c => c < 3000), [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014])
  t.equal(valid.filter(c => c >= 3000).length, 2000)
})

t.test('well-formed UTF-16 agrees with a UTF-8 round trip (property)', async (t) => {
  t.notOk(isWellFormed('\ud800'))
  t.notOk(isWellFormed('a\udc00'))
  t.notOk(isWellFormed('\ud800\ud800'))
  t.ok(isWellFormed('\ud83d\ude00'))
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 20 }), (s) => isWellFormed(s) === (Buffer.from(s).toString() === s)))
  t.pass('property holds')
})
