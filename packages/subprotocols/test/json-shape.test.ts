/**
 * The JSON inspector's fast path (src/json-shape.ts) may only ever say
 * "accepted" where the full path (the screened parse, then Ajv) accepts too, with the same
 * value. These properties hold it to that on generated flat schemas and on messages built to sit
 * on every edge: lengths at the bound, numbers at the bound and in every JSON form, duplicate and
 * unknown keys, escapes, non-ASCII text, whitespace, BOMs, truncations and trailing bytes.
 */
import t from 'tap'
import fc from 'fast-check'
import { Ajv } from 'ajv'
import { compileShape, compileTypedShape } from '../src/json-shape.js'
import { parseJsonSecure } from '../src/json.js'
import { MESSAGE, MESSAGE_SCHEMA } from '../../../bench/lib/fixture.js'
import { growth, params } from '../../../test/load/properties.js'

type Schema = Record<string, unknown>

const NAMES = ['type', 'room', 'seq', 'text', 'a', 'b c', 'x-y', 'ok', 'n', '']
const WORDS = ['msg', 'join', '', 'a"b', 'é', 'long'.repeat(5)]

/** One property's schema, of every kind the fast path compiles. */
const propertySchema: fc.Arbitrary<Schema> = fc.oneof(
  fc.record({ type: fc.constant('string'), minLength: fc.integer({ min: 0, max: 4 }), maxLength: fc.integer({ min: 0, max: 12 }) }, { requiredKeys: ['type'] }),
  fc.record({ type: fc.constant('string'), enum: fc.uniqueArray(fc.constantFrom(...WORDS), { minLength: 1, maxLength: 3 }) }),
  fc.record({ const: fc.constantFrom(...WORDS) }),
  fc.record({ enum: fc.uniqueArray(fc.constantFrom(...WORDS), { minLength: 1, maxLength: 3 }) }),
  fc.record({
    type: fc.constantFrom('integer', 'number'),
    minimum: fc.constantFrom(-1, 0, 0.5, 10),
    maximum: fc.constantFrom(0, 1, 10, 1e16),
    exclusiveMinimum: fc.constantFrom(-5, 0),
    exclusiveMaximum: fc.constantFrom(5, 1e20)
  }, { requiredKeys: ['type'] }),
  fc.constant({ type: 'boolean' }),
  fc.constant({ type: 'null' }),
  fc.constant({ type: 'string', title: 'annotated', description: 'an annotation is ignored' })
)

const flatSchema: fc.Arbitrary<Schema> = fc.uniqueArray(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 5 }).chain(names =>
  fc.record({
    props: fc.tuple(...names.map(() => propertySchema)),
    required: fc.subarray(names),
    additional: fc.constantFrom(undefined, true, false)
  }).map(({ props, required, additional }) => ({
    type: 'object',
    properties: Object.fromEntries(names.map((n, i) => [n, props[i]])),
    ...(required.length > 0 ? { required } : {}),
    ...(additional === undefined ? {} : { additionalProperties: additional })
  })))

/** A JSON value's text, biased to the edges of the kinds above (and to the text forms JSON allows). */
const valueText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...WORDS).map(w => JSON.stringify(w)),
  fc.string({ maxLength: 14 }).map(s => JSON.stringify(s)),
  fc.string({ unit: 'binary', maxLength: 6 }).map(s => JSON.stringify(s)),
  fc.constantFrom('"\\u006dsg"', '"m\\"sg"', '"\\/"', '"tab\there"', '"\u00e9"', '"\ud83d\ude00"'),
  fc.integer({ min: -12, max: 12 }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map(n => JSON.stringify(n)),
  fc.constantFrom('0', '-0', '1.0', '1e1', '1E+1', '10e-1', '5.5', '0.5', '-1', '1e400', '-1e400', '9007199254740993', '123456789012345', '1234567890123456', '1e16', '012', '1.', '.5', '-', '+1', '0x10', 'NaN', 'Infinity'),
  fc.constantFrom('true', 'false', 'null', 'tru', 'nul', 'True', '[]', '{}', '[1]', '{"a":1}', '"')
)

const ws = fc.constantFrom('', ' ', '\n', '\t', '\r\n ', '\u00a0')

