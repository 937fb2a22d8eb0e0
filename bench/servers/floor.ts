/**
 * The long-poll floor (context row `node-http-floor`): a raw `node:http` server speaking the v1
 * fallback exchanges — `open` (a session id), a held `poll` answered with the queued messages,
 * `send` answered with an ack — and an echo handler, with no policy, no framework and no
 * validation beyond JSON.parse. What two HTTP exchanges per echo cost in Node.js itself.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { randomBytes } from 'node:crypto'
import { WS_PATH } from '../lib/fixture.js'
import type { BenchServer } from './types.js'

interface FloorSession {
  out: Array<{ seq: number, text: string }>
  outSeq: number
  inAck: number
  held: ServerResponse | undefined
  timer: NodeJS.Timeout | undefined
}

const HOLD_MS = 25_000

export async function startFloor (): Promise<BenchServer> {
  const sessions = new Map<string, FloorSession>()
  const base = `${WS_PATH}/_lp/`

  function json (res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body)
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
    res.end(text)
  }

  function answer (s: FloorSession): void {
    const res = s.held
    if (res === undefined) return
    s.held = undefined
    clearTimeout(s.timer)
    json(res, 200, { ack: s.inAck, messages: s.out })
  }

  function body (req: IncomingMessage): Promise<any> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => { try { resolve(JSON.parse(Buffer.concat(chunks).toString())) } catch (err) { reject(err) } })
      req.on('error', reject)
    })
  }

  const server = createServer((req, res) => {
    const url = req.url ?? ''
    if (!url.startsWith(base)) return json(res, 404, {})
    const kind = url.slice(base.length)
    const sid = req.headers['x-portcullis-sid']
    if (kind === 'open') {
      body(req).then(() => {
        const id = randomBytes(16).toString('base64url')
        sessions.set(id, { out: [], outSeq: 0, inAck: 0, held: undefined, timer: undefined })
        json(res, 200, { v: 1, sid: id, protocol: '', pollTimeoutMs: HOLD_MS })
      }, () => json(res, 400, {}))
      return
    }
    const s = typeof sid === 'string' ? sessions.get(sid) : undefined
    if (s === undefined) return json(res, 404, {})
    if (kind === 'poll') {
      const ack = Number(req.headers['x-portcullis-ack'] ?? 0)
      s.out = s.out.filter((m) => m.seq > ack)
      if (s.held !== undefined) json(s.held, 200, { ack: s.inAck, messages: [] })
      s.held = res
      if (s.out.length > 0) return answer(s)
      s.timer = setTimeout(() => answer(s), HOLD_MS)
      res.on('close', () => { if (s.held === res) { s.held = undefined; clearTimeout(s.timer) } })
    } else if (kind === 'send') {
      body(req).then((b: { seq: number, messages: Array<{ text: string }> }) => {
        for (const m of b.messages) {
          s.inAck++
          // the echo handler
          s.out.push({ seq: ++s.outSeq, text: m.text })
        }
        json(res, 200, { ack: s.inAck })
        answer(s)
      }, () => json(res, 400, {}))
    } else if (kind === 'close') {
      body(req).catch(() => {}).finally(() => {
        sessions.delete(sid as string)
        json(res, 200, { close: { code: 1000, reason: '' } })
      })
    } else {
      json(res, 404, {})
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return {
    port: addr.port,
    info: { stack: `node:http ${process.version}, no framework, no policy` },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}
