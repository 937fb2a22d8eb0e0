import type { IncomingMessage } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import fastifyWebsocket from '@fastify/websocket'
import { WebSocket as WsSocket, type WebSocket, type WebSocketServer } from 'ws'
import type {
  AuditEvent, ConnectionContext, Decision, Denial, PortcullisOptions, PortcullisPolicy,
  PortcullisRoutePolicy, PortcullisSocket, PortcullisStats, ProtectedRoute, RouteDescription, Transport
} from './types.js'
import { Pipeline, type CompiledRoute } from './pipeline.js'
import { closeReasonText, ConnectionRecord, ConnectionRegistry, trackedSocketClass, type ConnectionObserver } from './connections.js'
import { AuditSink, Metrics, closeCause, VERSION } from './telemetry.js'
import { Context, kRequestContext } from './context.js'
import { checkHandshake, isInjectedUpgrade } from './handshake.js'
import { upgradedReplyRelease } from './upgraded-reply.js'
import { routeConfigOf } from './route-config.js'
import { CloseCodes } from './close-codes.js'
import {
  PORTCULLIS_BAD_HANDSHAKE, PORTCULLIS_DUPLICATE_POLICY, PORTCULLIS_INVALID_OPTION, PORTCULLIS_INVALID_ROUTE_POLICY,
  PORTCULLIS_NOT_A_WEBSOCKET_ROUTE, PORTCULLIS_SCOPED_REGISTRATION, PORTCULLIS_SHUTTING_DOWN, PORTCULLIS_STAGE_FAILED, PORTCULLIS_UNSUPPORTED_VERSION,
  PORTCULLIS_WEBSOCKET_ALREADY_REGISTERED
} from './errors.js'

/**
 * Route-config key under which a Portcullis route (the WebSocket route, and every endpoint a
 * transport registers for it) carries its `ProtectedRoute`. `Symbol.for` so that plugins loaded
 * from ESM and CJS builds agree. Stage plugins read it, e.g. to answer CORS for fallback endpoints.
 */
export const kProtectedRoute = Symbol.for('portcullis.protected-route')
const kRoute = kProtectedRoute
/** Route-config key of a WebSocket route this policy protects (not its transport endpoints). */
const kWebSocketRoute = Symbol('portcullis.websocket-route')
/**
 * The subprotocol an upgrade's policy chose, on the upgrade's IncomingMessage until ws asks for
 * it in handleProtocols. A property, not a WeakMap entry: the WeakMap's insert, lookup and delete
 * were 1.1 % of a handshake's server time (bench profile, 2026-12-03), and @fastify/websocket has
 * already given every upgrade's request two symbol properties, so this third one takes a spare
 * in-object slot (or the spare slot of their out-of-object store) and allocates nothing.
 * Every protected upgrade gets it, `undefined` when nothing was chosen, so they keep one shape.
 */
const kChosenProtocol = Symbol('portcullis.chosen-protocol')
type UpgradeRequest = IncomingMessage & { [kChosenProtocol]?: string | undefined }
/** Marks the HTTP server a policy serves: one policy per server (`Symbol.for`: ESM and CJS builds agree). */
const kServerPolicy = Symbol.for('portcullis.server-policy')

const defaults = Object.freeze({
  defaults: {} as PortcullisRoutePolicy,
  denialLogLevel: 'warn' as const,
  maxBufferedBytes: 4 * 1024 * 1024,
  // an async stage (a session store, an auth service) that never answers must not hold an
  // upgrade forever: once Node has emitted 'upgrade', no HTTP timeout covers the socket
  stageTimeoutMs: 5000,
  // an async audit sink that hangs holds a slot at most this long; past the bound, events drop
  auditMaxInFlight: 1000,
  auditTimeoutMs: 10_000,
  metrics: true,
  // ws accepts 100 MiB messages by default; a security layer starts small (RFC 6455 §10.4). A
  // peer that does not answer a close is dropped after 5 s rather than ws's 30 s.
  websocket: Object.freeze({ maxPayload: 1024 * 1024, closeTimeout: 5000 })
})

