import t from 'tap'
import type WebSocket from 'ws'
import { protoApp } from './helpers.js'
import { json, policyViolation, TokenBucket, type InspectorContext } from '../src/index.js'
import { listen, wsOpen, nextMessages, closed, waitFor, rawUpgrade } from '../../../test/helpers/index.js'

t.test('the token bucket allows the burst, then the sustained rate', async (t) => {
  const b = new TokenBucket(10, 3, 0)
  t.same([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false], 'burst of 3 at once')
  t.notOk(b.take(50), 'half a token after 50 ms')
  t.ok(b.take(100), 'one token after 100 ms at 10/s')
  t.notOk(b.take(100))
  t.same([b.take(10_000), b.take(10_000), b.take(10_000), b.take(10_000)], [true, true, true, false], 'refill is capped at the burst')
  t.notOk(b.take(9_000), 'a clock going backwards adds nothing')
})

t.test('the token bucket sustains exactly its rate over time', async (t) => {
  const b = new TokenBucket(50, 1, 0)
  let allowed = 0
  for (let ms = 0; ms < 10_000; ms++) if (b.take(ms)) allowed++
  t.ok(allowed >= 500 && allowed <= 501, `${allowed} messages in 10 s at 50/s`)
})

t.test('a connection beyond maxConnectionsPerIdentity is refused with 429 before the handshake', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json({ limits: { maxConnectionsPerIdentity: 2 } }) } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket) => { socket.send('hi') })
  const { ws } = await listen(app)
  const open = (user: string) => wsOpen(`${ws}/chat`, { protocols: ['chat.v1'], headers: { 'x-user': user } })
  const a1 = await open('alice')
  const a2 = await open('alice')
  await nextMessages(a1.ws!)
  await nextMessages(a2.ws!)
  const a3 = await open('alice')
  t.equal(a3.status, 429)
  t.same(JSON.parse(a3.body!), { code: 'PORTCULLIS_TOO_MANY_CONNECTIONS', message: 'Too many connections for this identity' })
  const b1 = await open('bob')
  t.ok(b1.ws, 'another identity is not affected')
  const anon = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'] })
  t.ok(anon.ws, 'no identity, no per-identity limit')
  a1.ws!.close()
  await closed(a1.ws!)
  await waitFor(() => app.wsPolicy.connectionsOf('alice') === 1, 2000, 'the server to see the close')
  const a4 = await open('alice')
  t.ok(a4.ws, 'a slot frees when a connection closes')
  for (const r of [a2, b1, anon, a4]) r.ws!.close()
})

t.test('a resumed long-poll request of a counted connection is not refused by the connection limit', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json() } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], limits: { maxConnectionsPerIdentity: 1 } } } }, (socket) => { socket.send('hi') })
  // stands in for @portcullis/fallback's poll/send/close gate: its context is `resumed`
  app.get('/poll', async (request, reply) => {
    const ctx = app.wsPolicy.context(request, 'long-poll', '/chat', 'chat.v1', request.headers['x-resumed'] === '1')
    const d = await app.wsPolicy.evaluate(ctx, app.wsPolicy.route('/chat')!)
    return d.allowed ? { protocol: d.state.protocol } : reply.code(d.denial.status).send({ code: d.denial.code })
  })
  const { ws } = await listen(app)
  const first = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'], headers: { 'x-user': 'dave' } })
  await nextMessages(first.ws!)
  t.equal(app.wsPolicy.connectionsOf('dave'), 1)
  const resumed = await app.inject({ url: '/poll', headers: { 'x-user': 'dave', 'x-resumed': '1' } })
  t.same(resumed.json(), { protocol: 'chat.v1' }, 'a poll of the connection that holds the slot goes through')
  const fresh = await app.inject({ url: '/poll', headers: { 'x-user': 'dave' } })
  t.equal(fresh.statusCode, 429, 'a new connection is still counted')
  t.same(fresh.json(), { code: 'PORTCULLIS_TOO_MANY_CONNECTIONS' })
  first.ws!.close()
})

t.test('the route\'s connection limit overrides the protocol\'s', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json({ limits: { maxConnectionsPerIdentity: 5 } }) } })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], limits: { maxConnectionsPerIdentity: 1 } } } }, (socket) => { socket.send('hi') })
  const { ws } = await listen(app)
  const first = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'], headers: { 'x-user': 'carol' } })
  await nextMessages(first.ws!)
  const second = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'], headers: { 'x-user': 'carol' } })
  t.equal(second.status, 429)
  first.ws!.close()
})

