import t from 'tap'
import { fileURLToPath } from 'node:url'
import * as fastify from 'fastify'
import * as policy from '@portcullis/policy'
import * as originGuard from '../src/index.js'
import { rawUpgrade } from '../../../test/helpers/index.js'
import { runReadmeSnippet } from './readme-snippet.js'

t.test('the README usage snippet runs and does what it says', async (t) => {
  const logged: unknown[] = []
  const app = await runReadmeSnippet({
    readme: fileURLToPath(new URL('../README.md', import.meta.url)),
    heading: '## Usage',
    modules: { fastify, '@portcullis/policy': policy, '@portcullis/origin-guard': originGuard },
    scope: { console: { log: (v: unknown) => { logged.push(v) } } }
  })
  t.teardown(() => app.close())
  const { port } = app.server.address() as { port: number }
  const up = (path: string, origin: string | null) => rawUpgrade(port, path, { Origin: origin })
  t.equal((await up('/chat', 'https://app.example.com')).status, 101, 'a listed origin')
  t.equal((await up('/chat', 'https://pr-12.preview.example.com')).status, 101, 'a wildcard origin')
  t.equal((await up('/chat', `http://127.0.0.1:${port}`)).status, 101, 'self')
  t.equal((await up('/chat', 'https://evil-example.com')).status, 403, 'a lookalike')
  t.equal((await up('/admin/live', 'https://app.example.com')).status, 403, 'the route\'s own list replaces the app\'s')
  t.equal((await up('/admin/live', 'https://admin.example.com')).status, 101)
  t.equal((await up('/public-feed', 'https://anywhere.example.net')).status, 101, 'the opt-out')
  t.match(String(logged[0]), /\/admin\/live/, 'describeTable() was printed')
})
