import type { PortcullisSocketOptions, TransportName, WebSocketConstructor } from './types.js'
import { openLongPoll, type Conn, type Sink } from './long-poll.js'
import { failed, forget, remember } from './memory.js'

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3

/**
 * Close codes after which reconnecting is worth it: the connection dropped (1006), the server
 * went away or restarted (1001, 1011–1014), or a Portcullis limit that clears with time — rate
 * (4008), slow consumer (4009), fallback idle (4010), node gone (4011), a 429 or a 5xx on the
 * fallback (4429, 45xx). Revocation, expiry (4001–4003) and denials (44xx) are final: the same
 * request would be denied again, so retrying blindly only hammers the server.
 */
export function isTransientClose (code: number): boolean {
  return code === 1001 || code === 1006 || (code >= 1011 && code <= 1014) ||
    (code >= 4008 && code <= 4011) || code === 4429 || (code >= 4500 && code < 4600)
}

/** The `close` event: WebSocket's `CloseEvent` fields, plus whether a reconnect is scheduled. */
export class PortcullisCloseEvent extends Event {
  readonly code: number
  readonly reason: string
  readonly wasClean: boolean
  /** `true` when the `reconnect` option will try again (the socket is CONNECTING after this event). */
  readonly reconnecting: boolean
  constructor (code: number, reason: string, wasClean: boolean, reconnecting: boolean) {
    super('close')
    this.code = code
    this.reason = reason
    this.wasClean = wasClean
    this.reconnecting = reconnecting
  }
}

/**
 * A WebSocket-compatible socket that tries a real WebSocket first and falls back to the
 * Portcullis long-poll transport when the WebSocket cannot open (error before open, or no open
 * within `openTimeoutMs`). Application code does not change: `send`, `close`, `readyState`,
 * `protocol`, `onopen`/`onmessage`/`onclose`/`onerror` and `addEventListener` mean the same on
 * both; `transport` says which door is in use.
 *
 * A browser hides why an upgrade was refused (the close is always 1006), so after a WebSocket
 * failure the client asks the fallback's `open`, which runs the same policy: a denial comes back
 * as a close event with code 4000 + HTTP status (4401, 4403...) and the denial code as reason.
 */
export class PortcullisSocket extends EventTarget {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSING = CLOSING
  static readonly CLOSED = CLOSED
  declare readonly CONNECTING: 0
  declare readonly OPEN: 1
  declare readonly CLOSING: 2
  declare readonly CLOSED: 3

  /** The WebSocket URL (`ws:` or `wss:`); `http(s):` URLs are accepted and converted. */
  readonly url: string
  onopen: ((ev: Event) => void) | null = null
  onmessage: ((ev: MessageEvent) => void) | null = null
  onclose: ((ev: PortcullisCloseEvent) => void) | null = null
  onerror: ((ev: Event) => void) | null = null

  #options: PortcullisSocketOptions
  #protocols: string[]
  #state = CONNECTING
  #protocol = ''
  #transport: TransportName | '' = ''
  #conn: Conn | undefined
  #attempt = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #stopped = false

  constructor (url: string | URL, protocols?: string | string[], options: PortcullisSocketOptions = {}) {
    super()
    let u: URL
    try {
      u = new URL(url, (globalThis as { location?: { href: string } }).location?.href)
    } catch {
      throw new SyntaxError('invalid URL')
    }
    if (u.protocol === 'http:' || u.protocol === 'https:') u.protocol = u.protocol === 'http:' ? 'ws:' : 'wss:'
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new SyntaxError('URL scheme must be ws: or wss:')
    u.hash = ''
    this.url = u.href
    this.#protocols = protocols === undefined ? [] : typeof protocols === 'string' ? [protocols] : [...protocols]
    this.#options = options
    this.#connect()
  }

