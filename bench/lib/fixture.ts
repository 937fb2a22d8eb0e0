/**
 * The reference workload, shared by the servers and the load generator: the allowed origin, the
 * session secret and a signed session cookie, the required subprotocol, the 64-byte JSON message
 * and the schema the Portcullis side inspects it with.
 */
export const ORIGIN = 'https://app.example.com'
/** Two more allowed origins, so the allowlist is a list and not a single comparison. */
export const OTHER_ORIGINS = ['https://admin.example.com', 'https://example.org']
export const PROTOCOL = 'chat.v1'
export const COOKIE_NAME = 'sid'
/** The @fastify/cookie signing secret; a benchmark secret, never used outside bench/. */
export const SECRET = 'portcullis-bench-secret-0123456789abcdef'
export const SESSION_ID = 'bench-session-0001'
export const USER_ID = 'user-1'

/**
 * What a browser sends with an upgrade besides the policy's own headers: the benchmark's
 * handshake is a realistic one, the same bytes for every contender. Three cookies (the session
 * between an analytics cookie and a preference, as a browser on an app's origin sends them),
 * a User-Agent and Accept-Language, and the permessage-deflate offer every browser makes
 * (RFC 7692 §7.1; the servers here do not enable it, so the 101 declines it by omission).
 */
export const USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
export const ACCEPT_LANGUAGE = 'en-US,en;q=0.9,fr;q=0.8'
export const EXTENSIONS = 'permessage-deflate; client_max_window_bits'
/** The two cookies that are not the session's: one before it, one after it. */
export const OTHER_COOKIES = ['_ga=GA1.1.1234567890.1733000000', 'theme=dark'] as const

/** The upgrade's extra header lines, given the signed session cookie (`name=value`). */
export function browserHeaders (sessionCookie: string): Array<[string, string]> {
  return [
    ['Origin', ORIGIN],
    ['User-Agent', USER_AGENT],
    ['Accept-Language', ACCEPT_LANGUAGE],
    ['Cache-Control', 'no-cache'],
    ['Pragma', 'no-cache'],
    ['Cookie', `${OTHER_COOKIES[0]}; ${sessionCookie}; ${OTHER_COOKIES[1]}`],
    ['Sec-WebSocket-Extensions', EXTENSIONS],
    ['Sec-WebSocket-Protocol', PROTOCOL]
  ]
}

/** The 64-byte JSON text message every echo scenario sends. */
export const MESSAGE = JSON.stringify({ type: 'msg', room: 'lobby', seq: 1, text: 'x'.repeat(17) })
if (Buffer.byteLength(MESSAGE) !== 64) throw new Error(`bench message must be 64 bytes, is ${Buffer.byteLength(MESSAGE)}`)

/** JSON Schema of the echo message: what the Portcullis side inspects every message against. */
export const MESSAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'room', 'seq', 'text'],
  properties: {
    type: { const: 'msg' },
    room: { type: 'string', maxLength: 64 },
    seq: { type: 'integer', minimum: 0 },
    text: { type: 'string', maxLength: 1024 }
  }
} as const

/** Paths every WebSocket contender serves. */
export const WS_PATH = '/ws'
