import type { FastifyRequest } from 'fastify'
import type { PortcullisPolicy } from '@portcullis/policy'
import type { FallbackLimits } from './types.js'
import type { FallbackStore, SessionRecord } from './store.js'
import type { LongPollSocket } from './socket.js'
import type { Hold } from './session.js'

/**
 * What the plugin's parts share on one node: the store, the sessions whose handler runs here,
 * the held requests and the bounds on them. One object, made once per plugin instance, handed
 * to the gate (gate.ts) and the endpoints (endpoints.ts).
 */
export interface FallbackNode {
  /** The plugin's only view of the store: every call bounded by `storeTimeoutMs` (timed-store.ts). */
  readonly store: FallbackStore
  readonly policy: PortcullisPolicy
  /** Sockets whose handler runs here, by sid. */
  readonly sockets: Map<string, LongPollSocket>
  /** Waiting polls and streams on this node, by IP (the bound) and as a set (shutdown wakes them). */
  readonly pendingPerIp: Map<string, number>
  readonly waiting: Set<Hold['fire']>
  /**
   * The held poll or stream of each session on this node (the newest). A v2 send served here
   * tells a held poll which replies its answer carries, so the poll is not woken for them (§12.2).
   */
  readonly holds: Map<string, Hold>
  /** Handler work still running (shutdown waits for it). */
  readonly active: Set<Promise<unknown>>
  readonly maxPendingPollsPerIp: number
  readonly querystringParser: (query: string) => Record<string, unknown>
  /**
   * Close in the store a session this node finished locally (a store failure) while its record
   * may still be open, so its client hears 1011 instead of refreshing a session nobody runs.
   */
  readonly closeLost: (sid: string, lingerMs: number) => Promise<void>
}

export type Limits = Required<FallbackLimits>

export type Kind = 'open' | 'poll' | 'send' | 'close' | 'stream'
/** The request slot holding what the gate established for a poll/send/close/stream request. */
export const kBound = Symbol('portcullis.fallback.bound')

export interface Bound {
  sid: string
  record: SessionRecord
}

/** What the gate established for this request (a poll/send/close/stream request). */
export function boundOf (request: FastifyRequest): Bound {
  return (request as unknown as Record<symbol, Bound>)[kBound]
}