const OWNED_WS_OPTIONS = ['handleProtocols', 'noServer', 'server', 'port', 'host', 'path', 'verifyClient']
const LOG_LEVELS = ['error', 'warn', 'info', 'debug']

async function portcullis (fastify: FastifyInstance, opts: PortcullisOptions): Promise<void> {
  validateOptions(opts)
  // Two policies would mean two @fastify/websocket upgrade listeners on one server.
  const server = fastify.server as unknown as { [kServerPolicy]?: string }
  if (server[kServerPolicy] !== undefined) throw new PORTCULLIS_DUPLICATE_POLICY(server[kServerPolicy])
  // An app's own @fastify/websocket would see every route before us (its onRoute captures the
  // handler first) and answer the client's first subprotocol: the routes would run unprotected.
  if (fastify.hasDecorator('websocketServer') || fastify.hasPlugin('@fastify/websocket')) {
    throw new PORTCULLIS_WEBSOCKET_ALREADY_REGISTERED(`(in the context ${contextName(fastify)})`)
  }
  server[kServerPolicy] = contextName(fastify)
  const options = { ...defaults, ...opts, websocket: { ...defaults.websocket, ...opts.websocket } }
  const audit = options.audit === undefined ? undefined : new AuditSink(options.audit, fastify.log, options.auditMaxInFlight, options.auditTimeoutMs)
  // the API's no-op meter (no SDK): nothing to record, so the hot paths skip metrics entirely
  const metered = options.metrics ? new Metrics(options.meterProvider, VERSION) : undefined
  const meters = metered?.live === true ? metered : undefined
  const logLevel = options.denialLogLevel
  const sendWithBound = options.maxBufferedBytes === Infinity ? undefined : boundedSend(options.maxBufferedBytes)

  // Log once, count, audit: every denial and would-be denial of either door passes here.
  function record (ctx: ConnectionContext, denial: Denial, action: AuditEvent['action'], route: CompiledRoute): void {
    const origin = ctx.headers.origin === undefined ? undefined : String(ctx.headers.origin).slice(0, 256)
    ctx.request.log[action === 'deny' ? logLevel : 'info']({
      portcullis: { action, code: denial.code, stage: denial.stage, route: route.url, transport: ctx.transport, origin }
    }, action === 'deny' ? 'portcullis: connection denied' : 'portcullis: connection would be denied (report-only)')
    if (audit !== undefined) {
      audit.emit({
        time: Date.now(),
        action,
        code: denial.code,
        status: denial.status,
        stage: denial.stage ?? 'core',
        reason: denial.reason,
        route: route.url,
        transport: ctx.transport,
        origin,
        ip: ctx.request.ip,
        requestId: String(ctx.request.id)
      })
    }
  }

  function observeDecision (ctx: ConnectionContext, route: CompiledRoute, decision: Decision, seconds: number): void {
    if (meters === undefined) return
    for (let i = 0; i < decision.reported.length; i++) {
      const r = decision.reported[i]
      meters.decision(route.url, ctx.transport, 'reported', r.code, r.stage ?? 'core', seconds)
    }
    if (decision.allowed) meters.decision(route.url, ctx.transport, 'allowed', '', '', seconds)
    else meters.decision(route.url, ctx.transport, 'denied', decision.denial.code, decision.denial.stage ?? 'core', seconds)
  }

  // Every close of a live connection is counted; a close for a security reason (a guard, a
  // limit, the session, a peer breaking the protocol, a server fault) is audited too.
  const connectionObserver: ConnectionObserver = {
    opened (route, transport) { meters?.opened(route ?? '', transport) },
    closed (route, transport, code, reason) {
      meters?.closed(route ?? '', transport, code)
      const cause = closeCause(code)
      if (audit === undefined || cause === undefined) return
      audit.emit({ time: Date.now(), action: 'close', code: cause, closeCode: code, reason: closeReasonText(reason).slice(0, 123), stage: 'connection', route: route ?? '', transport })
    }
  }

  const pipeline = new Pipeline(record, options.stageTimeoutMs, meters === undefined ? undefined : observeDecision)
  const connections = new ConnectionRegistry(connectionObserver)

  function closeSession (sessionId: string, code: number, reason: string): number {
    const n = connections.closeSession(sessionId, code, reason)
    if (code === CloseCodes.SESSION_REVOKED) {
      meters?.revoked()
      // the session id is a secret: the event says that a session was revoked and how many connections closed
      audit?.emit({ time: Date.now(), action: 'revoke', code: 'PORTCULLIS_SESSION_REVOKED', closeCode: code, reason: reason.slice(0, 123), stage: 'session', connections: n })
    }
    return n
  }

  const policy: PortcullisPolicy = {
    addStage: (stage) => pipeline.addStage(stage),
    addTransport: (transport) => pipeline.addTransport(transport),
    stages: () => pipeline.stages.map(s => s.name),
    hasStage: (name) => pipeline.stages.some(s => s.name === name),
    context: (request, transport, route, offered, resumed) => new Context(request, transport, route, offered ?? joinProtocols(request), resumed),
    sharedContext: (request, transport, route) => Context.share(request, transport, route),
    evaluate: (ctx, route) => pipeline.evaluate(ctx, route as CompiledRoute),
    route: (url) => pipeline.routes.get(url),
    attach: (socket, state, log, route, transport) => connections.attach(socket, state, log, route, transport),
    closeSession,
    connectionsOf: (id) => connections.connectionsOf(id),
    onConnectionClose: (fn) => connections.onClose(fn),
    describe: () => [...pipeline.routes.values()].map(describeRoute),
    describeTable: () => formatTable([...pipeline.routes.values()].map(describeRoute)),
    stats: () => {
      const routes: PortcullisStats['routes'] = {}
      for (const r of pipeline.routes.values()) routes[r.url] = routeStats(r)
      const audited = audit === undefined ? { delivered: 0, failed: 0, dropped: 0, inFlight: 0 } : { ...audit.counters }
      return { routes, connections: connections.size, connectionsByTransport: connections.byTransport(), audit: audited }
    }
  }

  // Scoping model: ONE policy for the context it is registered in and every context below it.
  // A stage or transport applies to every route of that tree, so adding one from an encapsulated
  // child (which would silently guard its siblings too) is refused, naming both contexts. The
  // getter hands that child a view whose registration methods say so; everything else is shared.
  const owner = fastify
  const views = new WeakMap<FastifyInstance, PortcullisPolicy>()
  function scopedView (instance: FastifyInstance): PortcullisPolicy {
    let view = views.get(instance)
    if (view === undefined) {
      const refuse = (what: string): never => {
        throw new PORTCULLIS_SCOPED_REGISTRATION(what, contextName(instance), contextName(owner))
      }
      view = Object.freeze({
        ...policy,
        addStage: (stage) => refuse(`stage "${String(stage?.name)}"`),
        addTransport: (transport) => refuse(`transport "${String(transport?.name)}"`)
      } satisfies PortcullisPolicy)
      views.set(instance, view)
    }
    return view
  }
  fastify.decorate('wsPolicy', {
    getter (this: FastifyInstance) {
      return this === owner ? policy : scopedView(this)
    }
  })
  fastify.decorateRequest('portcullis', null)
  // the one Context of a transport endpoint's request (context.ts)
  fastify.decorateRequest(kRequestContext as unknown as string, null)

  // Before @fastify/websocket registers: its onRoute hook captures the route handler, so ours
  // must run first to put the attach step (guards, revocation index) in front of the app's handler.
  fastify.addHook('onRoute', function portcullisOnRoute (this: FastifyInstance, routeOptions: RouteOptions) {
    const methods = Array.isArray(routeOptions.method) ? routeOptions.method : [routeOptions.method]
    const isWs = (routeOptions as { websocket?: boolean }).websocket === true
    const wsPolicy = (routeOptions as { wsPolicy?: unknown }).wsPolicy
    if (!isWs) {
      if (wsPolicy !== undefined && !(methods.length === 1 && methods[0] === 'HEAD')) {
        throw new PORTCULLIS_INVALID_ROUTE_POLICY(routeOptions.url, 'wsPolicy applies only to WebSocket routes ({ websocket: true })')
      }
      return
    }
    // The HEAD twin Fastify adds for a GET route cannot be upgraded; @fastify/websocket answers 404.
    if (methods.every(m => m === 'HEAD')) return

    const appHandler = routeOptions.handler as unknown as ProtectedRoute['handler']
    const route = pipeline.compile(routeOptions.url, wsPolicy, options.defaults, appHandler)

    routeOptions.config = { ...(routeOptions.config as object), [kRoute]: route, [kWebSocketRoute]: true } as typeof routeOptions.config
    routeOptions.onRequest = [
      ...toArray(routeOptions.onRequest),
      function portcullisUpgradeGuard (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) {
        guardUpgrade(route, request, reply, done)
      }
    ] as RouteOptions['onRequest']
    routeOptions.handler = function portcullisWebSocketHandler (this: FastifyInstance, socket: WebSocket, request: FastifyRequest) {
      const decided = request.portcullis
      // a guard factory that throws: closed with 1011, nothing indexed, the handler never runs
      // the decision is the connection's record too (one object per connection, not two)
      if (decided !== null && !connections.attach(socket as unknown as PortcullisSocket, decided.state, request.log, route.url, 'websocket', decided instanceof ConnectionRecord ? decided : undefined)) return
      // a socket of the tracked class has it on its prototype already
      if (sendWithBound !== undefined && socket.send !== sendWithBound) socket.send = sendWithBound
      return appHandler.call(this, socket as unknown as PortcullisSocket, request)
    } as unknown as RouteOptions['handler']

    const prefix = (routeOptions as { prefix?: string }).prefix ?? ''
    const path = prefix.length > 0 && routeOptions.url.startsWith(prefix) ? routeOptions.url.slice(prefix.length) : routeOptions.url
    for (const [transport, compiled] of route.transports) {
      transport.route(route, compiled, { instance: this, path })
    }
  })

  await fastify.register(fastifyWebsocket, {
    // the cast bridges @types/ws seen through ESM and CJS resolution (same type, two identities)
    options: { ...options.websocket, handleProtocols: portcullisHandleProtocols } as never,
    errorHandler: socketErrorHandler(connections) as never,
    preClose: function portcullisPreClose (this: FastifyInstance, done: (err?: Error) => void) {
      // handshakes still waiting for an async stage are answered now (503), not held until
      // stageTimeoutMs: Node's server.close() waits for their sockets
      for (const reply of pendingUpgrades) {
        reply.request.log.info({ portcullis: { code: 'PORTCULLIS_SHUTTING_DOWN' } }, 'portcullis: handshake in evaluation refused at shutdown')
        replyDenial(reply, denialOf(new PORTCULLIS_SHUTTING_DOWN()))
      }
      pendingUpgrades.clear()
      connections.closeAll()
      const server = (this as FastifyInstance & { websocketServer: WebSocketServer }).websocketServer
      server.close(() => done())
    }
  })

  // ws builds each server socket with `new options.WebSocket(...)` at upgrade time: ours is the
  // tracked subclass of whatever class that is (ws's own, or the app's `websocket.WebSocket`)
  const wss = (fastify as unknown as { websocketServer: { options: { WebSocket?: new (...args: any[]) => object } } }).websocketServer
  if (typeof wss.options.WebSocket === 'function') wss.options.WebSocket = trackedSocketClass(wss.options.WebSocket, sendWithBound as PortcullisSocket['send'] | undefined)

  // An upgrade that reaches a route Portcullis does not protect is refused with a 4xx instead of
  // being upgraded and then closed. Fastify's onRoute is not retroactive, so a WebSocket route
  // declared before this plugin is invisible at startup: the first upgrade to such a route logs,
  // once per route, what to fix. An onRequest hook after @fastify/websocket's (which sets
  // request.ws), not a preHandler: that phase has hooks already, while a preHandler would give
  // every request of the app (plain HTTP too) one more run of Fastify's hook runner, four
  // closures each. The route config is read without building `request.routeOptions` (route-config.ts).
  const warnedStray = new Set<string>()
  fastify.addHook('onRequest', function portcullisRefuseStrayUpgrade (request, reply, done) {
    if (request.ws && !request.is404 && routeConfigOf(request)?.[kWebSocketRoute] !== true) {
      const url = request.routeOptions.url ?? ''
      if (!warnedStray.has(url)) {
        warnedStray.add(url)
        request.log.warn({ portcullis: { code: 'PORTCULLIS_NOT_A_WEBSOCKET_ROUTE', route: url } },
          `portcullis: a WebSocket upgrade reached ${url}, which Portcullis does not protect; if it is a WebSocket route, it was declared before @portcullis/policy was registered (or outside its context): register the Portcullis plugins before your routes`)
      }
      replyDenial(reply, denialOf(new PORTCULLIS_NOT_A_WEBSOCKET_ROUTE()))
      return
    }
    done()
  })

  // Registration closes at ready: a stage added later would silently not apply to earlier routes.
  fastify.addHook('onReady', function portcullisLock (done) {
    pipeline.lock('the app was ready')
    done()
  })

  /** Upgrades waiting for an async stage's answer (answered at shutdown). */
  const pendingUpgrades = new Set<FastifyReply>()
  /** Drops what an admitted upgrade's reply, kept for the connection's life, need not hold. */
  const releaseUpgradedReply = upgradedReplyRelease()

  function guardUpgrade (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    // A plain GET to a WebSocket route: @fastify/websocket answers 404, no policy needed.
    if (!request.ws) return done()
    // app.injectWS() sends no Host unless told to; like app.inject(), it stands for localhost:80
    if (request.raw.headers.host === undefined && isInjectedUpgrade(request.raw)) request.raw.headers.host = 'localhost:80'
    const problem = checkHandshake(request.raw)
    if (problem !== undefined) {
      const err = problem.status === 426 ? new PORTCULLIS_UNSUPPORTED_VERSION() : new PORTCULLIS_BAD_HANDSHAKE(problem.detail)
      request.log.info({ portcullis: { code: err.code, route: route.url } }, 'portcullis: malformed handshake')
      replyDenial(reply, denialOf(err))
      return
    }
    const decision = pipeline.evaluate(new Context(request, 'websocket', route.url, joinProtocols(request)), route)
    if (isPromise(decision)) {
      pendingUpgrades.add(reply)
      decision.then((d) => {
        // answered at shutdown already: a late allow must not open a connection now
        if (pendingUpgrades.delete(reply)) settle(d, request, reply, done)
      }, (err) => {
        if (!pendingUpgrades.delete(reply)) return
        // the pipeline turns stage failures into denials; this is a fault of the core itself
        request.log.error({ err, portcullis: { route: route.url } }, 'portcullis: evaluation failed')
        replyDenial(reply, denialOf(new PORTCULLIS_STAGE_FAILED()))
      })
    } else {
      settle(decision, request, reply, done)
    }
  }

  function settle (decision: Decision, request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    if (!decision.allowed) {
      replyDenial(reply, decision.denial)
      return
    }
    // { transport, state } for the handler, and the connection's record once it opens
    request.portcullis = new ConnectionRecord('websocket', decision.state)
    // a protocol is chosen only when one was offered, and ws then always asks
    const raw: UpgradeRequest = request.raw
    raw[kChosenProtocol] = decision.state.protocol
    releaseUpgradedReply(reply)
    done()
  }

  // ws calls this with the offered set; we answer only what the subprotocol stage chose — a
  // registered name, never the client's text (RFC 6455 §4.2.2 step 5.5). No stage: no protocol.
  function portcullisHandleProtocols (_offered: Set<string>, req: IncomingMessage): string | false {
    return (req as UpgradeRequest)[kChosenProtocol] ?? false
  }
}

