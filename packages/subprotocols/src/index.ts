import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { addConnectionGuard, denialOf, type ConnectionContext, type ConnectionGuardFactory, type Denial, type StageResult } from '@portcullis/policy'
import type {
  DataTypes, SubprotocolDefinition, SubprotocolLimits, SubprotocolRegistry, SubprotocolRouteOption,
  SubprotocolRoutePolicy, SubprotocolsOptions
} from './types.js'
import { defaultHeaderLimits, isToken, MAX_NAME_LENGTH, parseProtocolHeader, ProtocolHeaderError, selectProtocol, type HeaderLimits } from './header.js'
import { dataTypeFlags, guardFactory, kInspect, type GuardPlan, type ResolvedLimits, type StatelessInspector } from './guard.js'
import {
  PORTCULLIS_SUBPROTOCOL_DUPLICATE, PORTCULLIS_SUBPROTOCOL_DUPLICATE_NAME, PORTCULLIS_SUBPROTOCOL_INVALID_NAME,
  PORTCULLIS_SUBPROTOCOL_INVALID_OPTION, PORTCULLIS_SUBPROTOCOL_LATE_REGISTRATION, PORTCULLIS_SUBPROTOCOL_MALFORMED,
  PORTCULLIS_SUBPROTOCOL_NOT_REGISTERED, PORTCULLIS_SUBPROTOCOL_TOO_LONG, PORTCULLIS_SUBPROTOCOL_TOO_MANY,
  PORTCULLIS_SUBPROTOCOL_UNSUPPORTED, PORTCULLIS_TOO_MANY_CONNECTIONS
} from './errors.js'

const defaults = Object.freeze({
  limits: Object.freeze({
    // far below ws's 100 MiB and the core's 1 MiB: a chat or STOMP message is small (RFC 6455 §10.4)
    maxMessageBytes: 64 * 1024,
    rate: false,
    maxConnectionsPerIdentity: false
  } satisfies Required<SubprotocolLimits>),
  header: defaultHeaderLimits
})

const DATA_TYPES: readonly DataTypes[] = ['text', 'binary', 'both']
const OPTION_KEYS = new Set(['protocols', 'limits', 'header'])
const HEADER_KEYS = new Set(['maxLength', 'maxCount'])
/** Duplicates are found by comparing each value with the earlier ones: keep that bounded. */
const MAX_HEADER_COUNT = 256
const ROUTE_KEYS = new Set(['accept', 'required', 'limits'])
const LIMIT_KEYS = new Set(['maxMessageBytes', 'rate', 'maxConnectionsPerIdentity'])

// Denials are built once: evaluate returns shared frozen values and allocates nothing to refuse.
const DENY = Object.freeze({
  'too-long': Object.freeze(denialOf(new PORTCULLIS_SUBPROTOCOL_TOO_LONG())),
  'too-many': Object.freeze(denialOf(new PORTCULLIS_SUBPROTOCOL_TOO_MANY())),
  'empty-element': Object.freeze(denialOf(new PORTCULLIS_SUBPROTOCOL_MALFORMED())),
  'invalid-character': Object.freeze(denialOf(new PORTCULLIS_SUBPROTOCOL_MALFORMED())),
  duplicate: Object.freeze(denialOf(new PORTCULLIS_SUBPROTOCOL_DUPLICATE())),
  unsupported: Object.freeze(denialOf(new PORTCULLIS_SUBPROTOCOL_UNSUPPORTED())),
  tooManyConnections: Object.freeze(denialOf(new PORTCULLIS_TOO_MANY_CONNECTIONS()))
}) satisfies Record<string, Denial>

/** The compiled `wsPolicy.protocols` of one route. */
interface CompiledRoute {
  accept: readonly string[]
  required: boolean
  /** Per negotiated protocol: its guard factory and connection limit. */
  plans: Map<string, CompiledPlan>
  /** When the route accepts protocols but none was negotiated (`required: false`). */
  none: CompiledPlan | undefined
  describe: string
}

interface CompiledPlan {
  factory: ConnectionGuardFactory
  maxConnections: number
}

const NO_PROTOCOLS: CompiledRoute = Object.freeze({
  accept: Object.freeze([]) as readonly string[],
  required: false,
  plans: new Map(),
  none: undefined,
  describe: 'none (malformed offers refused)'
})

