/**
 * Shared test helpers: real servers on port 0, real `ws` clients, raw TCP upgrade requests,
 * a log capture that lets tests assert what reached the logs (and what never did).
 */
import { connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect, Server as TlsServer } from 'node:tls'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'

const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url))

/** Test-only TLS key pair for localhost / 127.0.0.1 / ::1. */
export function testTls (): { key: Buffer, cert: Buffer } {
  return { key: readFileSync(fixtures + 'tls/key.pem'), cert: readFileSync(fixtures + 'tls/cert.pem') }
}

/** Start the app on 127.0.0.1 port 0 and return its base URLs. */
export async function listen (app: FastifyInstance): Promise<{ port: number, http: string, ws: string, origin: string }> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  const s = app.server instanceof TlsServer ? 's' : ''
  return { port: addr.port, http: `http${s}://127.0.0.1:${addr.port}`, ws: `ws${s}://127.0.0.1:${addr.port}`, origin: `http${s}://127.0.0.1:${addr.port}` }
}

export interface LogCapture {
  stream: Writable
  lines: Array<Record<string, any>>
  text: () => string
}

/** A pino destination that keeps every line, for asserting on logs. */
export function captureLogs (): LogCapture {
  const lines: Array<Record<string, any>> = []
  let raw = ''
  const stream = new Writable({
    write (chunk, _enc, cb) {
      raw += String(chunk)
      for (const l of String(chunk).split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l))
      cb()
    }
  })
  return { stream, lines, text: () => raw }
}

export interface WsResult {
  /** The open socket, when the handshake succeeded. */
  ws?: WebSocket
  /** HTTP status of a refused handshake. */
  status?: number
  /** Body of a refused handshake. */
  body?: string
  headers?: Record<string, string | string[] | undefined>
  error?: Error
}

/** Open a real `ws` client; resolves with the socket or with the refusal's status and body. */
export function wsOpen (url: string, opts: { protocols?: string | string[], headers?: Record<string, string>, origin?: string, ca?: Buffer } = {}): Promise<WsResult> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ...opts.headers }
    const ws = new WebSocket(url, opts.protocols ?? [], { headers, origin: opts.origin, ca: opts.ca, rejectUnauthorized: opts.ca !== undefined })
    // buffer from the first byte: a message in the same TCP packet as the 101 arrives before
    // any listener a test could add after awaiting the open
    const inbox: string[] = []
    inboxes.set(ws, inbox)
    ws.on('message', (data: Buffer) => { inbox.push(String(data)); wake(ws) })
    ws.on('open', () => resolve({ ws }))
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += String(c) })
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }))
      res.on('error', () => resolve({ status: res.statusCode, body, headers: res.headers }))
    })
    ws.on('error', (error) => resolve({ error }))
  })
}

const inboxes = new WeakMap<WebSocket, string[]>()
const waiters = new WeakMap<WebSocket, () => void>()
function wake (ws: WebSocket): void { waiters.get(ws)?.() }

/** Resolve with the next `n` messages (as strings) of a socket opened by `wsOpen`. */
export function nextMessages (ws: WebSocket, n = 1, ms = 5000): Promise<string[]> {
  const inbox = inboxes.get(ws)
  if (inbox === undefined) throw new Error('nextMessages needs a socket opened by wsOpen')
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { waiters.delete(ws); reject(new Error(`expected ${n} messages, got ${inbox.length}`)) }, ms)
    const check = (): void => {
      if (inbox.length >= n) {
        clearTimeout(timer)
        waiters.delete(ws)
        resolve(inbox.splice(0, n))
      }
    }
    waiters.set(ws, check)
    check()
  })
}

/** Resolve with the close code and reason of a socket. */
export function closed (ws: WebSocket): Promise<{ code: number, reason: string }> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve({ code: -1, reason: 'already closed' })
    ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: String(reason) }))
  })
}

/** Headers of a valid RFC 6455 upgrade request; override or delete (value `null`) any of them. */
export function upgradeHeaders (host: string, overrides: Record<string, string | null | string[]> = {}): string[] {
  const base: Record<string, string | string[] | null> = {
    Host: host,
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    ...overrides
  }
  const lines: string[] = []
  for (const [k, v] of Object.entries(base)) {
    if (v === null) continue
    for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`)
  }
  return lines
}

export interface RawResponse {
  status: number
  statusLine: string
  headers: Record<string, string>
  body: string
  raw: string
}

/**
 * Send a raw HTTP request over TCP (or TLS) and read the response head and body until the
 * server closes or a 101 head arrives. For requests no well-behaved client would send.
 */
export function rawHttp (port: number, request: string | Buffer, opts: { tls?: boolean, timeoutMs?: number } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket: Socket = opts.tls === true
      ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false })
      : tcpConnect({ port, host: '127.0.0.1' })
    let raw = ''
    const timer = setTimeout(() => { socket.destroy(); finish() }, opts.timeoutMs ?? 3000)
    let done = false
    function finish (): void {
      if (done) return
      done = true
      clearTimeout(timer)
      const headEnd = raw.indexOf('\r\n\r\n')
      const head = headEnd === -1 ? raw : raw.slice(0, headEnd)
      const [statusLine, ...hl] = head.split('\r\n')
      const headers: Record<string, string> = {}
      for (const l of hl) {
        const i = l.indexOf(':')
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim()
      }
      const status = Number(statusLine?.split(' ')[1] ?? 0)
      if (status === 0 && raw.length === 0) return reject(new Error('no response'))
      resolve({ status, statusLine: statusLine ?? '', headers, body: headEnd === -1 ? '' : raw.slice(headEnd + 4), raw })
    }
    socket.on(opts.tls === true ? 'secureConnect' : 'connect', () => socket.write(request))
    socket.on('data', (c) => {
      raw += c.toString('latin1')
      if (raw.startsWith('HTTP/1.1 101') && raw.includes('\r\n\r\n')) { socket.destroy(); finish() }
    })
    socket.on('end', finish)
    socket.on('close', finish)
    socket.on('error', () => finish())
  })
}

/** A raw upgrade request for `path`, with header overrides. */
export function rawUpgrade (port: number, path: string, overrides: Record<string, string | null | string[]> = {}, opts: { method?: string, version?: string, tls?: boolean } = {}): Promise<RawResponse> {
  const lines = [`${opts.method ?? 'GET'} ${path} HTTP/${opts.version ?? '1.1'}`, ...upgradeHeaders(`127.0.0.1:${port}`, overrides)]
  return rawHttp(port, lines.join('\r\n') + '\r\n\r\n', { tls: opts.tls })
}

/** Wait until `fn` returns true, polling; rejects after `ms`. */
export async function waitFor (fn: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms
  while (!fn()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
