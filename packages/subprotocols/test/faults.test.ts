import t from 'tap'
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import subprotocols, { stomp, type SubprotocolDefinition } from '../src/index.js'
import { testIdentityStage } from './helpers.js'
import { captureLogs, closed, listen, nextMessages, waitFor, wsOpen, type LogCapture } from '../../../test/helpers/index.js'

/**
 * App code inside a subprotocol (an inspector's close(), the STOMP ACL hook) that throws never
 * crashes the process, never lets a message through, and never skips a connection's other
 * close listeners. Real servers and real `ws` clients.
 */

async function app (t: { teardown: (fn: () => unknown) => void }, logs: LogCapture, protocols: Record<string, SubprotocolDefinition>) {
  const a = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => a.close())
  await a.register(portcullis, { defaults: { origin: false } })
  a.wsPolicy.addStage(testIdentityStage)
  await a.register(subprotocols, { protocols })
  return a
}

t.test('an inspector whose close() throws is logged, crashes nothing, and the connection\'s other close listeners still run', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs, {
    'chat.v1': { open: () => ({ message: () => undefined, close () { throw new Error('inspector close bug') } }) }
  })
  const heard: string[] = []
  a.wsPolicy.onConnectionClose((state) => heard.push(`registry:${state.identity?.id ?? ''}`))
  a.get('/ws', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket) => {
    socket.on('close', () => heard.push('handler'))
    socket.send('open')
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`, { protocols: 'chat.v1', headers: { 'x-user': 'alice' } })).ws!
  t.same(await nextMessages(s), ['open'])
  s.close()
  await waitFor(() => heard.length === 2, 2000, 'both close listeners')
  t.same(heard.sort(), ['handler', 'registry:alice'])
  const failed = logs.lines.filter(l => l.level === 50 && l.msg === 'portcullis: subprotocol inspector failed to close')
  t.equal(failed.length, 1)
  t.equal(failed[0].portcullis.protocol, 'chat.v1')
  t.equal(a.wsPolicy.connectionsOf('alice'), 0, 'released')
  const again = (await wsOpen(`${ws}/ws`, { protocols: 'chat.v1', headers: { 'x-user': 'alice' } })).ws!
  t.same(await nextMessages(again), ['open'], 'the process still serves')
  again.close()
})

t.test('a STOMP ACL hook that throws closes the connection with 1011 and the frame never reaches the handler', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs, {
    'v12.stomp': stomp({ acl: () => { throw new Error('acl bug') } })
  })
  const seen: string[] = []
  a.get('/stomp', { websocket: true, wsPolicy: { protocols: ['v12.stomp'] } }, (socket) => {
    socket.on('message', (data) => seen.push(String(data).split('\n', 1)[0]))
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/stomp`, { protocols: 'v12.stomp', headers: { 'x-user': 'alice' } })).ws!
  const done = closed(s)
  s.send('CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0')
  s.send('SEND\ndestination:/q\ncontent-length:2\n\nhi\0')
  t.same(await done, { code: 1011, reason: 'inspection failed' })
  t.same(seen, ['CONNECT'], 'the SEND the ACL could not judge was not delivered')
  t.equal(logs.lines.filter(l => l.level === 50 && l.msg === 'portcullis: message guard failed').length, 1)
})
