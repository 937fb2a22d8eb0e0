// The route options (`websocket: true`) and the handler's `socket` type come from
// @fastify/websocket's declaration merging into 'fastify'. Nothing in these types names it, so
// without this directive the published .d.ts never loads that augmentation and a consumer's
// `app.get('/x', { websocket: true, wsPolicy }, (socket, req) => ...)` fails to compile.
// `preserve="true"` keeps the directive in the emitted .d.ts (TypeScript >= 5.5 drops it otherwise).
/// <reference types="@fastify/websocket" preserve="true" />
import type { IncomingHttpHeaders } from 'node:http'
import type { EventEmitter } from 'node:events'
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest, RawServerBase, RawServerDefault } from 'fastify'
import type { ServerOptions } from 'ws'
import type { MeterProvider } from '@opentelemetry/api'

/**
 * Which door a connection attempt came through. Stages must not care. `'stream'` is a
 * fallback request of the streaming downstream (`GET <path>/_lp/stream`); a fallback session is
 * opened as `'long-poll'` and its later requests are `'long-poll'` or `'stream'`.
 */
export type Transport = 'websocket' | 'long-poll' | 'stream'

/**
 * The phases of the pipeline, run in this fixed order. Within a phase, stages run in the order
 * they were registered. `origin` runs first because it is the cheapest check and the one that
 * stops Cross-Site WebSocket Hijacking before any session is looked up.
 */
export type StagePhase = 'origin' | 'identity' | 'subprotocol' | 'custom'

/**
 * A transport-neutral view of one connection attempt: a WebSocket upgrade or one HTTP request of
 * the long-poll fallback (open, poll, send, close). Built once per request by the core.
 */
export interface ConnectionContext {
  readonly transport: Transport
  /** The Fastify request (read-only use: stages must not reply). */
  readonly request: FastifyRequest
  /** The route URL pattern of the WebSocket route, e.g. `/chat` (the fallback reports its twin's). */
  readonly route: string
  /** The `Origin` header when exactly one line was sent, else `undefined`. */
  readonly origin: string | undefined
  /** How many `Origin` header lines the request carried (0 = missing; >1 is always denied by the origin stage). */
  readonly originHeaderCount: number
  /** `request.host` — honours Fastify's `trustProxy` (forwarded headers only when trusted). */
  readonly host: string
  /** `request.protocol` — `https` on a TLS server or a trusted `X-Forwarded-Proto`. */
  readonly scheme: 'http' | 'https'
  readonly headers: IncomingHttpHeaders
  readonly ip: string
  /**
   * The offered subprotocols as one string (several `Sec-WebSocket-Protocol` lines joined with
   * `, `), or `undefined` when none were offered. The fallback fills it from its open request.
   */
  readonly offeredProtocols: string | undefined
  /**
   * Cookies parsed from the `Cookie` header, every value kept per name (so a stage can see two
   * cookies with one name — cookie tossing). Parsed lazily on first access; values raw (not decoded).
   */
  readonly cookies: ReadonlyMap<string, readonly string[]>
  /**
   * Every raw value sent under cookie `name`, in order (two or more is cookie tossing), or
   * `undefined` when none: the same as `cookies.get(name)`, without parsing the other cookies.
   */
  cookieValues: (name: string) => readonly string[] | undefined
  /**
   * `true` when the request continues a connection that was already admitted (a long-poll
   * `poll`, `send` or `close`): every check runs again, but stages that count or rate-limit NEW
   * connections (per-identity connection limits) must not count it twice.
   */
  readonly resumed: boolean
  /** What stages attach for later stages and for the handler. Extend by declaration merging. */
  readonly state: PortcullisState
}

/** The identity a stage resolved (cookie session, HTTP authentication, ...). */
export interface PortcullisIdentity {
  /** A stable user id, for per-identity limits and logs. */
  id: string
  /** The session the identity came from, when any: `revoke(sessionId)` closes its connections. */
  sessionId?: string
  /** Epoch milliseconds after which the session is no longer valid; live connections close then. */
  expiresAt?: number
  /** Anything the app's loader returned. */
  data?: unknown
}

