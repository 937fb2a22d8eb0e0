/**
 * Clients that reset TCP (RST, not FIN) at every phase, on both doors: mid-handshake, right after
 * the 101, mid-frame, during a pending poll, mid-body. For each: no crash, no unhandled rejection
 * or uncaught exception, the connection is freed from the policy registry, and a fresh client is
 * still served by the same server.
 */
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { Agent } from 'node:http'
import { listen, waitFor } from './helpers/index.js'
import { rawConnect, frame, Op } from './helpers/frames.js'
import { protectedApp, watchProcess, type ProtectedApp } from './load/app.js'
import { LpClient } from './load/lp.js'
import { freshWebSocketServed } from './load/fresh.js'
import type { FallbackOptions } from '../packages/fallback/src/index.js'
import type { PortcullisSocket } from '../packages/policy/src/index.js'

interface Setup extends ProtectedApp {
  port: number
  creds: Record<string, string>
  agent: Agent
  closes: number[]
  lp: (user?: string) => LpClient
  /** Assert that the process saw no unhandled rejection, uncaught exception or warning. */
  clean: () => void
}

async function serve (tt: Test, fallbackOpts: FallbackOptions = {}, handler?: (socket: PortcullisSocket) => void): Promise<Setup> {
  const watch = watchProcess()
  const closes: number[] = []
  const built = await protectedApp({
    fallback: fallbackOpts,
    handler: (socket) => {
      socket.on('close', (code: number) => closes.push(code))
      if (handler !== undefined) handler(socket)
      else socket.on('message', (d: Buffer, isBinary: boolean) => socket.send(isBinary ? d : d.toString()))
    }
  })
  const agent = new Agent({ keepAlive: true })
  tt.teardown(async () => {
    agent.destroy()
    await built.app.close()
    watch.stop()
  })
  const { port } = await listen(built.app)
  const creds = { Cookie: built.cookieFor('alice'), 'Sec-WebSocket-Protocol': 'echo.v1' }
  const origin = `http://127.0.0.1:${port}`
  return {
    ...built,
    port,
    creds,
    agent,
    closes,
    lp: (user = 'alice') => new LpClient(port, '/ws', { origin, cookie: built.cookieFor(user) }, agent),
    clean () {
      tt.same(watch.rejections, [], 'no unhandled rejection')
      tt.same(watch.exceptions, [], 'no uncaught exception')
      tt.same(watch.warnings, [], 'no process warning (e.g. leaked listeners)')
    }
  }
}

async function freshLongPollServed (tt: Test, s: Setup): Promise<void> {
  const c = s.lp('fresh')
  const opened = await c.open(['echo.v1'])
  tt.equal(opened.status, 200, 'a fresh long-poll client opens')
  tt.equal((await c.send(['fresh'])).status, 200)
  await c.poll({ timeoutMs: 5000 })
  tt.same(c.inbox.map(m => m.text), ['fresh'], 'and is served')
  await c.close()
}

/** Write `bytes` on a fresh TCP connection, then reset it after `ms` (0: on the next turn). */
function resetAfter (port: number, bytes: Buffer, ms = 0): Promise<void> {
  return new Promise((resolve) => {
    const sock = connect({ port, host: '127.0.0.1' }, () => {
      sock.write(bytes, () => setTimeout(() => { sock.resetAndDestroy(); resolve() }, ms))
    })
    sock.on('error', () => {})
  })
}

t.test('a reset in the middle of the handshake request frees everything', async (tt) => {
  const s = await serve(tt)
  const head = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Ver`
  for (let i = 0; i < 20; i++) await resetAfter(s.port, Buffer.from(head.slice(0, 10 + i * 5)))
  // a complete request head, reset before the server can answer
  const full = [
    'GET /ws HTTP/1.1', `Host: 127.0.0.1:${s.port}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==', `Origin: http://127.0.0.1:${s.port}`, `Cookie: ${s.creds.Cookie}`,
    'Sec-WebSocket-Protocol: echo.v1', '', ''
  ].join('\r\n')
  for (let i = 0; i < 20; i++) await resetAfter(s.port, Buffer.from(full))
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'registry empty')
  await waitFor(() => s.probe.closedGuards === s.probe.opened, 3000, 'every guard closed')
  tt.equal(s.app.wsPolicy.stats().connections, 0)
  await freshWebSocketServed(tt, s)
  s.clean()
})