  get readyState (): number { return this.#state }
  /** The negotiated subprotocol, `''` when none (or before open). */
  get protocol (): string { return this.#protocol }
  /**
   * The door in use: `'websocket'`, `'stream'` or `'long-poll'`; `''` before the first open. A
   * stream that an intermediary starts buffering gives way to long-poll within the same session.
   */
  get transport (): TransportName | '' { return (this.#state === OPEN ? this.#conn?.transport() : undefined) || this.#transport }
  get bufferedAmount (): number { return this.#conn?.buffered() ?? 0 }
  /** Binary messages always arrive as `ArrayBuffer` (both doors); setting it is accepted and ignored. */
  get binaryType (): 'arraybuffer' { return 'arraybuffer' }
  set binaryType (_value: string) {}

  /** Queue a message. Throws while CONNECTING, like WebSocket; after close it is dropped. */
  send (data: string | ArrayBuffer | ArrayBufferView): void {
    if (this.#state === CONNECTING) throw new DOMException('still CONNECTING', 'InvalidStateError')
    if (this.#state === OPEN) this.#conn?.send(data)
  }

  /** Close with an optional code (1000 or 3000–4999) and reason (≤ 123 UTF-8 bytes), RFC 6455 §7.4. */
  close (code?: number, reason = ''): void {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) throw new DOMException('bad close code', 'InvalidAccessError')
    if (new TextEncoder().encode(reason).length > 123) throw new DOMException('reason too long', 'SyntaxError')
    this.#stopped = true
    clearTimeout(this.#timer)
    if (this.#state >= CLOSING) return
    this.#state = CLOSING
    // between reconnect attempts: nothing to close, but the event is still asynchronous
    if (this.#conn === undefined) setTimeout(() => this.#end(code ?? 1005, reason, true))
    else this.#conn.close(code, reason)
  }

  #emit (ev: Event): void {
    const handler = (this as unknown as Record<string, ((ev: Event) => void) | null>)['on' + ev.type]
    if (typeof handler === 'function') {
      try {
        handler.call(this, ev)
      } catch (err) {
        // Like a DOM event handler: report, keep the socket consistent.
        setTimeout(() => { throw err })
      }
    }
    this.dispatchEvent(ev)
  }

  #connect (): void {
    const o = this.#options
    let list: TransportName[] = o.forceLongPoll === true ? ['long-poll'] : o.transports ?? ['websocket', 'stream', 'long-poll']
    if (o.rememberFallback !== false) {
      // skip what failed earlier in this page session, as long as something is left to try
      const no = failed(this.url)
      const left = list.filter((t) => !no.has(t))
      if (left.length > 0 && left.some((t) => t !== 'websocket')) list = left
    }
    this.#try(list, 0, false)
  }

  #try (list: TransportName[], i: number, wsFailed: boolean): void {
    const name = list[i]
    let opened = false
    const sink: Sink = {
      open: (protocol, transport = name) => {
        if (this.#conn !== conn) return
        opened = true
        if (name !== 'websocket' && wsFailed && this.#options.rememberFallback !== false) remember(this.url, 'websocket')
        if (name === 'websocket') forget(this.url)
        this.#attempt = 0
        this.#protocol = protocol
        this.#transport = transport
        if (this.#state === CONNECTING) {
          this.#state = OPEN
          this.#emit(new Event('open'))
        }
      },
      message: (data) => {
        if (this.#conn === conn && this.#state === OPEN) this.#emit(new MessageEvent('message', { data }))
      },
      close: (code, reason, wasClean) => {
        if (this.#conn !== conn) return
        this.#conn = undefined
        // Not opened and not a denial: try the next transport (that is the fallback).
        if (!opened && !this.#stopped && i + 1 < list.length && isTransientClose(code)) {
          this.#try(list, i + 1, wsFailed || name === 'websocket')
        } else {
          this.#end(code, reason, wasClean)
        }
      }
    }
    const o = this.#options
    // `stream` and `long-poll` are one fallback session: a stream that an intermediary buffers
    // continues as long-poll (and is remembered), a server without streams long-polls.
    const onBuffered = (): void => { if (o.rememberFallback !== false) remember(this.url, 'stream') }
    const conn: Conn = name === 'websocket'
      ? openWebSocket(this.url, this.#protocols, o, sink)
      : openLongPoll(this.url, this.#protocols, o, sink, { stream: name === 'stream', poll: name === 'long-poll' || list.includes('long-poll'), onBuffered })
    this.#conn = conn
  }

  #end (code: number, reason: string, wasClean: boolean): void {
    const r = this.#options.reconnect
    const retries = typeof r === 'object' ? r.retries ?? 10 : 10
    const again = r !== undefined && r !== false && !this.#stopped && isTransientClose(code) && this.#attempt < retries
    this.#state = CLOSED
    if (!wasClean) this.#emit(new Event('error'))
    this.#emit(new PortcullisCloseEvent(code, reason, wasClean, again))
    if (!again || this.#stopped) return
    const min = typeof r === 'object' ? r.minDelayMs ?? 500 : 500
    const max = typeof r === 'object' ? r.maxDelayMs ?? 10000 : 10000
    const delay = Math.min(max, min * 2 ** this.#attempt++) * (0.5 + Math.random() / 2)
    this.#state = CONNECTING
    this.#timer = setTimeout(() => this.#connect(), delay)
  }
}

for (const [i, k] of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'].entries()) {
  Object.defineProperty(PortcullisSocket.prototype, k, { value: i })
}

function openWebSocket (url: string, protocols: string[], o: PortcullisSocketOptions, sink: Sink): Conn {
  const WS = o.WebSocket ?? (globalThis as unknown as { WebSocket: WebSocketConstructor }).WebSocket
  let ws: ReturnType<typeof makeWs>
  function makeWs (): InstanceType<WebSocketConstructor> {
    return o.headers === undefined ? new WS(url, protocols) : new WS(url, protocols, { headers: o.headers })
  }
  try {
    ws = makeWs()
  } catch {
    // No WebSocket implementation, or one that refuses the URL: a failure before open.
    setTimeout(() => sink.close(1006, '', false))
    return { send () {}, close () {}, buffered: () => 0, transport: () => '' }
  }
  ws.binaryType = 'arraybuffer'
  const timer = setTimeout(() => {
    ws.onopen = ws.onmessage = ws.onclose = null
    try { ws.close() } catch {}
    sink.close(1006, '', false)
  }, o.openTimeoutMs ?? 3000)
  ws.onopen = () => { clearTimeout(timer); sink.open(ws.protocol) }
  ws.onmessage = (ev) => sink.message(ev.data)
  // The close event that follows carries everything; `ws` throws on an unhandled error event.
  ws.onerror = () => {}
  ws.onclose = (ev) => { clearTimeout(timer); sink.close(ev.code, ev.reason, ev.wasClean) }
  return {
    send: (data) => ws.send(data),
    close: (code, reason) => ws.close(code, reason),
    buffered: () => ws.bufferedAmount,
    transport: () => 'websocket'
  }
}

export type * from './types.js'
