/**
 * Server shutdown (`fastify.close()`) in the middle of traffic on both doors: WebSocket clients
 * sending and receiving, long-poll clients polling and sending. Every WebSocket gets 1001, every
 * long-poll session gets its 1001 close, nothing crashes, no unhandled rejection, the registry
 * and the store are empty, and a new server on the same code serves a fresh client.
 */
import t from 'tap'
import { Agent } from 'node:http'
import WebSocket from 'ws'
import { listen, waitFor } from './helpers/index.js'
import { protectedApp, watchProcess, PROTOCOLS } from './load/app.js'
import { LpClient } from './load/lp.js'
import type { MemoryStore } from '../packages/fallback/src/index.js'

const WS_CLIENTS = 100
const LP_CLIENTS = 30

t.test('shutdown during traffic closes both doors with 1001 and leaks nothing', async (tt) => {
  const watch = watchProcess()
  const { app, cookieFor, probe } = await protectedApp({ record: false })
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity })
  tt.teardown(() => { agent.destroy(); watch.stop() })
  const { port, ws: wsUrl } = await listen(app)
  const origin = `http://127.0.0.1:${port}`

  // WebSocket clients in a send/echo loop
  const wsCloses: number[] = []
  let wsEchoes = 0
  const sockets = await Promise.all(Array.from({ length: WS_CLIENTS }, (_, i) => new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(`${wsUrl}/ws`, PROTOCOLS, { origin, headers: { cookie: cookieFor(`ws${i}`) } })
    ws.on('open', () => resolve(ws))
    ws.on('error', reject)
    ws.on('message', () => {
      wsEchoes++
      if (ws.readyState === WebSocket.OPEN) ws.send(`again ${wsEchoes}`)
    })
    ws.on('close', (code) => wsCloses.push(code))
  })))
  for (const ws of sockets) ws.send('start')

  // long-poll clients in a poll loop, sending now and then
  const lpCloses: number[] = []
  const lpErrors: string[] = []
  /** How each long-poll client's loop ended: exactly one entry per client. */
  const lpOutcomes: string[] = []
  const loops = Array.from({ length: LP_CLIENTS }, async (_, i) => {
    const c = new LpClient(port, '/ws', { origin, cookie: cookieFor(`lp${i}`) }, agent)
    const r = await c.open(['echo.v1'])
    if (r.status !== 200) throw new Error(`open ${r.status}`)
    let n = 0
    let outcome = ''
    while (c.closed === undefined) {
      try {
        if (n++ % 3 === 0) await c.send([`m${n}`])
        const p = await c.poll({ timeoutMs: 10_000 })
        if (p.status !== 200) { lpErrors.push(outcome = `poll ${p.status}`); break }
      } catch (err) {
        lpErrors.push(outcome = `gone: ${(err as Error).message}`)
        break
      }
    }
    if (c.closed !== undefined) {
      lpCloses.push(c.closed.code)
      outcome = `close ${c.closed.code}`
    }
    lpOutcomes.push(outcome)
    return c
  })

  await waitFor(() => wsEchoes > WS_CLIENTS * 3 && probe.count > WS_CLIENTS * 4, 15_000, 'traffic flowing')
  await waitFor(() => app.wsFallback.sessions() === LP_CLIENTS, 15_000, 'long-poll sessions open')
  const store = app.wsFallback.store as MemoryStore
  const t0 = Date.now()
  await app.close()
  const closeMs = Date.now() - t0
  tt.ok(closeMs < 10_000, `close() resolved in ${closeMs} ms`)

  await waitFor(() => wsCloses.length === WS_CLIENTS, 10_000, 'every WebSocket closed')
  tt.ok(wsCloses.every(c => c === 1001), `every WebSocket got 1001 (got ${[...new Set(wsCloses)].join(', ')})`)
  const clients = await Promise.all(loops)
  tt.equal(clients.length, LP_CLIENTS)
  // a poll in flight when the server closed gets the 1001 close; a request that starts after the
  // listener closed is refused by the OS: that client would retry and find no session (1006)
  // Every client is accounted for, not only those that saw a close: each either got the 1001,
  // or found the listener gone (refused or reset by the OS), or was answered by Fastify's own
  // shutdown 503 — never another close code, a 404 (a close lost), or a 5xx of ours.
  tt.equal(lpOutcomes.length, LP_CLIENTS, 'every long-poll loop ended')
  const allowed = (o: string): boolean => o === 'close 1001' || o === 'poll 503' || /^gone: (connect ECONNREFUSED|read ECONNRESET|socket hang up|other side closed)/.test(o)
  tt.same(lpOutcomes.filter(o => !allowed(o)), [], `each session ended with its 1001 or a gone listener (${lpCloses.length} of ${LP_CLIENTS} closes; others: ${[...new Set(lpErrors)].join(', ') || 'none'})`)
  tt.ok(lpCloses.length >= 1, 'at least one poll was answered with the close')
  tt.equal(app.wsPolicy.stats().connections, 0, 'registry empty')
  tt.equal(store.size, 0, 'store empty')
  tt.equal(probe.closedGuards, probe.opened, 'every guard closed')
  tt.same(watch.rejections, [], 'no unhandled rejection')
  tt.same(watch.exceptions, [], 'no uncaught exception')
  tt.same(watch.warnings, [], 'no process warning')

  // the same code on a new server serves a fresh client
  const again = await protectedApp()
  tt.teardown(() => again.app.close())
  const addr = await listen(again.app)
  const fresh = new WebSocket(`${addr.ws}/ws`, PROTOCOLS, { origin: `http://127.0.0.1:${addr.port}`, headers: { cookie: again.cookieFor('fresh') } })
  const echoed = await new Promise<string>((resolve, reject) => {
    fresh.on('open', () => fresh.send('fresh'))
    fresh.on('message', (d) => resolve(String(d)))
    fresh.on('error', reject)
  })
  tt.equal(echoed, 'fresh', 'a fresh client is served by a new server')
  fresh.close()
})

t.test('closing twice, or during a handshake, is harmless', async (tt) => {
  const watch = watchProcess()
  const { app, cookieFor } = await protectedApp()
  tt.teardown(() => watch.stop())
  const { port, ws: wsUrl } = await listen(app)
  const opening = Array.from({ length: 20 }, (_, i) => new Promise<string>((resolve) => {
    const ws = new WebSocket(`${wsUrl}/ws`, PROTOCOLS, { origin: `http://127.0.0.1:${port}`, headers: { cookie: cookieFor(`h${i}`) } })
    ws.on('close', (code) => resolve(`close ${code}`))
    ws.on('error', (err) => resolve(`error ${err.message.slice(0, 40)}`))
  }))
  await Promise.all([app.close(), app.close()])
  // every attempt must END (none left hanging), and end one of the ways a closing server allows
  const outcomes = await Promise.race([
    Promise.all(opening),
    new Promise<string[]>((resolve) => setTimeout(() => resolve(['still pending after 10 s']), 10_000).unref())
  ])
  tt.same(outcomes.filter(o => !/^(close (1001|1006)|error .+)$/.test(o)), [], `every attempt ended: ${[...new Set(outcomes)].join(' | ')}`)
  tt.equal(outcomes.length, 20)
  tt.equal(app.wsPolicy.stats().connections, 0)
  tt.same(watch.rejections, [])
  tt.same(watch.exceptions, [])
})