t.test('a reset right after the 101 closes the handler\'s socket with 1006 and frees it', async (tt) => {
  const s = await serve(tt)
  for (let i = 0; i < 20; i++) {
    const { client } = await rawConnect(s.port, { headers: s.creds })
    client!.reset()
  }
  await waitFor(() => s.closes.length === 20, 3000, '20 handler closes')
  tt.ok(s.closes.every(c => c === 1006), 'the handler saw an abnormal closure (1006)')
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'registry empty')
  tt.equal(s.probe.closedGuards, s.probe.opened)
  await freshWebSocketServed(tt, s)
  s.clean()
})

t.test('a reset in the middle of a frame delivers nothing and frees the connection', async (tt) => {
  const s = await serve(tt)
  for (let i = 0; i < 10; i++) {
    const { client } = await rawConnect(s.port, { headers: s.creds })
    const f = frame({ opcode: Op.TEXT, payload: 'x'.repeat(1000) })
    client!.send(f.subarray(0, 500))
    await new Promise(resolve => setImmediate(resolve))
    client!.reset()
  }
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 3000, 'registry empty')
  tt.equal(s.probe.seen.length, 0, 'the half frame never reached a guard')
  await freshWebSocketServed(tt, s)
  s.clean()
})

t.test('a reset while the server is sending a large message frees the connection', async (tt) => {
  const s = await serve(tt, {}, (socket) => {
    socket.on('message', () => { for (let i = 0; i < 20; i++) socket.send(Buffer.alloc(256 * 1024)) })
  })
  for (let i = 0; i < 5; i++) {
    const { client } = await rawConnect(s.port, { headers: s.creds })
    client!.send(frame({ opcode: Op.TEXT, payload: 'go' }))
    await client!.until(() => client!.socket.bytesRead > 100_000, 5000, 'some bytes')
    client!.reset()
  }
  await waitFor(() => s.app.wsPolicy.stats().connections === 0, 5000, 'registry empty')
  tt.equal(s.closes.length, 5)
  s.clean()
})

t.test('a reset during a pending poll frees the poll slot, and the next poll gets the messages', async (tt) => {
  const s = await serve(tt, { maxPendingPollsPerIp: 2, pollTimeoutMs: 20_000 })
  const c = s.lp()
  tt.equal((await c.open(['echo.v1'])).status, 200)
  // ten polls reset while pending: with a bound of 2 per IP, a leaked slot would make a later poll 429
  for (let i = 0; i < 10; i++) {
    await resetAfter(s.port, Buffer.from([
      'GET /ws/_lp/poll HTTP/1.1', `Host: 127.0.0.1:${s.port}`, `Origin: http://127.0.0.1:${s.port}`,
      `Cookie: ${s.cookieFor('alice')}`, 'X-Portcullis-Fallback: 1', `X-Portcullis-Sid: ${c.sid}`,
      'X-Portcullis-Protocol: echo.v1', 'X-Portcullis-Ack: 0', '', ''
    ].join('\r\n')), 50)
  }
  const r = await c.send(['after resets'])
  tt.equal(r.status, 200)
  const p = await c.poll({ timeoutMs: 5000 })
  tt.equal(p.status, 200, 'not 429: every reset poll gave its slot back')
  tt.same(c.inbox.map(m => m.text), ['after resets'])
  tt.equal(c.stats.duplicates + c.stats.gaps, 0)
  await freshLongPollServed(tt, s)
  s.clean()
})

