import t from 'tap'
import fastifyCookie, { sign } from '@fastify/cookie'
import type { FastifyReply } from 'fastify'
import { listen, nextMessages, wsOpen } from '../../../test/helpers/index.js'
import { sessionApp, type TestLike } from './helpers.js'

// An admitted upgrade's reply lives as long as the connection (@fastify/websocket's socket error
// listener closes over it): the core drops the empty Set-Cookie map @fastify/cookie gave it.

const SECRET = 'a-secret-0123456789-abcdefghijklmnopqr'

/** @fastify/cookie's map of the cookies a reply will set, found as the core finds it. */
function setCookies (reply: FastifyReply): unknown {
  const r = reply as unknown as Record<symbol, unknown>
  const key = Object.getOwnPropertySymbols(r).find((s) => s.description === 'fastify.reply.setCookies')
  return key === undefined ? 'no such key' : r[key]
}

async function app (t: TestLike): Promise<{ ws: string, replies: FastifyReply[] }> {
  const replies: FastifyReply[] = []
  const a = await sessionApp(t, async (app) => {
    await app.register(fastifyCookie, { secret: SECRET })
    app.addHook('onRequest', async (request, reply) => { if (request.headers.upgrade !== undefined) replies.push(reply) })
  }, { signedCookie: { cookieName: 'sid', load: async (id) => ({ id: 'alice', sessionId: id }) } })
  a.get('/ws', { websocket: true }, (socket) => { socket.send('open') })
  // a cookie queued before the upgrade (an app's own hook) is the app's: it is kept
  a.get('/queued', {
    websocket: true,
    onRequest: async (_request, reply) => { reply.setCookie('seen', '1') }
  }, (socket) => { socket.send('open') })
  const { ws } = await listen(a)
  return { ws, replies }
}

const cookie = 'sid=' + encodeURIComponent(sign('s-1', SECRET))

t.test('an admitted upgrade\'s reply keeps no empty Set-Cookie map for the life of the connection', async (t) => {
  const { ws, replies } = await app(t)
  for (let i = 0; i < 2; i++) {
    const r = await wsOpen(`${ws}/ws`, { headers: { cookie } })
    t.same(await nextMessages(r.ws!), ['open'], `connection ${i + 1} opened`)
    t.equal(setCookies(replies[i]), null, `connection ${i + 1}: the map is released`)
    r.ws!.close()
  }
  // @fastify/cookie makes the map again when asked to set a cookie: nothing is lost or broken
  replies[0].setCookie('late', 'x')
  const map = setCookies(replies[0])
  t.ok(map instanceof Map && map.has('late;undefined;/'), 'a later setCookie works as on any reply')
})

t.test('a reply with cookies queued before the upgrade keeps them', async (t) => {
  const { ws, replies } = await app(t)
  const r = await wsOpen(`${ws}/queued`, { headers: { cookie } })
  t.same(await nextMessages(r.ws!), ['open'])
  const map = setCookies(replies[0])
  t.ok(map instanceof Map && map.size === 1, 'the queued cookie is still there')
  r.ws!.close()
})

t.test('a denied upgrade\'s reply is sent as usual, with the cookies queued for it', async (t) => {
  const { ws } = await app(t)
  const r = await wsOpen(`${ws}/queued`)
  t.equal(r.status, 401)
  t.match(String(r.headers?.['set-cookie']), /^seen=1/, 'the refusal carries the queued cookie')
})