t.test('a binary-only protocol closes on text with 1003', async (t) => {
  const app = await protoApp(t, { protocols: { 'bin.v1': { dataTypes: 'binary' } } })
  const seen: boolean[] = []
  app.get('/bin', { websocket: true, wsPolicy: { protocols: ['bin.v1'] } }, (socket) => {
    socket.on('message', (_data, isBinary: boolean) => { seen.push(isBinary); socket.send('got') })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/bin`, { protocols: ['bin.v1'] })
  r.ws!.send(Buffer.from([1, 2, 3]))
  await nextMessages(r.ws!)
  const done = closed(r.ws!)
  r.ws!.send('text')
  t.same(await done, { code: 1003, reason: 'text messages are not accepted' })
  t.same(seen, [true])
})

t.test('limits still apply when no protocol was negotiated on an optional route', async (t) => {
  const app = await protoApp(t, { protocols: { 'chat.v1': json() } })
  const seen: string[] = []
  app.get('/chat', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], required: false, limits: { maxMessageBytes: 8 } } } }, (socket) => {
    socket.on('message', (data) => { seen.push(String(data)); socket.send('ok') })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/chat`)
  r.ws!.send('not json') // no protocol, no inspector: any content...
  await nextMessages(r.ws!)
  const done = closed(r.ws!)
  r.ws!.send('123456789') // ...but the route's size limit holds
  t.same(await done, { code: 1009, reason: 'message too big' })
  t.same(seen, ['not json'])
})

t.test('a custom inspector sees the identity, keeps state, and its violations are made safe', async (t) => {
  let closedInspectors = 0
  const app = await protoApp(t, {
    protocols: {
      'count.v1': {
        describe: 'counts',
        open (ctx: InspectorContext) {
          let n = 0
          return {
            message (data) {
              n++
              if (String(data) === 'bad-code') return { code: 1005, reason: 'no' } // 1005 cannot be sent
              if (String(data) === 'bad-reason') return { code: 4100, reason: `\u00e9${'x'.repeat(200)}` }
              if (n > 3) return policyViolation(`${ctx.identity?.id ?? 'anon'} limit`)
              return undefined
            },
            close () { closedInspectors++ }
          }
        }
      }
    }
  })
  app.get('/c', { websocket: true, wsPolicy: { protocols: ['count.v1'] } }, (socket) => {
    socket.on('message', (data) => socket.send(String(data)))
  })
  const { ws } = await listen(app)
  const run = async (msgs: string[]): Promise<{ code: number, reason: string }> => {
    const r = await wsOpen(`${ws}/c`, { protocols: ['count.v1'], headers: { 'x-user': 'dave' } })
    const sock = r.ws as WebSocket
    const done = closed(sock)
    for (const m of msgs) sock.send(m)
    return done
  }
  t.same(await run(['1', '2', '3', '4']), { code: 1008, reason: 'dave limit' })
  t.same(await run(['bad-code']), { code: 1008, reason: 'policy violation' })
  t.same(await run(['bad-reason']), { code: 1008, reason: 'policy violation' })
  await waitFor(() => closedInspectors === 3, 2000, 'every inspector to be closed')
  t.equal(closedInspectors, 3)
})

t.test('an inspector whose open throws closes the connection with 1011; the handler sees no message', async (t) => {
  const app = await protoApp(t, { protocols: { 'boom.v1': { open () { throw new Error('inspector bug') } } } })
  const seen: string[] = []
  app.get('/b', { websocket: true, wsPolicy: { protocols: ['boom.v1'] } }, (socket) => {
    socket.on('message', (data) => { seen.push(String(data)) })
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/b`, { protocols: ['boom.v1'] })
  t.ok(r.ws, 'the handshake itself succeeded')
  const done = closed(r.ws!)
  r.ws!.send('hello')
  t.same(await done, { code: 1011, reason: 'inspection failed' })
  t.same(seen, [], 'no message reached the handler')
  const again = await wsOpen(`${ws}/b`, { protocols: ['boom.v1'] })
  t.ok(again.ws, 'the server still serves')
  again.ws!.close()
})

t.test('an option set to undefined keeps its default instead of switching the limit off', async (t) => {
  const app = await protoApp(t, {
    protocols: { 'chat.v1': json() },
    limits: { maxMessageBytes: undefined },
    header: { maxLength: undefined, maxCount: undefined }
  })
  app.get('/chat', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket) => {
    socket.on('message', () => socket.send('ok'))
  })
  const { ws, port } = await listen(app)
  const long = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': 'chat.v1, ' + 'x'.repeat(5000) })
  t.equal(JSON.parse(long.body).code, 'PORTCULLIS_SUBPROTOCOL_TOO_LONG', 'the 4096-character header cap holds')
  const many = await rawUpgrade(port, '/chat', { 'Sec-WebSocket-Protocol': Array.from({ length: 40 }, (_, i) => `p${i}`).join(', ') })
  t.equal(JSON.parse(many.body).code, 'PORTCULLIS_SUBPROTOCOL_TOO_MANY', 'the 32-value cap holds')
  const r = await wsOpen(`${ws}/chat`, { protocols: ['chat.v1'] })
  const done = closed(r.ws!)
  r.ws!.send(JSON.stringify({ text: 'x'.repeat(70 * 1024) }))
  t.same(await done, { code: 1009, reason: 'message too big' }, 'the 64 KiB default holds')
})
