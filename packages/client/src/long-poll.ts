import type { FetchLike, PortcullisSocketOptions, TransportName } from './types.js'
import { sseParser } from './sse.js'

/** What a transport tells the socket. */
export interface Sink {
  /** Opened; `transport` is the door actually in use (a fallback session may long-poll). */
  open: (protocol: string, transport?: TransportName) => void
  message: (data: unknown) => void
  close: (code: number, reason: string, wasClean: boolean) => void
}

/** What the socket asks of a transport. */
export interface Conn {
  send: (data: string | ArrayBuffer | ArrayBufferView) => void
  close: (code?: number, reason?: string) => void
  buffered: () => number
  /** The door in use now (`''` before open): a stream can give way to long-poll mid-session. */
  transport: () => TransportName | ''
}

/** How a fallback session may carry server messages. */
export interface Downstream {
  /** Try the `stream` endpoint first (when the server speaks v2 and offers it). */
  stream: boolean
  /** Long-poll is allowed (after a buffered stream, or when the server has no stream). */
  poll: boolean
  /** The stream's first byte did not come in time: an intermediary buffers (remembered by the socket). */
  onBuffered?: () => void
}

/** One client→server message waiting for the server's ack (PROTOCOL.md §7). */
interface Outgoing {
  seq: number
  msg: { text: string } | { binary: string }
  size: number
}

interface Answer {
  status: number
  body: Record<string, any>
  /** `Retry-After` in ms (RFC 9110 §10.2.3), when the answer carried one. */
  retryAfterMs: number | undefined
}

interface ServerMessage { seq: number, text?: string, binary?: string }

/** How one stream response ended. */
type StreamEnd =
  | { kind: 'reopen' } // the server's `event: reopen` (its hold is over, or a newer stream took over)
  | { kind: 'closed' } // the close record: the session is over
  | { kind: 'dropped', got: boolean } // ended or failed without either; `got`: its first byte came
  | { kind: 'buffered' } // no first byte within streamFirstByteMs
  | { kind: 'unreadable' } // this fetch gives no body stream
  | { kind: 'answer', answer: Answer } // not a 200

/** Network failures (no answer) retried before the link counts as dropped (1006). */
const RETRIES = 3
/**
 * Answers that say "later" — 429, 5xx (a store away, a node restarting) — retried this many times,
 * with backoff, before the socket closes (4429 or 1006, both transient: `reconnect` takes over).
 */
const TRANSIENT_RETRIES = 6
/** Consecutive 409 answers to a send before the session counts as broken (1006). */
const GAP_RETRIES = 8
/** Backoff: first delay, and cap (jittered between half and all of it). */
const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 5000
/** A server's `Retry-After` is honoured up to this. */
const RETRY_AFTER_CAP_MS = 30_000
/** The server's hold before `open` answers with its own (PROTOCOL.md §4). */
const DEFAULT_POLL_TIMEOUT_MS = 25_000
/** The wire versions this client speaks, best first (PROTOCOL.md, negotiation at `open`). */
const VERSIONS = [2, 1]
/** A stream client's ack-only send while it has unacked messages and nothing to send (v2). */
const DEFAULT_ACK_INTERVAL_MS = 1000

/**
 * The client half of the Portcullis long-poll fallback (wire protocol: packages/fallback/PROTOCOL.md).
 * Every request carries the custom `X-Portcullis-Fallback` header, and bodies are JSON — never a
 * "simple" request, so a cross-origin page cannot send one without a CORS preflight — and goes
 * with `credentials: 'include'`, so the session cookie goes along exactly as on the upgrade.
 * Messages carry sequence numbers both ways: a lost response is retried and the other side
 * drops what it already has, so nothing is lost or delivered twice.
 */
