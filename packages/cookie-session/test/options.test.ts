import t from 'tap'
import Fastify from 'fastify'
import fastifyCookie from '@fastify/cookie'
import portcullis from '@portcullis/policy'
import cookieSession, { type CookieSessionOptions } from '../src/index.js'
import { listen, wsOpen } from '../../../test/helpers/index.js'
import { sessionApp } from './helpers.js'

const SECRET = 'options-secret-0123456789-abcdefghijk'
const load = (): null => null

async function register (opts: unknown, withCookie = true): Promise<unknown> {
  const app = Fastify()
  try {
    if (withCookie) await app.register(fastifyCookie, { secret: SECRET })
    await app.register(portcullis, { defaults: { origin: false } })
    await app.register(cookieSession, opts as CookieSessionOptions)
    await app.ready()
    return undefined
  } catch (err) {
    return err
  } finally {
    await app.close()
  }
}

t.test('invalid options fail at startup with a named error that says what is allowed', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['no source', {}, /at least one of signedCookie, fastifySession, secureSession, authenticate/],
    ['bad session default', { session: 'maybe', authenticate: load }, /'required', 'optional' or false/],
    ['cookie name with a separator', { signedCookie: { cookieName: 'a;b', load } }, /cookie name/],
    ['no loader', { signedCookie: { cookieName: 'sid' } }, /signedCookie.load/],
    ['negative cache', { signedCookie: { cookieName: 'sid', load, cacheSize: -1 } }, /cacheSize/],
    ['identify missing', { fastifySession: {} }, /fastifySession.identify/],
    ['secure-session expiry', { secureSession: { identify: load, expiry: 0 } }, /secureSession.expiry/],
    ['revalidateMs', { authenticate: load, revalidateMs: 1.5 }, /revalidateMs/],
    ['onRevoke', { authenticate: load, onRevoke: 'x' }, /onRevoke/],
    ['a misspelt option', { authenticate: load, revalidatems: 1000 }, /unknown option "revalidatems"/],
    ['a misspelt source key', { signedCookie: { cookieName: 'sid', load, cachesize: 0 } }, /signedCookie: unknown key "cachesize"/]
  ]
  for (const [what, opts, message] of cases) {
    const err = await register(opts) as { code?: string, message?: string }
    t.equal(err?.code, 'PORTCULLIS_COOKIE_SESSION_INVALID_OPTION', what)
    t.match(err?.message, message, what)
  }
})

t.test('a source whose Fastify plugin is not registered fails at startup and names it', async (t) => {
  const cookie = await register({ signedCookie: { cookieName: 'sid', load } }, false) as { code?: string, message?: string }
  t.equal(cookie.code, 'PORTCULLIS_COOKIE_SESSION_MISSING_PLUGIN')
  t.match(cookie.message, /@fastify\/cookie registered with a secret/)
  const session = await register({ fastifySession: { identify: load } }) as { message?: string }
  t.match(session.message, /@fastify\/session registered before/)
  const secure = await register({ secureSession: { identify: load } }) as { message?: string }
  t.match(secure.message, /@fastify\/secure-session registered before/)
})

t.test('a wrong route value fails at startup naming the route', async (t) => {
  const app = await sessionApp(t, () => {}, { authenticate: load })
  t.throws(() => app.get('/chat', { websocket: true, wsPolicy: { session: 'maybe' as never } }, () => {}), /\/chat.*session must be 'required', 'optional' or false/)
})

t.test('the plugin default applies where routes and the core defaults are silent; describe() shows it', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis, { defaults: { origin: false } })
  await app.register(cookieSession, { session: 'optional', signedCookie: { cookieName: '__Host-sid', load }, authenticate: () => null })
  app.get('/a', { websocket: true }, (socket) => { socket.close() })
  app.get('/b', { websocket: true, wsPolicy: { session: 'required' } }, () => {})
  app.get('/c', { websocket: true, wsPolicy: { session: false } }, () => {})
  await app.ready()
  const stages = Object.fromEntries(app.wsPolicy.describe().map(r => [r.route, r.stages.session]))
  t.same(stages, {
    '/a': 'optional (signed cookie "__Host-sid", authenticate())',
    '/b': 'required (signed cookie "__Host-sid", authenticate())',
    '/c': 'off'
  })
  t.same(app.wsPolicy.stages(), ['session'])
  const { ws } = await listen(app)
  t.ok((await wsOpen(`${ws}/a`)).ws, 'optional by the plugin default')
  t.equal((await wsOpen(`${ws}/b`)).status, 401, 'required by the route')
})

t.test('the core\'s defaults.session overrides the plugin default', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis, { defaults: { origin: false, session: false } })
  await app.register(cookieSession, { authenticate: () => null })
  app.get('/a', { websocket: true }, () => {})
  await app.ready()
  t.equal(app.wsPolicy.describe()[0].stages.session, 'off')
})

t.test('an authenticate() that returns a malformed identity fails closed with a 500', async (t) => {
  const app = await sessionApp(t, () => {}, { authenticate: () => ({ id: 42 }) as never })
  app.get('/ws', { websocket: true }, () => {})
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/ws`)
  t.equal(r.status, 500)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_STAGE_FAILED')
})

t.test('an option set to undefined keeps its default: session undefined is required', async (t) => {
  const app = await sessionApp(t, () => {}, { session: undefined, revalidateMs: undefined, authenticate: () => null })
  app.get('/chat', { websocket: true }, (socket) => { socket.close() })
  const { ws } = await listen(app)
  const r = await wsOpen(`${ws}/chat`)
  t.equal(r.status, 401)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_SESSION_REQUIRED')
})
