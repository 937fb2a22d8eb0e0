import t from 'tap'
import { inspect } from 'node:util'
import { coreApp } from './helpers.js'
import { listen, wsOpen, rawUpgrade, nextMessages } from '../../../test/helpers/index.js'

t.test('an allowed origin gets a 101 and the handler sees the decision', async (t) => {
  const app = await coreApp(t)
  let seen: unknown
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: ['https://app.example.com'] } }, (socket, request) => {
    seen = request.portcullis
    socket.send('hello')
  })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://app.example.com' })
  t.ok(r.ws, 'opened')
  t.same(await nextMessages(r.ws!), ['hello'])
  const decision = seen as { transport: unknown, state: unknown }
  t.equal(decision.transport, 'websocket')
  t.same(decision.state, {})
  // it is the connection's record too: what an app logs of it is the decision, no socket or logger
  t.same(JSON.parse(JSON.stringify(seen)), { transport: 'websocket', state: {} }, 'JSON (and so pino) sees the decision only')
  t.equal(inspect(seen), "{ transport: 'websocket', state: {} }", 'so does util.inspect (console.log)')
  r.ws!.close()
})

t.test('a denied origin gets a 403 with a JSON body and never a 101', async (t) => {
  const app = await coreApp(t)
  let called = false
  app.get('/ws', { websocket: true, wsPolicy: { testOrigins: ['https://app.example.com'] } }, () => { called = true })
  const { ws, port } = await listen(app)
  const r = await wsOpen(`${ws}/ws`, { origin: 'https://evil.example' })
  t.equal(r.status, 403)
  t.same(JSON.parse(r.body!), { code: 'TEST_ORIGIN_DENIED', message: 'Origin not allowed' })
  const raw = await rawUpgrade(port, '/ws', { Origin: 'https://evil.example' })
  t.equal(raw.status, 403)
  t.notOk(raw.raw.includes('101'), 'no 101 anywhere in the answer')
  t.equal(raw.headers['cache-control'], 'no-store')
  t.notOk(called, 'handler never ran')
})
