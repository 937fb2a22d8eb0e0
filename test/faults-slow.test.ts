/**
 * Slow and stalling clients: readers that never read (both doors), slowloris request heads on
 * the upgrade, slowloris bodies on the fallback. What bounds memory, what Node and Fastify
 * time out (with the settings docs/RELIABILITY.md recommends), and that the server keeps
 * serving fresh clients throughout.
 */
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import { Agent, type ServerOptions } from 'node:http'
import { listen, waitFor } from './helpers/index.js'
import { rawConnect, frame, Op } from './helpers/frames.js'
import { protectedApp, watchProcess, type ProtectedApp, type ProtectedAppOptions } from './load/app.js'
import { LpClient } from './load/lp.js'
import { freshWebSocketServed } from './load/fresh.js'
import { CloseCodes, type PortcullisSocket } from '../packages/policy/src/index.js'

interface Setup extends ProtectedApp {
  port: number
  creds: Record<string, string>
  lp: (user?: string) => LpClient
  clean: () => void
}

async function serve (tt: Test, opts: ProtectedAppOptions = {}): Promise<Setup> {
  const watch = watchProcess()
  const built = await protectedApp(opts)
  const agent = new Agent({ keepAlive: true })
  tt.teardown(async () => {
    agent.destroy()
    await built.app.close()
    watch.stop()
  })
  const { port } = await listen(built.app)
  return {
    ...built,
    port,
    creds: { Cookie: built.cookieFor('alice'), 'Sec-WebSocket-Protocol': 'echo.v1' },
    lp: (user = 'alice') => new LpClient(port, '/ws', { origin: `http://127.0.0.1:${port}`, cookie: built.cookieFor(user) }, agent),
    clean () {
      tt.same(watch.rejections, [], 'no unhandled rejection')
      tt.same(watch.exceptions, [], 'no uncaught exception')
      tt.same(watch.warnings, [], 'no process warning')
    }
  }
}

/** Node `http.createServer` options through Fastify's (untyped for HTTP/1) `http` option. */
function nodeHttp (http: ServerOptions): object {
  return { http }
}

const CHUNK = Buffer.alloc(64 * 1024, 0x61)
/** The backpressure pattern docs/RELIABILITY.md recommends for WebSocket handlers. */
const MAX_BUFFERED = 1024 * 1024

t.test('WebSocket: with maxBufferedBytes: Infinity, ws does not bound what a handler queues for a reader that never reads', async (tt) => {
  let peak = 0
  let server: PortcullisSocket | undefined
  const s = await serve(tt, {
    // Portcullis bounds it by default (4 MiB → 4009, packages/policy/test/connections.test.ts);
    // this shows what ws alone does, and why the default exists
    portcullis: { maxBufferedBytes: Infinity },
    handler: (socket) => {
      server = socket
      socket.on('message', (d: Buffer) => {
        if (d.toString() !== 'flood me') return socket.send(d.toString())
        for (let i = 0; i < 512; i++) socket.send(CHUNK) // 32 MiB, no backpressure check
        peak = Math.max(peak, socket.bufferedAmount)
      })
    }
  })
  const { client } = await rawConnect(s.port, { headers: s.creds })
  client!.socket.pause() // never read
  client!.send(frame({ opcode: Op.TEXT, payload: 'flood me' }))
  await waitFor(() => peak > 0, 3000, 'the flood was queued')
  // loopback kernel buffers absorb up to ~10 MiB with autotuning; the rest waits in ws's memory
  tt.ok(peak > 16 * 1024 * 1024, `bufferedAmount reached ${(peak / 1048576).toFixed(1)} MiB: ws holds what the kernel cannot`)
  server!.terminate()
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'terminate frees it at once')
  client!.destroy()
  await freshWebSocketServed(tt, s)
  s.clean()
})

t.test('WebSocket: a handler that checks bufferedAmount closes a reader that never reads (4009, dropped after closeTimeout), memory stays bounded', async (tt) => {
  let peak = 0
  const closes: number[] = []
  const s = await serve(tt, {
    // ws waits closeTimeout for the peer's close frame: a reader that never reads is dropped then
    // closeTimeout: a ws 8.23 server option (not yet in @types/ws)
    portcullis: { websocket: { closeTimeout: 500 } },
    handler: (socket) => {
      socket.on('close', (code: number) => closes.push(code))
      socket.on('message', (d: Buffer) => {
        if (d.toString() !== 'flood me') return socket.send(d.toString())
        const pump = (): void => {
          while (socket.readyState === 1) {
            if (socket.bufferedAmount > MAX_BUFFERED) {
              socket.close(CloseCodes.SLOW_CONSUMER, 'slow consumer')
              return
            }
            socket.send(CHUNK)
            peak = Math.max(peak, socket.bufferedAmount)
            if (peak > 0 && socket.bufferedAmount > 0) { setImmediate(pump); return }
          }
        }
        pump()
      })
    }
  })
  const fast = await rawConnect(s.port, { headers: s.creds })
  const { client } = await rawConnect(s.port, { headers: s.creds })
  client!.socket.pause()
  client!.send(frame({ opcode: Op.TEXT, payload: 'flood me' }))
  await waitFor(() => closes.length === 1, 10_000, 'the slow reader was closed')
  tt.equal(closes[0], 1006, 'closed without a closing handshake (the reader never read the close frame)')
  tt.ok(peak <= MAX_BUFFERED + CHUNK.length, `peak bufferedAmount ${(peak / 1048576).toFixed(2)} MiB stays at the bound`)
  // the other client on the same server is unaffected
  fast.client!.send(frame({ opcode: Op.TEXT, payload: 'x' }))
  await fast.client!.until(() => fast.client!.socket.bytesRead > 0, 5000, 'fast client served')
  fast.client!.destroy()
  client!.destroy()
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'registry empty')
  await freshWebSocketServed(tt, s)
  s.clean()
})