/**
 * Per-connection state written by stages. Plugins add their keys with declaration merging:
 * `declare module '@portcullis/policy' { interface PortcullisState { ... } }`.
 */
export interface PortcullisState {
  identity?: PortcullisIdentity
  /** The negotiated subprotocol (a registered name, never client text). */
  protocol?: string
  /**
   * Per-connection message guards, created when the connection opens (both doors). Add one with
   * `addConnectionGuard(ctx.state, factory)`. The core consumes the list when it attaches the
   * connection (it is `undefined` from then on; the guards made live in the core's record).
   */
  guards?: ConnectionGuardFactory[] | undefined
}

/** A policy denial: a value, not an exception. */
export interface Denial {
  /** HTTP status the WebSocket upgrade and the fallback both answer with (401, 403, 400, 429...). */
  status: number
  /** Stable machine code, e.g. `PORTCULLIS_ORIGIN_NOT_ALLOWED`. Part of the public API. */
  code: string
  /** Human text. Never echoes a secret (cookie, token, fallback id). */
  reason: string
  /** The stage that denied (filled in by the core). */
  stage?: string
  /**
   * Extra response headers for the denial on both doors, e.g. `WWW-Authenticate` on a 401
   * (RFC 9110 §11.6.1). Never put a secret here.
   */
  headers?: Readonly<Record<string, string>>
}

export type Decision =
  | { allowed: true, state: PortcullisState, reported: Denial[] }
  | { allowed: false, denial: Denial, state: PortcullisState, reported: Denial[] }

/** What the stage's `compile` receives besides the route's value. */
export interface RouteInfo {
  /** Route URL pattern, e.g. `/chat`. */
  url: string
  /** The whole merged route policy (defaults + route), for stages that read a sibling key. */
  policy: Readonly<PortcullisRoutePolicy>
}

export type StageResult = Denial | undefined | void

/**
 * A stage of the pipeline. Registered by a plugin with `fastify.wsPolicy.addStage()` before any
 * route. `compile` runs once per route at registration (validate, precompile, throw to fail
 * startup); `evaluate` runs per connection attempt on both doors with the compiled value.
 */
export interface StageDefinition<TOption = unknown, TCompiled = unknown> {
  /** Unique stage name, used in report-only lists, logs and `describe()`. */
  name: string
  phase: StagePhase
  /**
   * The key this stage owns in the route policy (`wsPolicy: { [option]: ... }`). Omit for a
   * stage without route options.
   */
  option?: string
  /** Validate and precompile the route's value (already merged over app defaults). Throw to fail startup. */
  compile?: (value: TOption | undefined, route: RouteInfo) => TCompiled
  /** Decide. Return a denial, or nothing to allow. May be async (keep the sync path sync for speed). */
  evaluate: (ctx: ConnectionContext, compiled: TCompiled) => StageResult | Promise<StageResult>
  /** One short line for `describe()`, e.g. `allow https://app.example.com (+2)`. */
  describe?: (compiled: TCompiled) => string
  /** Report-only for every route: log what would be denied, let it through. */
  reportOnly?: boolean
}

/**
 * Per-route policy, declared in route options as `wsPolicy`. The core owns `reportOnly`; each
 * stage plugin adds its own key by declaration merging, so a typo fails to compile.
 */
export interface PortcullisRoutePolicy {
  /**
   * Report-only for this route: `true` for every stage, or a list of stage names.
   * Denials are logged and audited with `reportOnly: true`, and the request goes through.
   */
  reportOnly?: boolean | string[]
  /**
   * `false` opts this route out of origin checking explicitly (shown loudly by `describe()`).
   * An object configures the origin stage (see `@portcullis/origin-guard`).
   */
  origin?: false | PortcullisOriginPolicy
}

/**
 * The origin stage's route options. Empty here; `@portcullis/origin-guard` adds its keys by
 * declaration merging, so the core can own the `origin: false` opt-out without knowing them.
 */
export interface PortcullisOriginPolicy {}

