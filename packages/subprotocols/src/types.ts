import type { FastifyBaseLogger } from 'fastify'
import type { PortcullisIdentity, PortcullisSocket, PortcullisState, Violation } from '@portcullis/policy'
import type { HeaderLimits } from './header.js'

/** Which WebSocket data types a protocol accepts. Anything else closes the connection with 1003. */
export type DataTypes = 'text' | 'binary' | 'both'

/** Token bucket for inbound messages: `messagesPerSecond` refill, up to `burst` at once. */
export interface RateLimit {
  /** Sustained messages per second. */
  messagesPerSecond: number
  /** Messages allowed at once after an idle period. Default: `messagesPerSecond`. */
  burst?: number
}

/**
 * Limits of a protocol, a route or the whole plugin. Resolved key by key: the route's value,
 * else the negotiated protocol's, else the plugin's; `false` switches a limit off explicitly.
 */
export interface SubprotocolLimits {
  /** Largest inbound message in bytes; beyond it the connection closes with 1009. Default 65536. */
  maxMessageBytes?: number | false
  /** Inbound message rate; beyond it the connection closes with 4008. Default `false` (off). */
  rate?: RateLimit | false
  /**
   * Live connections (both doors, every route) one identity may hold; a new one beyond it is
   * refused with 429 before the handshake. Needs an identity stage; ignored without identity.
   * Default `false` (off).
   */
  maxConnectionsPerIdentity?: number | false
}

/** What an inspector's `open` receives once per connection. */
export interface InspectorContext {
  /** The negotiated subprotocol (a registered name). */
  readonly protocol: string
  /** The identity an identity stage resolved for this connection, if any. */
  readonly identity: PortcullisIdentity | undefined
  readonly state: PortcullisState
  readonly socket: PortcullisSocket
  readonly log: FastifyBaseLogger
  /**
   * Hand the parsed form of the message being inspected to the handler, who reads it back with
   * `parsedMessage(socket, data)` — so the handler need not parse the message again. A method
   * of the context (call it as `ctx.expose(data, value)`): the context is the connection's one
   * guard object, which holds no per-connection closure.
   */
  expose (data: Buffer | string, value: unknown): void
}

/** A per-connection inspector: sees every inbound message after the data-type, size and rate checks. */
export interface MessageInspector {
  /** Return a violation to drop the message and close the connection (1008 for content). */
  message: (data: Buffer | string, isBinary: boolean) => Violation | undefined
  /** Called once when the connection closes. */
  close?: () => void
}

/**
 * A registered subprotocol: its data types, its limits and (optionally) a content inspector.
 * `json()` and `stomp()` build these; a plain object `{ dataTypes: 'binary' }` registers a
 * protocol checked by type and limits only.
 */
export interface SubprotocolDefinition {
  /** Data types this protocol accepts. Default `'text'`. */
  dataTypes?: DataTypes
  /** This protocol's limits, under the route's. Default: the plugin's limits. */
  limits?: SubprotocolLimits
  /** Create the content inspector of one connection. Omit to check type and limits only. */
  open?: (ctx: InspectorContext) => MessageInspector
  /** One short line for `describe()`, e.g. `json (3 message types)`. */
  describe?: string
}

/** Route option `wsPolicy.protocols`, long form. */
export interface SubprotocolRoutePolicy {
  /** Registered subprotocol names this route accepts, in the server's preference order. */
  accept: readonly string[]
  /**
   * Refuse (400 `PORTCULLIS_SUBPROTOCOL_UNSUPPORTED`) a client that offers none of `accept`.
   * Default `true`: a client must not skip inspection by offering no subprotocol.
   */
  required?: boolean
  /** Limits for this route, over each protocol's own. */
  limits?: SubprotocolLimits
}

/** `wsPolicy.protocols`: the long form, or a list of names (`required: true`, no route limits). */
export type SubprotocolRouteOption = readonly string[] | SubprotocolRoutePolicy

export interface SubprotocolsOptions {
  /** Subprotocols to register, by name (an RFC 7230 token such as `chat.v1`). Default `{}`. */
  protocols?: Record<string, SubprotocolDefinition>
  /** Limits for every protocol and route that do not set their own. Default `{ maxMessageBytes: 65536 }`. */
  limits?: SubprotocolLimits
  /** Caps on the `Sec-WebSocket-Protocol` header. Default `{ maxLength: 4096, maxCount: 32 }`; `maxCount` at most 256. */
  header?: Partial<HeaderLimits>
}

/** The subprotocol registry: `fastify.portcullisProtocols`. */
export interface SubprotocolRegistry {
  /** Register a subprotocol. Before the routes that accept it, and before `ready`. */
  register: (name: string, definition: SubprotocolDefinition) => void
  has: (name: string) => boolean
  get: (name: string) => Readonly<SubprotocolDefinition> | undefined
  /** Registered names, in registration order. */
  names: () => string[]
}

declare module '@portcullis/policy' {
  interface PortcullisRoutePolicy {
    /**
     * Subprotocols this route negotiates (`@portcullis/subprotocols`): a list of registered names
     * in preference order (one is required), or `{ accept, required, limits }`.
     */
    protocols?: SubprotocolRouteOption
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The subprotocol registry of `@portcullis/subprotocols`. */
    portcullisProtocols: SubprotocolRegistry
  }
}
