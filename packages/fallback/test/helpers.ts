/**
 * Test helpers for the long-poll door: an app with the core, stand-in origin / identity /
 * subprotocol stages and the fallback; a raw HTTP requester; a small protocol client.
 */
import { request as httpRequest } from 'node:http'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import portcullis, { type PortcullisOptions, type StageDefinition } from '@portcullis/policy'
import fallback, { type FallbackOptions } from '../src/index.js'

export const APP_ORIGIN = 'https://app.example.com'

/** Origin stand-in: allows the origins listed in `lpOrigins` (default: APP_ORIGIN), else 403. */
export const lpOriginStage: StageDefinition<string[], Set<string>> = {
  name: 'lp-origin',
  phase: 'origin',
  option: 'lpOrigins',
  compile: (value) => new Set(value ?? [APP_ORIGIN]),
  evaluate (ctx, allowed) {
    if (ctx.origin !== undefined && allowed.has(ctx.origin)) return
    return { status: 403, code: 'LP_ORIGIN_DENIED', reason: 'Origin not allowed' }
  }
}

/** Revoked auth sessions of the identity stand-in. */
export const revoked = new Set<string>()

/**
 * Identity stand-in: with `lpIdentity: true`, the cookie `auth=<user>.<session>` is required
 * (401 without), and a session in `revoked` is refused (401).
 */
export const lpIdentityStage: StageDefinition<boolean, boolean> = {
  name: 'lp-identity',
  phase: 'identity',
  option: 'lpIdentity',
  compile: (value) => value === true,
  evaluate (ctx, required) {
    if (!required) return
    const v = ctx.cookies.get('auth')?.[0]
    if (v === undefined) return { status: 401, code: 'LP_SESSION_REQUIRED', reason: 'Session required' }
    const [id, sessionId] = v.split('.')
    if (revoked.has(sessionId)) return { status: 401, code: 'LP_SESSION_REVOKED', reason: 'Session revoked' }
    ctx.state.identity = { id, sessionId }
  }
}

/** Subprotocol stand-in: picks the first offered protocol listed in `lpProtocols`; 400 when none fits. */
export const lpProtocolStage: StageDefinition<string[], string[] | undefined> = {
  name: 'lp-protocols',
  phase: 'subprotocol',
  option: 'lpProtocols',
  compile: (value) => value,
  evaluate (ctx, supported) {
    if (supported === undefined) return
    const offered = (ctx.offeredProtocols ?? '').split(',').map(s => s.trim()).filter(Boolean)
    const pick = offered.find(p => supported.includes(p))
    if (pick === undefined) return { status: 400, code: 'LP_SUBPROTOCOL_UNSUPPORTED', reason: 'No supported subprotocol' }
    ctx.state.protocol = pick
  }
}

declare module '@portcullis/policy' {
  interface PortcullisRoutePolicy {
    lpOrigins?: string[]
    lpIdentity?: boolean
    lpProtocols?: string[]
  }
}

/** A fresh app with the core, the stand-in stages and the fallback (routes not yet), closed in teardown. */
export async function lpApp (
  t: { teardown: (fn: () => unknown) => void },
  opts: FallbackOptions = {},
  core: PortcullisOptions = {},
  server: FastifyServerOptions = {}
): Promise<FastifyInstance> {
  const app = Fastify(server)
  t.teardown(() => app.close())
  await app.register(portcullis, core)
  app.wsPolicy.addStage(lpOriginStage)
  app.wsPolicy.addStage(lpIdentityStage)
  app.wsPolicy.addStage(lpProtocolStage)
  await app.register(fallback, opts)
  return app
}

export interface HttpResult {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  body: any
}

/** One HTTP request on 127.0.0.1; `body` objects are sent as JSON text. */
export function http (port: number, method: string, path: string, headers: Record<string, string | string[]> = {}, body?: unknown, opts: { signal?: AbortSignal } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body)
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { ...headers, ...(data !== undefined ? { 'content-length': String(Buffer.byteLength(data)) } : {}) }, signal: opts.signal }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => {
        let parsed: unknown
        try { parsed = text.length > 0 ? JSON.parse(text) : undefined } catch { parsed = undefined }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    if (data !== undefined) req.write(data)
    req.end()
  })
}

export interface ClientOptions {
  origin?: string
  cookie?: string
  headers?: Record<string, string>
}

/** A minimal protocol client (PROTOCOL.md) with the protocol state exposed, for driving the server by hand. */
export class LpClient {
  readonly port: number
  readonly path: string
  readonly opts: ClientOptions
  sid = ''
  protocol = ''
  /** Highest server seq received. */
  lastIn = 0
  /** Next client seq. */
  nextOut = 1