/**
 * One audit record of a security event, the same shape on both doors. Never holds a secret: no
 * cookie, token, session id or fallback id.
 * - `deny`: a connection attempt (or a long-poll request) was denied; `report`: it would have
 *   been (report-only). Both carry `status`, `origin`, `ip` and `requestId`.
 * - `close`: a live connection was closed for a security reason — a message guard (1003, 1008,
 *   1009, 4008), a limit (4009 slow consumer, 4010 idle, 4029), the session (4001, 4002, 4003),
 *   a peer breaking the protocol (1002, 1007) or a server fault (1011); `closeCode` and `reason`
 *   (a stable string naming the guard or limit) say which. `code` is `PORTCULLIS_CLOSE_<NAME>`.
 * - `revoke`: a session was revoked (`code` `PORTCULLIS_SESSION_REVOKED`); `connections` is how
 *   many of its live connections this node closed.
 */
export interface AuditEvent {
  time: number
  action: 'deny' | 'report' | 'close' | 'revoke'
  code: string
  /** HTTP status of a denial (`deny`, `report`). */
  status?: number
  /** The stage that decided (`deny`, `report`), `connection` for closes, `session` for revocations. */
  stage: string
  reason: string
  /** The route pattern (`deny`, `report`, `close`). */
  route?: string
  transport?: Transport
  /** The request's Origin (truncated to 256 characters), or undefined. */
  origin?: string | undefined
  ip?: string
  requestId?: string
  /** The WebSocket close code (`close`, `revoke`), as in RFC 6455 §7.4 and `CloseCodes`. */
  closeCode?: number
  /** Connections closed on this node (`revoke`). */
  connections?: number
}

/** Per-connection message guard (size, rate, protocol inspection). Same on both doors. */
export interface ConnectionGuard {
  /**
   * Called for every inbound message before any handler listener sees it. Return a violation to
   * drop the message and close the connection with its code and reason. Optional: a guard that
   * only watches the connection (and closes it itself) has none, and costs no call per message.
   * `socket` is the connection the message arrived on: a guard that keeps no per-connection
   * state can then be one object shared by every connection (no object per connection).
   */
  message?: (data: Buffer | string, isBinary: boolean, socket: PortcullisSocket) => Violation | undefined
  /** Called once when the connection closes (with its socket, as `message` is). */
  close?: (socket: PortcullisSocket) => void
}

export type ConnectionGuardFactory = (info: { state: PortcullisState, socket: PortcullisSocket, log: FastifyBaseLogger }) => ConnectionGuard

export interface Violation {
  /** WebSocket close code (RFC 6455 §7.4): 1008, 1009, 1003, or a Portcullis 4xxx code. */
  code: number
  /** Stable close reason (≤ 123 bytes, RFC 6455 §5.5). */
  reason: string
}

/**
 * The part of `ws`'s `WebSocket` API that handlers use, offered by both doors. A handler typed
 * with this socket compiles for the WebSocket route and its long-poll twin.
 */
export interface PortcullisSocket extends EventEmitter {
  readonly readyState: 0 | 1 | 2 | 3
  readonly protocol: string
  readonly bufferedAmount: number
  send: (data: string | Buffer | ArrayBuffer | ArrayBufferView, cb?: (err?: Error) => void) => void
  close: (code?: number, reason?: string | Buffer) => void
  terminate: () => void
}

/**
 * A transport (the long-poll fallback) is told about each protected WebSocket route as it is
 * registered, and registers its own endpoints for it on the same Fastify instance.
 */
export interface TransportDefinition<TOption = unknown, TCompiled = unknown> {
  name: string
  /** The key this transport owns in the route policy (e.g. `fallback`). */
  option?: string
  /** Validate and precompile the route's value. Throw to fail startup. */
  compile?: (value: TOption | undefined, route: RouteInfo) => TCompiled
  /**
   * Called from the core's `onRoute` for each protected route. `instance` is the encapsulated
   * instance the route was declared on; `path` is the route URL without that instance's prefix
   * (what `instance.route()` expects).
   */
  route: (route: ProtectedRoute, compiled: TCompiled, where: { instance: FastifyInstance, path: string }) => void
}