t.test('long-poll: a client that never polls is closed with 4009 at the queue bound, and the queue is freed', async (tt) => {
  let sentOk = 0
  let sentErr = 0
  const s = await serve(tt, {
    fallback: { maxQueuedMessages: 50, maxQueuedBytes: 64 * 1024 },
    handler: (socket) => {
      socket.on('message', (d: Buffer) => {
        if (d.toString() !== 'flood me') return socket.send(d.toString())
        for (let i = 0; i < 200; i++) {
          socket.send(`m${i}`, (err) => {
            if (err === undefined || err === null) sentOk++
            else sentErr++
          })
        }
      })
    }
  })
  const c = s.lp()
  await c.open(['echo.v1'])
  await c.send(['flood me'])
  // now poll: at most the bound was kept, then the close
  for (let i = 0; i < 10 && c.closed === undefined; i++) await c.poll({ timeoutMs: 5000 })
  tt.equal(c.closed?.code, CloseCodes.SLOW_CONSUMER, 'closed with 4009')
  tt.ok(c.inbox.length <= 50, `${c.inbox.length} messages were kept (bound 50)`)
  tt.equal(c.stats.duplicates + c.stats.gaps, 0)
  // every callback must fire (a silent drop would pass a bound on successes alone)
  await waitFor(() => sentOk + sentErr === 200, 3000, 'every send callback called')
  tt.ok(sentOk <= 50, `at most the bound succeeded (${sentOk})`)
  tt.ok(sentErr >= 150, `sends beyond the bound report an error to their callback (${sentErr})`)
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'registry empty')
  await freshWebSocketServed(tt, s)
  s.clean()
})

/** Open `n` TCP connections that send a request head one byte at a time, every `everyMs`. */
function slowloris (port: number, head: string, n: number, everyMs: number): { sockets: Socket[], closed: () => number, answers: string[], stop: () => void } {
  const sockets: Socket[] = []
  /** The status line each connection was answered with, in the order they came; one per connection at most. */
  const answers: string[] = []
  let closed = 0
  const timers: NodeJS.Timeout[] = []
  for (let k = 0; k < n; k++) {
    const sock = connect({ port, host: '127.0.0.1' })
    sock.on('error', () => {})
    let answered = false
    sock.on('data', (d: Buffer) => {
      if (answered) return
      answered = true
      answers.push(d.toString('latin1').split('\r\n')[0])
    })
    sock.on('close', () => { closed++ })
    let i = 0
    const timer = setInterval(() => {
      if (sock.destroyed || i >= head.length) return
      sock.write(head[i++])
    }, everyMs)
    timers.push(timer)
    sockets.push(sock)
  }
  return {
    sockets,
    answers,
    closed: () => closed,
    stop: () => { for (const x of timers) clearInterval(x); for (const x of sockets) x.destroy() }
  }
}

t.test('slowloris request heads on the upgrade are cut by headersTimeout (408) and never starve fresh clients', async (tt) => {
  const s = await serve(tt, {
    fastify: { requestTimeout: 2000, ...nodeHttp({ headersTimeout: 1000, connectionsCheckingInterval: 100 }) }
  })
  const head = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Slow: ${'a'.repeat(200)}\r\n\r\n`
  const attack = slowloris(s.port, head, 100, 50)
  tt.teardown(attack.stop)
  await freshWebSocketServed(tt, s) // while the attack runs
  await waitFor(() => attack.closed() === 100, 5000, 'every slow connection closed')
  // one answer per slow connection, each a 408 (`every` alone would pass with no answer at all)
  tt.equal(attack.answers.length, 100, 'every slow connection was answered before it was closed')
  tt.ok(attack.answers.every(a => a === 'HTTP/1.1 408 Request Timeout'), `answers: ${[...new Set(attack.answers)].join(', ')}`)
  tt.equal(s.probe.opened, 1, 'no slow request reached the policy (only the fresh client did)')
  await freshWebSocketServed(tt, s)
  s.clean()
})

t.test('with Fastify and Node defaults, slow request heads are held (60 s) but fresh clients are still served', async (tt) => {
  const s = await serve(tt)
  tt.equal(s.app.server.headersTimeout, 60_000, 'Node default headersTimeout is 60 s')
  tt.equal(s.app.server.requestTimeout, 0, 'Fastify default requestTimeout is 0 (none)')
  const head = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nX-Slow: ${'a'.repeat(1000)}\r\n\r\n`
  const attack = slowloris(s.port, head, 200, 100)
  tt.teardown(attack.stop)
  await new Promise(resolve => setTimeout(resolve, 500))
  tt.equal(attack.closed(), 0, 'the slow connections are still open')
  await freshWebSocketServed(tt, s)
  const c = s.lp('fresh')
  tt.equal((await c.open(['echo.v1'])).status, 200, 'and the fallback too')
  attack.stop()
  s.clean()
})

