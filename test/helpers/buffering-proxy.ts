/**
 * An HTTP proxy on 127.0.0.1 that buffers whole responses, like some corporate proxies and
 * anti-virus gateways: it reads each upstream response to its end before sending a byte of it
 * on. A held stream therefore shows nothing until the server ends it. Upgrades are not proxied
 * (the connection is dropped), so a WebSocket cannot open through it either.
 */
import { createServer, request, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface BufferingProxy {
  /** `http://127.0.0.1:<port>` */
  origin: string
  port: number
  /** Paths of the requests forwarded, in order. */
  seen: string[]
  close: () => Promise<void>
}

export async function bufferingProxy (t: { teardown: (fn: () => unknown) => void }, upstreamPort: number): Promise<BufferingProxy> {
  const seen: string[] = []
  const server = createServer((req, res) => {
    seen.push(req.url ?? '')
    const up = request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      const chunks: Buffer[] = []
      upRes.on('data', (c: Buffer) => chunks.push(c))
      upRes.on('end', () => {
        const body = Buffer.concat(chunks)
        const headers: IncomingHttpHeaders = { ...upRes.headers, 'content-length': String(body.length) }
        delete headers['transfer-encoding']
        res.writeHead(upRes.statusCode ?? 502, headers)
        res.end(body)
      })
      upRes.on('error', () => res.destroy())
    })
    up.on('error', () => { if (!res.headersSent) res.writeHead(502).end(); else res.destroy() })
    // the client gave up (an abort): so does the proxy, and the server hears it
    res.on('close', () => { if (!res.writableFinished) up.destroy() })
    req.pipe(up)
  })
  server.on('upgrade', (_req, socket) => socket.destroy())
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const close = (): Promise<void> => new Promise((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })
  t.teardown(close)
  return { origin: `http://127.0.0.1:${port}`, port, seen, close }
}