/** A compiled WebSocket route, as the core keeps it. */
export interface ProtectedRoute {
  url: string
  /** The route's handler as the app wrote it (the fallback calls it with its own socket). */
  handler: (socket: PortcullisSocket, request: FastifyRequest) => unknown
  /** The merged route policy. */
  policy: Readonly<PortcullisRoutePolicy>
  /** Extra rows for `describe()` (e.g. fallback endpoints). */
  endpoints: string[]
  /** The compiled value of a stage for this route (what its `compile` returned), or undefined. */
  compiled: (stageName: string) => unknown
  /** Set by the core: run the full pipeline for a request through this route. */
  evaluate: (request: FastifyRequest, transport: Transport, offeredProtocols?: string, resumed?: boolean) => Decision | Promise<Decision>
}

export interface PortcullisOptions {
  /** App-wide route policy defaults, merged key by key under each route's `wsPolicy`. Default `{}`. */
  defaults?: PortcullisRoutePolicy
  /**
   * Audit sink, called for every security event: denials, report-only would-be denials,
   * security closes of live connections and revocations. May be sync or async: a throw or a
   * rejection is caught and logged (at most one line per 10 s), a promise is never awaited, so a
   * sink never delays or changes a decision and never crashes the process. Default: none
   * (denials are still logged).
   */
  audit?: (event: AuditEvent) => unknown
  /**
   * Async audit calls that may be pending at once. Past it, events are dropped and counted in
   * `stats().audit.dropped` (a SIEM that is down cannot grow memory). Default `1000`.
   */
  auditMaxInFlight?: number
  /** How long a pending async audit call holds its slot before it counts as failed. Default `10000` ms. */
  auditTimeoutMs?: number
  /**
   * Record metrics through the OpenTelemetry API (`portcullis_decisions_total`,
   * `portcullis_closes_total`, `portcullis_connections`, `portcullis_revocations_total`,
   * `portcullis_decision_duration_seconds`). They cost nothing until the app installs an
   * OpenTelemetry SDK. Default `true`.
   */
  metrics?: boolean
  /** The OpenTelemetry MeterProvider to record into. Default: the global one (`metrics.getMeterProvider()`). */
  meterProvider?: MeterProvider
  /**
   * Options for the `ws` server that `@fastify/websocket` creates (the core registers it).
   * Default `maxPayload` is 1 MiB (ws's own default is 100 MiB). `handleProtocols` and `noServer`
   * are owned by Portcullis and refused here.
   */
  websocket?: Omit<ServerOptions, 'handleProtocols' | 'noServer' | 'server' | 'port' | 'host' | 'path' | 'verifyClient'> & {
    /**
     * How long ws waits for the peer's closing handshake before destroying the socket (ws 8.23
     * option, not yet in @types/ws). Default 5000 ms here (ws: 30000): a peer that never reads
     * must not hold its buffers for half a minute.
     */
    closeTimeout?: number
  }
  /**
   * Bytes a WebSocket may have queued for its peer (`bufferedAmount`) before Portcullis closes it
   * with 4009 `slow consumer` — `ws` itself has no bound, so a client that never reads could make
   * a broadcasting server buffer without limit. The long-poll door has its own bound
   * (`maxQueuedBytes`). `Infinity` turns it off. Default 4 MiB.
   */
  maxBufferedBytes?: number
  /** Log level for denials. Default `'warn'`. */
  denialLogLevel?: 'error' | 'warn' | 'info' | 'debug'
  /**
   * How long one async stage (a session store, an auth service) may take, in milliseconds. A
   * stage that has not settled by then fails closed: 503 `PORTCULLIS_STAGE_TIMEOUT` on both
   * doors, audited like any denial, and the upgrade socket is answered and closed instead of
   * held (once Node has emitted `upgrade`, no HTTP timeout covers it). `fastify.close()` does not
   * wait for it: handshakes still in evaluation get 503 `PORTCULLIS_SHUTTING_DOWN`. Default `5000`.
   */
  stageTimeoutMs?: number
}

