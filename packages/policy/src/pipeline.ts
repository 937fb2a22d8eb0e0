import type { FastifyRequest } from 'fastify'
import type {
  AuditEvent, ConnectionContext, Decision, Denial, PortcullisRoutePolicy, PortcullisState,
  ProtectedRoute, StageDefinition, StagePhase, StageResult, Transport, TransportDefinition
} from './types.js'
import { Context } from './context.js'
import {
  PORTCULLIS_DUPLICATE_STAGE, PORTCULLIS_INVALID_ROUTE_POLICY, PORTCULLIS_LATE_REGISTRATION,
  PORTCULLIS_NO_ORIGIN_STAGE, PORTCULLIS_STAGE_FAILED, PORTCULLIS_STAGE_TIMEOUT
} from './errors.js'

const PHASES: readonly StagePhase[] = ['origin', 'identity', 'subprotocol', 'custom']
const CORE_KEYS = new Set(['reportOnly', 'origin'])

interface CompiledStage {
  def: StageDefinition<any, any>
  compiled: unknown
  reportOnly: boolean
}

/** The core's view of a protected route: the public fields plus the compiled stage list. */
export interface CompiledRoute extends ProtectedRoute {
  stages: CompiledStage[]
  originDisabled: boolean
  transports: Map<TransportDefinition<any, any>, unknown>
  /** Per transport: admissions (resumed long-poll requests excluded), denials and reports per code. */
  counters: Record<string, RouteCounters>
}

export interface RouteCounters { allowed: number, denied: Record<string, number>, reported: Record<string, number> }

export type Recorder = (ctx: ConnectionContext, denial: Denial, action: AuditEvent['action'], route: CompiledRoute) => void
/** Told of every final decision of either door, with the time the evaluation took. */
export type DecisionObserver = (ctx: ConnectionContext, route: CompiledRoute, decision: Decision, seconds: number) => void

/**
 * The stage registry and the one evaluation function both doors call. Stages are kept sorted by
 * phase, then registration order, so the evaluation order is fixed and documented.
 */
export class Pipeline {
  readonly stages: StageDefinition<any, any>[] = []
  readonly transports: TransportDefinition<any, any>[] = []
  readonly routes = new Map<string, CompiledRoute>()
  #locked: string | undefined
  readonly record: Recorder
  readonly observe: DecisionObserver | undefined
  readonly stageTimeoutMs: number

  constructor (record: Recorder, stageTimeoutMs = 5000, observe?: DecisionObserver) {
    this.record = record
    this.stageTimeoutMs = stageTimeoutMs
    this.observe = observe
  }

  lock (reason: string): void {
    this.#locked ??= reason
  }

  #assertOpen (what: string): void {
    if (this.#locked !== undefined) throw new PORTCULLIS_LATE_REGISTRATION(what, this.#locked)
  }

  addStage (stage: StageDefinition<any, any>): void {
    this.#assertOpen(`stage "${String(stage?.name)}"`)
    validateStage(stage)
    if (this.stages.some(s => s.name === stage.name)) throw new PORTCULLIS_DUPLICATE_STAGE(stage.name)
    if (stage.option !== undefined && (CORE_KEYS.has(stage.option) && stage.phase !== 'origin')) {
      throw new PORTCULLIS_DUPLICATE_STAGE(`${stage.name} (option "${stage.option}" is reserved)`)
    }
    const phase = PHASES.indexOf(stage.phase)
    let at = this.stages.length
    while (at > 0 && PHASES.indexOf(this.stages[at - 1].phase) > phase) at--
    this.stages.splice(at, 0, stage)
  }

  addTransport (transport: TransportDefinition<any, any>): void {
    this.#assertOpen(`transport "${String(transport?.name)}"`)
    this.transports.push(transport)
  }

