import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { parse as parseQueryString } from 'node:querystring'
import fp from 'fastify-plugin'
import {
  CloseCodes, denialOf, kProtectedRoute, replyDenial,
  type ProtectedRoute
} from '@portcullis/policy'
import type { FallbackLimits, FallbackOptions, FallbackRouteOption } from './types.js'
import { MemoryStore, type FallbackStore, type ReadResult, type SessionRecord } from './store.js'
import { LongPollSocket, kClientClose, kFail, kReceive, kSettled } from './socket.js'
import { isJsonContentType, isSid, newSid, parseAck, parseCloseBody, parseOpenBody, parseOpenQuery, parseOpenVersions, parseSendBody, VERSIONS } from './wire.js'
import {
  Hold, answerPoll, badRequest, bump, clientGone, emptyPoll, headerValue, matches, noStore, noop, originOf, refuse, unknownSession
} from './session.js'
import { serveStream } from './stream.js'
import { atMost, timedStore } from './timed-store.js'
import {
  PORTCULLIS_FALLBACK_BAD_ACK, PORTCULLIS_FALLBACK_BODY_TOO_LARGE,
  PORTCULLIS_FALLBACK_CONTENT_TYPE, PORTCULLIS_FALLBACK_HEADER_REQUIRED, PORTCULLIS_FALLBACK_INTERNAL,
  PORTCULLIS_FALLBACK_INVALID_OPTION, PORTCULLIS_FALLBACK_QUERY_REFUSED, PORTCULLIS_FALLBACK_SEQUENCE_GAP,
  PORTCULLIS_FALLBACK_TOO_MANY_POLLS, PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS
} from './errors.js'

/** The highest wire protocol version this server speaks (`open` answers the highest both know as `v`). */
export const PROTOCOL_VERSION = VERSIONS[0]
/** The marker header every fallback request carries (PROTOCOL.md §2). */
export const FALLBACK_HEADER = 'x-portcullis-fallback'
/** Request headers a CORS preflight for the fallback must allow (for `@portcullis/origin-guard`). */
export const FALLBACK_REQUEST_HEADERS = Object.freeze(['content-type', 'x-portcullis-fallback', 'x-portcullis-sid', 'x-portcullis-ack', 'x-portcullis-protocol'])

