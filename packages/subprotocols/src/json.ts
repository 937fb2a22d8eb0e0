import { isUtf8 } from 'node:buffer'
import { Ajv, type AnySchema, type ValidateFunction } from 'ajv'
import secureJsonParse from 'secure-json-parse'
import type { PortcullisSocket, Violation } from '@portcullis/policy'
import type { DataTypes, InspectorContext, MessageInspector, SubprotocolDefinition, SubprotocolLimits } from './types.js'
import { PORTCULLIS_SUBPROTOCOL_INVALID_OPTION } from './errors.js'
import { exposeParsed, kInspect, PARSE_LATER, type StatelessInspector } from './guard.js'
import { compileShape, compileTypedShape, type ShapeCheck } from './json-shape.js'

export interface JsonInspectorOptions {
  /** One JSON Schema every message must match. Give `schema` or `schemas` (or neither: any JSON). */
  schema?: AnySchema
  /**
   * One JSON Schema per message type: the message must be an object whose `typeKey` property is
   * a string naming one of these; any other type is refused.
   */
  schemas?: Record<string, AnySchema>
  /** The property that names a message's type, with `schemas`. Default `'type'`. */
  typeKey?: string
  /** The Ajv instance to compile with (for formats or custom keywords). Default: `new Ajv({ strict: true })`. */
  ajv?: Ajv
  /** Data types accepted. Default `'text'` (JSON is text; a binary frame closes with 1003). */
  dataTypes?: DataTypes
  /** This protocol's limits. Default: the plugin's. */
  limits?: SubprotocolLimits
  /** Let the handler read the parsed value with `parsedMessage(socket, data)`. Default `true`. */
  expose?: boolean
}

/** Stable close reasons of the JSON inspector (all close with 1008). */
export const JsonViolations = Object.freeze({
  INVALID_JSON: Object.freeze({ code: 1008, reason: 'invalid JSON' }),
  FORBIDDEN_KEY: Object.freeze({ code: 1008, reason: 'forbidden key in JSON' }),
  SCHEMA_MISMATCH: Object.freeze({ code: 1008, reason: 'message does not match the schema' }),
  UNKNOWN_TYPE: Object.freeze({ code: 1008, reason: 'unknown message type' })
})

// __proto__ anywhere, or constructor.prototype, is refused rather than stripped: a client that
// sends one is attacking, and the app must never see such an object (even after its own parse).
const PARSE_OPTIONS = Object.freeze({ protoAction: 'error', constructorAction: 'error' } as const)
const FORBIDDEN_MESSAGE = 'Object contains forbidden prototype property'

/**
 * A JSON subprotocol: each message is parsed with `secure-json-parse` and validated against a
 * JSON Schema compiled here, once, at startup. The handler receives the original message.
 */
export function json (opts: JsonInspectorOptions = {}): SubprotocolDefinition {
  if (opts === null || typeof opts !== 'object') throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('json() options must be an object')
  if (opts.schema !== undefined && opts.schemas !== undefined) {
    throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('json(): give either schema or schemas, not both')
  }
  const typeKey = opts.typeKey ?? 'type'
  if (typeof typeKey !== 'string' || typeKey.length === 0) throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('json(): typeKey must be a non-empty string')
  const ajv = opts.ajv ?? new Ajv({ strict: true })
  const compile = (schema: AnySchema, what: string): ValidateFunction => {
    try {
      return ajv.compile(schema)
    } catch (err) {
      throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION(`json(): ${what} does not compile: ${(err as Error).message}`)
    }
  }

  let check: (value: unknown) => Violation | undefined
  let describe = 'json'
  if (opts.schemas !== undefined) {
    if (opts.schemas === null || typeof opts.schemas !== 'object' || Array.isArray(opts.schemas)) {
      throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('json(): schemas must be an object of JSON Schemas by message type')
    }
    // a Map, so a type named "constructor" or "__proto__" finds nothing inherited
    const byType = new Map<string, ValidateFunction>()
    for (const [type, schema] of Object.entries(opts.schemas)) byType.set(type, compile(schema, `schemas.${type}`))
    if (byType.size === 0) throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('json(): schemas must name at least one message type')
    check = function checkByType (value) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) return JsonViolations.UNKNOWN_TYPE
      const type = (value as Record<string, unknown>)[typeKey]
      const validate = typeof type === 'string' && Object.hasOwn(value, typeKey) ? byType.get(type) : undefined
      if (validate === undefined) return JsonViolations.UNKNOWN_TYPE
      return validate(value) ? undefined : JsonViolations.SCHEMA_MISMATCH
    }
    describe = `json (${byType.size} message type${byType.size === 1 ? '' : 's'} by "${typeKey}")`
  } else if (opts.schema !== undefined) {
    const validate = compile(opts.schema, 'schema')
    check = function checkSchema (value) {
      return validate(value) ? undefined : JsonViolations.SCHEMA_MISMATCH
    }
    describe = 'json (schema)'
  } else {
    check = function anyJson () { return undefined }
  }

  // the byte-level fast path (json-shape.ts): for flat object schemas (one, or one per type)
  // compiled by our own Ajv
  // (another instance may coerce, add defaults or remove properties: only the real parse sees that)
  const shape = opts.ajv !== undefined
    ? undefined
    : opts.schema !== undefined
      ? compileShape(opts.schema)
      : opts.schemas !== undefined ? compileTypedShape(opts.schemas, typeKey) : undefined
  const expose = opts.expose !== false
  const open = (ctx: InspectorContext): MessageInspector => new JsonInspector(check, shape, expose ? ctx : undefined)
  // JSON inspection keeps no per-connection state: the guard calls this directly (no inspector
  // object per connection). Bound to this `open`: a definition that replaces `open` gets its own.
  const inspect: StatelessInspector = function portcullisInspectJson (data, isBinary, socket) {
    return inspectJson(check, shape, undefined, expose ? socket : undefined, data, isBinary)
  }
  return {
    dataTypes: opts.dataTypes ?? 'text',
    limits: opts.limits,
    describe,
    open,
    [kInspect]: { open, inspect }
  } as SubprotocolDefinition
}

