/**
 * The JSON inspector's fast path: a check, compiled once from a flat object schema, that proves
 * from a message's bytes alone that `json()`'s full path (the screened parse, then Ajv) would
 * accept it. It answers only "accepted" (`true`) or "not proven" (`false`); on `false` the full
 * path runs and decides, so every refusal, and its close reason, stays the full path's.
 *
 * Why: on a small message the parse is most of the inspection's cost (docs/BENCHMARKS.md), and a
 * handler that relays messages never reads the parsed value. A message this check accepts is
 * parsed only if the handler asks for it (`parsedMessage`), once.
 *
 * What it proves, in one pass over the bytes (linear, no allocation on the accepted path):
 * - the message is one JSON object (RFC 8259 §4) with only whitespace around it;
 * - every key is one of the schema's `properties`, written without escapes, and none repeats
 *   (so the parse has no last-one-wins choice to make, and no `__proto__` or `constructor` key
 *   can be there: such names are refused when the check is compiled);
 * - every value is what its property's schema accepts (the kinds below), and every `required`
 *   property is present.
 * Strings are taken only when they are ASCII without escapes: their length in code points (what
 * Ajv's `maxLength` counts) is then their length in bytes, and the parse gives back exactly those
 * bytes. Anything else (a non-ASCII character, an escape, a key the schema does not name, a
 * nested value) is "not proven", whatever its merit.
 *
 * Schemas it compiles (alone, or one per message type with `compileTypedShape`):
 * `{ type: 'object', properties, required?, additionalProperties? }` whose
 * properties are each one of
 * - a string: `{ type: 'string', minLength?, maxLength?, enum?, const? }`, or `{ const }` /
 *   `{ enum }` of strings alone;
 * - a number: `{ type: 'integer' | 'number', minimum?, maximum?, exclusiveMinimum?, exclusiveMaximum? }`;
 * - `{ type: 'boolean' }` or `{ type: 'null' }`;
 * with annotations (`title`, `description`, `$comment`, `examples`) allowed anywhere. Any other
 * schema gets no fast path (`compileShape` returns undefined), and is checked as before.
 */

/** Keywords that only annotate: Ajv ignores them when it validates. */
const ANNOTATIONS = new Set(['title', 'description', '$comment', 'examples'])
/**
 * Names never on the fast path: those the screened parse refuses or treats specially, and every
 * name an object inherits (`toString`, `valueOf`, ...), because Ajv, reading `data.name`, sees an
 * inherited value where the message has no such key and validates that instead.
 */
function isForbiddenName (name: string): boolean {
  return name === 'prototype' || name in Object.prototype
}

/** One bit per property in a 32-bit mask. */
const MAX_PROPERTIES = 31

type Kind = 'string' | 'number' | 'integer' | 'boolean' | 'null'

interface Property {
  readonly name: Buffer
  readonly kind: Kind
  readonly minLength: number
  readonly maxLength: number
  /** Allowed values (enum and const together: their intersection), as ASCII bytes; undefined: any. */
  readonly allowed: readonly Buffer[] | undefined
  readonly minimum: number
  readonly maximum: number
  readonly exclusiveMinimum: number
  readonly exclusiveMaximum: number
}

export type ShapeCheck = (data: Buffer) => boolean

/**
 * The fast check for `schema`, or undefined when the schema is outside what it can prove (see
 * above). Compiled only for json()'s own Ajv: another instance may coerce, fill in defaults or
 * remove properties, which a byte check cannot mirror.
 */
