/**
 * The Portcullis contender: Fastify + `@portcullis/policy` with the full policy of the reference
 * workload — origin allowlist, signed-cookie session, required subprotocol — and, in the
 * `inspect` variant, JSON-Schema inspection of every inbound message.
 *
 * Every part is the real plugin (`info.parts` says so; the report marks any part that is not,
 * which was the case for early runs made while the plugins were being written).
 */
import Fastify from 'fastify'
import portcullis, { type PortcullisRoutePolicy } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import subprotocols, { json } from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'
import cookieSession from '@portcullis/cookie-session'
import fastifyCookie from '@fastify/cookie'
import type { MeterProvider } from '@opentelemetry/sdk-metrics'
import type { WebSocket } from 'ws'
import { browserHeaders, COOKIE_NAME, MESSAGE_SCHEMA, ORIGIN, OTHER_ORIGINS, PROTOCOL, SECRET, SESSION_ID, USER_ID, WS_PATH } from '../lib/fixture.js'
import { echo } from './bare.js'
import type { BenchServer } from './types.js'

export interface PortcullisVariant {
  /** Inspect every message against MESSAGE_SCHEMA (JSON.parse + Ajv). */
  inspect: boolean
  /** `false`: no cache of verified cookies, so every handshake pays the HMAC. Default: the plugin's cache. */
  sessionCache?: boolean
  /**
   * `true`: the core's OpenTelemetry metrics go to a real SDK MeterProvider with a periodic
   * reader (every 5 s, to an exporter that drops the batch), so every decision, open and close
   * is recorded into real aggregations. Default: `metrics: true` with no SDK (the API's no-op meter).
   */
  telemetry?: boolean
  /**
   * Parts left out, for attribution only (contender `portcullis-without-<part>[+<part>…]`, run
   * through `BENCH_CONTENDERS`; never a row of the report): `origin` (the route opts out with
   * `origin: false`), `session` (no cookie-session plugin; @fastify/cookie stays), `subprotocol`
   * (no registry: no protocol is chosen or answered, though the bench's client still offers one), `fallback`.
   */
  without?: readonly AblatedPart[]
}

export const ABLATED_PARTS = ['origin', 'session', 'subprotocol', 'fallback'] as const
export type AblatedPart = typeof ABLATED_PARTS[number]

type Part = 'plugin' | 'inline'

export async function startPortcullis (variant: PortcullisVariant): Promise<BenchServer> {
  const app = Fastify({ logger: false })
  // the SDK is loaded only by the variant that uses it, as an app without it would not load it
  const meterProvider: MeterProvider | undefined = variant.telemetry === true
    ? (await import('./otel-discard.js')).discardingMeterProvider(5000)
    : undefined
  await app.register(portcullis, meterProvider === undefined ? {} : { meterProvider })
  if (meterProvider !== undefined) app.addHook('onClose', () => meterProvider.shutdown())
  const parts: Record<string, Part> = {}

  const without = new Set(variant.without)

  // ── origin: an allowlist of exact serialized origins (RFC 6454 §6.2) ──
  if (!without.has('origin')) await app.register(originGuard, { allow: [ORIGIN, ...OTHER_ORIGINS] })
  parts.origin = 'plugin'

  // ── identity: a session id in a cookie signed by @fastify/cookie (HMAC-SHA256), then a lookup ──
  const sessions = new Map([[SESSION_ID, { id: USER_ID, sessionId: SESSION_ID }]])
  await app.register(fastifyCookie, { secret: SECRET })
  if (!without.has('session')) {
    await app.register(cookieSession, {
      signedCookie: {
        cookieName: COOKIE_NAME,
        load: (id: string) => sessions.get(id) ?? null,
        // the default cache skips the HMAC for a cookie already verified; 0 pays it every time
        ...(variant.sessionCache === false ? { cacheSize: 0 } : {})
      }
    })
  }
  parts.session = 'plugin'
  const cookie = `${COOKIE_NAME}=${app.signCookie(SESSION_ID)}`

  // ── subprotocol: required, negotiated from the registered list; optional JSON-Schema inspection ──
  if (!without.has('subprotocol')) {
    await app.register(subprotocols, {
      protocols: { [PROTOCOL]: variant.inspect ? json({ schema: MESSAGE_SCHEMA as object }) : { dataTypes: 'text' } }
    })
  }
  parts.subprotocol = 'plugin'
  parts.inspection = 'plugin'

  // ── the long-poll twin: the same route, the same policy, at WS_PATH/_lp/* ──
  // Every bench client is one identity on 127.0.0.1, so the per-identity and per-IP session
  // bounds (16 and 64 by default) are lifted; everything else keeps its default.
  if (!without.has('fallback')) await app.register(fallback, { maxSessionsPerIdentity: 0, maxSessionsPerIp: 0, maxPendingPollsPerIp: 1000 })
  parts.fallback = 'plugin'

  const wsPolicy: PortcullisRoutePolicy = {
    ...(without.has('subprotocol') ? {} : { protocols: [PROTOCOL] }),
    ...(without.has('fallback') ? {} : { fallback: true }),
    ...(without.has('origin') ? { origin: false } : {})
  }
  app.get(WS_PATH, { websocket: true, wsPolicy }, (socket) => echo(socket as unknown as WebSocket))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return {
    port: addr.port,
    info: { stack: `fastify ${app.version} + @portcullis/policy`, inspect: variant.inspect, sessionCache: variant.sessionCache !== false, telemetry: meterProvider === undefined ? 'no-op meter (no SDK)' : 'SDK MeterProvider, periodic reader', parts, stages: app.wsPolicy.stages(), fallback: !without.has('fallback'), ...(without.size === 0 ? {} : { without: [...without] }) },
    // a browser's upgrade: Origin, UA, Accept-Language, three cookies, the deflate offer, the subprotocol
    clientHeaders: browserHeaders(cookie),
    close: () => app.close()
  }
}
