/**
 * Close codes and reasons shared by both doors (RFC 6455 §7.4). 1000–2999 are the protocol's;
 * 4000–4999 are private-use (§7.4.2) and Portcullis documents its own here, so that a client
 * can tell "do not reconnect" (revoked, expired, denied) from "reconnect with backoff".
 * Reasons are stable ASCII strings (≤ 123 bytes, §5.5) — clients may switch on them.
 */
export const CloseCodes = Object.freeze({
  /** 1001: the server is shutting down (`fastify.close()`); reconnect later. */
  GOING_AWAY: 1001,
  /** 1003: a message of a data type the protocol does not accept (text vs binary). */
  UNSUPPORTED_DATA: 1003,
  /** 1008: a message broke the negotiated protocol's rules (inspection). */
  POLICY_VIOLATION: 1008,
  /** 1009: a message larger than the limit. */
  MESSAGE_TOO_BIG: 1009,
  /** 1011: the server hit an unexpected condition. */
  INTERNAL_ERROR: 1011,
  /** 4001: the session was revoked (logout, admin action). Do not reconnect without logging in. */
  SESSION_REVOKED: 4001,
  /** 4002: the session expired. Do not reconnect without logging in again. */
  SESSION_EXPIRED: 4002,
  /** 4003: periodic re-validation found the session no longer valid. */
  SESSION_INVALID: 4003,
  /** 4008: too many messages per second. Reconnect with backoff. */
  RATE_LIMITED: 4008,
  /** 4009: the peer did not read fast enough and its queue hit the bound (slow consumer). */
  SLOW_CONSUMER: 4009,
  /** 4010: the fallback session idled out (no poll within the idle timeout). */
  IDLE_TIMEOUT: 4010,
  /** 4011: the node serving the session went away (multi-node fallback). Reconnect. */
  NODE_GONE: 4011,
  /** 4029: too many connections for this identity. */
  TOO_MANY_CONNECTIONS: 4029,
  /** 4403: the connection attempt was denied by policy (fallback close events carry the HTTP code as 4000 + status). */
  POLICY_DENIED: 4403
})

/**
 * A policy denial seen by a client as a close event uses 4000 + the HTTP status (4401, 4403,
 * 4400, 4429...), so the same denial reads the same whichever door it came through.
 */
export function denialCloseCode (status: number): number {
  return status >= 400 && status < 600 ? 4000 + status : CloseCodes.POLICY_DENIED
}
