import type { FetchLike, PortcullisSocketOptions } from './types.js'

/** What a transport tells the socket. */
export interface Sink {
  open: (protocol: string) => void
  message: (data: unknown) => void
  close: (code: number, reason: string, wasClean: boolean) => void
}

/** What the socket asks of a transport. */
export interface Conn {
  send: (data: string | ArrayBuffer | ArrayBufferView) => void
  close: (code?: number, reason?: string) => void
  buffered: () => number
}

interface Frame {
  seq: number
  type: 'text' | 'binary'
  data: string
}

interface Answer {
  status: number
  body: Record<string, any>
}

const RETRIES = 3

/**
 * The client half of the Portcullis long-poll fallback (see packages/fallback/PROTOCOL.md).
 * Every request is a JSON POST with the custom `X-Portcullis-Fallback` header — never a "simple"
 * request, so a cross-origin page cannot send one without a CORS preflight — and with
 * `credentials: 'include'`, so the session cookie goes along exactly as on the upgrade.
 * Messages carry sequence numbers both ways: a lost response is retried and the other side
 * drops what it already has, so nothing is lost or delivered twice.
 */
export function openLongPoll (url: string, protocols: string[], o: PortcullisSocketOptions, sink: Sink): Conn {
  const fetchImpl: FetchLike = o.fetch ?? ((globalThis as unknown as { fetch: FetchLike }).fetch)
  const u = new URL(url)
  const base = (u.protocol === 'wss:' ? 'https://' : 'http://') + u.host + u.pathname.replace(/\/$/, '') + '/_lp/'
  const abort = new AbortController()
  let sid = ''
  let done = false
  let ack = 0
  let outSeq = 0
  let outbox: Frame[] = []
  let sending = false
  let closing: [number | undefined, string] | undefined

  function request (path: string, body: unknown, signal: AbortSignal | undefined = abort.signal): Promise<Answer> {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-portcullis-fallback': '1', ...o.headers }
    if (sid !== '') headers['x-portcullis-sid'] = sid
    return fetchImpl(base + path + u.search, {
      method: 'POST', headers, body: JSON.stringify(body), credentials: 'include', cache: 'no-store', signal
    }).then(async (res) => ({ status: res.status, body: await res.json().then((b) => b ?? {}, () => ({})) }))
  }

  function finish (code: number, reason: string, wasClean: boolean): void {
    if (done) return
    done = true
    abort.abort()
    sink.close(code, reason, wasClean)
  }

  // A denial or a refusal: 4000 + status with the server's stable code as reason (the same
  // close the WebSocket door would give, had the browser let us read it). 5xx stay transient.
  function refused (a: Answer): void {
    const close = a.body.close
    if (close !== undefined && typeof close.code === 'number') return finish(close.code, String(close.reason ?? ''), true)
    finish(a.status >= 400 && a.status < 600 ? 4000 + a.status : 1006, typeof a.body.code === 'string' ? a.body.code : '', false)
  }

  // Retry a request that failed on the network (not one the server answered) a few times.
  async function withRetry (path: string, body: () => unknown): Promise<Answer | undefined> {
    for (let i = 0; ; i++) {
      try {
        return await request(path, body())
      } catch {
        if (done) return
        if (i >= RETRIES) {
          finish(1006, '', false)
          return
        }
        await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** i))
      }
    }
  }

  // read through a call: the flag changes while a loop awaits
  function isDone (): boolean {
    return done
  }

  function trim (inAck: unknown): void {
    if (typeof inAck === 'number') outbox = outbox.filter((f) => f.seq > inAck)
  }

  async function poll (): Promise<void> {
    while (!done) {
      const a = await withRetry('poll', () => ({ ack }))
      if (a === undefined || done) return
      if (a.status !== 200) return refused(a)
      trim(a.body.inAck)
      for (const f of (a.body.frames ?? []) as Frame[]) {
        // Redelivered after a lost response: already handed to the app.
        if (f.seq <= ack) continue
        ack = f.seq
        sink.message(f.type === 'binary' ? fromBase64(f.data) : f.data)
        if (done) return
      }
      const close = a.body.close
      if (close !== undefined && close !== null) return finish(close.code ?? 1005, String(close.reason ?? ''), true)
    }
  }

  async function flush (): Promise<void> {
    if (sending || sid === '' || done) return
    sending = true
    while (outbox.length > 0) {
      const batch = outbox.slice(0, 64)
      const a = await withRetry('send', () => ({ frames: batch }))
      if (a === undefined || isDone()) break
      if (a.status !== 200) {
        refused(a)
        break
      }
      trim(a.body.inAck)
    }
    sending = false
    if (closing !== undefined) sendClose()
  }

  function sendClose (): void {
    if (done || closing === undefined) return
    const [code, reason] = closing
    request('close', code === undefined ? {} : { code, reason }, undefined).catch(() => {})
    finish(code ?? 1005, reason, true)
  }

  request('open', { protocols }).then((a) => {
    if (done) return
    if (a.status !== 200 || typeof a.body.sid !== 'string') return refused(a)
    sid = a.body.sid
    if (closing !== undefined) return sendClose()
    sink.open(typeof a.body.protocol === 'string' ? a.body.protocol : '')
    poll().catch(() => finish(1006, '', false))
    flush().catch(() => finish(1006, '', false))
  }, () => finish(1006, '', false))

  return {
    send (data) {
      if (done) return
      const text = typeof data === 'string'
      outbox.push({ seq: ++outSeq, type: text ? 'text' : 'binary', data: text ? data : toBase64(data) })
      flush().catch(() => finish(1006, '', false))
    },
    close (code, reason = '') {
      if (done || closing !== undefined) return
      closing = [code, reason]
      // Before open: the open answer closes it. While sending: after the queued messages, like a WebSocket.
      if (sid !== '' && !sending) sendClose()
    },
    buffered: () => outbox.reduce((n, f) => n + f.data.length, 0)
  }
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
