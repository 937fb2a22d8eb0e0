import t from 'tap'
import Fastify from 'fastify'
import portcullis from '../src/index.js'
import type { PortcullisOptions } from '../src/index.js'
import { coreApp, testOriginStage } from './helpers.js'

t.test('an unknown route policy key fails startup naming the route and the key', async (t) => {
  const app = await coreApp(t)
  t.throws(
    () => app.get('/chat', { websocket: true, wsPolicy: { orgin: ['x'] } as never }, () => {}),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /\/chat.*unknown key "orgin"/ }
  )
})

t.test('a stage that rejects its route option fails startup with the stage key in the message', async (t) => {
  const app = await coreApp(t)
  t.throws(
    () => app.get('/chat', { websocket: true, wsPolicy: { testOrigins: 'https://a.example' as never } }, () => {}),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /\/chat: testOrigins: testOrigins must be an array/ }
  )
})

t.test('a wsPolicy that is not an object fails startup', async (t) => {
  const app = await coreApp(t)
  t.throws(() => app.get('/chat', { websocket: true, wsPolicy: 'strict' as never }, () => {}), { code: 'PORTCULLIS_INVALID_ROUTE_POLICY' })
})

t.test('reportOnly must name registered stages', async (t) => {
  const app = await coreApp(t)
  t.throws(
    () => app.get('/chat', { websocket: true, wsPolicy: { reportOnly: ['orign'] } }, () => {}),
    { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /reportOnly must be a boolean or a list of stage names \(test-origin\)/ }
  )
})

t.test('a WebSocket route without an origin stage fails startup and says what to register', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  t.throws(
    () => app.get('/chat', { websocket: true }, () => {}),
    { code: 'PORTCULLIS_NO_ORIGIN_STAGE', message: /register @portcullis\/origin-guard.*origin: false/ }
  )
})

t.test('a route may opt out of origin checks explicitly with origin: false', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.get('/chat', { websocket: true, wsPolicy: { origin: false } }, () => {})
  await app.ready()
  t.match(app.wsPolicy.describe()[0].warnings, [/ORIGIN CHECK DISABLED/])
})

t.test('wsPolicy on a route that is not a WebSocket route fails startup', async (t) => {
  const app = await coreApp(t)
  t.throws(() => app.get('/plain', { wsPolicy: { origin: false } }, async () => 'x'), { code: 'PORTCULLIS_INVALID_ROUTE_POLICY', message: /only to WebSocket routes/ })
})

t.test('a stage added after a route is refused: plugins must come before routes', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  app.get('/chat', { websocket: true, wsPolicy: { origin: false } }, () => {})
  t.throws(() => app.wsPolicy.addStage(testOriginStage), {
    code: 'PORTCULLIS_LATE_REGISTRATION',
    message: 'stage "test-origin" was added after route /chat was registered: register every Portcullis plugin before your routes (routes of every encapsulated context share the one policy)'
  })
})

t.test('a stage added after ready is refused', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.ready()
  t.throws(() => app.wsPolicy.addStage(testOriginStage), { code: 'PORTCULLIS_LATE_REGISTRATION', message: /after the app was ready/ })
})

t.test('two stages with one name are refused', async (t) => {
  const app = await coreApp(t)
  t.throws(() => app.wsPolicy.addStage(testOriginStage), { code: 'PORTCULLIS_DUPLICATE_STAGE' })
})

t.test('a malformed stage definition is refused with what is wrong', async (t) => {
  const app = await coreApp(t)
  t.throws(() => app.wsPolicy.addStage({ name: 'x', phase: 'later' as never, evaluate: () => undefined }), /phase must be one of origin, identity, subprotocol, custom/)
  t.throws(() => app.wsPolicy.addStage({ name: '', phase: 'custom', evaluate: () => undefined }), /name must be a non-empty string/)
  t.throws(() => app.wsPolicy.addStage({ name: 'y', phase: 'custom' } as never), /evaluate must be a function/)
})

const badOptions: Array<[string, PortcullisOptions, RegExp]> = [
  ['defaults is not an object', { defaults: [] as never }, /defaults must be an object/],
  ['audit is not a function', { audit: 'log' as never }, /audit must be a function/],
  ['maxBufferedBytes is not a positive number', { maxBufferedBytes: 0 }, /maxBufferedBytes must be a positive number/],
  ['denialLogLevel is unknown', { denialLogLevel: 'loud' as never }, /denialLogLevel must be one of/],
  ['websocket.handleProtocols is owned by Portcullis', { websocket: { handleProtocols: () => false } as never }, /websocket.handleProtocols is owned by Portcullis/],
  ['websocket.verifyClient is owned by Portcullis', { websocket: { verifyClient: () => true } as never }, /websocket.verifyClient is owned by Portcullis/]
]
for (const [name, opts, message] of badOptions) {
  t.test(`plugin registration fails when ${name}`, async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    app.register(portcullis, opts)
    await t.rejects(async () => { await app.ready() }, { code: 'PORTCULLIS_INVALID_OPTION', message })
  })
}
