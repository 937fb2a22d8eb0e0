/**
 * The chat's operational telemetry: Portcullis's metrics as a Prometheus exposition on a SEPARATE
 * listener (the public port never serves /metrics), and an audit sink that ships JSON lines.
 */
import { createWriteStream } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import type { AuditEvent } from '@portcullis/policy'

export interface MetricsServer {
  /** Give it to the chat (`buildChat({ meterProvider })`): Portcullis records into it. */
  meterProvider: MeterProvider
  /** `http://host:port/metrics`. */
  url: string
  close: () => Promise<void>
}

/**
 * An OpenTelemetry MeterProvider read by the Prometheus exporter, served at `/metrics` on its own
 * `node:http` listener — bind it to a private address (default 127.0.0.1) that only the scraper
 * reaches. Anything but `GET /metrics` gets 404.
 */
export async function startMetricsServer (port: number, host = '127.0.0.1'): Promise<MetricsServer> {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const meterProvider = new MeterProvider({ readers: [exporter] })
  const server: Server = createServer(function metricsEndpoint (req, res) {
    if (req.method === 'GET' && req.url === '/metrics') {
      exporter.getMetricsRequestHandler(req, res)
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n')
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  const address = server.address()
  const actual = address !== null && typeof address === 'object' ? address.port : port
  const shown = host.includes(':') ? `[${host}]` : host
  return {
    meterProvider,
    url: `http://${shown}:${actual}/metrics`,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await meterProvider.shutdown()
    }
  }
}

/**
 * An audit sink that appends each event as one JSON line to a file. It never waits: a
 * destination that cannot keep up (full disk, slow NFS) makes events drop past `maxBufferedBytes`
 * (counted in `dropped()`), rather than letting memory grow or a handshake wait.
 */
export function jsonLinesAudit (path: string, maxBufferedBytes = 1024 * 1024): { sink: (event: AuditEvent) => void, dropped: () => number, close: () => Promise<void> } {
  const out = createWriteStream(path, { flags: 'a' })
  let dropped = 0
  out.on('error', () => { dropped++ })
  return {
    sink (event) {
      if (out.writableLength > maxBufferedBytes || out.destroyed) {
        dropped++
        return
      }
      out.write(JSON.stringify(event) + '\n')
    },
    dropped: () => dropped,
    close: () => new Promise<void>((resolve) => out.end(() => resolve()))
  }
}