async function portcullisSubprotocols (fastify: FastifyInstance, opts: SubprotocolsOptions): Promise<void> {
  validateOptions(opts)
  if (fastify.wsPolicy === undefined) {
    throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('register @portcullis/policy before @portcullis/subprotocols')
  }
  const pluginLimits: SubprotocolLimits = { ...defaults.limits, ...defined(opts.limits) }
  const header: HeaderLimits = { ...defaults.header, ...defined(opts.header) }
  const protocols = new Map<string, Readonly<SubprotocolDefinition>>()
  let locked = false

  const registry: SubprotocolRegistry = {
    register (name, definition) {
      if (locked) throw new PORTCULLIS_SUBPROTOCOL_LATE_REGISTRATION(JSON.stringify(String(name)))
      if (typeof name !== 'string' || name.length > MAX_NAME_LENGTH || !isToken(name)) {
        throw new PORTCULLIS_SUBPROTOCOL_INVALID_NAME(JSON.stringify(typeof name === 'string' ? name.slice(0, 64) : String(name)))
      }
      if (protocols.has(name)) throw new PORTCULLIS_SUBPROTOCOL_DUPLICATE_NAME(name)
      protocols.set(name, validateDefinition(name, definition))
    },
    has: (name) => protocols.has(name),
    get: (name) => protocols.get(name),
    names: () => [...protocols.keys()]
  }
  for (const [name, definition] of Object.entries(opts.protocols ?? {})) registry.register(name, definition)

  fastify.decorate('portcullisProtocols', registry)

  fastify.wsPolicy.addStage<SubprotocolRouteOption, CompiledRoute>({
    name: 'subprotocol',
    phase: 'subprotocol',
    option: 'protocols',
    compile: compileRoute,
    evaluate: evaluateSubprotocol,
    describe: (compiled) => compiled.describe
  })

  fastify.addHook('onReady', function portcullisSubprotocolsLock (done) {
    locked = true
    done()
  })

  /** Validate a route's `protocols` and precompile one guard factory per acceptable protocol. */
  function compileRoute (value: SubprotocolRouteOption | undefined): CompiledRoute {
    if (value === undefined) return NO_PROTOCOLS
    const spec: SubprotocolRoutePolicy = Array.isArray(value) ? { accept: value } : value as SubprotocolRoutePolicy
    if (spec === null || typeof spec !== 'object') {
      throw new TypeError('must be a list of registered subprotocol names, or { accept, required, limits }')
    }
    for (const key of Object.keys(spec)) {
      if (!ROUTE_KEYS.has(key)) throw new TypeError(`unknown key "${key}" (known: ${[...ROUTE_KEYS].join(', ')})`)
    }
    const accept = spec.accept
    if (!Array.isArray(accept) || accept.length === 0) throw new TypeError('accept must be a non-empty list of registered subprotocol names')
    for (let i = 0; i < accept.length; i++) {
      const name = accept[i]
      if (typeof name !== 'string' || !protocols.has(name)) {
        throw new PORTCULLIS_SUBPROTOCOL_NOT_REGISTERED(JSON.stringify(String(name).slice(0, 64)))
      }
      if (accept.indexOf(name) !== i) throw new TypeError(`accept lists "${name}" twice`)
    }
    if (spec.required !== undefined && typeof spec.required !== 'boolean') throw new TypeError('required must be a boolean')
    if (spec.limits !== undefined) validateLimits(spec.limits, 'limits', (m) => new TypeError(m))
    const required = spec.required ?? true

    const plans = new Map<string, CompiledPlan>()
    const rows: string[] = []
    for (const name of accept) {
      const def = protocols.get(name) as SubprotocolDefinition
      const limits = resolveLimits(spec.limits, def.limits, pluginLimits)
      plans.set(name, plan({ protocol: name, ...dataTypeFlags(def.dataTypes ?? 'text'), limits, open: def.open, inspect: statelessOf(def) }))
      rows.push(`${name} [${def.describe ?? 'no inspector'}, ${describeLimits(limits)}]`)
    }
    let none: CompiledPlan | undefined
    if (!required) {
      // no subprotocol negotiated: no inspector, but the route's limits still hold
      const limits = resolveLimits(spec.limits, undefined, pluginLimits)
      none = plan({ protocol: undefined, text: true, binary: true, limits, open: undefined })
      rows.push(`none [${describeLimits(limits)}]`)
    }
    return {
      accept: Object.freeze([...accept]),
      required,
      plans,
      none,
      describe: `accept ${rows.join(', ')}${required ? ' (required)' : ''}`
    }
  }

  /**
   * Both doors: parse the offer, choose by the route's preference, check the per-identity
   * connection limit, and hand the core the chosen name and the message guard. Synchronous.
   */
  function evaluateSubprotocol (ctx: ConnectionContext, compiled: CompiledRoute): StageResult {
    let chosen: string | undefined
    if (ctx.offeredProtocols !== undefined) {
      let offered: string[]
      try {
        offered = parseProtocolHeader(ctx.offeredProtocols, header)
      } catch (err) {
        if (err instanceof ProtocolHeaderError) return DENY[err.problem]
        throw err
      }
      chosen = selectProtocol(offered, compiled.accept)
    }
    let p: CompiledPlan | undefined
    if (chosen === undefined) {
      if (compiled.required) return DENY.unsupported
      p = compiled.none
    } else {
      p = compiled.plans.get(chosen)
    }
    if (p === undefined) return undefined // the route negotiates no subprotocol
    // `resumed`: the fallback's poll/send/close continue a connection counted when it opened;
    // counting it again would refuse a client's own next poll
    if (p.maxConnections !== Infinity && !ctx.resumed) {
      // counts live connections (both doors); concurrent handshakes of one identity may each
      // pass before either is attached — a soft limit, exact once connections are open
      const id = ctx.state.identity?.id
      if (id !== undefined && fastify.wsPolicy.connectionsOf(id) >= p.maxConnections) return DENY.tooManyConnections
    }
    // the core answers exactly this name in the 101 (handleProtocols), never the client's text
    if (chosen !== undefined) ctx.state.protocol = chosen
    addConnectionGuard(ctx.state, p.factory)
    return undefined
  }
}

