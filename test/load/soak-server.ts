/**
 * The soak's server, in its own process (forked by soak.ts) so that its RSS is measured alone
 * and client and server do not share one event loop. The full-policy app of app.ts, echoing,
 * on 127.0.0.1 port 0. Talks to the parent over IPC: sends `{ port }` when listening, answers
 * `sample` with its memory and live connections, and `close` by shutting down gracefully.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { protectedApp } from './app.js'

async function main (): Promise<void> {
  const maxSessions = Number(process.env.SOAK_MAX_SESSIONS ?? 20_000)
  const { app, probe } = await protectedApp({
    record: false,
    fallback: { maxSessionsPerIp: 0, maxSessionsPerIdentity: 0, maxSessions, maxPendingPollsPerIp: maxSessions, pollTimeoutMs: 20_000 }
  })
  let errors = 0
  app.addHook('onError', async () => { errors++ })
  // Test-only timing (issue 14, soak p99): for each long-poll session, when its last send arrived;
  // when a poll answers with messages, how long after that send it answered (the server's share of
  // an echo: policy, handler, wake-up, answer), and how long that poll had been held. A missed
  // wake-up shows as a poll answered about pollTimeoutMs after the send; client starvation does not
  // show here at all. Hooks in this setup only, nothing in the library's request path.
  const sendIn = new Map<string, number>()
  const wakeToAnswer: number[] = []
  // From the client stamping a message to its send reaching this process's onRequest (the client's
  // clock origin comes in SOAK_CLIENT_TIME_ORIGIN; both are this machine's clock): what the echo
  // spent before the server saw it — in the client process, on loopback, or waiting for this loop.
  const clientOrigin = Number(process.env.SOAK_CLIENT_TIME_ORIGIN ?? NaN)
  const toServer: number[] = []
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  // TCP connections accepted: a keep-alive client should open about one or two per session
  let accepted = 0
  app.server.on('connection', () => { accepted++ })
  let slowWakes = 0
  app.addHook('onRequest', function soakTimeIn (request, _reply, done) {
    if (request.url.endsWith('/_lp/send')) {
      sendIn.set(String(request.headers['x-portcullis-sid']), performance.now());
      (request as unknown as { soakIn: number }).soakIn = performance.timeOrigin + performance.now()
    } else if (request.url.endsWith('/_lp/poll')) (request as unknown as { soakT0: number }).soakT0 = performance.now()
    done()
  })
  app.addHook('preHandler', function soakStamp (request, _reply, done) {
    const at = (request as unknown as { soakIn?: number }).soakIn
    const text = (request.body as { messages?: Array<{ text?: string }> } | undefined)?.messages?.[0]?.text
    if (at !== undefined && typeof text === 'string' && Number.isFinite(clientOrigin)) {
      const stamped = clientOrigin + Number(text.slice(text.indexOf(' ') + 1))
      if (Number.isFinite(stamped)) toServer.push(at - stamped)
    }
    done()
  })
  app.addHook('onSend', function soakTimeOut (request, _reply, payload, done) {
    if (request.url.endsWith('/_lp/poll') && typeof payload === 'string' && payload.includes('"seq"')) {
      const sid = String(request.headers['x-portcullis-sid'])
      const t = sendIn.get(sid)
      if (t !== undefined) {
        const ms = performance.now() - t
        wakeToAnswer.push(ms)
        if (ms > 1000) slowWakes++
        sendIn.delete(sid)
      }
    }
    done(null, payload)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  const send = (m: unknown): void => { process.send?.(m) }
  send({ type: 'listening', port: addr.port })
  function stats (list: number[]): { n: number, p50: number, p99: number, max: number } {
    const sorted = Float64Array.from(list).sort()
    const at = (q: number): number => sorted.length === 0 ? 0 : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] * 100) / 100
    return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.length === 0 ? 0 : Math.round(sorted[sorted.length - 1]) }
  }
  function wakeStats (): Record<string, unknown> {
    return {
      ...stats(wakeToAnswer),
      over1s: slowWakes,
      accepted,
      toServer: stats(toServer),
      serverLoopDelay: { p50: Math.round(loopDelay.percentile(50) / 1e4) / 100, p99: Math.round(loopDelay.percentile(99) / 1e4) / 100, max: Math.round(loopDelay.max / 1e4) / 100 }
    }
  }
  process.on('message', (m: { type: string, gc?: boolean }) => {
    if (m.type === 'sample') {
      // now and then a full collection first (the parent forks us with --expose-gc): that sample
      // is what is retained, not garbage V8 has not needed to collect yet
      if (m.gc === true) (globalThis as { gc?: () => void }).gc?.()
      const mem = process.memoryUsage()
      send({
        type: 'sample',
        gc: m.gc === true,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        connections: app.wsPolicy.stats().connections,
        lpSessions: app.wsFallback.sessions(),
        inspected: probe.count,
        errors,
        wake: wakeStats()
      })
    } else if (m.type === 'close') {
      const t0 = Date.now()
      app.close().then(() => {
        send({ type: 'closed', ms: Date.now() - t0, connections: app.wsPolicy.stats().connections, guardsOpen: probe.opened - probe.closedGuards })
        process.disconnect?.()
      }, (err: Error) => { send({ type: 'closed', error: err.message }) })
    }
  })
}

process.on('unhandledRejection', (err) => { process.send?.({ type: 'fault', kind: 'unhandledRejection', message: String(err) }) })
process.on('uncaughtException', (err) => { process.send?.({ type: 'fault', kind: 'uncaughtException', message: String(err) }) })
main().catch((err: Error) => { process.send?.({ type: 'fault', kind: 'startup', message: err.message }); process.exit(1) })
