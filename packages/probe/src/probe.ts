/**
 * The runner: validate the options, make sure the well-formed handshake is accepted (else
 * every refusal would prove nothing), then run each check in turn on its own connection,
 * within the request budget, and return the report.
 */
import { Budget, BudgetSpent, Context, describe, Skip } from './context.js'
import { skip, type CheckDef, type Verdict } from './check.js'
import { websocketChecks } from './checks-websocket.js'
import { closeLongPoll, longPollChecks, openLongPoll } from './checks-fallback.js'
import { PORTCULLIS_PROBE_BAD_OPTION, PORTCULLIS_PROBE_BASELINE_REFUSED, PORTCULLIS_PROBE_UNREACHABLE } from './errors.js'
import { WireError, type Target } from './wire.js'
import type { Check, ProbeOptions, Report } from './types.js'

export const defaults = Object.freeze({
  fallback: false,
  maxRequests: 200,
  ratePerSecond: 20,
  timeoutMs: 5000
})

const LIMITS = Object.freeze({
  maxRequests: [1, 1000],
  ratePerSecond: [1, 100],
  timeoutMs: [100, 60_000]
}) satisfies Record<string, [number, number]>

/** Every check the probe knows, in the order it runs them. */
export const checkDefinitions: readonly CheckDef[] = Object.freeze([...websocketChecks, ...longPollChecks])

export interface Plan {
  target: Target
  /** The URL as reports show it (no user info, no query). */
  shown: string
  origin: string
  cookie: string | undefined
  protocol: string | undefined
  fallback: boolean
  maxRequests: number
  ratePerSecond: number
  timeoutMs: number
}

/** Validate the options (throws `PORTCULLIS_PROBE_BAD_OPTION` naming what is allowed). */
export function plan (opts: ProbeOptions): Plan {
  if (opts === null || typeof opts !== 'object') throw new PORTCULLIS_PROBE_BAD_OPTION('options must be an object')
  if (typeof opts.url !== 'string') throw new PORTCULLIS_PROBE_BAD_OPTION('url must be a ws:// or wss:// URL')
  let u: URL
  try { u = new URL(opts.url) } catch { throw new PORTCULLIS_PROBE_BAD_OPTION('url must be a ws:// or wss:// URL') }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new PORTCULLIS_PROBE_BAD_OPTION(`url must be a ws:// or wss:// URL, not ${u.protocol}//`)
  if (u.hash !== '') throw new PORTCULLIS_PROBE_BAD_OPTION('url must not have a fragment')
  if (typeof opts.origin !== 'string') throw new PORTCULLIS_PROBE_BAD_OPTION('origin is required: an origin the app allows, e.g. https://app.example.com')
  let o: URL
  try { o = new URL(opts.origin) } catch { throw new PORTCULLIS_PROBE_BAD_OPTION('origin must be a serialized origin such as https://app.example.com') }
  if ((o.protocol !== 'http:' && o.protocol !== 'https:') || o.origin !== opts.origin) {
    throw new PORTCULLIS_PROBE_BAD_OPTION('origin must be a serialized origin such as https://app.example.com (scheme, host, optional port; no path or trailing slash)')
  }
  if (opts.cookie !== undefined && (typeof opts.cookie !== 'string' || opts.cookie.trim() === '' || /[\r\n\0]/.test(opts.cookie))) {
    throw new PORTCULLIS_PROBE_BAD_OPTION('cookie must be a non-empty Cookie header value on one line')
  }
  if (opts.protocol !== undefined && (typeof opts.protocol !== 'string' || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$/.test(opts.protocol))) {
    throw new PORTCULLIS_PROBE_BAD_OPTION('protocol must be one subprotocol token (RFC 6455 §4.1), e.g. chat.v1')
  }
  if (opts.fallback !== undefined && typeof opts.fallback !== 'boolean') throw new PORTCULLIS_PROBE_BAD_OPTION('fallback must be a boolean')
  const num = (name: keyof typeof LIMITS): number => {
    const v = opts[name] ?? defaults[name]
    const [min, max] = LIMITS[name]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new PORTCULLIS_PROBE_BAD_OPTION(`${name} must be an integer from ${min} to ${max}`)
    return v
  }
  const secure = u.protocol === 'wss:'
  const target: Target = {
    secure,
    hostname: u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname,
    port: u.port === '' ? (secure ? 443 : 80) : Number(u.port),
    host: u.host,
    path: (u.pathname === '' ? '/' : u.pathname) + u.search,
    ca: opts.ca
  }
  return {
    target,
    shown: `${u.protocol}//${u.host}${u.pathname}`,
    origin: opts.origin,
    cookie: opts.cookie,
    protocol: opts.protocol,
    fallback: opts.fallback ?? defaults.fallback,
    maxRequests: num('maxRequests'),
    ratePerSecond: num('ratePerSecond'),
    timeoutMs: num('timeoutMs')
  }
}