t.test('a poll answer lost to a reset is redelivered to the next poll, same seqs, no duplicates', async (tt) => {
  const s = await serve(tt)
  const c = s.lp()
  await c.open(['echo.v1'])
  await c.send(['one', 'two', 'three'])
  // the answer is on its way: the client resets as soon as its first byte arrives, reading nothing
  const firstBytes = await new Promise<string>((resolve) => {
    const sock = connect({ port: s.port, host: '127.0.0.1' }, () => {
      sock.write([
        'GET /ws/_lp/poll HTTP/1.1', `Host: 127.0.0.1:${s.port}`, `Origin: http://127.0.0.1:${s.port}`,
        `Cookie: ${s.cookieFor('alice')}`, 'X-Portcullis-Fallback: 1', `X-Portcullis-Sid: ${c.sid}`,
        'X-Portcullis-Protocol: echo.v1', 'X-Portcullis-Ack: 0', '', ''
      ].join('\r\n'))
    })
    sock.once('data', (d: Buffer) => { sock.resetAndDestroy(); resolve(d.toString('latin1', 0, 12)) })
    sock.on('error', () => {})
  })
  tt.equal(firstBytes, 'HTTP/1.1 200', 'the server had answered')
  tt.equal(c.inbox.length, 0, 'the client got nothing from the lost answer')
  await c.poll({ timeoutMs: 5000 })
  tt.same(c.inbox.map(m => [m.seq, m.text]), [[1, 'one'], [2, 'two'], [3, 'three']])
  tt.equal(c.stats.duplicates + c.stats.gaps, 0)
  s.clean()
})

t.test('a reset in the middle of a send body delivers nothing, and a retry delivers once', async (tt) => {
  const s = await serve(tt)
  const c = s.lp()
  await c.open(['echo.v1'])
  const body = Buffer.from(JSON.stringify({ seq: 1, messages: [{ text: 'half' }, { text: 'way' }] }))
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve) => {
      const sock = connect({ port: s.port, host: '127.0.0.1' }, () => {
        sock.write([
          'POST /ws/_lp/send HTTP/1.1', `Host: 127.0.0.1:${s.port}`, `Origin: http://127.0.0.1:${s.port}`,
          `Cookie: ${s.cookieFor('alice')}`, 'X-Portcullis-Fallback: 1', `X-Portcullis-Sid: ${c.sid}`,
          'X-Portcullis-Protocol: echo.v1', 'Content-Type: application/json', `Content-Length: ${body.length}`, '', ''
        ].join('\r\n'))
        sock.write(body.subarray(0, body.length >> 1), () => setTimeout(() => { sock.resetAndDestroy(); resolve() }, 20))
      })
      sock.on('error', () => {})
    })
  }
  tt.equal(s.probe.seen.length, 0, 'no half body reached a guard')
  const r = await c.send(['half', 'way'])
  tt.equal(r.status, 200)
  tt.equal(r.body.ack, 2)
  await c.poll({ timeoutMs: 5000 })
  await c.poll({ timeoutMs: 1000 }).catch(() => {})
  tt.same(c.inbox.map(m => m.text), ['half', 'way'], 'each message delivered exactly once')
  tt.same(s.probe.seen.map(m => m.data.toString()), ['half', 'way'])
  await freshLongPollServed(tt, s)
  s.clean()
})

t.test('a reset in the middle of an open body creates no session', async (tt) => {
  const s = await serve(tt)
  const before = s.app.wsFallback.sessions()
  const body = Buffer.from(JSON.stringify({ protocols: ['echo.v1'] }))
  for (let i = 0; i < 10; i++) {
    await new Promise<void>((resolve) => {
      const sock = connect({ port: s.port, host: '127.0.0.1' }, () => {
        sock.write([
          'POST /ws/_lp/open HTTP/1.1', `Host: 127.0.0.1:${s.port}`, `Origin: http://127.0.0.1:${s.port}`,
          `Cookie: ${s.cookieFor('alice')}`, 'X-Portcullis-Fallback: 1', 'Content-Type: application/json',
          `Content-Length: ${body.length}`, '', ''
        ].join('\r\n'))
        sock.write(body.subarray(0, 5), () => setTimeout(() => { sock.resetAndDestroy(); resolve() }, 20))
      })
      sock.on('error', () => {})
    })
  }
  await new Promise(resolve => setTimeout(resolve, 50))
  tt.equal(s.app.wsFallback.sessions(), before, 'no session was created')
  tt.equal(s.app.wsPolicy.stats().connections, 0)
  await freshLongPollServed(tt, s)
  s.clean()
})
