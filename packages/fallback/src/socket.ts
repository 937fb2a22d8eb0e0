import { EventEmitter } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import { CloseCodes, type PortcullisSocket } from '@portcullis/policy'
import type { CloseFrame, FallbackStore, InboundFrame, OutboundFrame } from './store.js'
import { isValidCloseCode, isWellFormed, MAX_CLOSE_REASON_BYTES, NO_STATUS } from './wire.js'

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3
const STATES = ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']
/** RFC 6455 §7.4.1: data inconsistent with the message type (invalid UTF-8 in a text message). */
const INVALID_PAYLOAD = 1007

/** What one socket needs to know of its route's limits. */
export interface SocketLimits {
  idleTimeoutMs: number
  closeLingerMs: number
  maxPayload: number
  maxQueuedMessages: number
  maxQueuedBytes: number
}

export interface SocketOptions {
  sid: string
  protocol: string
  store: FallbackStore
  limits: SocketLimits
  log: FastifyBaseLogger
  /** The WebSocket route URL this session is a twin of (logged with a failure). */
  route: string
  /** Called once, after `close` was emitted (the plugin forgets the socket). */
  onGone: () => void
  /**
   * Called once when a store call failed and the socket finished locally (1011): the plugin
   * then makes sure the store record is closed too, so the client is told instead of polling a
   * session nobody runs (PROTOCOL.md §9).
   */
  onStoreFailure?: () => void
}

type SendCallback = (err?: Error) => void

// Internal entry points used by the plugin, kept off the public surface.
export const kReceive = Symbol('portcullis.fallback.receive')
export const kClientClose = Symbol('portcullis.fallback.clientClose')
export const kSettled = Symbol('portcullis.fallback.settled')
export const kFail = Symbol('portcullis.fallback.fail')

/** The close of a connection whose handler or listener threw or rejected (RFC 6455 §7.4.1). */
const INTERNAL_CLOSE = 'internal error'

/**
 * The long-poll door's socket: the part of `ws`'s `WebSocket` that handlers use, with the same
 * meaning. `message` is emitted with `(Buffer, isBinary)` — a Buffer for text too, as `ws` 8
 * does — `close` with `(code, reason: Buffer)`, `error` with an Error (only when listened to).
 *
 * The socket lives on the node that runs the handler. It numbers outbound messages, batches
 * them per tick into the store, and serialises every store call on one promise chain, so a close
 * is always queued after the messages sent before it.
 */
export class LongPollSocket extends EventEmitter implements PortcullisSocket {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSING = CLOSING
  static readonly CLOSED = CLOSED
  readonly CONNECTING = CONNECTING
  readonly OPEN = OPEN
  readonly CLOSING = CLOSING
  readonly CLOSED = CLOSED

  /** The negotiated subprotocol, `''` when none (as `ws`). */
  readonly protocol: string
  /** Always `'nodebuffer'`: messages are emitted as Buffers, like `ws`'s default. */
  readonly binaryType = 'nodebuffer'

  #state: 0 | 1 | 2 | 3 = OPEN
  readonly #sid: string
  readonly #store: FallbackStore
  readonly #limits: SocketLimits
  readonly #log: FastifyBaseLogger
  readonly #onGone: () => void
  readonly #onStoreFailure: (() => void) | undefined
  readonly #route: string
  #failed = false
  #nextSeq = 1
  #batch: OutboundFrame[] = []
  #batchBytes = 0
  #callbacks: SendCallback[] = []
  #scheduled = false
  #queuedBytes = 0
  #chain: Promise<void> = Promise.resolve()
  #idle: NodeJS.Timeout | undefined
  #closeEmitted = false