/**
 * Probe a WebSocket route (and, with `fallback`, its long-poll door). Resolves with the report
 * whatever the findings; rejects with `PORTCULLIS_PROBE_BAD_OPTION`, `PORTCULLIS_PROBE_UNREACHABLE`
 * or `PORTCULLIS_PROBE_BASELINE_REFUSED` when no report can be made.
 */
export async function probe (opts: ProbeOptions): Promise<Report> {
  const p = plan(opts)
  const ctx = new Context({
    target: p.target,
    shown: p.shown,
    origin: p.origin,
    cookie: p.cookie,
    protocol: p.protocol,
    timeoutMs: p.timeoutMs,
    budget: new Budget(p.maxRequests, p.ratePerSecond)
  })
  await baseline(ctx)

  const checks: Check[] = []
  for (const def of websocketChecks) checks.push(await runOne(ctx, def))
  if (p.fallback) {
    await guarded(ctx, () => openLongPoll(ctx))
    for (const def of longPollChecks) checks.push(await runOne(ctx, def))
    await guarded(ctx, () => closeLongPoll(ctx))
  } else {
    for (const def of longPollChecks) checks.push(toCheck(ctx, def, skip('not probed (pass --fallback)')))
  }
  return { target: p.shown, checks, findings: checks.filter((c) => c.result === 'fail').length }
}

async function baseline (ctx: Context): Promise<void> {
  let up
  try {
    up = await ctx.upgrade()
  } catch (err) {
    if (err instanceof WireError) throw new PORTCULLIS_PROBE_UNREACHABLE(`${ctx.shown}: ${err.message}`)
    throw err
  }
  if (up.conn === undefined) {
    throw new PORTCULLIS_PROBE_BASELINE_REFUSED(`${ctx.shown} answered ${describe(up.answer)} to the handshake with the given origin, cookie and protocol; pass an --origin the app allows (and --cookie, --protocol if the route needs them)`)
  }
  await up.conn.close()
  if (up.acceptOk !== true) throw new PORTCULLIS_PROBE_BASELINE_REFUSED(`${ctx.shown} answered 101 with a wrong Sec-WebSocket-Accept (RFC 6455 §4.2.2): this is not a WebSocket server`)
  if (ctx.protocol !== undefined && up.selected !== ctx.protocol) {
    throw new PORTCULLIS_PROBE_BASELINE_REFUSED(`${ctx.shown} accepted the handshake but selected ${up.selected === undefined ? 'no subprotocol' : `"${up.selected}"`}, not ${ctx.protocol}`)
  }
}

async function guarded (ctx: Context, fn: () => Promise<void>): Promise<void> {
  try { await fn() } catch (err) {
    if (!(err instanceof BudgetSpent)) throw err
    ctx.lpUnavailable = 'not run: the request budget is spent'
  }
}

async function runOne (ctx: Context, def: CheckDef): Promise<Check> {
  let v: Verdict
  try {
    v = await def.run(ctx)
  } catch (err) {
    if (err instanceof Skip) v = skip(err.message)
    else if (err instanceof BudgetSpent) v = skip(`not run: the request budget (--max-requests ${ctx.budget.max}) is spent`)
    else v = skip(`could not run: ${(err as Error).message}`)
  }
  return toCheck(ctx, def, v)
}

function toCheck (ctx: Context, def: CheckDef, v: Verdict): Check {
  const detail = ctx.redact(v.detail).replace(/[\r\n\t]+/g, ' ').slice(0, 240)
  return { id: def.id, category: def.category, door: def.door, result: v.result, detail, remedy: def.remedy }
}