/**
 * `secure-json-parse` with its result, minus two regex passes on the common message.
 * secure-json-parse scans the parsed object only when its regexes find a `"__proto__"` or
 * `"constructor"` key in the text, any character of which may be a `\u` escape (JSON has no
 * other way to spell them). Text without `\u`, `__proto__` and `constructor` (and without the
 * BOM it strips) cannot match, so its answer is exactly `JSON.parse`'s; anything else goes
 * through secure-json-parse. A property test holds the two paths equal.
 */
export function parseJsonSecure (text: string): unknown {
  // "to" is in both `__proto__` and `constructor`: text without it (and without `\u`) spells
  // neither, so the common message is read by one more search only, not two
  if (text.charCodeAt(0) !== 0xfeff && text.indexOf('\\u') === -1 &&
    (text.indexOf('to') === -1 || (text.indexOf('__proto__') === -1 && text.indexOf('constructor') === -1))) {
    return JSON.parse(text)
  }
  return secureJsonParse(text, null, PARSE_OPTIONS)
}

class JsonInspector implements MessageInspector {
  readonly #check: (value: unknown) => Violation | undefined
  readonly #shape: ShapeCheck | undefined
  readonly #ctx: InspectorContext | undefined

  constructor (check: (value: unknown) => Violation | undefined, shape: ShapeCheck | undefined, ctx: InspectorContext | undefined) {
    this.#check = check
    this.#shape = shape
    this.#ctx = ctx
  }

  message (data: Buffer | string, isBinary: boolean): Violation | undefined {
    return inspectJson(this.#check, this.#shape, this.#ctx, undefined, data, isBinary)
  }
}

/**
 * One message: at most one parse, checked, and handed to the handler (no second parse): through
 * the context's `expose` when opened per connection, else kept for `parsedMessage` under `socket`.
 * A message the fast path accepts is not parsed here; `parsedMessage` parses it if it is read.
 */
function inspectJson (check: (value: unknown) => Violation | undefined, shape: ShapeCheck | undefined, ctx: InspectorContext | undefined, socket: PortcullisSocket | undefined, data: Buffer | string, isBinary: boolean): Violation | undefined {
  // An accepted message is ASCII (so valid UTF-8, binary or not); anything else, including every
  // message the full path would refuse, goes on to it, which decides
  if (shape !== undefined && typeof data !== 'string' && shape(data)) {
    if (socket !== undefined) exposeParsed(socket, data, PARSE_LATER)
    else if (ctx !== undefined) ctx.expose(data, PARSE_LATER)
    return undefined
  }
  // JSON text is UTF-8 (RFC 8259 §8.1). `ws` validates text messages (RFC 6455 §8.1), not
  // binary ones: decoding invalid octets would turn them into U+FFFD, so the parsed value would
  // pass while the handler's original bytes say something else. Refuse instead.
  if (isBinary && typeof data !== 'string' && !isUtf8(data)) return JsonViolations.INVALID_JSON
  let value: unknown
  try {
    // toString() without arguments is Buffer's UTF-8 fast path
    value = parseJsonSecure(typeof data === 'string' ? data : data.toString())
  } catch (err) {
    return (err as Error).message === FORBIDDEN_MESSAGE ? JsonViolations.FORBIDDEN_KEY : JsonViolations.INVALID_JSON
  }
  const v = check(value)
  if (v !== undefined) return v
  if (socket !== undefined) exposeParsed(socket, data, value)
  else if (ctx !== undefined) ctx.expose(data, value)
  return undefined
}