/** An object's text: known and unknown keys (some repeated, some escaped), every value form. */
const messageText: fc.Arbitrary<string> = fc.tuple(
  fc.array(fc.tuple(fc.oneof(fc.constantFrom(...NAMES).map(n => JSON.stringify(n)), fc.constantFrom('"__proto__"', '"constructor"', '"\\u0074ype"', '"zz"', '"Type"', 'type', "'a'")), valueText, ws, ws), { maxLength: 6 }),
  ws, ws,
  fc.constantFrom('', '', '', '\ufeff', ',', '}', 'x', ' ', '\u0000'),
  fc.constantFrom('none', 'none', 'none', 'truncate', 'prefix')
).map(([members, before, after, extra, cut]) => {
  let text = `${before}{${members.map(([k, v, a, b]) => `${a}${k}${b}:${a}${v}${b}`).join(',')}}${after}`
  if (extra === '\ufeff') text = extra + text
  else text += extra
  if (cut === 'truncate') text = text.slice(0, Math.max(0, text.length - 2))
  if (cut === 'prefix') text = '[' + text
  return text
})

/** Value texts at the edges of one property's schema: its bounds, just past them, its words. */
function edgeValues (p: Schema): string[] {
  const out = ['true', 'false', 'null', '"x"', '1', '1e400', '-1e400', '1.5', '-0']
  if (typeof p.const === 'string') out.push(JSON.stringify(p.const), JSON.stringify(p.const + 'x'))
  if (Array.isArray(p.enum)) for (const w of p.enum) out.push(JSON.stringify(w))
  for (const k of ['minLength', 'maxLength'] as const) {
    const v = p[k]
    if (typeof v === 'number') for (const d of [-1, 0, 1]) if (v + d >= 0) out.push(JSON.stringify('a'.repeat(v + d)))
  }
  for (const k of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const) {
    const v = p[k]
    if (typeof v === 'number') for (const d of [-1, -0.5, 0, 0.5, 1]) out.push(JSON.stringify(v + d), `${v + d}e0`)
  }
  return out
}

/** Value texts one property's schema accepts (from its words, bounds and kind), as far as they go. */
const validCache = new Map<string, string[]>()
function validValues (p: Schema): string[] {
  const key = JSON.stringify(p)
  let out = validCache.get(key)
  if (out === undefined) validCache.set(key, (out = computeValidValues(p)))
  return out
}

function computeValidValues (p: Schema): string[] {
  const words = typeof p.const === 'string' ? [p.const] : Array.isArray(p.enum) ? p.enum as string[] : undefined
  const validate = new Ajv({ strict: true }).compile(p)
  const candidates = [
    ...(words ?? []).map(w => JSON.stringify(w)),
    ...[0, 1, 2, 3, 4, 8, 12].map(n => JSON.stringify('b'.repeat(n))),
    ...[p.minimum, p.maximum, p.exclusiveMinimum, p.exclusiveMaximum, 0, 1, 2, 3, 4, 0.75, 9].flatMap(v => typeof v === 'number' ? [v, v + 0.25, v - 0.25] : []).map(v => JSON.stringify(v)),
    'true', 'false', 'null'
  ]
  return candidates.filter(text => validate(JSON.parse(text)))
}

/** A message for `schema`: mostly its own properties with edge values, sometimes one more key. */
function schemaMessage (schema: Schema): fc.Arbitrary<string> {
  const props = schema.properties as Record<string, Schema>
  const names = Object.keys(props)
  return fc.tuple(
    fc.tuple(...names.map(n => {
      const valid = validValues(props[n])
      const edge = fc.constantFrom(...edgeValues(props[n]))
      return fc.tuple(fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }), valid.length === 0 ? edge : fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...valid) }, { weight: 1, arbitrary: edge }))
    })),
    fc.option(fc.tuple(fc.constantFrom('"zz"', ...names.map(n => JSON.stringify(n))), valueText), { freq: 4 }),
    ws
  ).map(([values, extra, pad]) => {
    const members = names.flatMap((n, i) => values[i][0] ? [`${JSON.stringify(n)}:${pad}${values[i][1]}`] : [])
    if (extra !== null) members.push(`${extra[0]}:${extra[1]}`)
    return `{${members.join(`,${pad}`)}}`
  })
}

