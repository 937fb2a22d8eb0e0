import { parse as parseQueryString } from 'node:querystring'
import type { FallbackOptions, FallbackRouteOption } from './types.js'
import type { Limits } from './node.js'
import { PORTCULLIS_FALLBACK_INVALID_OPTION } from './errors.js'

const MiB = 1024 * 1024
export const defaults = Object.freeze({
  pollTimeoutMs: 25_000,
  idleTimeoutMs: 60_000,
  closeLingerMs: 10_000,
  maxMessagesPerRequest: 64,
  maxBodyBytes: MiB,
  maxPayload: MiB,
  maxQueuedMessages: 1024,
  maxQueuedBytes: 4 * MiB,
  maxPollBytes: MiB,
  maxSessionsPerIdentity: 16,
  maxSessionsPerIp: 64,
  maxSessions: 10_000,
  maxPendingPollsPerIp: 64,
  storeTimeoutMs: 15_000,
  stream: true,
  // Fastify's default parser (fast-querystring) and Node's agree: repeated keys make arrays,
  // `+` is a space, percent-escapes are decoded
  querystringParser: parseQueryString as (query: string) => Record<string, unknown>
})

/** Options of the whole plugin, not per-route limits. */
const PLUGIN_KEYS = new Set(['maxPendingPollsPerIp', 'storeTimeoutMs', 'querystringParser'])
const LIMIT_KEYS = Object.freeze(Object.keys(defaults).filter(k => !PLUGIN_KEYS.has(k))) as ReadonlyArray<keyof Limits>
/** Route options that are switches, not numbers. */
const BOOLEAN_KEYS = new Set(['stream'])
/** Session caps may be 0 (no limit); every other limit is a positive integer. */
const ZERO_OK = new Set(['maxSessionsPerIdentity', 'maxSessionsPerIp', 'maxSessions'])
/** Node's timers hold at most 2^31 − 1 ms. */
const MAX_TIMER = 2 ** 31 - 1

export function definedOnly<T extends object> (o: T): Partial<T> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v
  return out as Partial<T>
}

export function pickLimits (o: Record<string, unknown>): Limits {
  const out: Record<string, unknown> = {}
  for (const k of LIMIT_KEYS) out[k] = o[k]
  return out as unknown as Limits
}

function checkLimits (o: Record<string, unknown>, where: string, Err: (msg: string) => Error): void {
  for (const [k, v] of Object.entries(o)) {
    if (!(LIMIT_KEYS as readonly string[]).includes(k)) throw Err(`${where}unknown limit "${k}" (known: ${LIMIT_KEYS.join(', ')})`)
    if (BOOLEAN_KEYS.has(k)) {
      if (typeof v !== 'boolean') throw Err(`${where}${k} must be a boolean`)
      continue
    }
    const min = ZERO_OK.has(k) ? 0 : 1
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || (k.endsWith('Ms') && v > MAX_TIMER)) {
      throw Err(`${where}${k} must be an integer ≥ ${min}${k.endsWith('Ms') ? ` and ≤ ${MAX_TIMER}` : ''}`)
    }
  }
}

function checkTimeouts (l: Limits, Err: (msg: string) => Error): void {
  if (l.idleTimeoutMs <= l.pollTimeoutMs) throw Err(`idleTimeoutMs (${l.idleTimeoutMs}) must exceed pollTimeoutMs (${l.pollTimeoutMs}), or a polling client would idle out`)
}

export function compileRoute (value: FallbackRouteOption | undefined, base: Limits): Limits | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true) return base
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError('must be true, false or an object of limits')
  const err = (m: string): Error => new TypeError(m)
  checkLimits(value as Record<string, unknown>, '', err)
  const merged = Object.freeze({ ...base, ...value })
  checkTimeouts(merged, err)
  return merged
}

export function validateOptions (opts: FallbackOptions): void {
  const err = (m: string): Error => new PORTCULLIS_FALLBACK_INVALID_OPTION(m)
  if (opts === null || typeof opts !== 'object') throw err('options must be an object')
  const { store, maxPendingPollsPerIp, storeTimeoutMs, querystringParser, ...rest } = opts
  if (store !== undefined) {
    const methods = ['start', 'stop', 'create', 'get', 'touch', 'destroy', 'pushOutbound', 'closeOutbound', 'readOutbound', 'watch', 'pushInbound', 'pushClientClose', 'publishRevocation'] as const
    if (store === null || typeof store !== 'object') throw err('store must implement FallbackStore')
    for (const m of methods) if (typeof store[m] !== 'function') throw err(`store must implement FallbackStore (missing ${m}())`)
    if (typeof store.nodeId !== 'string' || store.nodeId.length === 0) throw err('store.nodeId must be a non-empty string')
  }
  if (maxPendingPollsPerIp !== undefined && (!Number.isSafeInteger(maxPendingPollsPerIp) || maxPendingPollsPerIp < 1)) throw err('maxPendingPollsPerIp must be an integer ≥ 1')
  if (querystringParser !== undefined && typeof querystringParser !== 'function') throw err('querystringParser must be a function (query: string) => object')
  if (storeTimeoutMs !== undefined && (!Number.isSafeInteger(storeTimeoutMs) || storeTimeoutMs < 1 || storeTimeoutMs > MAX_TIMER)) throw err(`storeTimeoutMs must be an integer ≥ 1 and ≤ ${MAX_TIMER}`)
  checkLimits(definedOnly(rest) as Record<string, unknown>, '', err)
  checkTimeouts({ ...defaults, ...definedOnly(rest) } as Limits, err)
}