/**
 * @fastify/websocket calls its error handler for two different things:
 * - an `error` the socket emitted: the peer broke RFC 6455 (unmasked frame, invalid UTF-8,
 *   oversized message: ws has already closed with 1002/1007/1009) or the transport failed. Any
 *   client can cause one, so it is logged at info, not error (no flooding error logs), and the
 *   socket is dropped;
 * - an exception of the route's handler: its synchronous throw, or the rejection of the promise
 *   it returned. That is a server fault: logged at error with the route, and the connection is
 *   closed with 1011 'internal error', as the long-poll door does.
 * The registry tells them apart: it saw every error the socket emitted.
 */
function socketErrorHandler (connections: ConnectionRegistry) {
  return function portcullisSocketError (error: Error & { code?: string }, socket: WebSocket, request: FastifyRequest): void {
    const ps = socket as unknown as PortcullisSocket
    if (connections.emittedError(ps, error)) {
      request.log.info({ portcullis: { socketError: error?.code ?? error?.name, message: error?.message } }, 'portcullis: websocket error')
      socket.terminate()
      return
    }
    connections.fail(ps, error, 'handler', request.log, request.routeOptions.url)
  }
}

/**
 * A `send` that closes a WebSocket whose peer does not read: after each send, if more than `max`
 * bytes wait in ws and the kernel, close with 4009. A close frame still queues behind the data,
 * so a peer that never reads is dropped after `closeTimeout`. Made once per app and shared by
 * every socket (one slot per connection, no closure).
 */
