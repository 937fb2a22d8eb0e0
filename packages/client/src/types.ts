/** The door a `PortcullisSocket` is connected through. */
export type TransportName = 'websocket' | 'stream' | 'long-poll'

/**
 * The part of the WebSocket API the client drives: the browser's `WebSocket`, or `ws` in Node.js.
 * Event handler parameters are loose on purpose, so both fit without a cast.
 */
export interface WebSocketLike {
  readonly protocol: string
  readonly bufferedAmount: number
  binaryType: string
  onopen: ((ev: any) => void) | null
  onmessage: ((ev: any) => void) | null
  onclose: ((ev: any) => void) | null
  onerror: ((ev: any) => void) | null
  send: (data: any) => void
  close: (code?: number, reason?: string) => void
}

/**
 * A WebSocket constructor. The third argument is only passed when `headers` is set: `ws`
 * reads `{ headers }` from it; browsers ignore it (they forbid setting Cookie and Origin anyway).
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: any) => WebSocketLike

export type FetchLike = (input: string, init: {
  method: string
  headers: Record<string, string>
  body: string | undefined
  credentials: 'include'
  cache: 'no-store'
  signal?: AbortSignal
  keepalive: boolean
}) => Promise<{
  status: number
  ok: boolean
  json: () => Promise<any>
  headers?: { get: (name: string) => string | null }
  /** The body as a stream: the `stream` transport reads it; without it the client long-polls. */
  body?: ReadableStream<Uint8Array> | null
}>

export interface ReconnectOptions {
  /** Attempts after a transient failure before giving up. Default `10`. */
  retries?: number
  /** First delay; doubles each attempt, with jitter. Default `500` ms. */
  minDelayMs?: number
  /** Cap on the delay. Default `10000` ms. */
  maxDelayMs?: number
}

export interface PortcullisSocketOptions {
  /**
   * The WebSocket implementation. Default `globalThis.WebSocket` (browsers). Node.js 20 has
   * none: pass `ws` (`import WebSocket from 'ws'`).
   */
  WebSocket?: WebSocketConstructor
  /** The fetch implementation for the long-poll fallback. Default `globalThis.fetch`. */
  fetch?: FetchLike
  /**
   * Transports to try, in order. Default `['websocket', 'stream', 'long-poll']`: WebSocket first;
   * when it cannot open, the fallback — one held response carrying server messages (`stream`,
   * wire protocol v2), or long-poll when the server has no stream or an intermediary buffers it.
   */
  transports?: TransportName[]
  /** Shorthand for `transports: ['long-poll']`. Default `false`. */
  forceLongPoll?: boolean
  /**
   * How long the WebSocket may stay CONNECTING before the client gives up on it and falls back.
   * A proxy that strips `Upgrade` can make the handshake hang rather than fail. Default `3000` ms.
   */
  openTimeoutMs?: number
  /**
   * Reconnect after transient failures (server restart, network drop, idle timeout), with
   * exponential backoff and jitter. Never after a denial or a revocation. Default `false`.
   */
  reconnect?: boolean | ReconnectOptions
  /**
   * Remember, for the page session (`sessionStorage`, else memory), that this URL needed the
   * fallback (and that its stream was buffered), so the next connect goes straight to the
   * transport that worked. Default `true`.
   */
  rememberFallback?: boolean
  /**
   * Extra request headers for Node.js clients (e.g. `Cookie`, `Origin`): sent on the upgrade and on
   * every fallback request. Browsers send their own cookies and origin. Default none.
   */
  headers?: Record<string, string>
  /**
   * A long-poll request not answered within the server's `pollTimeoutMs` (from its `open`
   * answer; 25 s before it) plus this margin is abandoned and retried, so a half-open connection
   * (a NAT or proxy that dropped it silently) cannot hang the socket forever. Default `10000` ms.
   */
  pollTimeoutMarginMs?: number
  /**
   * A stream whose first byte (the server's prelude, written at once) does not arrive within
   * this is taken for an intermediary that buffers responses: it is abandoned, the same session
   * continues on long-poll, and the page session remembers it. Default `3000` ms.
   */
  streamFirstByteMs?: number
}
