import createError from '@fastify/error'

// Startup errors: a wrong configuration never serves.
export const PORTCULLIS_FALLBACK_INVALID_OPTION = createError('PORTCULLIS_FALLBACK_INVALID_OPTION', 'Invalid @portcullis/fallback option: %s', 500, TypeError)

// Request errors (PROTOCOL.md §11). Messages are fixed text: they never echo an id, a cookie or a body.
export const PORTCULLIS_FALLBACK_QUERY_REFUSED = createError('PORTCULLIS_FALLBACK_QUERY_REFUSED', 'Fallback requests take no query string', 400)
export const PORTCULLIS_FALLBACK_HEADER_REQUIRED = createError('PORTCULLIS_FALLBACK_HEADER_REQUIRED', 'Fallback requests must carry X-Portcullis-Fallback: 1', 400)
export const PORTCULLIS_FALLBACK_CONTENT_TYPE = createError('PORTCULLIS_FALLBACK_CONTENT_TYPE', 'Fallback request bodies must be application/json', 415)
export const PORTCULLIS_FALLBACK_UNKNOWN_SESSION = createError('PORTCULLIS_FALLBACK_UNKNOWN_SESSION', 'Unknown fallback session', 404)
export const PORTCULLIS_FALLBACK_BODY_TOO_LARGE = createError('PORTCULLIS_FALLBACK_BODY_TOO_LARGE', 'Request body too large', 413)
export const PORTCULLIS_FALLBACK_BAD_REQUEST = createError('PORTCULLIS_FALLBACK_BAD_REQUEST', 'Malformed fallback request: %s', 400)
export const PORTCULLIS_FALLBACK_BAD_ACK = createError('PORTCULLIS_FALLBACK_BAD_ACK', 'Ack beyond the last message sent', 400)
export const PORTCULLIS_FALLBACK_SEQUENCE_GAP = createError('PORTCULLIS_FALLBACK_SEQUENCE_GAP', 'Message sequence gap: resend from ack + 1', 409)
export const PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS = createError('PORTCULLIS_FALLBACK_TOO_MANY_SESSIONS', 'Too many fallback sessions', 429)
export const PORTCULLIS_FALLBACK_TOO_MANY_POLLS = createError('PORTCULLIS_FALLBACK_TOO_MANY_POLLS', 'Too many waiting polls from this address', 429)
export const PORTCULLIS_FALLBACK_INTERNAL = createError('PORTCULLIS_FALLBACK_INTERNAL', 'The fallback request failed', 500)

/**
 * The store did not answer within `storeTimeoutMs`, or is unreachable (`@portcullis/fallback-redis`
 * throws the same error). The request did nothing the client can rely on — a `send` so answered
 * was not acknowledged — and the client retries after `Retry-After` (PROTOCOL.md §9).
 */
export const PORTCULLIS_STORE_UNAVAILABLE = createError('PORTCULLIS_STORE_UNAVAILABLE', 'The session store is unavailable, retry later', 503)