function boundedSend (max: number): WebSocket['send'] {
  const send = WsSocket.prototype.send
  return function portcullisBoundedSend (this: WebSocket) {
    send.apply(this, arguments as unknown as Parameters<WebSocket['send']>)
    if (this.readyState === 1 && this.bufferedAmount > max) this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer')
  } as WebSocket['send']
}

/**
 * The ONE function that turns a denial into a response, for both doors: the status, a small
 * JSON body `{ code, message }` and never a 101. A 426 names the version we speak (RFC 6455 §4.4).
 */
export function replyDenial (reply: FastifyReply, denial: Denial): FastifyReply {
  reply.code(denial.status)
  reply.header('cache-control', 'no-store')
  reply.header('x-content-type-options', 'nosniff')
  if (denial.status === 426) reply.header('sec-websocket-version', '13')
  if (denial.headers !== undefined) {
    for (const name of Object.keys(denial.headers)) reply.header(name, denial.headers[name])
  }
  if (reply.request.ws) reply.header('connection', 'close')
  return reply.send({ code: denial.code, message: denial.reason })
}

/** A `@fastify/error` instance as a denial value (stages use this to keep codes in one place). */
export function denialOf (err: { statusCode?: number, code: string, message: string }): Denial {
  return { status: err.statusCode ?? 403, code: err.code, reason: err.message }
}