const MiB = 1024 * 1024
const defaults = Object.freeze({
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

type Limits = Required<FallbackLimits>
/** Options of the whole plugin, not per-route limits. */
const PLUGIN_KEYS = new Set(['maxPendingPollsPerIp', 'storeTimeoutMs', 'querystringParser'])
const LIMIT_KEYS = Object.freeze(Object.keys(defaults).filter(k => !PLUGIN_KEYS.has(k))) as ReadonlyArray<keyof Limits>
/** The close of a session whose socket a store failure ended (what its handler saw, too). */
const LOST_CLOSE = Object.freeze({ code: CloseCodes.INTERNAL_ERROR, reason: 'internal error' })
/** Route options that are switches, not numbers. */
const BOOLEAN_KEYS = new Set(['stream'])
/** Session caps may be 0 (no limit); every other limit is a positive integer. */
const ZERO_OK = new Set(['maxSessionsPerIdentity', 'maxSessionsPerIp', 'maxSessions'])
/** Node's timers hold at most 2^31 − 1 ms. */
const MAX_TIMER = 2 ** 31 - 1

/**
 * `open` and `close` bodies are small; they never get the send body limit. 16 KiB for `open`
 * leaves room for an offer the subprotocol stage refuses by its own caps (4096 by default).
 */
const OPEN_BODY_LIMIT = 16 * 1024
const CLOSE_BODY_LIMIT = 1024

type Kind = 'open' | 'poll' | 'send' | 'close' | 'stream'
/** The request slot holding what the gate established for a poll/send/close/stream request. */
const kBound = Symbol('portcullis.fallback.bound')

interface Bound {
  sid: string
  record: SessionRecord
}

export interface FallbackDecorator {
  /** The store in use. */
  readonly store: FallbackStore
  /** Long-poll sessions whose handler runs on this node. */
  readonly sessions: () => number
  /**
   * Close every connection of an authenticated session on EVERY node (both doors), through the
   * store's fan-out. `fastify.wsPolicy.closeSession` reaches only this node.
   */
  readonly closeSession: (sessionId: string, code: number, reason: string) => Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The long-poll fallback of `@portcullis/fallback`. */
    wsFallback: FallbackDecorator
  }
}

async function portcullisFallback (fastify: FastifyInstance, opts: FallbackOptions): Promise<void> {
  validateOptions(opts)
  // an option given as undefined keeps its default (never a cap of `undefined`, which no count reaches)
  const { store: givenStore, maxPendingPollsPerIp, storeTimeoutMs, querystringParser, ...limitOpts } = { ...defaults, ...definedOnly(opts) }
  const base: Limits = Object.freeze(pickLimits(limitOpts))
  const rawStore: FallbackStore = givenStore ?? new MemoryStore()
  /** The plugin's only view of the store: every call bounded by `storeTimeoutMs` (timed-store.ts). */
  const store: FallbackStore = timedStore(rawStore, storeTimeoutMs)
  const policy = fastify.wsPolicy

  /** Sockets whose handler runs here, by sid. */
  const sockets = new Map<string, LongPollSocket>()
  /** Waiting polls on this node, by IP (the bound) and as a set (shutdown wakes them). */
  const pendingPerIp = new Map<string, number>()
  const waiting = new Set<Hold['fire']>()
  /**
   * The held poll or stream of each session on this node (the newest). A v2 send served here
   * tells a held poll which replies its answer carries, so the poll is not woken for them (§12.2).
   */
  const holds = new Map<string, Hold>()
  const active = new Set<Promise<unknown>>()
  /** What onRequest established for a poll/send/close request. */
  // What the gate established, on the request itself (a declared slot: requests keep one shape,
  // and no WeakMap insert per request)
  fastify.decorateRequest(kBound as unknown as string, null)
  const boundOf = (request: FastifyRequest): Bound => (request as unknown as Record<symbol, Bound>)[kBound]

  policy.addTransport<FallbackRouteOption, Limits | undefined>({
    name: 'long-poll',
    option: 'fallback',
    compile: (value) => compileRoute(value, base),
    route (protectedRoute, limits, { instance, path }) {
      if (limits !== undefined) registerEndpoints(protectedRoute, limits, instance, path)
    }
  })

  fastify.decorate('wsFallback', {
    store: rawStore,
    sessions: () => sockets.size,
    closeSession: (sessionId: string, code: number, reason: string) => store.publishRevocation(sessionId, code, reason)
  } satisfies FallbackDecorator)

  fastify.addHook('onReady', async function portcullisFallbackStart () {
    await store.start({
      inbound (sid, frames) {
        const socket = sockets.get(sid)
        if (socket !== undefined) return socket[kReceive](frames)
        // routed to us, but no handler runs it any more: close it, so its client is told
        fastify.log.warn({ portcullis: { code: 'PORTCULLIS_FALLBACK_LOST_SESSION' } }, 'portcullis: inbound messages for a fallback session without a handler; closing it')
        closeLost(sid, base.closeLingerMs).catch(() => {})
      },
      clientClose: (sid, close) => sockets.get(sid)?.[kClientClose](close),
      revocation: (sessionId, code, reason) => { policy.closeSession(sessionId, code, reason) }
    })
  })

  // Shutdown: close our sessions with 1001 (the core's closeAll does the same for attached
  // sockets; close is idempotent), let their closes reach the store, then answer every poll
  // still waiting here — for our sessions it carries the 1001, for others' it is empty.
  // Each wait is bounded by storeTimeoutMs (one deadline for both), and so is `stop`: a hung
  // store cannot hold `fastify.close()` for longer than about twice that.
  fastify.addHook('preClose', async function portcullisFallbackShutdown () {
    const deadline = Date.now() + storeTimeoutMs
    const all = [...sockets.values()]
    for (const s of all) if (s.readyState <= LongPollSocket.OPEN) s.close(CloseCodes.GOING_AWAY, 'server shutting down')
    await atMost(Promise.all(all.map(s => s[kSettled])), storeTimeoutMs)
    for (const wake of [...waiting]) wake('superseded')
    await atMost(Promise.all([...active]), deadline - Date.now())
  })

  fastify.addHook('onClose', async function portcullisFallbackStop () {
    try {
      await store.stop()
    } catch (err) {
      // shutting down regardless: say so, do not fail the close
      fastify.log.error({ err }, 'portcullis: the fallback store did not stop cleanly')
    }
  })

  /**
   * A session this node finished locally (a store call failed) while its record may still be
   * open: close the record too, so the client's next poll gets the close (1011) instead of
   * refreshing a session nobody runs, whose sends would be acknowledged and dropped.
   */
  async function closeLost (sid: string, lingerMs: number): Promise<void> {
    await store.closeOutbound(sid, LOST_CLOSE, { lingerMs, dropQueued: false })
  }

  function registerEndpoints (route: ProtectedRoute, limits: Limits, instance: FastifyInstance, path: string): void {
    const prefix = path.endsWith('/') ? path.slice(0, -1) : path
    const shown = route.url.endsWith('/') ? route.url.slice(0, -1) : route.url
    const config = { [kProtectedRoute]: route }
    const common = { config, exposeHeadRoute: false, errorHandler: fallbackErrorHandler, logSerializers: { req: fallbackRequestLog } }

    instance.route({ ...common, method: 'POST', url: `${prefix}/_lp/open`, bodyLimit: OPEN_BODY_LIMIT, onRequest: gate('open', route, limits), handler: openHandler })
    instance.route({ ...common, method: 'GET', url: `${prefix}/_lp/poll`, onRequest: gate('poll', route, limits), handler: pollHandler })
    instance.route({ ...common, method: 'POST', url: `${prefix}/_lp/send`, bodyLimit: limits.maxBodyBytes, onRequest: gate('send', route, limits), handler: sendHandler })
    instance.route({ ...common, method: 'POST', url: `${prefix}/_lp/close`, bodyLimit: CLOSE_BODY_LIMIT, onRequest: gate('close', route, limits), handler: closeHandler })
    const kinds = ['open', 'poll', 'send', 'close']
    if (limits.stream) {
      instance.route({ ...common, method: 'GET', url: `${prefix}/_lp/stream`, onRequest: gate('stream', route, limits), handler: streamHandler })
      kinds.push('stream')
    }
    for (const kind of kinds) {
      // explicit OPTIONS routes carry the marker, so the origin guard's CORS hook sees preflights
      instance.route({ ...common, method: 'OPTIONS', url: `${prefix}/_lp/${kind}`, handler: preflightHandler })
    }
    route.endpoints.push(`long-poll ${shown}/_lp/{${kinds.join(',')}}`)
    const readLimits = Object.freeze({ messages: limits.maxMessagesPerRequest, bytes: limits.maxPollBytes })

    async function openHandler (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
      let offered: string | undefined
      let query: string | undefined
      let version: number
      try {
        offered = parseOpenBody(request.body)
        query = parseOpenQuery(request.body as Record<string, unknown>)
        version = parseOpenVersions(request.body as Record<string, unknown>)
      } catch (err) {
        return badRequest(reply, err)
      }
      const decision = await route.evaluate(request, 'long-poll', offered)
      if (!decision.allowed) return replyDenial(reply, decision.denial)
      const state = decision.state
      const protocol = state.protocol ?? ''
      const sid = newSid()
      const created = await store.create({
        sid,
        node: store.nodeId,
        route: route.url,
        protocol,
        identityId: state.identity?.id,
        sessionId: state.identity?.sessionId,
        origin: originOf(request),
        ip: request.ip,
        createdAt: Date.now(),
        ttlMs: limits.idleTimeoutMs + limits.pollTimeoutMs + limits.closeLingerMs,
        // v1 records stay as they were (no field), so a v1 session reads the same on every store
        ...(version === 1 ? {} : { version })
      }, { perIdentity: limits.maxSessionsPerIdentity, perIp: limits.maxSessionsPerIp, total: limits.maxSessions })
      if (created !== 'ok') {
        request.log.warn({ portcullis: { code: 'PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS', bound: created, route: route.url } }, 'portcullis: fallback session bound reached')
        return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS()))
      }
      const socket = new LongPollSocket({
        sid,
        protocol,
        store,
        limits,
        log: request.log,
        route: route.url,
        onGone: () => { sockets.delete(sid) },
        onStoreFailure: () => {
          closeLost(sid, limits.closeLingerMs).catch((err: unknown) => {
            // the gate closes it on the client's next request (this node owns it, no socket runs it)
            request.log.warn({ err, portcullis: { route: route.url } }, 'portcullis: a failed fallback session could not be closed in the store yet')
          })
        }
      })
      sockets.set(sid, socket)
      request.portcullis = { transport: 'long-poll', state }
      // The WebSocket URL's query came in the body (a fallback URL never has one, §2.1): the
      // handler reads it where it reads it on the WebSocket door, as `request.query`.
      if (query !== undefined) (request as { query: unknown }).query = querystringParser(query)
      // a guard factory that throws: the core closed the socket with 1011, the handler never runs
      if (policy.attach(socket, state, request.log, route.url, 'long-poll') !== false) runHandler(this, route, socket, request)
      noStore(reply)
      const answer = {
        v: version,
        sid,
        protocol,
        pollTimeoutMs: limits.pollTimeoutMs,
        idleTimeoutMs: limits.idleTimeoutMs,
        maxMessagesPerRequest: limits.maxMessagesPerRequest,
        maxBodyBytes: limits.maxBodyBytes,
        maxPayload: limits.maxPayload
      }
      // v2 says whether the stream endpoint exists (a v1 answer is exactly as it was)
      return version === 1 ? answer : { ...answer, stream: limits.stream }
    }

    /**
     * What a held request (a poll or a stream) checks first: its `X-Portcullis-Ack`, then the
     * per-IP bound of waiting requests. The ack, or the reply already answered.
     */
    function heldAck (request: FastifyRequest, reply: FastifyReply): number | FastifyReply {
      let ack: number
      try {
        ack = parseAck(request.headers['x-portcullis-ack'])
      } catch (err) {
        return badRequest(reply, err)
      }
      if ((pendingPerIp.get(request.ip) ?? 0) >= maxPendingPollsPerIp) {
        return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_TOO_MANY_POLLS()))
      }
      return ack
    }

    async function pollHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
      const { sid } = boundOf(request)
      const ack = heldAck(request, reply)
      if (typeof ack !== 'number') return ack
      const ip = request.ip
      const hold = new Hold()
      const wake = hold.fire
      // Hear the client go away before the first await, so an abort at any point ends the wait.
      const onAbort = (): void => wake('aborted')
      reply.raw.once('close', onAbort)
      let unwatch: () => void = noop
      let timer: NodeJS.Timeout | undefined
      // Everything after the bump is inside the try: a store that throws (watch included) or
      // rejects frees the slot, the listener and the watch.
      bump(pendingPerIp, ip, 1)
      const work = (async () => {
        try {
          // gone during the gate's awaits: nothing to wait for
          if (clientGone(request)) return emptyPoll(reply, 0)
          // watch before reading: a message pushed between the read and the watch still wakes us
          unwatch = store.watch(sid, wake)
          const first = await store.readOutbound(sid, ack, readLimits)
          if (!first.found) return unknownSession(reply)
          if (ack > first.lastSeq) return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_BAD_ACK()))
          if (first.frames.length > 0 || first.close !== undefined) return answerPoll(reply, first)
          waiting.add(wake)
          holds.set(sid, hold)
          timer = setTimeout(wake, limits.pollTimeoutMs, 'timeout')
          for (;;) {
            const reason = await hold.next()
            // Aborted: the answer goes nowhere, but it is sent (onSend hooks run), so no reply is
            // left pending. Nothing is lost: frames stay queued until a poll acks them.
            if (reason === 'aborted' || reason === 'superseded') return emptyPoll(reply, first.inAck)
            // A v2 send answer served here carries the replies it was sent for: wait for it, and
            // keep holding if it carried everything that woke us (one exchange per request/response).
            if (hold.sends > 0) await hold.sendsSettled()
            const claimed = reason === 'data' && hold.claimed > 0
            // watch again before reading, so a message pushed after the read still wakes us
            if (claimed) {
              // a newer request of the session took over meanwhile: do not displace its watch
              if (holds.get(sid) !== hold) return emptyPoll(reply, first.inAck)
              unwatch()
              unwatch = store.watch(sid, wake)
            }
            const next = await store.readOutbound(sid, ack, readLimits)
            if (!next.found) return unknownSession(reply)
            const last = next.frames.length === 0 ? 0 : next.frames[next.frames.length - 1].seq
            if (claimed && next.close === undefined && last <= hold.claimed) continue
            return answerPoll(reply, next)
          }
        } finally {
          clearTimeout(timer)
          reply.raw.removeListener('close', onAbort)
          unwatch()
          waiting.delete(wake)
          if (holds.get(sid) === hold) holds.delete(sid)
          bump(pendingPerIp, ip, -1)
        }
      })()
      active.add(work)
      try {
        return await work
      } finally {
        active.delete(work)
      }
    }

    async function sendHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
      const { sid, record } = boundOf(request)
      const v2 = record.version === 2
      let frames
      let ack = 0
      try {
        frames = parseSendBody(request.body, limits.maxMessagesPerRequest, v2)
        if (v2) ack = parseAck(request.headers['x-portcullis-ack'])
      } catch (err) {
        return badRequest(reply, err)
      }
      // v2 ack-only send (a stream client's periodic ack)
      if (frames.length === 0) return await answerSend(reply, sid, ack, undefined)
      // a poll held here must not answer the replies this send's answer will carry
      const hold = v2 ? holds.get(sid) : undefined
      const claim = hold !== undefined && !hold.stream ? hold : undefined
      claim?.sendStarted()
      let upTo = 0
      try {
        // Ours, but its socket finished while the body was read (a store failure): close the
        // record first, so the store refuses these messages (no ack) instead of routing them to
        // no handler. Checked right before the push, which hands them over in the same tick.
        if (record.node === store.nodeId && !sockets.has(sid)) await closeLost(sid, limits.closeLingerMs)
        const r = await store.pushInbound(sid, frames)
        if (r.status === 'unknown') return unknownSession(reply)
        if (r.status === 'gap') {
          const e = new PORTCULLIS_FALLBACK_SEQUENCE_GAP()
          noStore(reply).code(e.statusCode!)
          return { code: e.code, message: e.message, ack: r.inAck }
        }
        if (!v2) {
          noStore(reply)
          return { ack: r.inAck }
        }
        if (r.status === 'ok' && r.accepted > 0) {
          // The handler's replies of this tick: its message listeners ran in pushInbound's tick,
          // the socket batches sends per microtask, and one setImmediate lets that batch reach
          // its store chain; then wait for the chain (each call bounded by storeTimeoutMs).
          await new Promise(setImmediate)
          const socket = sockets.get(sid)
          if (socket !== undefined) await socket[kSettled]
        }
        return await answerSend(reply, sid, ack, (seq) => { upTo = seq })
      } finally {
        claim?.sendDone(upTo)
      }
    }

    /** A v2 send's answer: the client's ack applied, then what a poll would answer now (§12.2). */
    async function answerSend (reply: FastifyReply, sid: string, ack: number, carried: ((seq: number) => void) | undefined): Promise<unknown> {
      const next = await store.readOutbound(sid, ack, readLimits)
      if (!next.found) return unknownSession(reply)
      if (ack > next.lastSeq) return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_BAD_ACK()))
      noStore(reply)
      // A stream held here writes these messages itself, at once: the answer carries no copy.
      if (holds.get(sid)?.stream === true) {
        return next.close === undefined ? { ack: next.inAck, messages: [] } : { ack: next.inAck, messages: [], close: next.close }
      }
      if (next.frames.length > 0) carried?.(next.frames[next.frames.length - 1].seq)
      return answerPoll(reply, next)
    }

    async function streamHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
      const { sid } = boundOf(request)
      // a stream is a held request: the per-IP cap of waiting polls counts it
      const ack = heldAck(request, reply)
      if (typeof ack !== 'number') return ack
      const ip = request.ip
      const hold = new Hold(true)
      let unwatch: () => void = noop
      let freed = false
      const free = (): void => {
        if (freed) return
        freed = true
        waiting.delete(hold.fire)
        if (holds.get(sid) === hold) holds.delete(sid)
        bump(pendingPerIp, ip, -1)
      }
      bump(pendingPerIp, ip, 1)
      let first: ReadResult
      try {
        if (clientGone(request)) {
          free()
          return emptyPoll(reply, 0)
        }
        // watch before reading (a newer poll or stream of the session supersedes this one)
        unwatch = store.watch(sid, hold.fire)
        first = await store.readOutbound(sid, ack, readLimits)
      } catch (err) {
        unwatch()
        free()
        throw err
      }
      // refused exactly as a poll is, before any byte of a stream is written
      if (!first.found || ack > first.lastSeq) {
        unwatch()
        free()
        return first.found ? replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_BAD_ACK())) : unknownSession(reply)
      }
      waiting.add(hold.fire)
      holds.set(sid, hold)
      const work = serveStream(request, reply, { store, limits, sid, ack, first, hold, unwatch, current: () => holds.get(sid) === hold, done: free })
      active.add(work)
      work.finally(() => active.delete(work)).catch(noop)
      return reply
    }

    async function closeHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
      const { sid, record } = boundOf(request)
      let close
      try {
        close = parseCloseBody(request.body)
      } catch (err) {
        return badRequest(reply, err)
      }
      if (record.closed !== undefined) {
        noStore(reply)
        return { close: record.closed }
      }
      if (!await store.pushClientClose(sid, close)) return unknownSession(reply)
      noStore(reply)
      return { close }
    }
  }

  /**
   * The per-endpoint gate, before any body is read: no query string, the marker header, a JSON
   * content type; then (poll/send/close) the route's full policy and the session binding. `open`
   * evaluates in its handler, because the offered protocols are in its body.
   */
  function gate (kind: Kind, route: ProtectedRoute, limits: Limits) {
    return async function portcullisFallbackGate (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
      // JSONP and ids in URLs are refused wholesale: the fallback never takes a query string
      if ((request.raw.url ?? '').includes('?')) return refuse(reply, new PORTCULLIS_FALLBACK_QUERY_REFUSED())
      // a custom header makes every cross-origin request non-simple: preflight first (Fetch §3.2.2)
      if (request.headers[FALLBACK_HEADER] !== '1') return refuse(reply, new PORTCULLIS_FALLBACK_HEADER_REQUIRED())
      if (kind !== 'poll' && kind !== 'stream' && !isJsonContentType(request.headers['content-type'])) return refuse(reply, new PORTCULLIS_FALLBACK_CONTENT_TYPE())
      // Browsers cannot send Sec-* headers from script (Fetch "forbidden request-header"); the
      // offer of a fallback request is in the open body or X-Portcullis-Protocol, never a
      // WebSocket header (PROTOCOL.md §9) — on every endpoint, `open` included.
      if (request.headers['sec-websocket-protocol'] !== undefined) return badRequest(reply, new SyntaxError('Sec-WebSocket-Protocol is not a fallback header'))
      if (kind === 'open') return

      // The cheap per-IP bound first: a flood of polls from one address must not buy an
      // identity lookup (a session store round trip) each. The handler checks again, exactly.
      if ((kind === 'poll' || kind === 'stream') && (pendingPerIp.get(request.ip) ?? 0) >= maxPendingPollsPerIp) {
        return replyDenial(reply, denialOf(new PORTCULLIS_FALLBACK_TOO_MANY_POLLS()))
      }
      // The policy sees only the request (origin, cookies, the repeated protocol), never whether
      // the id exists, so its answer cannot tell a live id from a dead one. `resumed` tells
      // stages that count new connections (per-identity limits) that this one was counted at open.
      const decision = await route.evaluate(request, kind === 'stream' ? 'stream' : 'long-poll', headerValue(request.headers['x-portcullis-protocol']), true)
      if (!decision.allowed) return replyDenial(reply, decision.denial)
      const sid = request.headers['x-portcullis-sid']
      let record = isSid(sid) ? await store.get(sid) : undefined
      if (record === undefined || !matches(record, route, decision, request)) {
        request.log.info({ portcullis: { code: 'PORTCULLIS_FALLBACK_UNKNOWN_SESSION', route: route.url, known: record !== undefined } }, 'portcullis: unknown or mismatched fallback session')
        return unknownSession(reply)
      }
      if (record.closed === undefined && record.node === store.nodeId && !sockets.has(record.sid)) {
        // Open in the store, owned here, but no socket runs it: a store failure ended it
        // locally and its close never reached the store. Close it now; the client hears 1011.
        request.log.warn({ portcullis: { code: 'PORTCULLIS_FALLBACK_LOST_SESSION', route: route.url } }, 'portcullis: fallback session without a handler; closing it in the store')
        await closeLost(record.sid, limits.closeLingerMs)
        record = await store.get(record.sid)
        if (record === undefined) return unknownSession(reply)
      }
      if (record.closed === undefined) await store.touch(record.sid, Date.now())
      ;(request as unknown as Record<symbol, Bound | null>)[kBound] = { sid: record.sid, record }
    }
  }

  /** The rule of both doors: a handler that throws or rejects closes its connection with 1011, logged once at error with the route. */
  function runHandler (instance: FastifyInstance, route: ProtectedRoute, socket: LongPollSocket, request: FastifyRequest): void {
    const fail = (err: unknown): void => socket[kFail](err, 'handler')
    try {
      const r = route.handler.call(instance, socket, request)
      if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(undefined, fail)
    } catch (err) {
      fail(err)
    }
  }
}