  /** Validate and precompile a route's policy (runs in `onRoute`: a mistake fails startup). */
  compile (url: string, raw: unknown, defaults: PortcullisRoutePolicy, handler: ProtectedRoute['handler']): CompiledRoute {
    if (raw !== undefined && (raw === null || typeof raw !== 'object' || Array.isArray(raw))) {
      throw new PORTCULLIS_INVALID_ROUTE_POLICY(url, 'wsPolicy must be an object')
    }
    const known = new Set(CORE_KEYS)
    for (const s of this.stages) if (s.option !== undefined) known.add(s.option)
    for (const t of this.transports) if (t.option !== undefined) known.add(t.option)
    for (const key of Object.keys(raw ?? {})) {
      if (!known.has(key)) {
        throw new PORTCULLIS_INVALID_ROUTE_POLICY(url, `unknown key "${key}" (known: ${[...known].join(', ')}); is the plugin that owns it registered before the route?`)
      }
    }
    const policy: PortcullisRoutePolicy = { ...defaults, ...(raw as PortcullisRoutePolicy | undefined) }

    const reportOnly = policy.reportOnly ?? false
    const stageNames = new Set(this.stages.map(s => s.name))
    if (typeof reportOnly !== 'boolean') {
      if (!Array.isArray(reportOnly) || reportOnly.some(n => typeof n !== 'string' || !stageNames.has(n))) {
        throw new PORTCULLIS_INVALID_ROUTE_POLICY(url, `reportOnly must be a boolean or a list of stage names (${[...stageNames].join(', ') || 'none registered'})`)
      }
    }

    const originDisabled = policy.origin === false
    if (!originDisabled && !this.stages.some(s => s.phase === 'origin')) throw new PORTCULLIS_NO_ORIGIN_STAGE(url)

    const info = { url, policy }
    const stages: CompiledStage[] = []
    for (const def of this.stages) {
      if (originDisabled && def.phase === 'origin') continue
      let compiled: unknown
      try {
        compiled = def.compile === undefined ? undefined : def.compile(def.option === undefined ? undefined : (policy as Record<string, unknown>)[def.option], info)
      } catch (err) {
        throw new PORTCULLIS_INVALID_ROUTE_POLICY(url, `${def.option ?? def.name}: ${(err as Error).message}`)
      }
      const ro = def.reportOnly === true || reportOnly === true || (Array.isArray(reportOnly) && reportOnly.includes(def.name))
      stages.push({ def, compiled, reportOnly: ro })
    }
    const transports = new Map<TransportDefinition<any, any>, unknown>()
    for (const t of this.transports) {
      try {
        transports.set(t, t.compile === undefined ? undefined : t.compile(t.option === undefined ? undefined : (policy as Record<string, unknown>)[t.option], info))
      } catch (err) {
        throw new PORTCULLIS_INVALID_ROUTE_POLICY(url, `${t.option ?? t.name}: ${(err as Error).message}`)
      }
    }

    const route: CompiledRoute = {
      url,
      handler,
      policy,
      endpoints: [],
      compiled: (name: string) => stages.find(s => s.def.name === name)?.compiled,
      stages,
      originDisabled,
      transports,
      counters: {},
      evaluate: (request: FastifyRequest, transport: Transport, offered?: string, resumed?: boolean) =>
        // the request's one Context, if the endpoint's CORS hook made it (issue 14)
        this.evaluate(Context.take(request, transport, url, offered, resumed), route)
    }
    this.routes.set(url, route)
    // a stage added from now on would silently not apply to this route
    this.lock(`route ${url} was registered`)
    return route
  }

  /**
   * Run the stages in order. Synchronous while every stage answers synchronously (the common
   * case: origin and a cached session), so the handshake pays no promise allocation; the first
   * stage that returns a promise switches the rest of the run to async.
   * A stage that throws fails closed with a 500 and a stable code; its message is logged, not sent.
   * An async stage that has not settled within `stageTimeoutMs` fails closed with a 503
   * (`PORTCULLIS_STAGE_TIMEOUT`); its late answer is ignored.
   */
  evaluate (ctx: ConnectionContext, route: CompiledRoute): Decision | Promise<Decision> {
    // timed only when someone records the duration (metrics with an SDK)
    const t0 = this.observe === undefined ? 0 : performance.now()
    const decision = this.#run(ctx, route, 0, [])
    if (decision instanceof Promise) return decision.then((d) => this.#count(ctx, route, d, t0))
    return this.#count(ctx, route, decision, t0)
  }

  /** The one place a decision is counted (stats per transport, then metrics): both doors, every outcome. */
  #count (ctx: ConnectionContext, route: CompiledRoute, decision: Decision, t0: number): Decision {
    const c = route.counters[ctx.transport] ?? (route.counters[ctx.transport] = { allowed: 0, denied: {}, reported: {} })
    for (let i = 0; i < decision.reported.length; i++) {
      const code = decision.reported[i].code
      c.reported[code] = (c.reported[code] ?? 0) + 1
    }
    if (!decision.allowed) c.denied[decision.denial.code] = (c.denied[decision.denial.code] ?? 0) + 1
    // a resumed request (a long-poll poll/send) is not a new connection: count admissions once
    else if (!ctx.resumed) c.allowed++
    if (this.observe !== undefined) this.observe(ctx, route, decision, (performance.now() - t0) / 1000)
    return decision
  }

