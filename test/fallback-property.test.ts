/**
 * Property (fast-check), end to end over real HTTP: whatever poll answers are lost or seen
 * twice, and whatever sends are lost on the way, lost on the way back, retried or doubled, the
 * handler receives every client message exactly once, in order, and the client every server
 * message exactly once, in order (PROTOCOL.md §6–7). Fixed seed; FC_SEED / FC_RUNS to hunt longer.
 */
import t from 'tap'
import fc from 'fast-check'
import Fastify from 'fastify'
import portcullis, { type PortcullisSocket } from '@portcullis/policy'
import fallback from '@portcullis/fallback'
import { LpClient, http, start, type HttpResult } from '../packages/fallback/test/helpers.js'
import { openStream } from '../packages/fallback/test/sse.js'

type Msg = { text: string } | { bytes: Uint8Array }
type Action =
  | { kind: 'poll', fault: 'none' | 'lost' | 'twice' }
  | { kind: 'send', n: number, fault: 'none' | 'lostRequest' | 'lostAnswer' | 'twice' }
  | { kind: 'server', n: number }

const msg: fc.Arbitrary<Msg> = fc.oneof(
  fc.record({ text: fc.string({ unit: 'grapheme', maxLength: 12 }) }),
  fc.record({ bytes: fc.uint8Array({ maxLength: 12 }) })
)
const action: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ kind: fc.constant('poll' as const), fault: fc.constantFrom('none' as const, 'lost' as const, 'twice' as const) }),
  fc.record({ kind: fc.constant('send' as const), n: fc.integer({ min: 1, max: 3 }), fault: fc.constantFrom('none' as const, 'lostRequest' as const, 'lostAnswer' as const, 'twice' as const) }),
  fc.record({ kind: fc.constant('server' as const), n: fc.integer({ min: 1, max: 3 }) })
)

function key (m: Msg | { data: Buffer, isBinary: boolean }): string {
  if ('data' in m) return m.isBinary ? `b:${m.data.toString('hex')}` : `t:${m.data.toString()}`
  return 'text' in m ? `t:${m.text}` : `b:${Buffer.from(m.bytes).toString('hex')}`
}

function wire (m: Msg): { text: string } | { binary: string } {
  return 'text' in m ? { text: m.text } : { binary: Buffer.from(m.bytes).toString('base64') }
}

