/**
 * A small long-poll client for the fault and load suites, written from the fallback's
 * PROTOCOL.md (not from @portcullis/client) so that it can count exactly what arrives: every
 * message with its `seq`, duplicates and gaps included. HTTP over `node:http` with a keep-alive
 * agent, so a test can also reach under it and reset a socket.
 */
import { Agent, request as httpRequest, type ClientRequest, type IncomingHttpHeaders } from 'node:http'

export interface LpResponse {
  status: number
  headers: IncomingHttpHeaders
  body: any
}

export interface LpRequestOptions {
  method: 'GET' | 'POST'
  path: string
  headers?: Record<string, string>
  body?: unknown
  agent?: Agent
  timeoutMs?: number
  /** Called with the request before it is sent (to reset it, for example). */
  onRequest?: (req: ClientRequest) => void
}

/** One HTTP request to 127.0.0.1:port; resolves with status, headers and the parsed JSON body. */
export function lpRequest (port: number, opts: LpRequestOptions): Promise<LpResponse> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body))
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method: opts.method,
      path: opts.path,
      agent: opts.agent,
      headers: {
        'x-portcullis-fallback': '1',
        ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(payload.length) }),
        ...opts.headers
      }
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let body: unknown = text
        try { body = text.length > 0 ? JSON.parse(text) : undefined } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    if (opts.timeoutMs !== undefined) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error('client timeout')))
    opts.onRequest?.(req)
    req.end(payload)
  })
}

export interface LpStats {
  received: number
  duplicates: number
  /** Messages that arrived with a seq beyond highest + 1 (a hole: something was lost or reordered). */
  gaps: number
}

/**
 * One long-poll session: `open`, then `poll` in a loop (acking what it got), `send` one batch at
 * a time with retries. Counts duplicates and gaps as it goes (both must stay 0).
 */
export class LpClient {
  readonly port: number
  readonly path: string
  readonly headers: Record<string, string>
  readonly agent: Agent
  sid = ''
  protocol = ''
  /** Highest server seq delivered (the ack sent with each poll). */
  highest = 0
  nextSeq = 1
  closed: { code: number, reason: string } | undefined
  readonly stats: LpStats = { received: 0, duplicates: 0, gaps: 0 }
  readonly inbox: Array<{ seq: number, text?: string, binary?: string }> = []

  constructor (port: number, path: string, headers: Record<string, string>, agent: Agent) {
    this.port = port
    this.path = path
    this.headers = headers
    this.agent = agent
  }

  async open (protocols: string[]): Promise<LpResponse> {
    const r = await lpRequest(this.port, { method: 'POST', path: `${this.path}/_lp/open`, headers: this.headers, body: { protocols }, agent: this.agent })
    if (r.status === 200) {
      this.sid = r.body.sid
      this.protocol = r.body.protocol
    }
    return r
  }

  #sessionHeaders (): Record<string, string> {
    return { ...this.headers, 'x-portcullis-sid': this.sid, ...(this.protocol === '' ? {} : { 'x-portcullis-protocol': this.protocol }) }
  }

  /** One poll. Delivers new messages to `inbox`, counting duplicates (seq ≤ highest) and gaps. */
  async poll (opts: { timeoutMs?: number, onRequest?: (req: ClientRequest) => void } = {}): Promise<LpResponse> {
    const r = await lpRequest(this.port, {
      method: 'GET',
      path: `${this.path}/_lp/poll`,
      headers: { ...this.#sessionHeaders(), 'x-portcullis-ack': String(this.highest) },
      agent: this.agent,
      timeoutMs: opts.timeoutMs,
      onRequest: opts.onRequest
    })
    if (r.status !== 200) return r
    for (const m of r.body.messages as Array<{ seq: number, text?: string, binary?: string }>) {
      if (m.seq <= this.highest) { this.stats.duplicates++; continue }
      if (m.seq !== this.highest + 1) this.stats.gaps++
      this.highest = m.seq
      this.stats.received++
      this.inbox.push(m)
    }
    if (r.body.close !== undefined) this.closed = r.body.close
    return r
  }

  /** Send text messages as one batch, retrying on a network error or a 409 gap. */
  async send (texts: string[], retries = 3): Promise<LpResponse> {
    const seq = this.nextSeq
    this.nextSeq += texts.length
    let last: LpResponse | undefined
    for (let attempt = 0; attempt <= retries; attempt++) {
      try {
        last = await lpRequest(this.port, {
          method: 'POST',
          path: `${this.path}/_lp/send`,
          headers: this.#sessionHeaders(),
          body: { seq, messages: texts.map(text => ({ text })) },
          agent: this.agent
        })
        if (last.status !== 409) return last
      } catch (err) {
        if (attempt === retries) throw err
      }
    }
    return last as LpResponse
  }

  async close (code = 1000, reason = ''): Promise<LpResponse> {
    return await lpRequest(this.port, { method: 'POST', path: `${this.path}/_lp/close`, headers: this.#sessionHeaders(), body: { code, reason }, agent: this.agent })
  }
}