/**
 * Errors of the fallback routes. Only the fallback's own body-reading failures become its
 * codes; another plugin's 4xx (a rate limiter's 429 with Retry-After, an auth hook's 401/403)
 * goes on to the app's error handler with its own status, body and headers, so a client can
 * tell "slow down" from "denied". Unexpected 5xx never show their detail.
 */
function fallbackErrorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const status = error.statusCode ?? 500
  const ours = typeof error.code === 'string' && error.code.startsWith('FST_ERR_CTP_')
  if (status === 413 && ours) return refuse(reply, new PORTCULLIS_FALLBACK_BODY_TOO_LARGE())
  if (status === 415 && ours) return refuse(reply, new PORTCULLIS_FALLBACK_CONTENT_TYPE())
  if (status >= 400 && status < 500) {
    if (ours || error.validation !== undefined) return badRequest(reply, new SyntaxError('invalid JSON body'))
    noStore(reply)
    throw error
  }
  // A store that cannot answer (Redis down or restarting) says so with its own stable 503: the
  // client retries later, and no detail of the store's failure reaches the response.
  if (status === 503 && typeof error.code === 'string' && error.code.startsWith('PORTCULLIS_')) {
    request.log.warn({ portcullis: { code: error.code, route: request.routeOptions.url } }, 'portcullis: fallback store unavailable')
    reply.header('retry-after', '1')
    return refuse(reply, error)
  }
  request.log.error({ err: error }, 'portcullis: fallback request failed')
  return refuse(reply, new PORTCULLIS_FALLBACK_INTERNAL())
}