t.test('with lost and doubled answers and retried sends, both sides see every message once, in order', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(fallback, { pollTimeoutMs: 20, idleTimeoutMs: 60_000, maxMessagesPerRequest: 4, maxSessionsPerIp: 0, maxSessions: 0 })
  const runs = new Map<string, { socket: PortcullisSocket, received: string[] }>()
  app.get('/p', { websocket: true, wsPolicy: { origin: false, fallback: true } }, (socket, request) => {
    const run = { socket, received: [] as string[] }
    runs.set(String(request.headers['x-run']), run)
    socket.on('message', (data: Buffer, isBinary: boolean) => run.received.push(key({ data, isBinary })))
  })
  const port = await start(app)
  let runId = 0

  await fc.assert(fc.asyncProperty(
    fc.array(msg, { maxLength: 10 }), fc.array(msg, { maxLength: 10 }), fc.array(action, { maxLength: 25 }),
    async (serverMsgs, clientMsgs, actions) => {
      const id = String(++runId)
      const c = new LpClient(port, '/p', { headers: { 'x-run': id } })
      if ((await c.open()).status !== 200) return false
      const run = runs.get(id)!
      let serverNext = 0
      const got: string[] = []
      let acked = 0 // client messages the server confirmed

      const absorb = (r: HttpResult): void => {
        if (r.status !== 200) throw new Error(`poll ${r.status} ${r.text}`)
        for (const m of r.body.messages) {
          if (m.seq <= c.lastIn) continue // redelivered: already seen
          if (m.seq !== c.lastIn + 1) throw new Error(`seq ${m.seq} after ${c.lastIn}`)
          c.lastIn = m.seq
          got.push(typeof m.text === 'string' ? `t:${m.text}` : `b:${Buffer.from(m.binary, 'base64').toString('hex')}`)
        }
        acked = Math.max(acked, r.body.ack)
      }
      const send = async (n: number): Promise<HttpResult> => {
        const batch = clientMsgs.slice(acked, acked + n).map(wire)
        return c.sendRaw(acked + 1, batch)
      }
      const serverSend = (n: number): void => {
        for (let i = 0; i < n && serverNext < serverMsgs.length; i++) {
          const m = serverMsgs[serverNext++]
          run.socket.send('text' in m ? m.text : Buffer.from(m.bytes))
        }
      }

      for (const a of actions) {
        if (a.kind === 'server') {
          serverSend(a.n)
        } else if (a.kind === 'poll') {
          const r = await c.pollRaw()
          if (a.fault !== 'lost') absorb(r)
          if (a.fault === 'twice') absorb(r)
        } else if (acked < clientMsgs.length) {
          if (a.fault === 'lostRequest') continue
          if (a.fault === 'twice') {
            const [r1, r2] = await Promise.all([send(a.n), send(a.n)])
            for (const r of [r1, r2]) if (r.status === 200) acked = Math.max(acked, r.body.ack)
          } else {
            const r = await send(a.n)
            if (r.status !== 200) throw new Error(`send ${r.status} ${r.text}`)
            if (a.fault === 'none') acked = Math.max(acked, r.body.ack)
          }
        }
      }
      // the network heals: deliver the rest both ways
      serverSend(serverMsgs.length)
      while (acked < clientMsgs.length) {
        const r = await send(4)
        if (r.status !== 200) throw new Error(`send ${r.status} ${r.text}`)
        acked = r.body.ack
      }
      while (got.length < serverMsgs.length) absorb(await c.pollRaw())
      await c.close(1000)
      return JSON.stringify(got) === JSON.stringify(serverMsgs.map(key)) &&
        JSON.stringify(run.received) === JSON.stringify(clientMsgs.map(key))
    }
  ), { seed: Number(process.env.FC_SEED ?? 20261129), numRuns: Number(process.env.FC_RUNS ?? 60) })
  t.pass('every message arrived exactly once, in order, on both sides')
})

type V2Action =
  | { kind: 'stream', take: number }
  | { kind: 'poll', fault: 'none' | 'lost' }
  | { kind: 'send', n: number, fault: 'none' | 'lostRequest' | 'lostAnswer' | 'twice' }
  | { kind: 'ackOnly', fault: 'none' | 'lostAnswer' }
  | { kind: 'server', n: number }

const v2action: fc.Arbitrary<V2Action> = fc.oneof(
  fc.record({ kind: fc.constant('stream' as const), take: fc.integer({ min: 0, max: 4 }) }),
  fc.record({ kind: fc.constant('poll' as const), fault: fc.constantFrom('none' as const, 'lost' as const) }),
  fc.record({ kind: fc.constant('send' as const), n: fc.integer({ min: 1, max: 3 }), fault: fc.constantFrom('none' as const, 'lostRequest' as const, 'lostAnswer' as const, 'twice' as const) }),
  fc.record({ kind: fc.constant('ackOnly' as const), fault: fc.constantFrom('none' as const, 'lostAnswer' as const) }),
  fc.record({ kind: fc.constant('server' as const), n: fc.integer({ min: 1, max: 3 }) })
)

