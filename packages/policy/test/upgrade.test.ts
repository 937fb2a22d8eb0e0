import t from 'tap'
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
  t.same(seen, { transport: 'websocket', state: {} })
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