export function openLongPoll (url: string, protocols: string[], o: PortcullisSocketOptions, sink: Sink, down: Downstream = { stream: false, poll: true }): Conn {
  const fetchImpl: FetchLike = o.fetch ?? ((globalThis as unknown as { fetch: FetchLike }).fetch)
  const u = new URL(url)
  // No query string in a fallback URL, ever (§2.1): nothing of ours may end up in a proxy's URL
  // log. The WebSocket URL's own query travels in the open body, and the handler reads it as
  // `request.query` on both doors (§4).
  const base = (u.protocol === 'wss:' ? 'https://' : 'http://') + u.host + u.pathname.replace(/\/$/, '') + '/_lp/'
  const query = u.search.length > 1 ? u.search.slice(1) : undefined
  const abort = new AbortController()
  // A request with no answer within the server's hold plus this margin is given up (a half-open
  // connection never answers) and retried like a network failure.
  const margin = o.pollTimeoutMarginMs ?? 10_000
  let holdMs = DEFAULT_POLL_TIMEOUT_MS
  let sid = ''
  let protocol = ''
  let done = false
  let ack = 0
  let outSeq = 0
  let batchMax = 64
  let bodyMax = 1048576
  let outbox: Outgoing[] = []
  let sending = false
  let closing: [number | undefined, string] | undefined
  let closeSent = false
  /** Wire version the server answered at `open` (1 when it did not say: a v1 server). */
  let v = 1
  /** The highest ack a request the server answered carried: the server may drop what is ≤ it. */
  let ackTold = 0
  let ackEveryMs = DEFAULT_ACK_INTERVAL_MS
  let ackTimer: ReturnType<typeof setInterval> | undefined
  let current: TransportName | '' = ''

  function request (path: string, body?: unknown, linked: AbortSignal | undefined = abort.signal, keepalive = false): Promise<Answer> {
    const headers: Record<string, string> = { 'x-portcullis-fallback': '1', ...o.headers }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (sid !== '') headers['x-portcullis-sid'] = sid
    // poll/send/close repeat the negotiated protocol, so the policy sees the same request (§2.4)
    if (protocol !== '') headers['x-portcullis-protocol'] = protocol
    // the highest server seq we have: on polls, and (v2) on sends, whose answers carry replies
    const told = ack
    if (path === 'poll' || (v >= 2 && path === 'send')) headers['x-portcullis-ack'] = String(told)
    // this request's own signal: aborted by the socket's end, or by the deadline
    const own = new AbortController()
    const onEnd = (): void => own.abort()
    linked?.addEventListener('abort', onEnd, { once: true })
    const deadline = setTimeout(() => own.abort(), holdMs + margin)
    const settle = (): void => {
      clearTimeout(deadline)
      linked?.removeEventListener('abort', onEnd)
    }
    return fetchImpl(base + path, {
      method: body === undefined ? 'GET' : 'POST',
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'include',
      cache: 'no-store',
      // a keepalive close outlives the page: no deadline of ours may cut it
      signal: keepalive ? undefined : own.signal,
      keepalive
    }).then(async (res) => {
      if (res.status === 200 && headers['x-portcullis-ack'] !== undefined && told > ackTold) ackTold = told
      return res
    }).then(async (res) => ({
      status: res.status,
      // the body is read within the same deadline: a server that stalls mid-body is a dead link too
      body: await res.json().then((b) => b ?? {}, () => ({})),
      retryAfterMs: retryAfter(res.headers?.get('retry-after'))
    })).finally(settle)
  }

  function finish (code: number, reason: string, wasClean: boolean): void {
    if (done) return
    done = true
    clearInterval(ackTimer)
    abort.abort()
    target?.removeEventListener('pagehide', goingAway)
    sink.close(code, reason, wasClean)
  }

  // A browser closes its WebSockets with 1001 when the page goes away; do the same for this
  // session (keepalive lets the request outlive the page), so the server does not keep a ghost
  // member until the idle timeout.
  const target = (globalThis as { addEventListener?: EventTarget['addEventListener'] }).addEventListener === undefined
    ? undefined
    : globalThis as unknown as EventTarget
  function goingAway (): void {
    if (sid !== '') request('close', { code: 1001, reason: '' }, undefined, true).catch(() => {})
    finish(1001, '', true)
  }
  target?.addEventListener('pagehide', goingAway)

  // A denial: 4000 + status with the server's stable code as reason — the close the WebSocket door
  // would give, had the browser let us read it. A lost session (404 on poll/send) is a dropped
  // link, and so is a 5xx (a server shutting down, a store away): 1006, transient (§9, §10).
  function refused (a: Answer): void {
    if ((a.status === 404 && sid !== '') || a.status < 400 || a.status >= 500) return finish(1006, '', false)
    finish(4000 + a.status, typeof a.body.code === 'string' ? a.body.code : '', false)
  }

  // Wait, but wake at once when the socket ends.
  function sleep (ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (abort.signal.aborted) return resolve()
      const timer = setTimeout(wake, ms)
      function wake (): void {
        clearTimeout(timer)
        abort.signal.removeEventListener('abort', wake)
        resolve()
      }
      abort.signal.addEventListener('abort', wake, { once: true })
    })
  }

  // Retry a request that failed on the network (no answer, or none within the deadline) a few
  // times, and one the server answered with "later" (429, 5xx) a few more, with backoff,
  // honouring Retry-After. A transient answer that outlasts its retries is returned: the caller
  // closes with it (4429, 1006 — both transient, so `reconnect` takes over).
  // `networkRetries`: an `open` is never resent after a network failure — its answer may be what
  // was lost, and a second open would leave a ghost session behind (the reconnect option retries).
  async function withRetry (path: string, body?: () => unknown, networkRetries = RETRIES): Promise<Answer | undefined> {
    let failures = 0
    let later = 0
    for (;;) {
      let a: Answer
      try {
        a = await request(path, body?.())
      } catch {
        if (done) return
        if (failures >= networkRetries) {
          finish(1006, '', false)
          return
        }
        await sleep(backoff(failures++))
        if (done) return
        continue
      }
      if (done || !isTransientStatus(a.status) || later >= TRANSIENT_RETRIES) return a
      await sleep(a.retryAfterMs ?? backoff(later))
      later++
      if (done) return
    }
  }

  // read through a call: the flag changes while a loop awaits
  function isDone (): boolean {
    return done
  }

  function trim (serverAck: unknown): void {
    if (typeof serverAck === 'number') outbox = outbox.filter((m) => m.seq > serverAck)
  }

  // One server message, from a poll, a send answer (v2) or a stream: delivered once, in order.
  function take (m: ServerMessage): void {
    // Redelivered after a lost answer, or carried by both a send answer and the stream: the app
    // already has it (§6).
    if (typeof m?.seq !== 'number' || m.seq <= ack) return
    ack = m.seq
    sink.message(typeof m.text === 'string' ? m.text : fromBase64(m.binary ?? ''))
  }

  // A poll or (v2) send answer: its messages, then its close record. `false`: the socket ended.
  function deliver (body: Record<string, any>): boolean {
    const list = Array.isArray(body.messages) ? body.messages as ServerMessage[] : []
    for (const m of list) {
      take(m)
      if (done) return false
    }
    const close = body.close
    if (close != null) {
      finish(close.code ?? 1005, String(close.reason ?? ''), true)
      return false
    }
    return true
  }

  function opened (transport: TransportName): void {
    const first = current === ''
    current = transport
    if (first) sink.open(protocol, transport)
  }

  async function poll (): Promise<void> {
    if (!done) opened('long-poll')
    while (!isDone()) {
      const a = await withRetry('poll')
      if (a === undefined || done) return
      if (a.status !== 200) return refused(a)
      trim(a.body.ack)
      if (!deliver(a.body)) return
    }
  }

  // The stream transport (v2): one held response at a time, re-opened after each `reopen`, and
  // after a drop with backoff; each request tells the server our ack, so it resumes after it.
  async function stream (): Promise<void> {
    let failures = 0
    let later = 0
    ackTimer = setInterval(ackOnly, ackEveryMs)
    while (!isDone()) {
      const end = await streamOnce()
      if (done) return
      switch (end.kind) {
        case 'closed':
          return
        case 'reopen':
          failures = 0
          later = 0
          continue
        case 'buffered':
        case 'unreadable':
          clearInterval(ackTimer)
          if (end.kind === 'buffered') down.onBuffered?.()
          if (!down.poll) return finish(1006, '', false)
          return await poll()
        case 'answer': {
          const a = end.answer
          if (!isTransientStatus(a.status) || later >= TRANSIENT_RETRIES) return refused(a)
          await sleep(a.retryAfterMs ?? backoff(later++))
          continue
        }
        case 'dropped':
          // a stream that worked and then dropped starts the count again, but still waits a little
          if (end.got) failures = 0
          if (failures >= RETRIES) return finish(1006, '', false)
          await sleep(backoff(failures++))
      }
    }
  }

  async function streamOnce (): Promise<StreamEnd> {
    const headers: Record<string, string> = { 'x-portcullis-fallback': '1', ...o.headers, 'x-portcullis-sid': sid }
    if (protocol !== '') headers['x-portcullis-protocol'] = protocol
    const told = ack
    headers['x-portcullis-ack'] = String(told)
    const own = new AbortController()
    const onEnd = (): void => own.abort()
    abort.signal.addEventListener('abort', onEnd, { once: true })
    let got = false
    let buffered = false
    let end: StreamEnd | undefined
    // The server ends a stream after its hold with `reopen`; none by then plus the margin is a
    // dead link (a half-open connection never says so).
    const deadline = setTimeout(() => own.abort(), holdMs + margin)
    const firstByte = setTimeout(() => { buffered = true; own.abort() }, o.streamFirstByteMs ?? 3000)
    try {
      const res = await fetchImpl(base + 'stream', { method: 'GET', headers, body: undefined, credentials: 'include', cache: 'no-store', signal: own.signal, keepalive: false })
      if (res.status !== 200) {
        clearTimeout(firstByte)
        return { kind: 'answer', answer: { status: res.status, body: await res.json().then((b) => b ?? {}, () => ({})), retryAfterMs: retryAfter(res.headers?.get('retry-after')) } }
      }
      if (told > ackTold) ackTold = told
      if (res.body == null) {
        clearTimeout(firstByte)
        own.abort()
        return { kind: 'unreadable' }
      }
      const reader = res.body.getReader()
      const decoder = new TextDecoder()
      const parser = sseParser((type, data) => {
        if (end !== undefined || done) return
        let d: any
        try {
          d = JSON.parse(data)
        } catch {
          // not the protocol: drop this stream and resume after our ack
          end = { kind: 'dropped', got }
          return
        }
        if (type === 'message') {
          take(d)
        } else if (type === 'ack') {
          trim(d?.ack)
        } else if (type === 'reopen') {
          end = { kind: 'reopen' }
        } else if (type === 'close') {
          end = { kind: 'closed' }
          finish(d?.code ?? 1005, String(d?.reason ?? ''), true)
        }
      })
      for (;;) {
        const chunk = await reader.read()
        if (chunk.done) break
        if (!got) {
          got = true
          clearTimeout(firstByte)
          opened('stream')
        }
        parser.push(decoder.decode(chunk.value, { stream: true }))
        // after `reopen` the server ends the response: read it to its end, so the connection is reused
        if (done || (end !== undefined && end.kind !== 'reopen')) break
      }
      own.abort()
      return end ?? { kind: 'dropped', got }
    } catch {
      return buffered && !got ? { kind: 'buffered' } : end ?? { kind: 'dropped', got }
    } finally {
      clearTimeout(deadline)
      clearTimeout(firstByte)
      abort.signal.removeEventListener('abort', onEnd)
    }
  }

  // A stream client that received messages and has nothing to send still tells the server its
  // ack now and then (an empty v2 send), so the server can drop them from its queue.
  function ackOnly (): void {
    if (sending || done || closing !== undefined || outbox.length > 0 || ack <= ackTold) return
    sending = true
    withRetry('send', () => ({ seq: outSeq + 1, messages: [] })).then((a) => {
      if (a === undefined || done) return
      if (a.status === 200) {
        trim(a.body.ack)
        deliver(a.body)
      } else if (a.status !== 409) {
        refused(a)
      }
    }).catch(() => finish(1006, '', false)).finally(() => {
      sending = false
      if (outbox.length > 0) flush().catch(() => finish(1006, '', false))
      else if (closing !== undefined) sendClose()
    })
  }

  // One send in flight; retried until answered (the server drops what it already has).
  async function flush (): Promise<void> {
    if (sending || sid === '' || done) return
    sending = true
    let gaps = 0
    while (outbox.length > 0) {
      // within the server's limits (§4): message count, and body bytes (one message at least)
      let n = 1
      for (let bytes = 64 + outbox[0].size; n < outbox.length && n < batchMax && bytes + outbox[n].size <= bodyMax; n++) bytes += outbox[n].size
      const batch = outbox.slice(0, n)
      const a = await withRetry('send', () => ({ seq: batch[0].seq, messages: batch.map((m) => m.msg) }))
      if (a === undefined || isDone()) break
      if (a.status === 409 && typeof a.body.ack === 'number') {
        // A gap: resend from the server's ack + 1 (our outbox still holds everything above it).
        // Once is normal (a send lost before the server saw it); a run means we and the server
        // disagree, so back off, and past a bound give the session up as broken.
        trim(a.body.ack)
        if (++gaps > GAP_RETRIES) {
          finish(1006, '', false)
          break
        }
        if (gaps > 1) await sleep(backoff(gaps - 2))
        if (isDone()) break
        continue
      }
      gaps = 0
      if (a.status !== 200) {
        refused(a)
        break
      }
      trim(a.body.ack)
      // v2: the answer carries the replies the handler sent for these messages
      if (v >= 2 && !deliver(a.body)) break
    }
    sending = false
    if (closing !== undefined) sendClose()
  }

  // The close handshake: the server echoes the close (§8); the event follows its answer, as a
  // WebSocket's follows the peer's close frame. A lost answer still ends the socket.
  function sendClose (): void {
    if (done || closing === undefined || closeSent) return
    closeSent = true
    const [code, reason] = closing
    const end = (): void => finish(code ?? 1005, reason, true)
    request('close', code === undefined ? {} : { code, reason }, undefined).then(end, end)
  }

  withRetry('open', () => query === undefined ? { protocols, versions: VERSIONS } : { protocols, versions: VERSIONS, query }, 0).then((a) => {
    if (a === undefined || done) return
    if (a.status !== 200 || typeof a.body.sid !== 'string') return refused(a)
    sid = a.body.sid
    // a v1 server does not say (or says 1): v1 rules throughout
    if (a.body.v === 2) v = 2
    if (typeof a.body.ackIntervalMs === 'number' && a.body.ackIntervalMs > 0) ackEveryMs = a.body.ackIntervalMs
    if (typeof a.body.pollTimeoutMs === 'number' && a.body.pollTimeoutMs > 0) holdMs = a.body.pollTimeoutMs
    if (typeof a.body.protocol === 'string') protocol = a.body.protocol
    if (typeof a.body.maxMessagesPerRequest === 'number') batchMax = a.body.maxMessagesPerRequest
    if (typeof a.body.maxBodyBytes === 'number') bodyMax = a.body.maxBodyBytes
    if (closing !== undefined) return sendClose()
    // stream when both sides can; the socket opens on the stream's first byte (or on long-poll)
    const streaming = down.stream && v >= 2 && a.body.stream === true
    if (!streaming && !down.poll) return finish(1006, '', false)
    ;(streaming ? stream() : poll()).catch(() => finish(1006, '', false))
    flush().catch(() => finish(1006, '', false))
  }, () => finish(1006, '', false))

  return {
    send (data) {
      if (done || closing !== undefined) return
      const text = typeof data === 'string'
      const payload = text ? data : toBase64(data)
      const msg = text ? { text: payload } : { binary: payload }
      // its UTF-8 size inside the JSON body (escapes included), plus a comma
      outbox.push({ seq: ++outSeq, msg, size: new TextEncoder().encode(JSON.stringify(msg)).length + 1 })
      flush().catch(() => finish(1006, '', false))
    },
    close (code, reason = '') {
      if (done || closing !== undefined) return
      closing = [code, reason]
      // Before open: the open answer closes it. While sending: after the queued messages, like a WebSocket.
      if (sid !== '' && !sending) sendClose()
    },
    buffered: () => outbox.reduce((n, m) => n + m.size, 0),
    transport: () => current
  }
}

