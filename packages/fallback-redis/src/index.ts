import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { CloseCodes } from '@portcullis/policy'
import { RedisStore } from './store.js'
import { PORTCULLIS_REDIS_INVALID_OPTION } from './errors.js'
import type { FallbackRedisOptions, PortcullisRedis } from './types.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** `@portcullis/fallback-redis`: the Redis store this node uses (give it to `@portcullis/fallback`). */
    portcullisRedis: PortcullisRedis
  }
}

// The subset of @portcullis/cookie-session's decorator this plugin uses (no hard dependency).
interface SessionsLike {
  onRevoke: (listener: (event: { sessionId: string, reason: string }) => void) => () => void
  revokeLocal: (sessionId: string, reason?: string) => number
}

/**
 * Multi-node Portcullis on Redis: creates (or takes) the `RedisStore` for `@portcullis/fallback`
 * and spreads revocations to every node. Each `portcullisSessions.revoke()` of
 * `@portcullis/cookie-session` is published; a revocation from any node is applied here with
 * `revokeLocal` (or `wsPolicy.closeSession` without the session plugin), so WebSocket and
 * long-poll connections of the session close on every node.
 */
async function portcullisFallbackRedis (fastify: FastifyInstance, opts: FallbackRedisOptions): Promise<void> {
  if (opts === null || typeof opts !== 'object') throw new PORTCULLIS_REDIS_INVALID_OPTION('options must be an object')
  if (opts.store !== undefined && !(opts.store instanceof RedisStore)) throw new PORTCULLIS_REDIS_INVALID_OPTION('store must be a RedisStore')
  if (opts.store !== undefined && opts.redis !== undefined) throw new PORTCULLIS_REDIS_INVALID_OPTION('give either store or redis, not both')
  const { store: given, ...storeOpts } = opts
  const store = given ?? new RedisStore({ ...storeOpts, redis: storeOpts.redis as NonNullable<typeof storeOpts.redis>, logger: storeOpts.logger ?? fastify.log })

  fastify.decorate('portcullisRedis', { store } satisfies PortcullisRedis)

  let startedHere = false
  const unsubscribe: Array<() => void> = []

  // onReady, so the registration order of cookie-session and the fallback does not matter.
  fastify.addHook('onReady', async function portcullisRedisWire () {
    const sessions = (fastify as FastifyInstance & { portcullisSessions?: SessionsLike }).portcullisSessions
    if (sessions !== undefined) {
      unsubscribe.push(sessions.onRevoke(function portcullisRedisPublishRevocation (event) {
        store.publishRevocation(event.sessionId, CloseCodes.SESSION_REVOKED, event.reason).catch((err: Error) => {
          // Closed here already; other nodes will not hear of it. Loud, never silent.
          fastify.log.error({ err }, 'portcullis: revocation could not be published to other nodes (Redis unavailable)')
        })
      }))
    }
    unsubscribe.push(store.onRevocation(function portcullisRedisApplyRevocation (sessionId, code, reason) {
      if (sessions !== undefined && code === CloseCodes.SESSION_REVOKED) sessions.revokeLocal(sessionId, reason)
      else fastify.wsPolicy.closeSession(sessionId, code, reason)
    }))
    // The fallback starts the store it was given (in its own onReady, after ours when it was
    // registered after us). Without it (WebSocket-only nodes), start the store for revocations.
    const fallback = (fastify as FastifyInstance & { wsFallback?: { store: unknown } }).wsFallback
    if (fallback?.store !== store && !store.started) {
      await store.start({ inbound: noop, clientClose: noop, revocation: noop })
      startedHere = true
    }
  })

  fastify.addHook('onClose', async function portcullisRedisStop () {
    for (const fn of unsubscribe) fn()
    if (startedHere) await store.stop()
  })
}

function noop (): void {}

const plugin = fp(portcullisFallbackRedis, {
  name: '@portcullis/fallback-redis',
  fastify: '5.x',
  dependencies: ['@portcullis/policy']
})

export default plugin
export { plugin as portcullisFallbackRedis }
export { RedisStore, STORE_LOST_CLOSE } from './store.js'
export type { RevocationListener } from './store.js'
export * as errors from './errors.js'
export type { FallbackRedisOptions, PortcullisRedis, RedisStoreOptions, StoreLogger } from './types.js'