export function compileShape (schema: unknown, pin?: { readonly name: string, readonly value: string }): ShapeCheck | undefined {
  if (!isPlainObject(schema) || schema.type !== 'object' || !onlyKeys(schema, ['type', 'properties', 'required', 'additionalProperties'])) return undefined
  const { properties, required, additionalProperties } = schema
  if (additionalProperties !== undefined && typeof additionalProperties !== 'boolean') return undefined
  if (!isPlainObject(properties)) return undefined
  const names = Object.keys(properties)
  if (names.length === 0 || names.length > MAX_PROPERTIES) return undefined
  const props: Property[] = []
  for (const name of names) {
    if (isForbiddenName(name) || !isPlainAscii(name)) return undefined
    const p = compileProperty(Buffer.from(name, 'latin1'), properties[name])
    if (p === undefined) return undefined
    props.push(p)
  }
  let requiredMask = 0
  if (required !== undefined) {
    if (!Array.isArray(required)) return undefined
    for (const r of required) {
      const at = typeof r === 'string' ? names.indexOf(r) : -1
      if (at === -1) return undefined
      requiredMask |= 1 << at
    }
  }
  if (pin !== undefined) {
    // the message must also have this property, as exactly this string (a typed message's type)
    const at = names.indexOf(pin.name)
    const p = props[at]
    if (p === undefined || p.kind !== 'string' || !isPlainAscii(pin.value)) return undefined
    const value = Buffer.from(pin.value, 'latin1')
    const allowed = p.allowed === undefined || p.allowed.some(v => v.equals(value)) ? [value] : []
    props[at] = { ...p, allowed }
    requiredMask |= 1 << at
  }
  return function portcullisJsonShape (data) {
    return acceptsObject(props, requiredMask, data)
  }
}

/**
 * The fast check for json()'s `schemas` (one schema per message type, chosen by the string
 * property `typeKey`), or undefined when no type's schema is one `compileShape` can prove. A
 * message is checked against the schema its type names, which must also require that type: the
 * full path refuses a message without it (`unknown message type`).
 */
export function compileTypedShape (schemas: Record<string, unknown>, typeKey: string): ShapeCheck | undefined {
  if (isForbiddenName(typeKey) || !isPlainAscii(typeKey)) return undefined
  const types: Array<{ readonly name: Buffer, readonly check: ShapeCheck }> = []
  for (const type of Object.keys(schemas)) {
    const check = compileShape(schemas[type], { name: typeKey, value: type })
    if (check !== undefined) types.push({ name: Buffer.from(type, 'latin1'), check })
  }
  if (types.length === 0) return undefined
  const key = Buffer.from(`"${typeKey}"`, 'latin1')
  return function portcullisJsonTypedShape (data) {
    // which type the message names: only a hint (the type's own check proves it), so a key
    // spelled with an escape or a "type" text elsewhere only sends the message to the full path
    const n = data.length
    for (let i = indexOfBytes(data, key, 0, n); i !== -1; i = indexOfBytes(data, key, i + 1, n)) {
      let j = skipWs(data, i + key.length, n)
      if (j >= n || data[j] !== 0x3a) continue
      j = skipWs(data, j + 1, n)
      if (j >= n || data[j] !== 0x22) return false
      const end = plainStringEnd(data, j + 1, n)
      if (end === -1) return false
      for (let k = 0; k < types.length; k++) {
        const t = types[k]
        if (t.name.length === end - j - 1 && sameBytes(data, j + 1, t.name)) return t.check(data)
      }
      return false
    }
    return false
  }
}

/** The first index at or after `from` where `b` holds `word`, or -1 (a loop: see `sameBytes`). */
function indexOfBytes (b: Buffer, word: Buffer, from: number, n: number): number {
  const first = word[0]
  for (let i = from; i + word.length <= n; i++) if (b[i] === first && sameBytes(b, i, word)) return i
  return -1
}

