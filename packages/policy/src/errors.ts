import createError from '@fastify/error'

// Startup errors: thrown while plugins and routes register, so a wrong configuration never serves.
export const PORTCULLIS_INVALID_OPTION = createError('PORTCULLIS_INVALID_OPTION', 'Invalid Portcullis option: %s', 500, TypeError)
export const PORTCULLIS_INVALID_ROUTE_POLICY = createError('PORTCULLIS_INVALID_ROUTE_POLICY', 'Invalid wsPolicy on route %s: %s', 500, TypeError)
export const PORTCULLIS_NO_ORIGIN_STAGE = createError(
  'PORTCULLIS_NO_ORIGIN_STAGE',
  'WebSocket route %s has no origin decision: register @portcullis/origin-guard before your routes, or opt out explicitly with wsPolicy: { origin: false }',
  500
)
export const PORTCULLIS_LATE_REGISTRATION = createError(
  'PORTCULLIS_LATE_REGISTRATION',
  '%s was added after %s: register every Portcullis plugin before your routes (routes of every encapsulated context share the one policy)',
  500
)
export const PORTCULLIS_SCOPED_REGISTRATION = createError(
  'PORTCULLIS_SCOPED_REGISTRATION',
  '%s was added from the encapsulated context %s, but Portcullis stages and transports apply to every route of the app through the one policy registered in the context %s: register the plugin there, before any route, and put per-context differences in route options (wsPolicy) or the policy defaults',
  500
)
export const PORTCULLIS_WEBSOCKET_ALREADY_REGISTERED = createError(
  'PORTCULLIS_WEBSOCKET_ALREADY_REGISTERED',
  '@fastify/websocket is already registered %s: remove that registration and pass its options as the "websocket" option of @portcullis/policy, which registers @fastify/websocket itself so that its checks run in front of every WebSocket handler',
  500
)
export const PORTCULLIS_DUPLICATE_POLICY = createError(
  'PORTCULLIS_DUPLICATE_POLICY',
  '@portcullis/policy is already registered on this server (context %s): register it once, in the context that holds every WebSocket route',
  500
)
export const PORTCULLIS_DUPLICATE_STAGE = createError('PORTCULLIS_DUPLICATE_STAGE', 'A stage named "%s" is already registered', 500)

// Handshake errors (RFC 6455 §4.2.1): answered before any stage runs.
export const PORTCULLIS_BAD_HANDSHAKE = createError('PORTCULLIS_BAD_HANDSHAKE', 'Invalid WebSocket handshake: %s', 400)
export const PORTCULLIS_UNSUPPORTED_VERSION = createError('PORTCULLIS_UNSUPPORTED_VERSION', 'Unsupported WebSocket version: only 13 is supported', 426)
export const PORTCULLIS_NOT_A_WEBSOCKET_ROUTE = createError('PORTCULLIS_NOT_A_WEBSOCKET_ROUTE', 'This route does not accept WebSocket upgrades', 400)
export const PORTCULLIS_STAGE_FAILED = createError('PORTCULLIS_STAGE_FAILED', 'The connection could not be checked', 500)
export const PORTCULLIS_STAGE_TIMEOUT = createError('PORTCULLIS_STAGE_TIMEOUT', 'The connection could not be checked in time', 503)
export const PORTCULLIS_SHUTTING_DOWN = createError('PORTCULLIS_SHUTTING_DOWN', 'The server is shutting down', 503)
