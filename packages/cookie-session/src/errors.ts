import createError from '@fastify/error'

// Startup errors: thrown while the plugin registers, so a wrong configuration never serves.
export const PORTCULLIS_COOKIE_SESSION_INVALID_OPTION = createError(
  'PORTCULLIS_COOKIE_SESSION_INVALID_OPTION',
  'Invalid @portcullis/cookie-session option: %s',
  500,
  TypeError
)
export const PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN = createError(
  'PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN',
  '@portcullis/cookie-session: %s',
  500
)

// Denials: answered with 401 before any handshake, the same on both doors. Messages are fixed
// text: they never carry a cookie, a token or a session id.
export const PORTCULLIS_SESSION_REQUIRED = createError('PORTCULLIS_SESSION_REQUIRED', 'A session is required', 401)
export const PORTCULLIS_SESSION_INVALID = createError('PORTCULLIS_SESSION_INVALID', 'The session is invalid or has ended', 401)
export const PORTCULLIS_SESSION_EXPIRED = createError('PORTCULLIS_SESSION_EXPIRED', 'The session has expired', 401)
export const PORTCULLIS_SESSION_AMBIGUOUS = createError('PORTCULLIS_SESSION_AMBIGUOUS', 'More than one session cookie was sent', 401)
export const PORTCULLIS_AUTH_FAILED = createError('PORTCULLIS_AUTH_FAILED', 'Authentication failed', 401)
