import t, { type Test } from 'tap'
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import fallback from '@portcullis/fallback'
import { http } from '../packages/fallback/test/helpers.js'
import { listen } from './helpers/index.js'

// Browsers send no Origin on a same-origin GET (Fetch §3.1), so the poll of a session opened by a
// POST carrying Origin arrives without one. The binding and the origin guard must agree that
// `Sec-Fetch-Site: same-origin` is the page's own origin — and nothing else is.
async function sameOriginApp (t: Test) {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis)
  await app.register(originGuard)
  await app.register(fallback, { pollTimeoutMs: 100 })
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true } }, (socket) => socket.send('welcome'))
  const { port, origin } = await listen(app)
  const open = await http(port, 'POST', '/chat/_lp/open', { 'x-portcullis-fallback': '1', 'content-type': 'application/json', origin }, {})
  t.equal(open.status, 200)
  const poll = (headers: Record<string, string>) =>
    http(port, 'GET', '/chat/_lp/poll', { 'x-portcullis-fallback': '1', 'x-portcullis-sid': open.body.sid, ...headers })
  return { poll, origin }
}

t.test('a same-origin poll without Origin, marked Sec-Fetch-Site: same-origin, reaches the session its POST opened', async (t) => {
  const { poll } = await sameOriginApp(t)
  const r = await poll({ 'sec-fetch-site': 'same-origin' })
  t.equal(r.status, 200)
  t.same(r.body.messages.map((m: { text: string }) => m.text), ['welcome'])
})

t.test('a poll without Origin from a cross-site context is refused by the origin guard', async (t) => {
  const { poll } = await sameOriginApp(t)
  const r = await poll({ 'sec-fetch-site': 'cross-site' })
  t.equal(r.status, 403)
})

t.test('a poll without Origin or Fetch Metadata is refused (missing origin is denied by default)', async (t) => {
  const { poll } = await sameOriginApp(t)
  const r = await poll({})
  t.equal(r.status, 403)
  t.equal(r.body.code, 'PORTCULLIS_ORIGIN_MISSING')
})

t.test('a poll with the Origin header of the opener still matches', async (t) => {
  const { poll, origin } = await sameOriginApp(t)
  const r = await poll({ origin })
  t.equal(r.status, 200)
})
