import t from 'tap'
import Fastify from 'fastify'
import fastifyCookie, { sign } from '@fastify/cookie'
import portcullis, { type PortcullisIdentity } from '@portcullis/policy'
import fallback from '@portcullis/fallback'
import cookieSession from '../src/index.js'
import { listen, nextMessages, wsOpen } from '../../../test/helpers/index.js'

const SECRET = 'long-poll-secret-0123456789-abcdefghij'
const cookieFor = (sid: string): string => 'sid=' + encodeURIComponent(sign(sid, SECRET))

async function lp (base: string, endpoint: 'open' | 'poll', headers: Record<string, string>): Promise<{ status: number, body: any }> {
  const res = await fetch(`${base}/chat/_lp/${endpoint}`, {
    method: endpoint === 'open' ? 'POST' : 'GET',
    headers: { 'x-portcullis-fallback': '1', ...(endpoint === 'open' ? { 'content-type': 'application/json' } : {}), ...headers },
    body: endpoint === 'open' ? '{}' : undefined
  })
  return { status: res.status, body: await res.json() }
}

t.test('the long-poll door resolves the same identity in the same place, and revocation closes it too', async (t) => {
  const sessions = new Map<string, PortcullisIdentity>([['s1', { id: 'alice' }]])
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyCookie, { secret: SECRET })
  await app.register(portcullis, { defaults: { origin: false } })
  await app.register(cookieSession, { signedCookie: { cookieName: 'sid', load: (sid) => sessions.get(sid) ?? null } })
  await app.register(fallback, { pollTimeoutMs: 2000 })
  app.get('/chat', { websocket: true, wsPolicy: { fallback: true } }, (socket, request) => {
    socket.send(JSON.stringify({ transport: request.portcullis?.transport, identity: request.portcullis?.state.identity }))
  })
  const { http, ws } = await listen(app)
  const cookie = cookieFor('s1')

  const w = await wsOpen(`${ws}/chat`, { headers: { cookie } })
  t.same(JSON.parse((await nextMessages(w.ws!))[0]), { transport: 'websocket', identity: { id: 'alice', sessionId: 's1' } })

  const denied = await lp(http, 'open', {})
  t.equal(denied.status, 401, 'the same denial on the long-poll door')
  t.equal(denied.body.code, 'PORTCULLIS_SESSION_REQUIRED')
  const tossed = await lp(http, 'open', { cookie: `${cookie}; ${cookieFor('s2')}` })
  t.equal(tossed.body.code, 'PORTCULLIS_SESSION_AMBIGUOUS')

  const open = await lp(http, 'open', { cookie })
  t.equal(open.status, 200)
  const sid = open.body.sid as string
  const first = await lp(http, 'poll', { cookie, 'x-portcullis-sid': sid, 'x-portcullis-ack': '0' })
  t.same(JSON.parse(first.body.messages[0].text), { transport: 'long-poll', identity: { id: 'alice', sessionId: 's1' } })

  t.equal(app.portcullisSessions.revoke('s1'), 2, 'one revocation reaches both doors')
  const wsClosed = await new Promise<number>((resolve) => w.ws!.once('close', (code: number) => resolve(code)))
  t.equal(wsClosed, 4001)
  const after = await lp(http, 'poll', { cookie, 'x-portcullis-sid': sid, 'x-portcullis-ack': String(first.body.messages[0].seq) })
  t.same(after.body.close, { code: 4001, reason: 'session revoked' }, 'the long-poll client reads the same close')
})