/**
 * The request serializer of the fallback routes: Fastify's default fields, with any query string
 * cut from the URL. A fallback URL never has a legitimate query (§2.1), so one that has is
 * refused — and must not put what it carried (an id pasted there by a broken client) into the
 * "incoming request" log line.
 */
function fallbackRequestLog (req: FastifyRequest): Record<string, unknown> {
  const url = req.url
  const q = url.indexOf('?')
  return {
    method: req.method,
    url: q === -1 ? url : `${url.slice(0, q)}?[query not logged]`,
    version: req.headers['accept-version'],
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort
  }
}

async function preflightHandler (_request: FastifyRequest, reply: FastifyReply): Promise<void> {
  // Reached only when no CORS layer answered: no Access-Control-* headers, so the browser refuses.
  noStore(reply).code(204).header('allow', 'GET, POST, OPTIONS').send()
}

function definedOnly<T extends object> (o: T): Partial<T> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v
  return out as Partial<T>
}

function pickLimits (o: Record<string, unknown>): Limits {
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

function compileRoute (value: FallbackRouteOption | undefined, base: Limits): Limits | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true) return base
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError('must be true, false or an object of limits')
  const err = (m: string): Error => new TypeError(m)
  checkLimits(value as Record<string, unknown>, '', err)
  const merged = Object.freeze({ ...base, ...value })
  checkTimeouts(merged, err)
  return merged
}

function validateOptions (opts: FallbackOptions): void {
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

const plugin = fp(portcullisFallback, {
  name: '@portcullis/fallback',
  fastify: '5.x',
  dependencies: ['@portcullis/policy']
})

export default plugin
export { plugin as portcullisFallback }
export { LongPollSocket } from './socket.js'
export { MemoryStore } from './store.js'
export type * from './store.js'
export type * from './types.js'
export * as errors from './errors.js'
export { parseAck, parseSendBody, parseCloseBody, parseOpenBody, parseOpenQuery, isJsonContentType, checkBase64, isSid, isValidCloseCode } from './wire.js'
