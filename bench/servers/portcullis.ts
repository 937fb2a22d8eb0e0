/**
 * The Portcullis contender: Fastify + `@portcullis/policy` with the full policy of the reference
 * workload — origin allowlist, signed-cookie session, required subprotocol — and, in the
 * `inspect` variant, JSON-Schema inspection of every inbound message.
 *
 * Each part uses the real plugin when its package has landed, else a minimal inline stage built
 * on the core's public API; `info.parts` says which, and the report marks inline parts "partial".
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import Fastify from 'fastify'
import portcullis, { type StageDefinition } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import subprotocols, { json } from '@portcullis/subprotocols'
import type { WebSocket } from 'ws'
import { COOKIE_NAME, MESSAGE_SCHEMA, ORIGIN, OTHER_ORIGINS, PROTOCOL, SECRET, SESSION_ID, USER_ID, WS_PATH, signCookieValue } from '../lib/fixture.js'
import { echo } from './bare.js'
import type { BenchServer } from './types.js'

export interface PortcullisVariant {
  /** Inspect every message against MESSAGE_SCHEMA (JSON.parse + Ajv). */
  inspect: boolean
}

type Part = 'plugin' | 'inline'

export async function startPortcullis (variant: PortcullisVariant): Promise<BenchServer> {
  const app = Fastify({ logger: false })
  await app.register(portcullis, {})
  const parts: Record<string, Part> = {}

  // ── origin: an allowlist of exact serialized origins (RFC 6454 §6.2) ──
  await app.register(originGuard, { allow: [ORIGIN, ...OTHER_ORIGINS] })
  parts.origin = 'plugin'

  // ── identity: a signed session cookie, verified with HMAC-SHA256, then a session lookup ──
  const sessions = new Map([[SESSION_ID, { id: USER_ID, sessionId: SESSION_ID }]])
  const identityStage: StageDefinition = {
    name: 'bench-session',
    phase: 'identity',
    evaluate (ctx) {
      const values = ctx.cookies.get(COOKIE_NAME)
      if (values === undefined || values.length !== 1) return { status: 401, code: 'BENCH_SESSION_REQUIRED', reason: 'Session required' }
      const id = unsign(values[0], SECRET)
      const session = id === undefined ? undefined : sessions.get(id)
      if (session === undefined) return { status: 401, code: 'BENCH_SESSION_INVALID', reason: 'Session invalid' }
      ctx.state.identity = session
    }
  }
  app.wsPolicy.addStage(identityStage)
  parts.session = 'inline'
  const cookie = `${COOKIE_NAME}=${signCookieValue(SESSION_ID)}`

  // ── subprotocol: required, negotiated from the registered list; optional JSON-Schema inspection ──
  await app.register(subprotocols, {
    protocols: { [PROTOCOL]: variant.inspect ? json({ schema: MESSAGE_SCHEMA as object }) : { dataTypes: 'text' } }
  })
  parts.subprotocol = 'plugin'
  parts.inspection = 'plugin'

  app.get(WS_PATH, { websocket: true, wsPolicy: { protocols: [PROTOCOL] } }, (socket) => echo(socket as unknown as WebSocket))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  return {
    port: addr.port,
    info: { stack: `fastify ${app.version} + @portcullis/policy`, inspect: variant.inspect, parts, stages: app.wsPolicy.stages(), fallback: false },
    clientHeaders: [['Origin', ORIGIN], ['Cookie', cookie], ['Sec-WebSocket-Protocol', PROTOCOL]],
    close: () => app.close()
  }
}

/** `value.signature` → value when the HMAC-SHA256 signature matches (constant-time compare). */
function unsign (signed: string, secret: string): string | undefined {
  const dot = signed.lastIndexOf('.')
  if (dot <= 0) return undefined
  const value = signed.slice(0, dot)
  const expected = Buffer.from(createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, ''))
  const got = Buffer.from(signed.slice(dot + 1))
  return got.length === expected.length && timingSafeEqual(got, expected) ? value : undefined
}