  constructor (port: number, path: string, opts: ClientOptions = {}) {
    this.port = port
    this.path = path.endsWith('/') ? path.slice(0, -1) : path
    this.opts = opts
  }

  headers (extra: Record<string, string> = {}, json = true): Record<string, string> {
    const h: Record<string, string> = { 'x-portcullis-fallback': '1', ...this.opts.headers, ...extra }
    if (json) h['content-type'] = 'application/json'
    if (this.opts.origin !== undefined) h.origin = this.opts.origin
    if (this.opts.cookie !== undefined) h.cookie = this.opts.cookie
    if (this.sid !== '') h['x-portcullis-sid'] = this.sid
    if (this.protocol !== '') h['x-portcullis-protocol'] = this.protocol
    return h
  }

  async open (protocols?: string[]): Promise<HttpResult> {
    const r = await http(this.port, 'POST', `${this.path}/_lp/open`, this.headers(), protocols === undefined ? {} : { protocols })
    if (r.status === 200) {
      this.sid = r.body.sid
      this.protocol = r.body.protocol
    }
    return r
  }

  /** Poll with `ack` (default: everything received so far); does not advance `lastIn`. */
  pollRaw (ack = this.lastIn, opts: { signal?: AbortSignal } = {}): Promise<HttpResult> {
    return http(this.port, 'GET', `${this.path}/_lp/poll`, this.headers({ 'x-portcullis-ack': String(ack) }, false), undefined, opts)
  }

  /** Poll and keep the new messages (deduplicated by seq), as a client must. */
  async poll (): Promise<{ res: HttpResult, messages: Array<string | Buffer>, close?: { code: number, reason: string } }> {
    const res = await this.pollRaw()
    const messages: Array<string | Buffer> = []
    if (res.status === 200) {
      for (const m of res.body.messages) {
        if (m.seq <= this.lastIn) continue
        this.lastIn = m.seq
        messages.push(typeof m.text === 'string' ? m.text : Buffer.from(m.binary, 'base64'))
      }
    }
    return { res, messages, close: res.body?.close }
  }

  /** Poll until `n` messages arrived (or a close). */
  async receive (n: number): Promise<Array<string | Buffer>> {
    const got: Array<string | Buffer> = []
    while (got.length < n) {
      const r = await this.poll()
      if (r.res.status !== 200) throw new Error(`poll answered ${r.res.status} ${r.res.text}`)
      got.push(...r.messages)
      if (r.close !== undefined) break
    }
    return got
  }

  /** Poll until the close arrives; returns it. */
  async closed (max = 20): Promise<{ code: number, reason: string }> {
    for (let i = 0; i < max; i++) {
      const r = await this.poll()
      if (r.res.status !== 200) return { code: 1006, reason: `poll ${r.res.status}` }
      if (r.close !== undefined) return r.close
    }
    throw new Error('no close')
  }

  sendRaw (seq: number, messages: Array<{ text: string } | { binary: string }>): Promise<HttpResult> {
    return http(this.port, 'POST', `${this.path}/_lp/send`, this.headers(), { seq, messages })
  }

  async send (...items: Array<string | Buffer>): Promise<HttpResult> {
    const messages = items.map(m => typeof m === 'string' ? { text: m } : { binary: m.toString('base64') })
    const r = await this.sendRaw(this.nextOut, messages)
    if (r.status === 200) this.nextOut = r.body.ack + 1
    return r
  }

  close (code?: number, reason?: string): Promise<HttpResult> {
    const body: Record<string, unknown> = {}
    if (code !== undefined) body.code = code
    if (reason !== undefined) body.reason = reason
    return http(this.port, 'POST', `${this.path}/_lp/close`, this.headers(), body)
  }
}

/** Start on 127.0.0.1 port 0; returns the port. */
export async function start (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return addr.port
}

/** An async queue of events, for awaiting what a handler saw. */
export class Inbox<T> {
  readonly items: T[] = []
  #waiters: Array<() => void> = []
  push (item: T): void {
    this.items.push(item)
    for (const w of this.#waiters.splice(0)) w()
  }

  async take (n = 1, ms = 5000): Promise<T[]> {
    const until = Date.now() + ms
    while (this.items.length < n) {
      if (Date.now() > until) throw new Error(`expected ${n} items, got ${this.items.length}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(until - Date.now(), 1))
        this.#waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
    return this.items.splice(0, n)
  }
}
