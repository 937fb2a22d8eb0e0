import { expect, test } from 'tstyche'
import Fastify from 'fastify'
import portcullis, { type PortcullisSocket, type StageDefinition, type Decision } from '@portcullis/policy'

const app = Fastify()
app.register(portcullis, { defaults: { reportOnly: ['origin'] }, websocket: { maxPayload: 65536 } })

test('the shared policy object is typed on the instance', () => {
  expect(app.wsPolicy.stages()).type.toBe<string[]>()
  expect(app.wsPolicy.closeSession('sid', 4001, 'session revoked')).type.toBe<number>()
})

test('wsPolicy route options are typed and checked', () => {
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: false, reportOnly: true } }, () => {})).type.not.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { reportOnly: 'yes' } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { origin: null } }, () => {})).type.toRaiseError()
  expect(app.get('/ws', { websocket: true, wsPolicy: { orgin: false } }, () => {})).type.toRaiseError()
})

test('plugin options are checked, and options Portcullis owns are refused', () => {
  expect(app.register(portcullis, { denialLogLevel: 'loud' })).type.toRaiseError()
  expect(app.register(portcullis, { websocket: { handleProtocols: () => false } })).type.toRaiseError()
})

test('the handler sees the decision on the request', () => {
  app.get('/ws', { websocket: true }, (_socket, request) => {
    expect(request.portcullis?.state.identity?.id).type.toBe<string | undefined>()
    expect(request.portcullis?.transport).type.toBe<'websocket' | 'long-poll' | 'stream' | undefined>()
  })
})

test('one handler typed with PortcullisSocket compiles for a WebSocket route', () => {
  const handler = (socket: PortcullisSocket): void => { socket.send('hi') }
  expect(app.get('/ws', { websocket: true }, handler)).type.not.toRaiseError()
})

test('a stage is typed by its option and compiled value', () => {
  const stage: StageDefinition<string[], Set<string>> = {
    name: 's',
    phase: 'custom',
    compile: (v) => new Set(v),
    evaluate: (_ctx, compiled) => compiled.has('x') ? undefined : { status: 403, code: 'X', reason: 'x' }
  }
  expect(stage.evaluate).type.not.toBe<undefined>()
  expect<StageDefinition>().type.toBeAssignableFrom({ name: 'n', phase: 'origin' as const, evaluate: () => undefined })
  expect<StageDefinition>().type.not.toBeAssignableFrom({ name: 'n', phase: 'sometime' as const, evaluate: () => undefined })
})

test('a decision is allowed with state or denied with a denial', () => {
  const d = {} as Decision
  if (d.allowed) expect(d.state).type.not.toBe<undefined>()
  else expect(d.denial.code).type.toBe<string>()
})
