import createError from '@fastify/error'

// Denials (RFC 6454 §7.3: the server rejects a request whose origin it does not trust). Every
// origin denial is a 403 on both doors; the code says why. Messages never echo the header.
export const PORTCULLIS_ORIGIN_NOT_ALLOWED = createError('PORTCULLIS_ORIGIN_NOT_ALLOWED', 'Origin not allowed', 403)
export const PORTCULLIS_ORIGIN_MISSING = createError('PORTCULLIS_ORIGIN_MISSING', 'Origin header required', 403)
export const PORTCULLIS_ORIGIN_MALFORMED = createError('PORTCULLIS_ORIGIN_MALFORMED', 'Origin header must be exactly one serialized origin', 403)
export const PORTCULLIS_ORIGIN_CROSS_SITE = createError('PORTCULLIS_ORIGIN_CROSS_SITE', 'Cross-site request refused', 403)

// Startup: a wrong option never serves.
export const PORTCULLIS_ORIGIN_INVALID_OPTION = createError('PORTCULLIS_ORIGIN_INVALID_OPTION', 'Invalid @portcullis/origin-guard option: %s', 500, TypeError)

// A route asked for the origin check (`requireAllowedOrigin`, `checkOrigin`) on an instance where
// the plugin is not registered: fail closed with a 500 rather than serve the route unchecked.
export const PORTCULLIS_ORIGIN_NOT_REGISTERED = createError('PORTCULLIS_ORIGIN_NOT_REGISTERED', 'requireAllowedOrigin/checkOrigin need @portcullis/origin-guard registered on this instance', 500)
