import createError from '@fastify/error'

// What stops a probe before (or instead of) a report. The CLI turns each into exit status 2;
// the programmatic API rejects with it. Messages never carry the cookie.

/** An option is missing or out of range (the message says which, and what is allowed). */
export const PORTCULLIS_PROBE_BAD_OPTION = createError('PORTCULLIS_PROBE_BAD_OPTION', 'Invalid portcullis-probe option: %s', 500, TypeError)

/** The target did not answer at all: refused, reset, timed out, or a TLS failure. */
export const PORTCULLIS_PROBE_UNREACHABLE = createError('PORTCULLIS_PROBE_UNREACHABLE', 'Target unreachable: %s', 500)

/**
 * The well-formed handshake (the given origin, cookie and subprotocol) was not accepted, so no
 * check could tell a refusal for a good reason from a refusal of everything.
 */
export const PORTCULLIS_PROBE_BASELINE_REFUSED = createError('PORTCULLIS_PROBE_BASELINE_REFUSED', 'The baseline handshake was not accepted: %s', 500)