/**
 * The keys of `o` whose value is not `undefined`: `{ maxMessageBytes: undefined }` (a config
 * read from an unset variable) must leave the default in place, not switch the limit off.
 */
function defined<T extends object> (o: T | undefined): Partial<T> {
  const out: Partial<T> = {}
  if (o === undefined) return out
  for (const key of Object.keys(o) as Array<keyof T>) if (o[key] !== undefined) out[key] = o[key]
  return out
}

/** A built-in definition's stateless inspector, if its `open` is still the one it came with. */
function statelessOf (def: SubprotocolDefinition): StatelessInspector | undefined {
  const s = (def as { [kInspect]?: { open: unknown, inspect: StatelessInspector } })[kInspect]
  return s !== undefined && s.open === def.open ? s.inspect : undefined
}

function plan (p: GuardPlan): CompiledPlan {
  return { factory: guardFactory(p), maxConnections: p.limits.maxConnectionsPerIdentity }
}

function resolveLimits (route: SubprotocolLimits | undefined, protocol: SubprotocolLimits | undefined, plugin: SubprotocolLimits): ResolvedLimits {
  const pick = <K extends keyof SubprotocolLimits>(k: K): SubprotocolLimits[K] =>
    route?.[k] !== undefined ? route[k] : protocol?.[k] !== undefined ? protocol[k] : plugin[k]
  const maxBytes = pick('maxMessageBytes')
  const rate = pick('rate')
  const maxConn = pick('maxConnectionsPerIdentity')
  return {
    maxMessageBytes: maxBytes === false || maxBytes === undefined ? Infinity : maxBytes,
    rate: rate === false || rate === undefined ? undefined : { messagesPerSecond: rate.messagesPerSecond, burst: rate.burst ?? Math.max(1, Math.ceil(rate.messagesPerSecond)) },
    maxConnectionsPerIdentity: maxConn === false || maxConn === undefined ? Infinity : maxConn
  }
}

function describeLimits (l: ResolvedLimits): string {
  const parts = [l.maxMessageBytes === Infinity ? 'no size limit' : `<= ${l.maxMessageBytes} B`]
  if (l.rate !== undefined) parts.push(`${l.rate.messagesPerSecond}/s burst ${l.rate.burst}`)
  if (l.maxConnectionsPerIdentity !== Infinity) parts.push(`${l.maxConnectionsPerIdentity} conn/identity`)
  return parts.join(', ')
}