  constructor (opts: SocketOptions) {
    // A listener that returns a rejected promise reaches [Symbol.for('nodejs.rejection')] below,
    // so an async `message` listener that rejects fails its connection as a throwing one does.
    super({ captureRejections: true })
    this.#sid = opts.sid
    this.protocol = opts.protocol
    this.#store = opts.store
    this.#limits = opts.limits
    this.#log = opts.log
    this.#onGone = opts.onGone
    this.#onStoreFailure = opts.onStoreFailure
    this.#route = opts.route
    this.#armIdle(opts.limits.idleTimeoutMs)
  }

  get readyState (): 0 | 1 | 2 | 3 {
    return this.#state
  }

  /**
   * Bytes sent but not yet acknowledged by the client, as of the last store write (the
   * long-poll analogue of `ws`'s bytes not yet written to the TCP socket).
   */
  get bufferedAmount (): number {
    return this.#queuedBytes + this.#batchBytes
  }

  /** Resolves once every store call queued so far has settled (shutdown waits on it). */
  get [kSettled] (): Promise<void> {
    return this.#chain
  }

  send (data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: { binary?: boolean } | SendCallback, cb?: SendCallback): void {
    if (typeof options === 'function') {
      cb = options
      options = undefined
    }
    if (this.#state !== OPEN) {
      // as ws: sending on a closing or closed socket is not an exception, the callback hears of it
      if (cb !== undefined) {
        const err = new Error(`WebSocket is not open: readyState ${this.#state} (${STATES[this.#state]})`)
        this.#later(cb, err)
      }
      return
    }
    let frame: OutboundFrame
    const seq = this.#nextSeq
    if (typeof data === 'string' || typeof data === 'number') {
      const text = String(data)
      frame = options?.binary === true
        ? binaryFrame(seq, Buffer.from(text))
        : { seq, type: 'text', data: text, bytes: Buffer.byteLength(text) }
    } else {
      const buf = toBuffer(data)
      frame = options?.binary === false
        ? { seq, type: 'text', data: buf.toString(), bytes: buf.length }
        : binaryFrame(seq, buf)
    }
    // Bound the batch a handler can build synchronously before any store write (a send loop).
    if (this.#batch.length + 1 > this.#limits.maxQueuedMessages || this.#batchBytes + frame.bytes > this.#limits.maxQueuedBytes) {
      this.#slowConsumer()
      if (cb !== undefined) this.#later(cb, new Error('slow consumer: the fallback queue is full'))
      return
    }
    this.#nextSeq++
    this.#batch.push(frame)
    this.#batchBytes += frame.bytes
    if (cb !== undefined) this.#callbacks.push(cb)
    if (!this.#scheduled) {
      this.#scheduled = true
      queueMicrotask(() => this.#flush())
    }
  }

  close (code?: number, reason?: string | Buffer): void {
    if (this.#state === CLOSED || this.#state === CLOSING) return
    // same checks and messages as ws's Sender.close, so a handler fails alike on both doors
    if (code !== undefined && (typeof code !== 'number' || !isValidCloseCode(code))) {
      throw new TypeError('First argument must be a valid error code number')
    }
    const text = reason === undefined ? '' : typeof reason === 'string' ? reason : reason.toString()
    if (Buffer.byteLength(text) > MAX_CLOSE_REASON_BYTES) throw new RangeError('The message must not be greater than 123 bytes')
    const frame: CloseFrame = code === undefined ? { code: NO_STATUS, reason: '' } : { code, reason: text }
    this.#state = CLOSING
    this.#flush()
    this.#run(async () => {
      await this.#store.closeOutbound(this.#sid, frame, { lingerMs: this.#limits.closeLingerMs, dropQueued: false })
      this.#finish(frame.code, frame.reason)
    })
  }

