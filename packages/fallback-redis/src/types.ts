import type { Redis } from 'ioredis'

/** The part of a pino/Fastify logger the store uses. */
export interface StoreLogger {
  info: (obj: object, msg?: string) => void
  warn: (obj: object, msg?: string) => void
  error: (obj: object, msg?: string) => void
}

export interface RedisStoreOptions {
  /**
   * A Redis URL (`redis://host:6379/0`, `rediss://` for TLS) or an `ioredis` instance. An instance
   * is never used directly: the store opens its own two connections with `duplicate()` (one for
   * commands, one for pub/sub), so your client keeps its own settings and the store can set its
   * fail-fast options. Required.
   */
  redis: string | Redis
  /**
   * Prefix of every key and channel, so several apps (or tests) share one Redis.
   * Default `'portcullis:'`.
   */
  keyPrefix?: string
  /** This node's id (recorded as the owner of the sessions it opens). Default: 96 random bits. */
  nodeId?: string
  /**
   * A node that has not refreshed its liveness key for this long is dead: its open sessions are
   * closed with 4011 (`CloseCodes.NODE_GONE`) on the next request or waiting-poll check. The
   * heartbeat runs every third of it. Keep it well under the route's idle timeout so the client
   * learns within it. Default `10000`.
   */
  nodeTtlMs?: number
  /**
   * A Redis command not answered within this time fails the request with 503
   * `PORTCULLIS_STORE_UNAVAILABLE` instead of hanging it. Default `2000`.
   */
  commandTimeoutMs?: number
  /**
   * How long a send waits for the owner node to hand its messages to the handler before it
   * answers 503 (the client retries; the seq makes the retry idempotent). Default `10000`.
   */
  deliveryTimeoutMs?: number
  /** How long a session closed by a dead owner stays readable (the client's polls repeat the close). Default `10000`. */
  lingerMs?: number
  /** How many revocations the catch-up stream keeps (approximate, `XADD MAXLEN ~`). Default `10000`. */
  revocationBacklog?: number
  /** Where the store logs connection trouble. Default: nothing. The fallback plugin passes its own. */
  logger?: StoreLogger
}

/**
 * Options of the Fastify plugin: either a `RedisStore` you built, or the store's options (then
 * the plugin builds it, logging through Fastify's logger).
 */
export interface FallbackRedisOptions extends Partial<RedisStoreOptions> {
  /** A store you built (e.g. to share it with code outside Fastify). Default: built from the other options. */
  store?: import('./store.js').RedisStore
}

/** `fastify.portcullisRedis`. */
export interface PortcullisRedis {
  /** Pass it to `@portcullis/fallback`: `app.register(fallback, { store: app.portcullisRedis.store })`. */
  readonly store: import('./store.js').RedisStore
}
