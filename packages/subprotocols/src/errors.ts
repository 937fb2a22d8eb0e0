import createError from '@fastify/error'

// Startup errors: a wrong registry or route option fails while the app registers, never at runtime.
export const PORTCULLIS_SUBPROTOCOL_INVALID_OPTION = createError(
  'PORTCULLIS_SUBPROTOCOL_INVALID_OPTION', 'Invalid @portcullis/subprotocols option: %s', 500, TypeError
)
export const PORTCULLIS_SUBPROTOCOL_INVALID_NAME = createError(
  'PORTCULLIS_SUBPROTOCOL_INVALID_NAME',
  'Subprotocol name %s is not an RFC 7230 token (letters, digits and !#$%%&\'*+-.^_`|~; 1 to 256 characters)',
  500, TypeError
)
export const PORTCULLIS_SUBPROTOCOL_DUPLICATE_NAME = createError(
  'PORTCULLIS_SUBPROTOCOL_DUPLICATE_NAME', 'Subprotocol %s is already registered', 500
)
export const PORTCULLIS_SUBPROTOCOL_NOT_REGISTERED = createError(
  'PORTCULLIS_SUBPROTOCOL_NOT_REGISTERED',
  'Subprotocol %s is not registered: register it (plugin option `protocols` or fastify.portcullisProtocols.register) before the routes that accept it',
  500, TypeError
)
export const PORTCULLIS_SUBPROTOCOL_LATE_REGISTRATION = createError(
  'PORTCULLIS_SUBPROTOCOL_LATE_REGISTRATION', 'Subprotocol %s was registered after the server became ready', 500
)

// Handshake denials (RFC 6455 §4.2.2): answered with a 4xx before any 101. The messages are
// constant: the client's header text is never echoed (it may be huge or carry markup).
export const PORTCULLIS_SUBPROTOCOL_MALFORMED = createError(
  'PORTCULLIS_SUBPROTOCOL_MALFORMED', 'Sec-WebSocket-Protocol must be a comma-separated list of tokens', 400
)
export const PORTCULLIS_SUBPROTOCOL_DUPLICATE = createError(
  'PORTCULLIS_SUBPROTOCOL_DUPLICATE', 'Sec-WebSocket-Protocol must not offer a subprotocol twice', 400
)
export const PORTCULLIS_SUBPROTOCOL_TOO_MANY = createError(
  'PORTCULLIS_SUBPROTOCOL_TOO_MANY', 'Sec-WebSocket-Protocol offers too many subprotocols', 400
)
export const PORTCULLIS_SUBPROTOCOL_TOO_LONG = createError(
  'PORTCULLIS_SUBPROTOCOL_TOO_LONG', 'Sec-WebSocket-Protocol is too long', 400
)
export const PORTCULLIS_SUBPROTOCOL_UNSUPPORTED = createError(
  'PORTCULLIS_SUBPROTOCOL_UNSUPPORTED', 'None of the offered subprotocols is supported on this route', 400
)
export const PORTCULLIS_TOO_MANY_CONNECTIONS = createError(
  'PORTCULLIS_TOO_MANY_CONNECTIONS', 'Too many connections for this identity', 429
)