/** The ProtectedRoute of the request's route (the WebSocket route or a transport endpoint of it). */
export function protectedRouteOf (request: FastifyRequest): ProtectedRoute | undefined {
  return routeConfigOf(request)?.[kRoute] as ProtectedRoute | undefined
}

function joinProtocols (request: FastifyRequest): string | undefined {
  const h = request.headers['sec-websocket-protocol']
  return Array.isArray(h) ? h.join(', ') : h
}

function isPromise<T> (v: T | Promise<T>): v is Promise<T> {
  return typeof (v as Promise<T>).then === 'function'
}

/** How errors name an encapsulated context: by its route prefix, what users wrote. */
function contextName (instance: FastifyInstance): string {
  return `"${instance.prefix === '' ? '/' : instance.prefix}"`
}

function toArray<T> (v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v]
}

function validateOptions (opts: PortcullisOptions): void {
  if (opts.defaults !== undefined && (opts.defaults === null || typeof opts.defaults !== 'object' || Array.isArray(opts.defaults))) {
    throw new PORTCULLIS_INVALID_OPTION('defaults must be an object of route policy keys')
  }
  if (opts.audit !== undefined && typeof opts.audit !== 'function') {
    throw new PORTCULLIS_INVALID_OPTION('audit must be a function (event) => void | Promise<unknown>')
  }
  for (const key of ['auditMaxInFlight', 'auditTimeoutMs'] as const) {
    const v = opts[key]
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1 && v <= 2 ** 31 - 1)) {
      throw new PORTCULLIS_INVALID_OPTION(`${key} must be an integer from 1 to ${2 ** 31 - 1}`)
    }
  }
  if (opts.metrics !== undefined && typeof opts.metrics !== 'boolean') {
    throw new PORTCULLIS_INVALID_OPTION('metrics must be a boolean')
  }
  if (opts.meterProvider !== undefined && (opts.meterProvider === null || typeof opts.meterProvider.getMeter !== 'function')) {
    throw new PORTCULLIS_INVALID_OPTION('meterProvider must be an OpenTelemetry MeterProvider (with getMeter())')
  }
  if (opts.denialLogLevel !== undefined && !LOG_LEVELS.includes(opts.denialLogLevel)) {
    throw new PORTCULLIS_INVALID_OPTION(`denialLogLevel must be one of ${LOG_LEVELS.join(', ')}`)
  }
  if (opts.maxBufferedBytes !== undefined && !(typeof opts.maxBufferedBytes === 'number' && opts.maxBufferedBytes > 0)) {
    throw new PORTCULLIS_INVALID_OPTION('maxBufferedBytes must be a positive number of bytes (or Infinity)')
  }
  if (opts.stageTimeoutMs !== undefined && !(Number.isInteger(opts.stageTimeoutMs) && opts.stageTimeoutMs > 0 && opts.stageTimeoutMs <= 0x7fffffff)) {
    throw new PORTCULLIS_INVALID_OPTION('stageTimeoutMs must be an integer number of milliseconds from 1 to 2147483647')
  }
  if (opts.websocket !== undefined) {
    if (opts.websocket === null || typeof opts.websocket !== 'object') throw new PORTCULLIS_INVALID_OPTION('websocket must be an object of ws server options')
    for (const key of OWNED_WS_OPTIONS) {
      if (key in opts.websocket) throw new PORTCULLIS_INVALID_OPTION(`websocket.${key} is owned by Portcullis and cannot be set`)
    }
  }
}