function validateOptions (opts: SubprotocolsOptions): void {
  const fail = (m: string): Error => new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION(m)
  if (opts === null || typeof opts !== 'object') throw fail('options must be an object')
  for (const key of Object.keys(opts)) {
    if (!OPTION_KEYS.has(key)) throw fail(`unknown option "${key}" (known: ${[...OPTION_KEYS].join(', ')})`)
  }
  if (opts.protocols !== undefined && (opts.protocols === null || typeof opts.protocols !== 'object' || Array.isArray(opts.protocols))) {
    throw fail('protocols must be an object of subprotocol definitions by name, e.g. { \'chat.v1\': json({ schema }) }')
  }
  if (opts.limits !== undefined) validateLimits(opts.limits, 'limits', fail)
  if (opts.header !== undefined) {
    if (opts.header === null || typeof opts.header !== 'object') throw fail('header must be an object { maxLength, maxCount }')
    for (const key of Object.keys(opts.header)) {
      if (!HEADER_KEYS.has(key)) throw fail(`header: unknown key "${key}" (known: ${[...HEADER_KEYS].join(', ')})`)
    }
    for (const key of ['maxLength', 'maxCount'] as const) {
      const v = opts.header[key]
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw fail(`header.${key} must be a positive integer`)
    }
    const count = opts.header.maxCount
    if (count !== undefined && count > MAX_HEADER_COUNT) throw fail(`header.maxCount must be at most ${MAX_HEADER_COUNT}`)
  }
}

function validateDefinition (name: string, def: SubprotocolDefinition): Readonly<SubprotocolDefinition> {
  const fail = (m: string): Error => new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION(`subprotocol ${name}: ${m}`)
  if (def === null || typeof def !== 'object') throw fail('the definition must be an object (json(), stomp() or { dataTypes, limits, open })')
  if (def.dataTypes !== undefined && !DATA_TYPES.includes(def.dataTypes)) throw fail(`dataTypes must be one of ${DATA_TYPES.join(', ')}`)
  if (def.open !== undefined && typeof def.open !== 'function') throw fail('open must be a function (ctx) => inspector')
  if (def.describe !== undefined && typeof def.describe !== 'string') throw fail('describe must be a string')
  if (def.limits !== undefined) validateLimits(def.limits, 'limits', fail)
  return Object.freeze({ ...def })
}

function validateLimits (limits: SubprotocolLimits, where: string, fail: (m: string) => Error): void {
  if (limits === null || typeof limits !== 'object' || Array.isArray(limits)) throw fail(`${where} must be an object`)
  for (const key of Object.keys(limits)) {
    if (!LIMIT_KEYS.has(key)) throw fail(`${where}: unknown key "${key}" (known: ${[...LIMIT_KEYS].join(', ')})`)
  }
  const positiveIntOrFalse = (v: unknown, key: string): void => {
    if (v !== undefined && v !== false && (!Number.isSafeInteger(v) || (v as number) < 1)) throw fail(`${where}.${key} must be a positive integer or false`)
  }
  positiveIntOrFalse(limits.maxMessageBytes, 'maxMessageBytes')
  positiveIntOrFalse(limits.maxConnectionsPerIdentity, 'maxConnectionsPerIdentity')
  const rate = limits.rate
  if (rate !== undefined && rate !== false) {
    if (rate === null || typeof rate !== 'object') throw fail(`${where}.rate must be { messagesPerSecond, burst } or false`)
    if (typeof rate.messagesPerSecond !== 'number' || !Number.isFinite(rate.messagesPerSecond) || rate.messagesPerSecond <= 0) {
      throw fail(`${where}.rate.messagesPerSecond must be a positive number`)
    }
    if (rate.burst !== undefined && (!Number.isSafeInteger(rate.burst) || rate.burst < 1)) throw fail(`${where}.rate.burst must be a positive integer`)
  }
}

const plugin = fp(portcullisSubprotocols, {
  name: '@portcullis/subprotocols',
  fastify: '5.x',
  dependencies: ['@portcullis/policy']
})

export default plugin
export { plugin as portcullisSubprotocols }
export { json, JsonViolations, type JsonInspectorOptions } from './json.js'
export { stomp, StompViolations, type StompInspectorOptions } from './stomp.js'
export { parsedMessage, policyViolation, TokenBucket, Violations } from './guard.js'
export { defaultHeaderLimits, isToken, parseProtocolHeader, ProtocolHeaderError, selectProtocol } from './header.js'
export type { HeaderLimits, ProtocolHeaderProblem } from './header.js'
export { CLIENT_COMMANDS, parseStompFrames, stompHeader, StompSyntaxError } from './stomp-frame.js'
export type { StompClientCommand, StompFrame, StompFrameLimits, StompProblem } from './stomp-frame.js'
export * as errors from './errors.js'
export type * from './types.js'
