import type { PortcullisIdentity, Violation } from '@portcullis/policy'
import type { DataTypes, InspectorContext, MessageInspector, SubprotocolDefinition, SubprotocolLimits } from './types.js'
import {
  CLIENT_COMMANDS, parseStompFrames, stompHeader, StompSyntaxError,
  type StompClientCommand, type StompFrame, type StompFrameLimits, type StompProblem
} from './stomp-frame.js'
import { PORTCULLIS_SUBPROTOCOL_INVALID_OPTION } from './errors.js'

export interface StompInspectorOptions {
  /**
   * Client commands allowed (STOMP 1.2 §"Client Frames"). Must include `CONNECT` or `STOMP`.
   * Default: all eleven client commands.
   */
  commands?: readonly StompClientCommand[]
  /** Most headers in one frame. Default 32. */
  maxHeaders?: number
  /** Most octets of a frame's command and header lines (up to the blank line). Default 8192. */
  maxHeaderBytes?: number
  /**
   * Per-destination access control for SEND and SUBSCRIBE, called synchronously with the
   * connection's identity (undefined without an identity stage) and the decoded destination.
   * Return `true` to allow. Default: every destination allowed.
   */
  acl?: (identity: PortcullisIdentity | undefined, command: 'SEND' | 'SUBSCRIBE', destination: string) => boolean
  /** Data types accepted. Default `'both'` (stompjs sends binary bodies as binary messages). */
  dataTypes?: DataTypes
  /** This protocol's limits. Default: the plugin's. */
  limits?: SubprotocolLimits
}

/** Stable close reasons of the STOMP inspector (all close with 1008). */
export const StompViolations = Object.freeze({
  INVALID_FRAME: Object.freeze({ code: 1008, reason: 'STOMP: invalid frame' }),
  TOO_MANY_HEADERS: Object.freeze({ code: 1008, reason: 'STOMP: too many headers' }),
  HEADERS_TOO_LARGE: Object.freeze({ code: 1008, reason: 'STOMP: headers too large' }),
  CONTENT_LENGTH_MISMATCH: Object.freeze({ code: 1008, reason: 'STOMP: content-length mismatch' }),
  CONNECT_FIRST: Object.freeze({ code: 1008, reason: 'STOMP: CONNECT must come first' }),
  ALREADY_CONNECTED: Object.freeze({ code: 1008, reason: 'STOMP: already connected' }),
  AFTER_DISCONNECT: Object.freeze({ code: 1008, reason: 'STOMP: frame after DISCONNECT' }),
  COMMAND_NOT_ALLOWED: Object.freeze({ code: 1008, reason: 'STOMP: command not allowed' }),
  MISSING_HEADER: Object.freeze({ code: 1008, reason: 'STOMP: missing required header' }),
  REPEATED_HEADER: Object.freeze({ code: 1008, reason: 'STOMP: repeated header' }),
  DESTINATION_DENIED: Object.freeze({ code: 1008, reason: 'STOMP: destination not allowed' })
})

/**
 * Headers each client frame MUST carry (STOMP 1.2, "Client Frames"). `host` on CONNECT is
 * required by the spec too, but not enforced: stompjs and most clients omit it, and the
 * WebSocket handshake already carries `Host`.
 */
const REQUIRED: Record<string, readonly string[]> = {
  CONNECT: ['accept-version'],
  STOMP: ['accept-version'],
  SEND: ['destination'],
  SUBSCRIBE: ['destination', 'id'],
  UNSUBSCRIBE: ['id'],
  ACK: ['id'],
  NACK: ['id'],
  BEGIN: ['transaction'],
  COMMIT: ['transaction'],
  ABORT: ['transaction'],
  DISCONNECT: []
}

/**
 * A STOMP 1.2 subprotocol (register it as `v12.stomp`, the name stompjs offers). Stateful per
 * connection: CONNECT (or STOMP) first, once; nothing after DISCONNECT; frame grammar, header
 * caps, content-length and the optional ACL on every frame.
 */
