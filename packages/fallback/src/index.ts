/**
 * `@portcullis/fallback`: the plugin itself — options (options.ts), the store's lifecycle and the
 * shutdown. Each protected route's endpoints are in endpoints.ts, the gate every fallback request
 * passes first in gate.ts, the wire format in wire.ts (PROTOCOL.md), the stream in stream.ts.
 */
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { CloseCodes } from '@portcullis/policy'
import type { FallbackOptions, FallbackRouteOption } from './types.js'
import { MemoryStore, type FallbackStore } from './store.js'
import { LongPollSocket, kClientClose, kReceive, kSettled } from './socket.js'
import { atMost, timedStore } from './timed-store.js'
import { registerEndpoints } from './endpoints.js'
import { kBound, type FallbackNode, type Limits } from './node.js'
import { compileRoute, defaults, definedOnly, pickLimits, validateOptions } from './options.js'

export { PROTOCOL_VERSION, FALLBACK_HEADER, FALLBACK_REQUEST_HEADERS } from './constants.js'

/** The close of a session whose socket a store failure ended (what its handler saw, too). */
const LOST_CLOSE = Object.freeze({ code: CloseCodes.INTERNAL_ERROR, reason: 'internal error' })

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

  const node: FallbackNode = {
    store,
    policy,
    sockets: new Map(),
    pendingPerIp: new Map(),
    waiting: new Set(),
    holds: new Map(),
    active: new Set(),
    maxPendingPollsPerIp,
    querystringParser,
    closeLost
  }
  const { sockets, waiting, active } = node
  // What the gate established, on the request itself (a declared slot: requests keep one shape,
  // and no WeakMap insert per request)
  fastify.decorateRequest(kBound as unknown as string, null)

  policy.addTransport<FallbackRouteOption, Limits | undefined>({
    name: 'long-poll',
    option: 'fallback',
    compile: (value) => compileRoute(value, base),
    route (protectedRoute, limits, { instance, path }) {
      if (limits !== undefined) registerEndpoints(node, protectedRoute, limits, instance, path)
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
