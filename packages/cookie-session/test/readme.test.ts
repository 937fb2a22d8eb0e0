import t from 'tap'
import { fileURLToPath } from 'node:url'
import * as crypto from 'node:crypto'
import * as fastify from 'fastify'
import * as fastifyCookie from '@fastify/cookie'
import * as policy from '@portcullis/policy'
import * as originGuard from '@portcullis/origin-guard'
import * as cookieSession from '../src/index.js'
import { wsOpen, nextMessages, closed } from '../../../test/helpers/index.js'
import { runReadmeSnippet } from '../../origin-guard/test/readme-snippet.js'
import { cookiePair } from './helpers.js'

t.test('the README usage snippet runs: login, the WebSocket as that user, logout closes it with 4001', async (t) => {
  const app = await runReadmeSnippet({
    readme: fileURLToPath(new URL('../README.md', import.meta.url)),
    heading: '## Usage: login, then a WebSocket with the same session',
    modules: {
      'node:crypto': crypto,
      fastify,
      '@fastify/cookie': fastifyCookie,
      '@portcullis/policy': policy,
      '@portcullis/origin-guard': originGuard,
      '@portcullis/cookie-session': cookieSession
    },
    scope: {
      process: { env: { COOKIE_SECRET: 'readme-test-secret-0123456789-abcdef' } },
      checkPassword: async (body: { user: string }) => body.user // "yours"
    },
    edits: [['Fastify({ logger: true })', 'Fastify({ logger: false })']]
  })
  t.teardown(() => app.close())
  const { port } = app.server.address() as { port: number }
  const self = `http://127.0.0.1:${port}`
  const login = await app.inject({ method: 'POST', url: '/login', payload: { user: 'alice' } })
  const cookie = cookiePair(login.headers['set-cookie'], '__Host-sid')
  const anon = await wsOpen(`ws://127.0.0.1:${port}/chat`, { headers: { origin: self } })
  t.equal(anon.status, 401, 'no session, no socket')
  const r = await wsOpen(`ws://127.0.0.1:${port}/chat`, { headers: { origin: self, cookie } })
  t.same(await nextMessages(r.ws!), ['hello alice'])
  const done = closed(r.ws!)
  const out = await app.inject({ method: 'POST', url: '/logout', headers: { cookie } })
  t.same(out.json(), { ok: true })
  t.equal((await done).code, 4001, 'logout revoked the live socket')
  const again = await wsOpen(`ws://127.0.0.1:${port}/chat`, { headers: { origin: self, cookie } })
  t.equal(again.status, 401, 'the old cookie opens nothing')
})