export interface RouteDescription {
  route: string
  transports: string[]
  stages: Record<string, string>
  reportOnly: string[]
  warnings: string[]
}

/** Admissions (a resumed long-poll request is not one), denials and report-only denials per code. */
export interface DecisionCounts {
  allowed: number
  denied: Record<string, number>
  reported: Record<string, number>
}

export interface PortcullisStats {
  /** Per route: counts over both doors, and `transports` with each door's own. */
  routes: Record<string, DecisionCounts & { transports: Partial<Record<Transport, DecisionCounts>> }>
  /** Live connections across both doors. */
  connections: number
  /** Live connections per door. */
  connectionsByTransport: Partial<Record<Transport, number>>
  /** What happened to audit events: delivered, failed (threw, rejected, timed out), dropped (past `auditMaxInFlight`), in flight. */
  audit: { delivered: number, failed: number, dropped: number, inFlight: number }
}

/** The one shared policy object: `fastify.wsPolicy`. */
export interface PortcullisPolicy {
  /** Add a stage. Only before routes are registered and before `ready`. */
  addStage: <TOption, TCompiled>(stage: StageDefinition<TOption, TCompiled>) => void
  /** Add a transport (the long-poll fallback). Only before routes are registered. */
  addTransport: <TOption, TCompiled>(transport: TransportDefinition<TOption, TCompiled>) => void
  /** Names of registered stages, in evaluation order. */
  stages: () => string[]
  hasStage: (name: string) => boolean
  /** Build the transport-neutral context for a request (both doors use this). */
  context: (request: FastifyRequest, transport: Transport, route: string, offeredProtocols?: string, resumed?: boolean) => ConnectionContext
  /**
   * The context of a transport endpoint's request that the route's evaluation of the SAME request
   * will reuse (one Context, one cookie parse, one origin decision per request). For hooks that
   * run before the evaluation, such as the origin guard's CORS answer.
   */
  sharedContext: (request: FastifyRequest, transport: Transport, route: string) => ConnectionContext
  /** Run the pipeline on a context with a route's compiled policy. */
  evaluate: (ctx: ConnectionContext, route: ProtectedRoute) => Decision | Promise<Decision>
  /** The protected route at `url`, if any. */
  route: (url: string) => ProtectedRoute | undefined
  /**
   * Track a live connection (either door): installs its message guards, indexes it by session
   * and identity, and closes it on `closeSession`. A `message` listener that throws closes the
   * connection with 1011 `internal error` (logged at error once, with `route`); a throwing
   * `close` listener is logged and skips no other. Returns `false` when a guard factory threw:
   * the connection is closing with 1011, nothing was indexed, and the handler must not run.
   */
  attach: (socket: PortcullisSocket, state: PortcullisState, log: FastifyBaseLogger, route?: string, transport?: Transport) => boolean
  /** Close every live connection of a session, on both doors. Returns how many were closed. */
  closeSession: (sessionId: string, code: number, reason: string) => number
  /** Number of live connections of an identity (for per-identity limits). */
  connectionsOf: (identityId: string) => number
  /** Called when any tracked connection closes (both doors). */
  onConnectionClose: (fn: (state: PortcullisState) => void) => void
  /** The effective policy of every protected route. */
  describe: () => RouteDescription[]
  /** `describe()` as an aligned text table, for printing at startup. */
  describeTable: () => string
  stats: () => PortcullisStats
}

export interface PortcullisRequestState {
  transport: Transport
  state: PortcullisState
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The one shared Portcullis policy object. */
    wsPolicy: PortcullisPolicy
  }
  interface FastifyRequest {
    /** The allowed decision for a Portcullis-protected route (identity, protocol), else `null`. */
    portcullis: PortcullisRequestState | null
  }
  interface RouteShorthandOptions<
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    RawServer extends RawServerBase = RawServerDefault
  > {
    /** Portcullis policy for this WebSocket route, merged over the app defaults. */
    wsPolicy?: PortcullisRoutePolicy
  }
}