/** 429 and 5xx: the server (or something before it) says "not now", not "no". */
function isTransientStatus (status: number): boolean {
  return status === 429 || status >= 500
}

/** Exponential, jittered: 250 ms, 500 ms, 1 s, ... capped at 5 s. */
function backoff (attempt: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.5 + Math.random() / 2)
}

/** `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, in ms, capped; `undefined` when absent or unreadable. */
export function retryAfter (h: string | null | undefined): number | undefined {
  if (h === null || h === undefined || h.length === 0 || h.length > 64) return undefined
  let ms: number
  if (/^[0-9]+$/.test(h)) {
    ms = Number(h) * 1000
  } else {
    // an HTTP-date starts with the day name (RFC 9110 §5.6.7); anything else is not one
    const c = h.charCodeAt(0) | 0x20
    if (c < 0x61 || c > 0x7a) return undefined
    const at = Date.parse(h)
    if (Number.isNaN(at)) return undefined
    ms = at - Date.now()
  }
  return Math.min(Math.max(ms, 0), RETRY_AFTER_CAP_MS)
}

function toBase64 (data: ArrayBuffer | ArrayBufferView): string {
  const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data)
  let s = ''
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i])
  return btoa(s)
}

function fromBase64 (data: string): ArrayBuffer {
  const s = atob(data)
  const bytes = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i)
  return bytes.buffer
}
