/**
 * Starts the chat from environment variables (see the example's README):
 *   PORT (3000), HOST (127.0.0.1), ALLOWED_ORIGINS (comma-separated; default the server's own
 *   origin), SESSION_SECRET (default random per process, with a warning), REDIS_URL (optional,
 *   multi-node fallback store), TLS_CERT / TLS_KEY (optional PEM files: https + wss),
 *   METRICS_PORT (optional: Prometheus exposition at http://METRICS_HOST:METRICS_PORT/metrics on
 *   a separate listener; METRICS_HOST default 127.0.0.1), AUDIT_LOG (optional: a file that
 *   receives every security event as one JSON line).
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { buildChat } from './app.js'
import { jsonLinesAudit, startMetricsServer, type MetricsServer } from './telemetry.js'

const env = process.env
const port = Number(env.PORT ?? 3000)
const host = env.HOST ?? '127.0.0.1'
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`PORT must be a port number, got ${env.PORT}`)

const allowedOrigins = env.ALLOWED_ORIGINS === undefined || env.ALLOWED_ORIGINS.trim() === ''
  ? ['self']
  : env.ALLOWED_ORIGINS.split(',').map((s) => s.trim()).filter((s) => s !== '')

let sessionSecret = env.SESSION_SECRET
const randomSecret = sessionSecret === undefined || sessionSecret === ''
if (randomSecret) sessionSecret = randomBytes(32).toString('base64url')

if ((env.TLS_CERT === undefined) !== (env.TLS_KEY === undefined)) throw new TypeError('set both TLS_CERT and TLS_KEY, or neither')
const https = env.TLS_CERT !== undefined && env.TLS_KEY !== undefined
  ? { cert: readFileSync(env.TLS_CERT), key: readFileSync(env.TLS_KEY) }
  : undefined

let metrics: MetricsServer | undefined
if (env.METRICS_PORT !== undefined && env.METRICS_PORT !== '') {
  const metricsPort = Number(env.METRICS_PORT)
  if (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535) throw new TypeError(`METRICS_PORT must be a port number, got ${env.METRICS_PORT}`)
  metrics = await startMetricsServer(metricsPort, env.METRICS_HOST ?? '127.0.0.1')
}
const auditLog = env.AUDIT_LOG === undefined || env.AUDIT_LOG === '' ? undefined : jsonLinesAudit(env.AUDIT_LOG)

const app = await buildChat({ allowedOrigins, sessionSecret: sessionSecret as string, https, redisUrl: env.REDIS_URL, meterProvider: metrics?.meterProvider, audit: auditLog?.sink })
app.addHook('onClose', async function closeTelemetry () {
  await metrics?.close()
  await auditLog?.close()
})
if (randomSecret) app.log.warn('SESSION_SECRET is not set: using a random secret, so sessions end when the process restarts')

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
}

await app.listen({ port, host })
const address = app.server.address()
const actualPort = address !== null && typeof address === 'object' ? address.port : port
const shownHost = host.includes(':') ? `[${host}]` : host
app.log.info({ policy: app.wsPolicy.describe() }, 'portcullis policy')
app.log.info(`listening on ${https !== undefined ? 'https' : 'http'}://${shownHost}:${actualPort}/`)
if (metrics !== undefined) app.log.info(`metrics on ${metrics.url} (a separate listener; the public port does not serve /metrics)`)
