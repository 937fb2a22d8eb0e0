import { expect, test } from 'tstyche'
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import subprotocols, { json, parsedMessage, stomp, type SubprotocolDefinition, type SubprotocolRouteOption } from '@portcullis/subprotocols'

const app = Fastify()
app.register(portcullis)
app.register(subprotocols, { protocols: { 'chat.v1': json({ schema: { type: 'object' } }), 'v12.stomp': stomp({ maxHeaders: 16 }) } })

test('wsPolicy.protocols takes a list of names or { accept, required, limits }', () => {
  expect(app.get('/a', { websocket: true, wsPolicy: { protocols: ['chat.v1', 'chat.v0'] } }, () => {})).type.not.toRaiseError()
  expect(app.get('/b', {
    websocket: true,
    wsPolicy: { protocols: { accept: ['chat.v1'], required: false, limits: { maxMessageBytes: 1024, rate: { messagesPerSecond: 10, burst: 20 }, maxConnectionsPerIdentity: 3 } } }
  }, () => {})).type.not.toRaiseError()
  expect(app.get('/c', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], limits: { rate: false, maxMessageBytes: false } } } }, () => {})).type.not.toRaiseError()
})

test('a wrong wsPolicy.protocols fails to compile', () => {
  expect(app.get('/d', { websocket: true, wsPolicy: { protocols: 'chat.v1' } }, () => {})).type.toRaiseError()
  expect(app.get('/e', { websocket: true, wsPolicy: { protocols: { required: true } } }, () => {})).type.toRaiseError()
  expect(app.get('/f', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], requird: true } } }, () => {})).type.toRaiseError()
  expect(app.get('/g', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], limits: { maxMessageBytes: '1kb' } } } }, () => {})).type.toRaiseError()
  expect(app.get('/h', { websocket: true, wsPolicy: { protocols: { accept: ['chat.v1'], limits: { rate: 10 } } } }, () => {})).type.toRaiseError()
  expect(app.get('/i', { websocket: true, wsPolicy: { protocol: ['chat.v1'] } }, () => {})).type.toRaiseError()
})

test('the registry is typed on the instance', () => {
  expect(app.portcullisProtocols.register('echo.v1', { dataTypes: 'binary' })).type.toBe<void>()
  expect(app.portcullisProtocols.register('echo.v1', { dataTypes: 'json' })).type.toRaiseError()
  expect(app.portcullisProtocols.names()).type.toBe<string[]>()
})

test('definitions, inspectors and the parsed value are typed', () => {
  expect(json({ schemas: { say: { type: 'object' } }, typeKey: 'kind' })).type.toBe<SubprotocolDefinition>()
  expect(stomp({ acl: (identity, command, destination) => identity?.id === 'root' || (command === 'SUBSCRIBE' && destination !== '') })).type.toBe<SubprotocolDefinition>()
  expect(stomp({ commands: ['MESSAGE'] })).type.toRaiseError()
  expect<SubprotocolRouteOption>().type.toBeAssignableFrom(['a', 'b'] as const)
  app.get('/j', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, (socket, request) => {
    expect(request.portcullis?.state.protocol).type.toBe<string | undefined>()
    socket.on('message', (data: Buffer) => {
      expect(parsedMessage<{ text: string }>(socket, data)).type.toBe<{ text: string } | undefined>()
    })
  })
})