function compileProperty (name: Buffer, s: unknown): Property | undefined {
  if (!isPlainObject(s)) return undefined
  const type = s.type
  let kind: Kind
  if (type === undefined) {
    // a const or enum of strings needs no type: only a string can equal one
    if (s.const === undefined && s.enum === undefined) return undefined
    kind = 'string'
  } else if (type === 'string' || type === 'integer' || type === 'number' || type === 'boolean' || type === 'null') {
    kind = type
  } else {
    return undefined
  }

  const base = { name, kind, minLength: 0, maxLength: Infinity, allowed: undefined as Buffer[] | undefined, minimum: -Infinity, maximum: Infinity, exclusiveMinimum: -Infinity, exclusiveMaximum: Infinity }
  if (kind === 'string') {
    if (!onlyKeys(s, ['type', 'minLength', 'maxLength', 'enum', 'const'])) return undefined
    if (s.minLength !== undefined) {
      if (!isCount(s.minLength)) return undefined
      base.minLength = s.minLength
    }
    if (s.maxLength !== undefined) {
      if (!isCount(s.maxLength)) return undefined
      base.maxLength = s.maxLength
    }
    let allowed: string[] | undefined
    if (s.enum !== undefined) {
      if (!Array.isArray(s.enum) || s.enum.length === 0 || !s.enum.every((v): v is string => typeof v === 'string')) return undefined
      allowed = s.enum
    }
    if (s.const !== undefined) {
      if (typeof s.const !== 'string') return undefined
      allowed = allowed === undefined || allowed.includes(s.const) ? [s.const] : []
    }
    // a value that is not plain ASCII can never match an accepted (ASCII) string: drop it
    if (allowed !== undefined) base.allowed = allowed.filter(isPlainAscii).map(v => Buffer.from(v, 'latin1'))
    return base
  }
  if (kind === 'integer' || kind === 'number') {
    if (!onlyKeys(s, ['type', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'])) return undefined
    for (const k of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const) {
      const v = s[k]
      if (v === undefined) continue
      if (typeof v !== 'number' || !Number.isFinite(v)) return undefined
      base[k] = v
    }
    return base
  }
  return onlyKeys(s, ['type']) ? base : undefined
}

/** The object scan: see the module comment for what `true` proves. */
function acceptsObject (props: readonly Property[], requiredMask: number, b: Buffer): boolean {
  const n = b.length
  let i = skipWs(b, 0, n)
  if (i >= n || b[i] !== 0x7b) return false
  i = skipWs(b, i + 1, n)
  let seen = 0
  if (i < n && b[i] === 0x7d) {
    i++
  } else {
    for (;;) {
      if (i >= n || b[i] !== 0x22) return false
      const keyStart = i + 1
      const keyEnd = plainStringEnd(b, keyStart, n)
      if (keyEnd === -1) return false
      const at = propertyAt(props, b, keyStart, keyEnd)
      if (at === -1) return false
      const bit = 1 << at
      if ((seen & bit) !== 0) return false
      seen |= bit
      i = skipWs(b, keyEnd + 1, n)
      if (i >= n || b[i] !== 0x3a) return false
      i = acceptsValue(props[at], b, skipWs(b, i + 1, n), n)
      if (i === -1) return false
      i = skipWs(b, i, n)
      if (i >= n) return false
      if (b[i] === 0x2c) {
        i = skipWs(b, i + 1, n)
        continue
      }
      if (b[i] !== 0x7d) return false
      i++
      break
    }
  }
  return skipWs(b, i, n) === n && (seen & requiredMask) === requiredMask
}

/** The index just past an accepted value of `p` at `i`, or -1. */
function acceptsValue (p: Property, b: Buffer, i: number, n: number): number {
  if (i >= n) return -1
  switch (p.kind) {
    case 'string': {
      if (b[i] !== 0x22) return -1
      const end = plainStringEnd(b, i + 1, n)
      if (end === -1) return -1
      const len = end - i - 1
      if (len < p.minLength || len > p.maxLength) return -1
      if (p.allowed !== undefined && !isOneOf(p.allowed, b, i + 1, end)) return -1
      return end + 1
    }
    case 'integer':
    case 'number':
      return acceptsNumber(p, b, i, n)
    case 'boolean':
      if (matches(b, i, n, TRUE)) return i + 4
      return matches(b, i, n, FALSE) ? i + 5 : -1
    case 'null':
      return matches(b, i, n, NULL) ? i + 4 : -1
  }
}

/**
 * A JSON number (RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`) within
 * `p`'s bounds. Its value is the parse's: short integers by arithmetic (exact below 2^53), any
 * other form by `Number()`, which rounds a decimal literal exactly as `JSON.parse` does.
 */
function acceptsNumber (p: Property, b: Buffer, start: number, n: number): number {
  let i = start
  if (b[i] === 0x2d) i++
  const intStart = i
  if (i >= n) return -1
  if (b[i] === 0x30) i++
  else if (isDigit(b[i])) while (i < n && isDigit(b[i])) i++
  else return -1
  let simple = i - intStart <= 15
  if (i < n && b[i] === 0x2e) {
    simple = false
    i++
    if (i >= n || !isDigit(b[i])) return -1
    while (i < n && isDigit(b[i])) i++
  }
  if (i < n && (b[i] === 0x65 || b[i] === 0x45)) {
    simple = false
    i++
    if (i < n && (b[i] === 0x2b || b[i] === 0x2d)) i++
    if (i >= n || !isDigit(b[i])) return -1
    while (i < n && isDigit(b[i])) i++
  }
  let v: number
  if (simple) {
    v = 0
    for (let k = intStart; k < i; k++) v = v * 10 + (b[k] - 0x30)
    if (intStart !== start) v = -v
  } else {
    v = Number(b.toString('latin1', start, i))
  }
  // Ajv's type checks: a finite number; for integer, one with no fraction
  if (!Number.isFinite(v) || (p.kind === 'integer' && !Number.isInteger(v))) return -1
  if (v < p.minimum || v > p.maximum || v <= p.exclusiveMinimum || v >= p.exclusiveMaximum) return -1
  return i
}

/** The index of the closing quote of an ASCII string without escapes starting at `i`, or -1. */
function plainStringEnd (b: Buffer, i: number, n: number): number {
  for (; i < n; i++) {
    const c = b[i]
    if (c === 0x22) return i
    // a control character is not JSON; an escape or a non-ASCII octet is not for the fast path
    if (c < 0x20 || c === 0x5c || c > 0x7e) return -1
  }
  return -1
}

function isOneOf (allowed: readonly Buffer[], b: Buffer, start: number, end: number): boolean {
  const len = end - start
  for (let k = 0; k < allowed.length; k++) {
    const v = allowed[k]
    if (v.length === len && sameBytes(b, start, v)) return true
  }
  return false
}

function propertyAt (props: readonly Property[], b: Buffer, start: number, end: number): number {
  const len = end - start
  for (let k = 0; k < props.length; k++) {
    const name = props[k].name
    if (name.length === len && sameBytes(b, start, name)) return k
  }
  return -1
}

/** JSON's insignificant whitespace (RFC 8259 §2): space, tab, line feed, carriage return. */
function skipWs (b: Buffer, i: number, n: number): number {
  while (i < n) {
    const c = b[i]
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break
    i++
  }
  return i
}

const TRUE = Buffer.from('true')
const FALSE = Buffer.from('false')
const NULL = Buffer.from('null')

function matches (b: Buffer, i: number, n: number, word: Buffer): boolean {
  return i + word.length <= n && sameBytes(b, i, word)
}

/**
 * Whether `b` holds `word` at `at` (the caller checked the length). A loop, not `Buffer#compare`:
 * for the few bytes of a key or a word, compare's argument checks and native call cost more than
 * the whole scan (a profile showed it at 8 % of an echo server's time).
 */
function sameBytes (b: Buffer, at: number, word: Buffer): boolean {
  for (let k = 0; k < word.length; k++) if (b[at + k] !== word[k]) return false
  return true
}

function isDigit (c: number): boolean {
  return c >= 0x30 && c <= 0x39
}

/** Printable ASCII without `"` or `\`: a string JSON writes as itself. */
function isPlainAscii (s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false
  }
  return true
}

function isCount (v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function onlyKeys (o: Record<string, unknown>, allowed: readonly string[]): boolean {
  for (const k of Object.keys(o)) if (!allowed.includes(k) && !ANNOTATIONS.has(k)) return false
  return true
}
