import t from 'tap'
import { fileURLToPath } from 'node:url'
import * as fastify from 'fastify'
import * as policy from '@portcullis/policy'
import * as subprotocols from '../src/index.js'
import { wsOpen, nextMessages, closed } from '../../../test/helpers/index.js'
import { runReadmeSnippet } from '../../origin-guard/test/readme-snippet.js'

t.test('the README usage snippet runs and does what it says', async (t) => {
  const logged: unknown[] = []
  const app = await runReadmeSnippet({
    readme: fileURLToPath(new URL('../README.md', import.meta.url)),
    heading: '## Usage',
    modules: { fastify, '@portcullis/policy': policy, '@portcullis/subprotocols': subprotocols },
    scope: { console: { log: (v: unknown) => { logged.push(v) } } }
  })
  t.teardown(() => app.close())
  const { port } = app.server.address() as { port: number }
  const r = await wsOpen(`ws://127.0.0.1:${port}/chat`, { protocols: ['chat.v1'] })
  t.equal(r.ws?.protocol, 'chat.v1')
  r.ws!.send('{"type":"say","text":"hi"}')
  t.same((await nextMessages(r.ws!)).map(m => JSON.parse(m)), [{ echo: { type: 'say', text: 'hi' } }], 'parsedMessage gave the handler the parsed value')
  const done = closed(r.ws!)
  r.ws!.send('{"type":"join","room":"NOPE"}')
  t.same(await done, { code: 1008, reason: 'message does not match the schema' })
  const none = await wsOpen(`ws://127.0.0.1:${port}/chat`)
  t.equal(none.status, 400, 'chat.v1 is required')
  const s = await wsOpen(`ws://127.0.0.1:${port}/stomp`, { protocols: ['v12.stomp'] })
  t.equal(s.ws?.protocol, 'v12.stomp')
  const sDone = closed(s.ws!)
  s.ws!.send('CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/private.x\n\n\0')
  t.same(await sDone, { code: 1008, reason: 'STOMP: destination not allowed' }, 'the ACL from the snippet')
  t.match(String(logged[0]), /\/stomp/, 'describeTable() was printed')
})
