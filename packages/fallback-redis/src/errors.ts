import createError from '@fastify/error'
import { errors as fallbackErrors } from '@portcullis/fallback'

// Startup: a wrong configuration never serves.
export const PORTCULLIS_REDIS_INVALID_OPTION = createError('PORTCULLIS_REDIS_INVALID_OPTION', 'Invalid @portcullis/fallback-redis option: %s', 500, TypeError)

/**
 * Redis is unreachable, timed out, or restarted and lost the session's state. Answered as 503 on
 * every fallback request that needs the store; the request did nothing the client can rely on
 * (a send answered 503 was not delivered — retry it, the seq makes the retry idempotent).
 * The same error as `@portcullis/fallback`'s (which throws it when a store call outlasts
 * `storeTimeoutMs`): one code, one class, one home.
 */
export const PORTCULLIS_STORE_UNAVAILABLE = fallbackErrors.PORTCULLIS_STORE_UNAVAILABLE
