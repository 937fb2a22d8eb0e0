/** What a check looks at. */
export type Category = 'origin' | 'session' | 'subprotocol' | 'handshake' | 'framing' | 'limits' | 'fallback'

/** Which door of the route a check knocks on. */
export type Door = 'websocket' | 'long-poll'

export type Result = 'pass' | 'fail' | 'skip'

export interface Check {
  /** Stable id, e.g. `origin.suffix`. Unique together with `door`. */
  id: string
  category: Category
  door: Door
  result: Result
  /** One line: what was sent and what came back. Never contains the cookie or a session id. */
  detail: string
  /** One line: what to change when the check fails. */
  remedy: string
}

export interface Report {
  /** The probed URL (user info and query removed). */
  target: string
  checks: Check[]
  /** Number of checks whose result is `fail`. */
  findings: number
}

export interface ProbeOptions {
  /** The WebSocket route, `ws://` or `wss://`. Required. */
  url: string
  /** An origin the app allows, serialized (`https://app.example.com`). Required. */
  origin: string
  /**
   * The `Cookie` header of a logged-in user. Default: none (session checks are skipped).
   * Never printed: every report redacts it.
   */
  cookie?: string
  /** The subprotocol the route negotiates. Default: none (checks that need one are skipped). */
  protocol?: string
  /** Also probe the Portcullis long-poll door at `<path>/_lp/*`. Default `false`. */
  fallback?: boolean
  /** Upper bound on TCP connections (each check opens its own). Default 200, at most 1000. */
  maxRequests?: number
  /** Upper bound on the rate of new connections, per second. Default 20, at most 100. */
  ratePerSecond?: number
  /** Timeout of every connect, answer and wait, in milliseconds. Default 5000 (100 to 60000). */
  timeoutMs?: number
  /** Extra CA certificates for `wss://` targets (PEM). Default: Node's bundled CAs. */
  ca?: string | Buffer | Array<string | Buffer>
}
