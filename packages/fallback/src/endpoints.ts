import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { denialOf, kProtectedRoute, replyDenial, type ProtectedRoute } from '@portcullis/policy'
import type { ReadResult } from './store.js'
import { LongPollSocket, kFail, kSettled } from './socket.js'
import { newSid, parseAck, parseCloseBody, parseOpenBody, parseOpenQuery, parseOpenVersions, parseSendBody } from './wire.js'
import {
  Hold, answerPoll, badRequest, bump, clientGone, emptyPoll, noStore, noop, originOf, refuse, unknownSession
} from './session.js'
import { serveStream } from './stream.js'
import { gate } from './gate.js'
import { boundOf, type FallbackNode, type Limits } from './node.js'
import {
  PORTCULLIS_FALLBACK_BAD_ACK, PORTCULLIS_FALLBACK_BODY_TOO_LARGE, PORTCULLIS_FALLBACK_CONTENT_TYPE,
  PORTCULLIS_FALLBACK_INTERNAL, PORTCULLIS_FALLBACK_SEQUENCE_GAP, PORTCULLIS_FALLBACK_TOO_MANY_POLLS,
  PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS
} from './errors.js'

/**
 * `open` and `close` bodies are small; they never get the send body limit. 16 KiB for `open`
 * leaves room for an offer the subprotocol stage refuses by its own caps (4096 by default).
 */
const OPEN_BODY_LIMIT = 16 * 1024
const CLOSE_BODY_LIMIT = 1024

/**
 * The fallback endpoints of one protected route: `open`, `poll`, `send`, `close` and (unless
 * turned off) `stream` under `<path>/_lp/`, each behind the gate, plus their CORS preflights.
 */
export function registerEndpoints (node: FallbackNode, route: ProtectedRoute, limits: Limits, instance: FastifyInstance, path: string): void {
  const { store, policy, sockets, pendingPerIp, waiting, holds, active, maxPendingPollsPerIp, querystringParser, closeLost } = node
  const prefix = path.endsWith('/') ? path.slice(0, -1) : path
  const shown = route.url.endsWith('/') ? route.url.slice(0, -1) : route.url
  const config = { [kProtectedRoute]: route }
  const common = { config, exposeHeadRoute: false, errorHandler: fallbackErrorHandler, logSerializers: { req: fallbackRequestLog } }

  instance.route({ ...common, method: 'POST', url: `${prefix}/_lp/open`, bodyLimit: OPEN_BODY_LIMIT, onRequest: gate(node, 'open', route, limits), handler: openHandler })
  instance.route({ ...common, method: 'GET', url: `${prefix}/_lp/poll`, onRequest: gate(node, 'poll', route, limits), handler: pollHandler })
  instance.route({ ...common, method: 'POST', url: `${prefix}/_lp/send`, bodyLimit: limits.maxBodyBytes, onRequest: gate(node, 'send', route, limits), handler: sendHandler })
  instance.route({ ...common, method: 'POST', url: `${prefix}/_lp/close`, bodyLimit: CLOSE_BODY_LIMIT, onRequest: gate(node, 'close', route, limits), handler: closeHandler })
  const kinds = ['open', 'poll', 'send', 'close']
  if (limits.stream) {
    instance.route({ ...common, method: 'GET', url: `${prefix}/_lp/stream`, onRequest: gate(node, 'stream', route, limits), handler: streamHandler })
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