export function stomp (opts: StompInspectorOptions = {}): SubprotocolDefinition {
  if (opts === null || typeof opts !== 'object') throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('stomp() options must be an object')
  const commands = opts.commands ?? CLIENT_COMMANDS
  if (!Array.isArray(commands) || commands.some(c => !(CLIENT_COMMANDS as readonly string[]).includes(c))) {
    throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION(`stomp(): commands must be a list of STOMP 1.2 client commands (${CLIENT_COMMANDS.join(', ')})`)
  }
  if (!commands.includes('CONNECT') && !commands.includes('STOMP')) {
    throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('stomp(): commands must include CONNECT or STOMP (the first frame of every session)')
  }
  const limits: StompFrameLimits = {
    maxHeaders: positiveInt(opts.maxHeaders, 32, 'maxHeaders'),
    maxHeaderBytes: positiveInt(opts.maxHeaderBytes, 8192, 'maxHeaderBytes')
  }
  if (opts.acl !== undefined && typeof opts.acl !== 'function') {
    throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION('stomp(): acl must be a function (identity, command, destination) => boolean')
  }
  const allowed = new Set<string>(commands)
  const acl = opts.acl
  return {
    dataTypes: opts.dataTypes ?? 'both',
    limits: opts.limits,
    describe: `stomp 1.2 (${allowed.size} commands${acl === undefined ? '' : ', acl'})`,
    open: (ctx) => new StompInspector(ctx, allowed, limits, acl)
  }
}

// connection phases of a STOMP session, as seen from the client's frames
const START = 0
const CONNECTED = 1
const DISCONNECTED = 2

class StompInspector implements MessageInspector {
  #phase = START
  readonly #ctx: InspectorContext
  readonly #allowed: Set<string>
  readonly #limits: StompFrameLimits
  readonly #acl: StompInspectorOptions['acl']

  constructor (ctx: InspectorContext, allowed: Set<string>, limits: StompFrameLimits, acl: StompInspectorOptions['acl']) {
    this.#ctx = ctx
    this.#allowed = allowed
    this.#limits = limits
    this.#acl = acl
  }

  message (data: Buffer | string): Violation | undefined {
    let frames: StompFrame[]
    try {
      frames = parseStompFrames(typeof data === 'string' ? Buffer.from(data, 'utf8') : data, this.#limits)
    } catch (err) {
      if (err instanceof StompSyntaxError) return syntaxViolation(err.problem)
      throw err
    }
    for (let i = 0; i < frames.length; i++) {
      const v = this.#frame(frames[i])
      if (v !== undefined) return v
    }
    return undefined
  }

  #frame (frame: StompFrame): Violation | undefined {
    const command = frame.command
    if (!Object.hasOwn(REQUIRED, command)) return StompViolations.COMMAND_NOT_ALLOWED // a server frame from the client
    const connect = command === 'CONNECT' || command === 'STOMP'
    if (this.#phase === DISCONNECTED) return StompViolations.AFTER_DISCONNECT
    if (this.#phase === START && !connect) return StompViolations.CONNECT_FIRST
    if (this.#phase === CONNECTED && connect) return StompViolations.ALREADY_CONNECTED
    if (!this.#allowed.has(command)) return StompViolations.COMMAND_NOT_ALLOWED
    if (hasAmbiguousRepeat(frame.headers)) return StompViolations.REPEATED_HEADER
    for (const name of REQUIRED[command]) {
      if (stompHeader(frame, name) === undefined) return StompViolations.MISSING_HEADER
    }
    if (this.#acl !== undefined && (command === 'SEND' || command === 'SUBSCRIBE')) {
      if (this.#acl(this.#ctx.identity, command, stompHeader(frame, 'destination') as string) !== true) return StompViolations.DESTINATION_DENIED
    }
    if (connect) this.#phase = CONNECTED
    else if (command === 'DISCONNECT') this.#phase = DISCONNECTED
    return undefined
  }
}

/**
 * STOMP 1.2 says the first of repeated headers counts ("Repeated Header Entries"), and so does
 * the parser; a handler or broker that keeps the last would read another frame. A second
 * `content-length` could then hide a frame inside a body (smuggling past the ACL), a second
 * `destination` send somewhere the ACL never judged. Neither has a use in a client frame.
 */
function hasAmbiguousRepeat (headers: readonly string[]): boolean {
  let length = false
  let destination = false
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]
    if (name === 'content-length') {
      if (length) return true
      length = true
    } else if (name === 'destination') {
      if (destination) return true
      destination = true
    }
  }
  return false
}

function syntaxViolation (problem: StompProblem): Violation {
  switch (problem) {
    case 'too-many-headers': return StompViolations.TOO_MANY_HEADERS
    case 'headers-too-large': return StompViolations.HEADERS_TOO_LARGE
    case 'content-length-mismatch': return StompViolations.CONTENT_LENGTH_MISMATCH
    default: return StompViolations.INVALID_FRAME
  }
}

function positiveInt (v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt
  if (!Number.isSafeInteger(v) || v < 1) throw new PORTCULLIS_SUBPROTOCOL_INVALID_OPTION(`stomp(): ${name} must be a positive integer`)
  return v
}
