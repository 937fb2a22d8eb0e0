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