/** Send a fallback `send` head, then its body one byte per 100 ms, never the last byte. */
function slowSend (s: Setup, sid: string, giveUpMs: number): Promise<{ answer: string, took: number }> {
  const body = JSON.stringify({ seq: 1, messages: [{ text: 'slow' }] })
  const started = Date.now()
  return new Promise((resolve) => {
    let got = ''
    const sock = connect({ port: s.port, host: '127.0.0.1' }, () => {
      sock.write([
        'POST /ws/_lp/send HTTP/1.1', `Host: 127.0.0.1:${s.port}`, `Origin: http://127.0.0.1:${s.port}`,
        `Cookie: ${s.cookieFor('alice')}`, 'X-Portcullis-Fallback: 1', `X-Portcullis-Sid: ${sid}`,
        'X-Portcullis-Protocol: echo.v1', 'Content-Type: application/json', `Content-Length: ${body.length}`, '', ''
      ].join('\r\n'))
      let i = 0
      const timer = setInterval(() => { if (i < body.length - 1) sock.write(body[i++]) }, 100)
      sock.on('close', () => clearInterval(timer))
    })
    const giveUp = setTimeout(() => sock.destroy(), giveUpMs)
    sock.on('data', (d: Buffer) => { got += d.toString('latin1') })
    sock.on('close', () => { clearTimeout(giveUp); resolve({ answer: got.split('\r\n')[0], took: Date.now() - started }) })
    sock.on('error', () => {})
  })
}

t.test('a slowloris body on a fallback send is cut by requestTimeout (with headersTimeout ≤ it) and delivers nothing', async (tt) => {
  const s = await serve(tt, {
    fastify: { requestTimeout: 1000, ...nodeHttp({ headersTimeout: 1000, connectionsCheckingInterval: 100 }) }
  })
  const c = s.lp()
  await c.open(['echo.v1'])
  const { answer, took } = await slowSend(s, c.sid, 5000)
  tt.equal(answer, 'HTTP/1.1 408 Request Timeout', `answered after ${took} ms`)
  tt.ok(took < 3000, 'cut within the request timeout (+ check interval)')
  tt.equal(s.probe.seen.length, 0, 'nothing was delivered')
  // the session itself is fine
  tt.equal((await c.send(['fast'])).status, 200)
  await c.poll({ timeoutMs: 5000 })
  tt.same(c.inbox.map(m => m.text), ['fast'])
  s.clean()
})

t.test('pitfall: Fastify\'s requestTimeout alone does not cut a slow body while headersTimeout (60 s) is larger', async (tt) => {
  const s = await serve(tt, { fastify: { requestTimeout: 1000, ...nodeHttp({ connectionsCheckingInterval: 100 }) } })
  tt.equal(s.app.server.headersTimeout, 60_000)
  const c = s.lp()
  await c.open(['echo.v1'])
  const { answer, took } = await slowSend(s, c.sid, 2500)
  tt.equal(answer, '', `no answer after ${took} ms: set http.headersTimeout ≤ requestTimeout (docs/RELIABILITY.md)`)
  s.clean()
})

t.test('an idle WebSocket is not timed out by HTTP timeouts after the 101 (liveness is the app pings)', async (tt) => {
  const s = await serve(tt, { fastify: { requestTimeout: 500, ...nodeHttp({ connectionsCheckingInterval: 100 }) } })
  const { client } = await rawConnect(s.port, { headers: s.creds })
  await new Promise(resolve => setTimeout(resolve, 1200))
  tt.notOk(client!.ended, 'the upgraded connection outlives requestTimeout: HTTP timeouts stop at the 101')
  tt.equal(s.app.wsPolicy.stats().connections, 1)
  client!.send(frame({ opcode: Op.PING, payload: 'still there?' }))
  tt.equal((await client!.next(Op.PONG)).payload.toString(), 'still there?')
  client!.destroy()
  s.clean()
})