t.test('v2: across dropped streams, lost send answers, ack-only sends and retries, both sides see every message once, in order', async (t) => {
  const app = Fastify({ forceCloseConnections: true })
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(fallback, { pollTimeoutMs: 40, idleTimeoutMs: 60_000, maxMessagesPerRequest: 4, maxSessionsPerIp: 0, maxSessions: 0, maxPendingPollsPerIp: 1000 })
  const runs = new Map<string, { socket: PortcullisSocket, received: string[], sent: string[] }>()
  app.get('/p', { websocket: true, wsPolicy: { origin: false, fallback: true } }, (socket, request) => {
    const run = { socket, received: [] as string[], sent: [] as string[] }
    runs.set(String(request.headers['x-run']), run)
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      const k = key({ data, isBinary })
      run.received.push(k)
      // a synchronous reply: what a v2 send answer carries
      run.sent.push(`t:re ${k}`)
      socket.send(`re ${k}`)
    })
  })
  const port = await start(app)
  let runId = 0

  await fc.assert(fc.asyncProperty(
    fc.array(msg, { maxLength: 8 }), fc.array(msg, { maxLength: 8 }), fc.array(v2action, { maxLength: 20 }),
    async (serverMsgs, clientMsgs, actions) => {
      const id = String(++runId)
      const c = new LpClient(port, '/p', { headers: { 'x-run': id } })
      const opened = await http(port, 'POST', '/p/_lp/open', c.headers(), { versions: [2, 1] })
      if (opened.status !== 200 || opened.body.v !== 2) return false
      c.sid = opened.body.sid
      const run = runs.get(id)!
      let serverNext = 0
      const got: string[] = []
      let acked = 0

      const take = (m: { seq: number, text?: string, binary?: string }): void => {
        if (m.seq <= c.lastIn) return // redelivered: already seen
        if (m.seq !== c.lastIn + 1) throw new Error(`seq ${m.seq} after ${c.lastIn}`)
        c.lastIn = m.seq
        got.push(typeof m.text === 'string' ? `t:${m.text}` : `b:${Buffer.from(m.binary!, 'base64').toString('hex')}`)
      }
      const absorb = (r: HttpResult): void => {
        if (r.status !== 200) throw new Error(`${r.status} ${r.text}`)
        for (const m of r.body.messages) take(m)
        acked = Math.max(acked, r.body.ack)
      }
      const send = (n: number): Promise<HttpResult> =>
        http(port, 'POST', '/p/_lp/send', c.headers({ 'x-portcullis-ack': String(c.lastIn) }), { seq: acked + 1, messages: clientMsgs.slice(acked, acked + n).map(wire) })
      const serverSend = (n: number): void => {
        for (let i = 0; i < n && serverNext < serverMsgs.length; i++) {
          const m = serverMsgs[serverNext++]
          run.sent.push(key(m))
          run.socket.send('text' in m ? m.text : Buffer.from(m.bytes))
        }
      }

      for (const a of actions) {
        if (a.kind === 'server') {
          serverSend(a.n)
        } else if (a.kind === 'stream') {
          // read up to `take` messages, then the connection drops (or the stream ends by itself)
          const s = await openStream(port, '/p/_lp/stream', c.headers({ 'x-portcullis-ack': String(c.lastIn) }, false))
          if (s.status !== 200) throw new Error(`stream ${s.status}`)
          let n = 0
          try {
            while (n < a.take) {
              const e = await s.next(100)
              if (e === null || e.event === 'reopen') break
              if (e.event === 'message') {
                take(e.data)
                n++
              } else if (e.event === 'ack') {
                acked = Math.max(acked, e.data.ack)
              }
            }
          } catch {} // no event in time: nothing more is queued
          s.abort()
        } else if (a.kind === 'poll') {
          const r = await c.pollRaw()
          if (a.fault !== 'lost') absorb(r)
        } else if (a.kind === 'ackOnly') {
          const r = await http(port, 'POST', '/p/_lp/send', c.headers({ 'x-portcullis-ack': String(c.lastIn) }), { seq: acked + 1, messages: [] })
          if (a.fault === 'none') absorb(r)
        } else if (acked < clientMsgs.length) {
          if (a.fault === 'lostRequest') continue
          if (a.fault === 'twice') {
            const [r1, r2] = await Promise.all([send(a.n), send(a.n)])
            for (const r of [r1, r2]) if (r.status === 200) absorb(r)
          } else {
            const r = await send(a.n)
            if (r.status !== 200) throw new Error(`send ${r.status} ${r.text}`)
            if (a.fault === 'none') absorb(r)
          }
        }
      }
      // the network heals: deliver the rest both ways
      serverSend(serverMsgs.length)
      while (acked < clientMsgs.length) absorb(await send(4))
      await new Promise((resolve) => setImmediate(resolve))
      while (got.length < run.sent.length) absorb(await c.pollRaw())
      await c.close(1000)
      return JSON.stringify(got) === JSON.stringify(run.sent) &&
        JSON.stringify(run.received) === JSON.stringify(clientMsgs.map(key))
    }
  ), { seed: Number(process.env.FC_SEED ?? 20261202), numRuns: Number(process.env.FC_RUNS ?? 40) })
  t.pass('every message arrived exactly once, in order, on both sides, over streams, polls and v2 send answers')
})