  /** Drop the session at once: the client's next request finds no session (it reports 1006). */
  terminate (): void {
    if (this.#state === CLOSED) return
    this.#state = CLOSING
    this.#dropBatch(new Error('terminated'))
    this.#run(async () => {
      await this.#store.destroy(this.#sid)
      this.#finish(1006, '')
    })
  }

  /**
   * A no-op kept for handler compatibility with `ws` (heartbeat code calls `ping()` on every
   * socket): on this door liveness is the poll itself, and an idle session closes with 4010.
   * The callback, if any, is called on the next tick like ws's once the frame is written.
   */
  ping (_data?: unknown, _mask?: boolean, cb?: (err?: Error) => void): void {
    if (cb !== undefined) this.#later(cb)
  }

  /** A no-op, as `ping()`. */
  pong (_data?: unknown, _mask?: boolean, cb?: (err?: Error) => void): void {
    if (cb !== undefined) this.#later(cb)
  }

  /** Client messages routed here by the store, in order, each once. */
  [kReceive] (frames: InboundFrame[]): void {
    for (const f of frames) {
      if (this.#state !== OPEN) return
      let buf: Buffer
      if (f.type === 'text') {
        // RFC 6455 §8.1: text must be valid UTF-8; ws fails the connection with 1007
        if (!isWellFormed(f.data)) {
          this.close(INVALID_PAYLOAD, 'invalid UTF-8')
          return
        }
        buf = Buffer.from(f.data)
      } else {
        buf = Buffer.from(f.data, 'base64')
      }
      if (buf.length > this.#limits.maxPayload) {
        this.close(CloseCodes.MESSAGE_TOO_BIG, 'message too big')
        return
      }
      try {
        this.emit('message', buf, f.type === 'binary')
      } catch (err) {
        // a server keeps running and closes this one connection, as on the WebSocket door
        this[kFail](err, 'message listener')
        return
      }
    }
  }

  /**
   * A handler or listener threw or rejected: log it once, at error, with the route, and close
   * this connection with 1011 — the rule of both doors. Later failures of the same connection
   * (a second listener, a late rejection) are logged at debug only.
   */
  [kFail] (err: unknown, what: string): void {
    if (this.#failed) {
      this.#log.debug({ err, portcullis: { route: this.#route } }, `portcullis: ${what} failed again`)
    } else {
      this.#failed = true
      this.#log.error({ err, portcullis: { route: this.#route, close: CloseCodes.INTERNAL_ERROR } }, `portcullis: ${what} failed; connection closed`)
    }
    if (this.#state === OPEN) this.close(CloseCodes.INTERNAL_ERROR, INTERNAL_CLOSE)
  }

  /** EventEmitter `captureRejections`: a listener's promise rejected. */
  [Symbol.for('nodejs.rejection')] (err: unknown, event: string | symbol): void {
    this[kFail](err, `${String(event)} listener`)
  }

  /** The client closed (`POST close`): the handler hears its code and reason, as with a close frame. */
  [kClientClose] (frame: CloseFrame): void {
    if (this.#state !== OPEN) return
    this.#state = CLOSING
    this.#dropBatch(new Error('closed by the client'))
    this.#run(async () => {
      await this.#store.closeOutbound(this.#sid, frame, { lingerMs: this.#limits.closeLingerMs, dropQueued: true })
      this.#finish(frame.code, frame.reason)
    })
  }

  #flush (): void {
    this.#scheduled = false
    if (this.#batch.length === 0) return
    const frames = this.#batch
    const callbacks = this.#callbacks
    this.#batch = []
    this.#callbacks = []
    this.#batchBytes = 0
    this.#run(async () => {
      const size = await this.#store.pushOutbound(this.#sid, frames)
      this.#queuedBytes = size.bytes
      for (const cb of callbacks) this.#call(cb, 'send callback')
      if (size.messages > this.#limits.maxQueuedMessages || size.bytes > this.#limits.maxQueuedBytes) this.#slowConsumer()
    }, callbacks)
  }

  #slowConsumer (): void {
    if (this.#state !== OPEN) return
    this.#log.info({ portcullis: { close: CloseCodes.SLOW_CONSUMER } }, 'portcullis: fallback client too slow, closing')
    this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer')
  }

  #dropBatch (err: Error): void {
    const callbacks = this.#callbacks
    this.#batch = []
    this.#callbacks = []
    this.#batchBytes = 0
    for (const cb of callbacks) this.#later(cb, err)
  }

  /** A callback on the next tick, as ws calls it, but what it throws is logged, never uncaught. */
  #later (cb: SendCallback, err?: Error): void {
    process.nextTick(() => this.#call(cb, 'send callback', err))
  }

  /** Serialise store calls; a store failure fails the socket (1011), as a broken TCP link would. */
  #run (fn: () => Promise<void>, callbacks: SendCallback[] = []): void {
    this.#chain = this.#chain.then(fn).catch((err: Error) => {
      for (const cb of callbacks) this.#call(cb, 'send callback', err)
      if (this.#closeEmitted) return
      this.#log.error({ err, portcullis: { route: this.#route, close: CloseCodes.INTERNAL_ERROR } }, 'portcullis: fallback store failed')
      if (this.listenerCount('error') > 0) this.#call(() => this.emit('error', err), 'error listener')
      this.#finish(CloseCodes.INTERNAL_ERROR, INTERNAL_CLOSE)
      // Finished here, maybe not in the store: the plugin closes the record, or the client's
      // polls would keep a session alive whose sends are acknowledged and dropped.
      this.#onStoreFailure?.()
    })
  }

  /** Run a user callback outside the store chain: what it throws is logged, never a store failure. */
  #call (fn: (err?: Error) => void, what: string, err?: Error): void {
    try {
      fn(err)
    } catch (e) {
      this.#log.error({ err: e, portcullis: { route: this.#route } }, `portcullis: ${what} threw`)
    }
  }

  #finish (code: number, reason: string): void {
    if (this.#closeEmitted) return
    this.#closeEmitted = true
    this.#state = CLOSED
    clearTimeout(this.#idle)
    this.#idle = undefined
    this.#onGone()
    // A close listener that throws is logged; the other close listeners (the core's registry
    // among them) still run, as they would if each had its own try.
    for (const listener of this.rawListeners('close') as Array<(code: number, reason: Buffer) => unknown>) {
      const buf = Buffer.from(reason)
      try {
        const r = listener.call(this, code, buf)
        if (isThenable(r)) r.then(undefined, (err: unknown) => this.#log.error({ err, portcullis: { route: this.#route } }, 'portcullis: close listener failed'))
      } catch (err) {
        this.#log.error({ err, portcullis: { route: this.#route } }, 'portcullis: close listener failed')
      }
    }
  }

  /**
   * The idle check reads `lastSeen` from the store, because the client's polls may be served
   * by another node; when the session has been quiet for `idleTimeoutMs`, close with 4010.
   */
  #armIdle (ms: number): void {
    clearTimeout(this.#idle)
    this.#idle = setTimeout(() => {
      this.#idle = undefined
      if (this.#state !== OPEN) return
      this.#store.get(this.#sid).then((rec) => {
        if (this.#state !== OPEN) return
        const left = rec === undefined ? 0 : rec.lastSeen + this.#limits.idleTimeoutMs - Date.now()
        if (left <= 0) {
          this.close(CloseCodes.IDLE_TIMEOUT, 'idle timeout')
        } else {
          this.#armIdle(left)
        }
      }, (err: Error) => {
        this.#log.error({ err }, 'portcullis: fallback store failed')
        this.#armIdle(this.#limits.idleTimeoutMs)
      })
    }, Math.max(ms, 1))
    this.#idle.unref()
  }
}

function isThenable (v: unknown): v is Promise<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as Promise<unknown>).then === 'function'
}

function binaryFrame (seq: number, buf: Buffer): OutboundFrame {
  return { seq, type: 'binary', data: buf.toString('base64'), bytes: buf.length }
}

function toBuffer (data: Buffer | ArrayBuffer | ArrayBufferView): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  throw new TypeError('The data argument must be a string, Buffer, ArrayBuffer or ArrayBufferView')
}
