import createError from '@fastify/error'

// Startup: a wrong configuration never serves.
export const PORTCULLIS_REDIS_INVALID_OPTION = createError('PORTCULLIS_REDIS_INVALID_OPTION', 'Invalid @portcullis/fallback-redis option: %s', 500, TypeError)

/**
 * Redis is unreachable, timed out, or restarted and lost the session's state. Answered as 503 on
 * every fallback request that needs the store; the request did nothing the client can rely on
 * (a send answered 503 was not delivered — retry it, the seq makes the retry idempotent).
 */
export const PORTCULLIS_STORE_UNAVAILABLE = createError('PORTCULLIS_STORE_UNAVAILABLE', 'The session store is unavailable, retry later', 503)
