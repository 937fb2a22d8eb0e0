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

t.test('the route config is read without building routeOptions, and is the same object', async (t) => {
  const { routeConfigOf } = await import('../src/route-config.js')
  const Fastify = (await import('fastify')).default
  const app = Fastify()
  t.teardown(() => app.close())
  const marker = Symbol('test.marker')
  const seen: Array<{ same: boolean, marked: unknown }> = []
  let counting = false
  let getterCalls = 0
  app.addHook('onRequest', (request, _reply, done) => {
    const expected = request.routeOptions.config
    // Fastify's getter is not configurable: an own getter on this request shadows it and counts
    // routeConfigOf's calls
    const original = request.routeOptions
    Object.defineProperty(request, 'routeOptions', { configurable: true, get () { if (counting) getterCalls++; return original } })
    try {
      const got = routeConfigOf(request)
      seen.push({ same: got === expected, marked: got?.[marker] })
    } finally {
      delete (request as { routeOptions?: unknown }).routeOptions
    }
    done()
  })
  app.get('/a', { config: { [marker]: 'a' } }, async () => 'a')
  app.get('/b/:id', { config: { [marker]: 'b' } }, async () => 'b')
  await app.inject('/a') // the first request of the process may find the key
  counting = true
  for (const url of ['/b/1', '/a', '/nowhere']) t.equal((await app.inject(url)).statusCode, url === '/nowhere' ? 404 : 200, url)
  t.same(seen.map(s => s.same), [true, true, true, true], 'the config routeOptions returns, for every route and the 404 handler')
  t.same(seen.map(s => s.marked), ['a', 'b', 'a', undefined])
  t.equal(getterCalls, 0, 'once the key is known, no request builds routeOptions')
  // a request from elsewhere (no such symbol): routeOptions, as before
  const foreign = { routeOptions: { config: { [marker]: 'x' } } }
  t.equal(routeConfigOf(foreign as never)?.[marker], 'x')
})
