import type { FastifyReply, FastifyRequest } from 'fastify'
import { denialOf, replyDenial, type ProtectedRoute } from '@portcullis/policy'
import { isJsonContentType, isSid } from './wire.js'
import { badRequest, headerValue, matches, refuse, unknownSession } from './session.js'
import { FALLBACK_HEADER } from './constants.js'
import { kBound, type Bound, type FallbackNode, type Kind, type Limits } from './node.js'
import {
  PORTCULLIS_FALLBACK_CONTENT_TYPE, PORTCULLIS_FALLBACK_HEADER_REQUIRED, PORTCULLIS_FALLBACK_QUERY_REFUSED,
  PORTCULLIS_FALLBACK_TOO_MANY_POLLS
} from './errors.js'

/**
 * The per-endpoint gate, before any body is read: no query string, the marker header, a JSON
 * content type; then (poll/send/close) the route's full policy and the session binding. `open`
 * evaluates in its handler, because the offered protocols are in its body.
 */
export function gate (node: FallbackNode, kind: Kind, route: ProtectedRoute, limits: Limits) {
  const { store, sockets, pendingPerIp, maxPendingPollsPerIp, closeLost } = node
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