  #run (ctx: ConnectionContext, route: CompiledRoute, from: number, reported: Denial[]): Decision | Promise<Decision> {
    const stages = route.stages
    for (let i = from; i < stages.length; i++) {
      const entry = stages[i]
      let result: StageResult | Promise<StageResult>
      try {
        result = entry.def.evaluate(ctx, entry.compiled)
      } catch (err) {
        return this.#failed(ctx, route, entry, err, reported)
      }
      if (result !== undefined && typeof (result as Promise<StageResult>).then === 'function') {
        return this.#await(result as Promise<StageResult>, ctx, route, i, reported)
      }
      const denied = this.#settle(ctx, route, entry, result as StageResult, reported)
      if (denied !== undefined) return denied
    }
    return { allowed: true, state: ctx.state, reported }
  }

  /** Wait for stage `i`'s answer, at most `stageTimeoutMs`; then go on with the next stage. */
  #await (pending: Promise<StageResult>, ctx: ConnectionContext, route: CompiledRoute, i: number, reported: Denial[]): Promise<Decision> {
    const entry = route.stages[i]
    return new Promise<Decision>((resolve, reject) => {
      let decided = false
      const timer = setTimeout(() => {
        decided = true
        try {
          resolve(this.#timedOut(ctx, route, entry, reported))
        } catch (err) {
          reject(err)
        }
      }, this.stageTimeoutMs)
      // the connection's socket keeps the process alive, not this timer (after fastify.close(),
      // which answers pending handshakes itself, it must not hold the process for its duration)
      timer.unref()
      pending.then(
        (r) => {
          if (decided) return
          decided = true
          clearTimeout(timer)
          try {
            resolve(this.#settle(ctx, route, entry, r, reported) ?? this.#run(ctx, route, i + 1, reported))
          } catch (err) {
            reject(err)
          }
        },
        (err) => {
          if (decided) return
          decided = true
          clearTimeout(timer)
          try {
            resolve(this.#failed(ctx, route, entry, err, reported))
          } catch (e) {
            reject(e)
          }
        }
      )
    })
  }

  #settle (ctx: ConnectionContext, route: CompiledRoute, entry: CompiledStage, result: StageResult, reported: Denial[]): Decision | undefined {
    if (result === undefined) return undefined
    const denial: Denial = { status: result.status, code: result.code, reason: result.reason, stage: entry.def.name }
    if (result.headers !== undefined) denial.headers = result.headers
    if (entry.reportOnly) {
      reported.push(denial)
      this.record(ctx, denial, 'report', route)
      return undefined
    }
    this.record(ctx, denial, 'deny', route)
    return { allowed: false, denial, state: ctx.state, reported }
  }

  #failed (ctx: ConnectionContext, route: CompiledRoute, entry: CompiledStage, err: unknown, reported: Denial[]): Decision {
    ctx.request.log.error({ err, portcullis: { stage: entry.def.name, route: route.url } }, 'portcullis: stage failed')
    const e = new PORTCULLIS_STAGE_FAILED()
    // a failing stage never lets a request through, even in report-only mode: fail closed
    const denial: Denial = { status: e.statusCode ?? 500, code: e.code, reason: e.message, stage: entry.def.name }
    this.record(ctx, denial, 'deny', route)
    return { allowed: false, denial, state: ctx.state, reported }
  }

  #timedOut (ctx: ConnectionContext, route: CompiledRoute, entry: CompiledStage, reported: Denial[]): Decision {
    ctx.request.log.error({ portcullis: { stage: entry.def.name, route: route.url, timeoutMs: this.stageTimeoutMs } }, 'portcullis: stage timed out')
    const e = new PORTCULLIS_STAGE_TIMEOUT()
    // like a failure: never let the request through, even in report-only mode
    const denial: Denial = { status: e.statusCode ?? 503, code: e.code, reason: e.message, stage: entry.def.name }
    this.record(ctx, denial, 'deny', route)
    return { allowed: false, denial, state: ctx.state, reported }
  }
}

function validateStage (stage: StageDefinition<any, any>): void {
  const bad = (why: string): never => { throw new TypeError(`Invalid Portcullis stage: ${why}`) }
  if (stage === null || typeof stage !== 'object') bad('a stage must be an object')
  if (typeof stage.name !== 'string' || stage.name.length === 0) bad('name must be a non-empty string')
  if (!PHASES.includes(stage.phase)) bad(`phase must be one of ${PHASES.join(', ')}`)
  if (typeof stage.evaluate !== 'function') bad('evaluate must be a function')
  if (stage.compile !== undefined && typeof stage.compile !== 'function') bad('compile must be a function')
  if (stage.option !== undefined && (typeof stage.option !== 'string' || stage.option.length === 0)) bad('option must be a non-empty string')
}

export type { PortcullisState }