/** The full path's answer: what json() accepts, and the value it hands the handler. */
function fullPath (validate: (v: unknown) => boolean, text: string): { ok: boolean, value?: unknown } {
  let value: unknown
  try {
    value = parseJsonSecure(text)
  } catch {
    return { ok: false }
  }
  return validate(value) ? { ok: true, value } : { ok: false }
}

t.test('the fast path accepts a message only when the full path accepts it, with the same parsed value', async (t) => {
  let accepted = 0
  let checked = 0
  const schemaAndTexts = flatSchema.chain(schema => fc.tuple(fc.constant(schema), fc.array(fc.oneof(messageText, schemaMessage(schema), schemaMessage(schema)), { minLength: 1, maxLength: 8 })))
  fc.assert(fc.property(schemaAndTexts, ([schema, texts]) => {
    const shape = compileShape(schema)
    if (shape === undefined) return false // every generated schema is one it compiles
    const validate = new Ajv({ strict: true }).compile(schema)
    for (const text of texts) {
      checked++
      if (!shape(Buffer.from(text))) continue
      accepted++
      const full = fullPath(validate, text)
      if (!full.ok) return false
      // what parsedMessage() builds later (plain JSON.parse) is what the screened parse built
      t.same(JSON.parse(text), full.value)
    }
    return true
  }), params())
  t.ok(accepted > 0, `the fast path took some messages (${accepted} of ${checked})`)
})