/** A route's counters: totals over both doors, and each door on its own. */
function routeStats (route: CompiledRoute): PortcullisStats['routes'][string] {
  const total = { allowed: 0, denied: {} as Record<string, number>, reported: {} as Record<string, number>, transports: {} as PortcullisStats['routes'][string]['transports'] }
  for (const [transport, c] of Object.entries(route.counters)) {
    total.transports[transport as Transport] = { allowed: c.allowed, denied: { ...c.denied }, reported: { ...c.reported } }
    total.allowed += c.allowed
    for (const [code, n] of Object.entries(c.denied)) total.denied[code] = (total.denied[code] ?? 0) + n
    for (const [code, n] of Object.entries(c.reported)) total.reported[code] = (total.reported[code] ?? 0) + n
  }
  return total
}

function describeRoute (route: CompiledRoute): RouteDescription {
  const stages: Record<string, string> = {}
  const reportOnly: string[] = []
  const warnings: string[] = []
  if (route.originDisabled) {
    stages.origin = 'DISABLED (wsPolicy.origin: false)'
    warnings.push('ORIGIN CHECK DISABLED: any web page can open this WebSocket with its visitors\' cookies')
  }
  for (const s of route.stages) {
    stages[s.def.name] = s.def.describe?.(s.compiled) ?? 'on'
    if (s.reportOnly) reportOnly.push(s.def.name)
  }
  return { route: route.url, transports: ['websocket', ...route.endpoints], stages, reportOnly, warnings }
}

function formatTable (rows: RouteDescription[]): string {
  const lines: string[][] = [['route', 'transports', 'policy', 'report-only']]
  for (const r of rows) {
    const policy = Object.entries(r.stages).map(([k, v]) => `${k}: ${v}`).join('; ')
    lines.push([r.route, r.transports.join(', '), policy, r.reportOnly.join(', ') || '-'])
    for (const w of r.warnings) lines.push(['', '', `!! ${w}`, ''])
  }
  const widths = lines[0].map((_, i) => Math.max(...lines.map(l => l[i].length)))
  return lines.map(l => l.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

const plugin = fp(portcullis, {
  name: '@portcullis/policy',
  fastify: '5.x'
})

export default plugin
export { plugin as portcullis }
export { CloseCodes, denialCloseCode } from './close-codes.js'
export { cookieValues, parseCookieHeader } from './cookies.js'
export { addConnectionGuard } from './connections.js'
export { checkHandshake } from './handshake.js'
export * as errors from './errors.js'
export type * from './types.js'
export type { Transport }
