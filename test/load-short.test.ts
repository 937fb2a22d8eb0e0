/**
 * The short soak that runs in CI: 500 WebSocket + 50 long-poll clients through the full policy
 * for 6 s (test/load/soak.ts; `pnpm soak` runs the long one). Nothing may be lost, duplicated or
 * reordered; every client stays connected; the server frees every connection and guard.
 */
import t from 'tap'
import { runSoak, formatReport } from './load/soak.js'

t.test('500 WebSocket + 50 long-poll clients for 6 s: nothing lost, duplicated or reordered', async (t) => {
  const report = await runSoak({
    ws: Number(process.env.SOAK_WS ?? 500),
    lp: Number(process.env.SOAK_LP ?? 50),
    seconds: Number(process.env.SOAK_SECONDS ?? 6)
  })
  t.comment(formatReport(report))
  for (const [name, door] of [['websocket', report.websocket], ['long-poll', report.longPoll]] as const) {
    t.equal(door.failedToOpen, 0, `${name}: every client opened`)
    t.equal(door.held, door.clients, `${name}: every client was still connected at the end`)
    t.ok(door.sent > 0, `${name}: traffic flowed (${door.sent} messages)`)
    t.equal(door.lost, 0, `${name}: none lost`)
    t.equal(door.duplicated, 0, `${name}: none duplicated`)
    t.equal(door.reordered, 0, `${name}: none reordered`)
  }
  t.equal(report.longPoll.protocolDuplicates + report.longPoll.protocolGaps, 0, 'long-poll seqs contiguous, never repeated')
  t.equal(report.server.connectionsAfterClose, 0, 'the server freed every connection')
  t.equal(report.server.guardsLeftOpen, 0, 'and closed every guard')
  t.same(report.server.faults, [], 'no unhandled rejection or uncaught exception in the server')
  t.equal(report.server.errors, 0, 'no request failed')
})
