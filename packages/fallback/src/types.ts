import type { FallbackStore } from './store.js'

/**
 * Per-route limits of the long-poll twin. Every one has a safe default; a route may override
 * any of them with `wsPolicy: { fallback: { ... } }`, and the plugin options set app-wide values.
 */
export interface FallbackLimits {
  /** How long a poll is held when nothing is queued, in ms. Default `25000` (under common proxy idle timeouts of 30 s+). */
  pollTimeoutMs?: number
  /** A session with no request for this long is closed with 4010. Default `60000`. Must exceed `pollTimeoutMs`. */
  idleTimeoutMs?: number
  /** How long a closed session still answers its close to a retried poll, in ms. Default `10000`. */
  closeLingerMs?: number
  /** Messages per `send` request and per poll answer. Default `64`. */
  maxMessagesPerRequest?: number
  /** Largest `send` body in bytes; larger is refused with 413 before it is read (Fastify `bodyLimit`). Default `1048576`. */
  maxBodyBytes?: number
  /** Largest inbound message in bytes (decoded), as `ws`'s `maxPayload`; larger closes with 1009. Default `1048576`. */
  maxPayload?: number
  /** Server messages queued for a client that has not acked them; more closes with 4009. Default `1024`. */
  maxQueuedMessages?: number
  /** Bytes queued for a client that has not acked them; more closes with 4009. Default `4194304` (4 MiB). */
  maxQueuedBytes?: number
  /** Payload bytes per poll answer (at least one message is always sent). Default `1048576`. */
  maxPollBytes?: number
  /** Live fallback sessions per identity (all routes); more opens get 429. `0` = no limit. Default `16`. */
  maxSessionsPerIdentity?: number
  /** Live fallback sessions per client IP (all routes). `0` = no limit. Default `64`. */
  maxSessionsPerIp?: number
  /** Live fallback sessions in total (the whole store). `0` = no limit. Default `10000`. */
  maxSessions?: number
  /**
   * Serve the streaming downstream `GET <path>/_lp/stream` (wire protocol v2, PROTOCOL.md §13)
   * beside the long-poll endpoints; a v2 `open` answers `stream: true|false` accordingly.
   * Default `true`.
   */
  stream?: boolean
}

/** The `fallback` key of a route's `wsPolicy`: `true` (defaults) or limits to override. */
export type FallbackRouteOption = boolean | FallbackLimits

export interface FallbackOptions extends FallbackLimits {
  /** Where sessions, queues and routing live. Default: a new `MemoryStore` (one node). */
  store?: FallbackStore
  /**
   * Waiting polls per client IP, over all sessions of this node; more get 429. Checked before the
   * policy runs, so a flood of polls costs no identity lookups. Default `64`.
   */
  maxPendingPollsPerIp?: number
  /**
   * Every store call that does not settle within this time fails closed: a request waiting on it
   * gets `503 PORTCULLIS_STORE_UNAVAILABLE` with `Retry-After`, a socket waiting on it closes
   * with 1011 (and its session is closed in the store once the store answers). It also bounds
   * `fastify.close()` with a hung store (about twice this). Default `15000` — above
   * `@portcullis/fallback-redis`'s own bounds (`commandTimeoutMs` 2 s, `deliveryTimeoutMs` 10 s),
   * so a Redis store's 503 comes first.
   */
  storeTimeoutMs?: number
  /**
   * Parses the WebSocket URL's query string, which the client carries in the `open` body, into
   * the handler's `request.query` (so a handler reads `request.query` on both doors). Give the
   * same function as Fastify's `routerOptions.querystringParser` if you set one. Default Node's
   * `querystring.parse`, which agrees with Fastify's default parser.
   */
  querystringParser?: (query: string) => Record<string, unknown>
}

declare module '@portcullis/policy' {
  interface PortcullisRoutePolicy {
    /**
     * Serve an HTTP long-poll twin of this WebSocket route at `<path>/_lp/*` (see
     * `@portcullis/fallback`'s PROTOCOL.md). `true` uses the plugin's limits; an object overrides
     * some. Default: off.
     */
    fallback?: FallbackRouteOption
  }
}