t.test('with schemas by type, the fast path accepts a message only when the full path accepts it', async (t) => {
  const TYPES = ['say', 'join', 'a b', 'caf\u00e9', '']
  // how each type's schema speaks of the type key: pinned, loose, wrong kind, or not at all
  const typeProp = fc.constantFrom<Array<Schema | undefined>>([{ const: 'say' }], [{ type: 'string' }], [{ enum: ['say', 'join'] }], [{ type: 'number' }], [undefined])
  const typed = fc.uniqueArray(fc.constantFrom(...TYPES), { minLength: 1, maxLength: 3 }).chain(types =>
    fc.tuple(...types.map(() => fc.tuple(flatSchema, typeProp, fc.boolean()))).map(parts => {
      const schemas: Record<string, Schema> = {}
      types.forEach((type, i) => {
        const [base, [prop], requireType] = parts[i]
        const properties = { ...(base.properties as Record<string, Schema>) }
        delete properties.type
        if (prop !== undefined) properties.type = prop.const !== undefined ? { const: type } : prop
        const required = ((base.required ?? []) as string[]).filter(r => r !== 'type')
        if (requireType && prop !== undefined) required.push('type')
        schemas[type] = { ...base, properties, ...(required.length > 0 ? { required } : { required: undefined }) }
        if (required.length === 0) delete schemas[type].required
      })
      return schemas
    }))
  /** json()'s full path for schemas: an object whose own string `type` names a schema that accepts it. */
  function fullTyped (validators: Map<string, (v: unknown) => boolean>, text: string): boolean {
    let value: unknown
    try {
      value = parseJsonSecure(text)
    } catch {
      return false
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
    const type = (value as Record<string, unknown>).type
    const validate = typeof type === 'string' && Object.hasOwn(value, 'type') ? validators.get(type) : undefined
    return validate !== undefined && validate(value)
  }
  let accepted = 0
  const schemasAndTexts = typed.chain(schemas => fc.tuple(fc.constant(schemas), fc.array(fc.oneof(
    messageText,
    // messages of each type's schema, most with that type put in front
    ...Object.entries(schemas).map(([type, schema]) => fc.tuple(schemaMessage(schema), fc.boolean()).map(([m, keep]) => keep ? m : m.replace('{', `{"type":${JSON.stringify(type)}${m === '{}' ? '' : ','}`)))
  ), { minLength: 1, maxLength: 8 })))
  fc.assert(fc.property(schemasAndTexts, ([schemas, texts]) => {
    const shape = compileTypedShape(schemas, 'type')
    if (shape === undefined) return true
    const validators = new Map(Object.entries(schemas).map(([type, schema]) => [type, new Ajv({ strict: true }).compile(schema)] as const))
    for (const text of texts) {
      if (!shape(Buffer.from(text))) continue
      accepted++
      if (!fullTyped(validators, text)) return false
    }
    return true
  }), params())
  t.ok(accepted > 0, `the fast path took some messages (${accepted})`)
  // the chat example's contract: a say message is proven, the others go to the full path
  const chat = compileTypedShape({ say: { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string', minLength: 1, maxLength: 20 } }, required: ['type', 'text'], additionalProperties: false } }, 'type')
  t.equal(chat?.(Buffer.from('{"type":"say","text":"hi"}')), true)
  t.equal(chat?.(Buffer.from('{"text":"hi","type":"say"}')), true, 'the type key anywhere')
  t.equal(chat?.(Buffer.from('{"text":"type","type":"say"}')), true, 'the type key\'s name as a value first')
  t.equal(chat?.(Buffer.from('{"type":"shout","text":"hi"}')), false, 'an unknown type')
  t.equal(chat?.(Buffer.from('{"text":"hi"}')), false, 'no type')
  t.equal(compileTypedShape({ say: { type: 'object', properties: { text: { type: 'string' } } } }, 'type'), undefined, 'a schema that does not name the type key proves nothing')
  t.equal(compileTypedShape({ say: { type: 'object', properties: { constructor: { type: 'string' } } } }, 'constructor'), undefined, 'an inherited type key')
})

t.test('the fast path accepts messages built to match, so it is not vacuous', async (t) => {
  // messages that satisfy the schema by construction: what a well-behaved client sends
  const schema = { type: 'object', additionalProperties: false, required: ['type', 'n'], properties: { type: { const: 'say' }, n: { type: 'integer', minimum: 0 }, text: { type: 'string', maxLength: 8 } } }
  const shape = compileShape(schema)
  t.ok(shape !== undefined)
  const validate = new Ajv({ strict: true }).compile(schema)
  fc.assert(fc.property(fc.nat(), fc.option(fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map(c => String.fromCharCode(c)), maxLength: 8 }), { nil: undefined }), fc.boolean(), (n, text, spaced) => {
    const value = text === undefined ? { type: 'say', n } : { n, text, type: 'say' }
    const json = spaced ? JSON.stringify(value, null, 2) : JSON.stringify(value)
    if (!validate(value)) return true
    // a string with a quote or backslash is written with an escape: the full path decides it
    const escaped = json.includes('\\')
    return shape?.(Buffer.from(json)) === !escaped
  }), params())
  t.equal(compileShape(MESSAGE_SCHEMA)?.(Buffer.from(MESSAGE)), true, 'the bench message takes the fast path')
})

t.test('on the messages it can see, the fast path answers exactly as the full path, bound by bound', async (t) => {
  // one property at a time, every keyword at a few bounds, every value form near them: the
  // fast path must accept exactly what the full path accepts (here both sides see the same bytes)
  const numbers = ['-1', '-0.5', '-0', '0', '0.0', '0e0', '0.5', '1', '1.0', '1e0', '10', '10.5', '1e1', '9.99', '1e400', '-1e400', '1e-400', '123456789012345', '1234567890123456', '9007199254740993']
  const texts = (v: string): string => `{"n":${v}}`
  let cases = 0
  for (const type of ['integer', 'number']) {
    for (const k of [undefined, 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum']) {
      for (const bound of [0, 0.5, 1, 10]) {
        const prop = k === undefined ? { type } : { type, [k]: bound }
        const schema = { type: 'object', properties: { n: prop }, required: ['n'] }
        const shape = compileShape(schema)
        const validate = new Ajv({ strict: true }).compile(schema)
        for (const v of numbers) {
          cases++
          t.equal(shape?.(Buffer.from(texts(v))), fullPath(validate, texts(v)).ok, `${JSON.stringify(prop)} on ${v}`)
        }
      }
    }
  }
  for (const [prop, values] of [
    [{ type: 'string', minLength: 2, maxLength: 3 }, ['""', '"a"', '"ab"', '"abc"', '"abcd"', '1', 'null']],
    [{ type: 'string', enum: ['a', 'bc'] }, ['"a"', '"bc"', '"b"', '"abc"', '""', 'true']],
    [{ const: 'msg' }, ['"msg"', '"ms"', '"msgs"', '"MSG"', '0', 'null']],
    [{ enum: ['x', 'yy'] }, ['"x"', '"yy"', '"y"', '[]']],
    [{ type: 'string', const: 'a', enum: ['a', 'b'] }, ['"a"', '"b"']],
    [{ type: 'string', const: 'c', enum: ['a', 'b'] }, ['"a"', '"c"']],
    [{ type: 'boolean' }, ['true', 'false', 'null', '0', '"true"']],
    [{ type: 'null' }, ['null', 'false', '0', '"null"']]
  ] as Array<[Schema, string[]]>) {
    const schema = { type: 'object', properties: { n: prop } }
    const shape = compileShape(schema)
    const validate = new Ajv({ strict: true }).compile(schema)
    for (const v of values) {
      cases++
      t.equal(shape?.(Buffer.from(texts(v))), fullPath(validate, texts(v)).ok, `${JSON.stringify(prop)} on ${v}`)
    }
  }
  // required and unknown keys: accepted exactly when present and named
  const schema = { type: 'object', properties: { a: { type: 'null' }, b: { type: 'null' } }, required: ['a'] }
  const shape = compileShape(schema)
  const validate = new Ajv({ strict: true }).compile(schema)
  for (const text of ['{}', '{"a":null}', '{"b":null}', '{"a":null,"b":null}', '{"b":null,"a":null}', '{ "a" : null , "b" : null }']) {
    cases++
    t.equal(shape?.(Buffer.from(text)), fullPath(validate, text).ok, text)
  }
  t.ok(cases > 400)
})

t.test('the fast path refuses to prove what it cannot see, and leaves it to the full path', async (t) => {
  const shape = compileShape(MESSAGE_SCHEMA)
  if (shape === undefined) return t.fail('the bench schema compiles')
  const ok = '{"type":"msg","room":"lobby","seq":1,"text":"hi"}'
  t.equal(shape(Buffer.from(ok)), true)
  for (const [why, text] of [
    ['a repeated key (the parse keeps the last)', '{"type":"msg","room":"lobby","seq":1,"text":"hi","seq":2}'],
    ['an escaped key', '{"\\u0074ype":"msg","room":"lobby","seq":1,"text":"hi"}'],
    ['an escape in a value', '{"type":"msg","room":"lo\\nbby","seq":1,"text":"hi"}'],
    ['non-ASCII text', '{"type":"msg","room":"lobby","seq":1,"text":"h\u00e9"}'],
    ['a __proto__ key', '{"type":"msg","room":"lobby","seq":1,"text":"hi","__proto__":{"x":1}}'],
    ['a BOM', '\ufeff' + ok],
    ['trailing bytes', ok + 'x'],
    ['a missing required property', '{"type":"msg","room":"lobby","seq":1}'],
    ['a fraction where an integer is wanted', '{"type":"msg","room":"lobby","seq":1.5,"text":"hi"}'],
    ['a number out of range', '{"type":"msg","room":"lobby","seq":-1,"text":"hi"}'],
    ['a number too large for a double', '{"type":"msg","room":"lobby","seq":1e400,"text":"hi"}'],
    ['a leading zero', '{"type":"msg","room":"lobby","seq":01,"text":"hi"}'],
    ['a string over maxLength', `{"type":"msg","room":"${'r'.repeat(65)}","seq":1,"text":"hi"}`],
    ['another const', '{"type":"msh","room":"lobby","seq":1,"text":"hi"}'],
    ['a control character in a string', '{"type":"msg","room":"lob\u0001by","seq":1,"text":"hi"}'],
    ['a truncated message', ok.slice(0, -1)],
    ['no object', '"msg"']
  ]) t.equal(shape(Buffer.from(text)), false, why)
  t.equal(shape(Buffer.from('{"type":"msg","room":"lobby","seq":1.0e0,"text":"hi"}')), true, '1.0e0 is the integer 1, as Ajv sees it after the parse')
  t.equal(shape(Buffer.from(' {\n"seq" : 0 ,"text":"" , "room":"","type":"msg"}\r\n')), true, 'JSON whitespace anywhere, any key order')
})

t.test('a schema the fast path cannot mirror gets none', async (t) => {
  const none: Array<[string, unknown]> = [
    ['a nested object', { type: 'object', properties: { a: { type: 'object' } } }],
    ['an array', { type: 'object', properties: { a: { type: 'array' } } }],
    ['a pattern', { type: 'object', properties: { a: { type: 'string', pattern: '^a' } } }],
    ['a format', { type: 'object', properties: { a: { type: 'string', format: 'email' } } }],
    ['multipleOf', { type: 'object', properties: { a: { type: 'integer', multipleOf: 2 } } }],
    ['a union type', { type: 'object', properties: { a: { type: ['string', 'null'] } } }],
    ['a numeric const', { type: 'object', properties: { a: { const: 1 } } }],
    ['a mixed enum', { type: 'object', properties: { a: { enum: ['a', 1] } } }],
    ['an empty subschema', { type: 'object', properties: { a: {} } }],
    ['a __proto__ property', { type: 'object', properties: { ['__proto__']: { type: 'string' } } }],
    ['a constructor property', { type: 'object', properties: { constructor: { type: 'string' } } }],
    // Ajv reads data.toString, inherited when the message lacks it, and validates the function
    ['an inherited name', { type: 'object', properties: { toString: { type: 'string' } } }],
    ['another inherited name', { type: 'object', properties: { a: { type: 'null' }, valueOf: { type: 'null' } } }],
    ['a property name that needs an escape', { type: 'object', properties: { 'a"b': { type: 'string' } } }],
    ['required outside properties', { type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }],
    ['additionalProperties as a schema', { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: { type: 'string' } }],
    ['patternProperties', { type: 'object', properties: { a: { type: 'string' } }, patternProperties: { '^x': {} } }],
    ['a $ref', { type: 'object', properties: { a: { $ref: '#/definitions/x' } } }],
    ['no properties', { type: 'object' }],
    ['not an object schema', { type: 'string' }],
    ['32 properties (one bit each in 31)', { type: 'object', properties: Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`p${i}`, { type: 'null' }])) }]
  ]
  for (const [why, schema] of none) t.equal(compileShape(schema), undefined, why)
})

