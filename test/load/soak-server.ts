/**
 * The soak's server, in its own process (forked by soak.ts) so that its RSS is measured alone
 * and client and server do not share one event loop. The full-policy app of app.ts, echoing,
 * on 127.0.0.1 port 0. Talks to the parent over IPC: sends `{ port }` when listening, answers
 * `sample` with its memory and live connections, and `close` by shutting down gracefully.
 */
import { protectedApp } from './app.js'

async function main (): Promise<void> {
  const maxSessions = Number(process.env.SOAK_MAX_SESSIONS ?? 20_000)
  const { app, probe } = await protectedApp({
    record: false,
    fallback: { maxSessionsPerIp: 0, maxSessionsPerIdentity: 0, maxSessions, maxPendingPollsPerIp: maxSessions, pollTimeoutMs: 20_000 }
  })
  let errors = 0
  app.addHook('onError', async () => { errors++ })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const addr = app.server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no address')
  const send = (m: unknown): void => { process.send?.(m) }
  send({ type: 'listening', port: addr.port })
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
        errors
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
