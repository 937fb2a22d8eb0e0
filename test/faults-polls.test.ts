/**
 * Thousands of pending long polls on one server: they are held without busy work, all answered
 * when data arrives, bounded per IP, and all released (with 1001) when the server shuts down —
 * no crash, no unhandled rejection, nothing left in the registry or the store.
 */
import t from 'tap'
import { Agent } from 'node:http'
import { listen, waitFor } from './helpers/index.js'
import { protectedApp, watchProcess } from './load/app.js'
import { LpClient } from './load/lp.js'
import type { PortcullisSocket } from '../packages/policy/src/index.js'
import { MemoryStore, type WakeReason } from '../packages/fallback/src/index.js'
import type { LpResponse } from './load/lp.js'

/** The default store, counting the polls waiting on it (so the test knows when all are parked). */
class CountingStore extends MemoryStore {
  waiting = 0
  override watch (sid: string, wake: (reason: WakeReason) => void): () => void {
    let live = true
    this.waiting++
    const done = (): void => { if (live) { live = false; this.waiting-- } }
    const unwatch = super.watch(sid, (reason) => { done(); wake(reason) })
    return () => { done(); unwatch() }
  }
}

/** Settle without ever leaving a rejection unhandled (the process watch would count it). */
function settle (p: Promise<LpResponse>): Promise<{ ok: true, value: LpResponse } | { ok: false, error: Error }> {
  return p.then(value => ({ ok: true as const, value }), (error: Error) => ({ ok: false as const, error }))
}

const N = Number(process.env.PENDING_POLLS ?? 2000)

async function inBatches<T> (items: T[], size: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn))
}

t.test(`${N} pending polls are held, all answered on data, and all released with 1001 on shutdown`, async (tt) => {
  const watch = watchProcess()
  const sockets = new Set<PortcullisSocket>()
  const store = new CountingStore()
  const { app, cookieFor } = await protectedApp({
    record: false,
    fallback: { store, maxSessionsPerIp: 0, maxSessionsPerIdentity: 0, maxPendingPollsPerIp: N + 10, pollTimeoutMs: 25_000 },
    handler: (socket) => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
    }
  })
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity })
  let closed = false
  tt.teardown(async () => {
    agent.destroy()
    if (!closed) await app.close()
    watch.stop()
  })
  const { port } = await listen(app)
  const headers = { origin: `http://127.0.0.1:${port}`, cookie: cookieFor('poller') }
  const clients = Array.from({ length: N }, () => new LpClient(port, '/ws', headers, agent))

  const t0 = Date.now()
  await inBatches(clients, 100, async (c) => { const r = await c.open(['echo.v1']); if (r.status !== 200) throw new Error(`open ${r.status}`) })
  const openMs = Date.now() - t0
  tt.equal(sockets.size, N, `${N} sessions open (${openMs} ms)`)
  tt.equal(app.wsPolicy.stats().connections, N, 'all tracked by the registry')

  const rssBefore = process.memoryUsage().rss
  // every client parks a poll
  let answered = 0
  const polls = clients.map(c => settle(c.poll({ timeoutMs: 20_000 }).then((r) => { answered++; return r })))
  await waitFor(() => store.waiting === N, 20_000, `${N} polls waiting`)
  tt.equal(answered, 0, 'no poll is answered while there is nothing to say')
  const cpu = process.cpuUsage()
  await new Promise(resolve => setTimeout(resolve, 500))
  const idleCpuMs = (process.cpuUsage(cpu).user + process.cpuUsage(cpu).system) / 1000
  tt.ok(idleCpuMs < 300, `holding ${N} polls for 500 ms costs ${idleCpuMs.toFixed(0)} ms of CPU (no busy loop)`)
  const rssHeld = process.memoryUsage().rss
  tt.comment(`RSS with ${N} pending polls (client and server in one process): +${((rssHeld - rssBefore) / 1048576).toFixed(1)} MiB`)

  // data for everyone: every pending poll is answered, in order, once
  const tSend = Date.now()
  for (const s of sockets) s.send('wake up')
  const first = await Promise.all(polls)
  const wakeMs = Date.now() - tSend
  tt.ok(first.every(r => r.ok && r.value.status === 200), 'every poll answered 200')
  tt.ok(clients.every(c => c.inbox.length === 1 && c.inbox[0].text === 'wake up' && c.inbox[0].seq === 1), 'each got the message once, seq 1')
  tt.comment(`${N} pending polls answered ${wakeMs} ms after the sends`)
  tt.ok(wakeMs < 10_000, `answered within 10 s (${wakeMs} ms)`)

  // park them again, then shut down: every poll gets the 1001 close
  const second = clients.map(c => settle(c.poll({ timeoutMs: 20_000 })))
  await waitFor(() => store.waiting === N, 20_000, `${N} polls waiting again`)
  const tClose = Date.now()
  closed = true
  await app.close()
  const closeMs = Date.now() - tClose
  const results = await Promise.all(second)
  const kinds = new Map<string, number>()
  for (const r of results) {
    const k = r.ok ? `${r.value.status} ${JSON.stringify(r.value.body).slice(0, 100)}` : `error ${r.error.message}`
    kinds.set(k, (kinds.get(k) ?? 0) + 1)
  }
  tt.comment(`shutdown answers: ${JSON.stringify([...kinds])}`)
  const with1001 = results.filter(r => r.ok && r.value.status === 200 && r.value.body.close?.code === 1001).length
  tt.equal(with1001, N, `every pending poll was answered with close 1001 (shutdown took ${closeMs} ms)`)
  tt.equal(app.wsPolicy.stats().connections, 0, 'registry empty')
  tt.equal(store.size, 0, 'store empty')
  await waitFor(() => sockets.size === 0, 2000, 'every handler socket closed')
  tt.same(watch.rejections, [], 'no unhandled rejection')
  tt.same(watch.exceptions, [], 'no uncaught exception')
  tt.same(watch.warnings, [], 'no process warning')
})

t.test('the per-IP bound on pending polls (default 64) refuses the next with 429, and the held ones are unaffected', async (tt) => {
  const watch = watchProcess()
  const { app, cookieFor } = await protectedApp({ record: false, fallback: { maxSessionsPerIp: 0, maxSessionsPerIdentity: 0 } })
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity })
  tt.teardown(async () => { agent.destroy(); await app.close(); watch.stop() })
  const { port } = await listen(app)
  const headers = { origin: `http://127.0.0.1:${port}`, cookie: cookieFor('poller') }
  const clients = Array.from({ length: 65 }, () => new LpClient(port, '/ws', headers, agent))
  for (const c of clients) await c.open(['echo.v1'])
  const held = clients.slice(0, 64).map(c => c.poll({ timeoutMs: 10_000 }))
  // the rest are still held when the app closes in teardown: their rejections are expected
  for (const p of held) p.catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 300))
  const over = await clients[64].poll({ timeoutMs: 5000 })
  tt.equal(over.status, 429)
  tt.equal(over.body.code, 'PORTCULLIS_FALLBACK_TOO_MANY_POLLS')
  // answer the held ones: they still work
  await clients[0].send(['x'])
  const r0 = await held[0]
  tt.equal(r0.status, 200)
  tt.same(clients[0].inbox.map(m => m.text), ['x'])
  // a slot was freed: the refused client can poll now
  const retry = clients[64].poll({ timeoutMs: 5000 })
  await clients[64].send(['y'])
  tt.equal((await retry).status, 200)
  tt.same(watch.rejections, [])
  tt.same(watch.exceptions, [])
})