t.test('the fast path runs in linear time on long messages', async (t) => {
  const shape = compileShape({ type: 'object', properties: { text: { type: 'string' }, n: { type: 'number' } } })
  if (shape === undefined) return t.fail('compiles')
  const shapes: Record<string, (n: number) => string> = {
    'one long string': n => `{"text":"${'a'.repeat(n)}"}`,
    'long whitespace': n => `{${' '.repeat(n)}"text":"a"}`,
    'a long number': n => `{"n":${'1'.repeat(n)}}`,
    'a long fraction': n => `{"n":0.${'1'.repeat(n)}}`,
    'many members': n => `{${'"text":"a",'.repeat(n / 11)}"n":1}`
  }
  // the input is made once per size; the check reads its bytes
  const bytes = new Map<string, Buffer>()
  const check = (s: string): boolean => {
    let b = bytes.get(s)
    if (b === undefined) bytes.set(s, (b = Buffer.from(s)))
    return shape(b)
  }
  for (const [name, make] of Object.entries(shapes)) {
    const g = growth(check, make, 20_000)
    t.ok(g.ratio < 40, `${name}: ×${g.ratio.toFixed(1)} for ×10 input`)
  }
  // the typed check looks for its type key before it scans: many near-misses stay linear too
  const typedShape = compileTypedShape({ say: { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string' } } } }, 'type')
  if (typedShape === undefined) return t.fail('compiles')
  const typedBytes = new Map<string, Buffer>()
  const typedCheck = (s: string): boolean => {
    let b = typedBytes.get(s)
    if (b === undefined) typedBytes.set(s, (b = Buffer.from(s)))
    return typedShape(b)
  }
  for (const [name, make] of Object.entries({
    'many type keys without a colon': (n: number) => '{' + '"type" '.repeat(n / 7) + '}',
    'a long text before the type': (n: number) => `{"text":"${'t'.repeat(n)}","type":"say"}`
  })) {
    const g = growth(typedCheck, make, 20_000)
    t.ok(g.ratio < 40, `typed, ${name}: ×${g.ratio.toFixed(1)} for ×10 input`)
  }
})
