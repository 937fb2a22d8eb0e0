import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis from '../src/index.js'
import type { AuditEvent, ConnectionGuardFactory, PortcullisOptions } from '../src/index.js'
import { captureLogs, closed, listen, nextMessages, rawHttp, upgradeHeaders, waitFor, wsOpen, type LogCapture } from '../../../test/helpers/index.js'
import { testOriginStage } from './helpers.js'
import { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'
import { checkHandshake, isInjectedUpgrade } from '../src/handshake.js'

/**
 * WebSocket-door fault containment (issue 19): application code that throws, rejects or hangs
 * closes its own connection with 1011 or is denied with 503, is logged once at error with the
 * route, and never crashes the process. Real servers on 127.0.0.1:0 and real `ws` clients.
 */

const INTERNAL = { code: 1011, reason: 'internal error' }

async function app (t: { teardown: (fn: () => unknown) => void }, logs: LogCapture, opts: PortcullisOptions = {}): Promise<FastifyInstance> {
  const a = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => a.close())
  await a.register(portcullis, opts)
  return a
}

const errorsLogged = (logs: LogCapture, msg: string): Array<Record<string, any>> =>
  logs.lines.filter(l => l.level === 50 && String(l.msg).includes(msg))

t.test('a message listener that throws closes that connection with 1011, is logged once with the route, and a fresh client is served', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs)
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    socket.on('message', (data) => {
      if (String(data) === 'boom') throw new Error('listener bug')
      socket.send(`echo:${String(data)}`)
    })
  })
  const { ws } = await listen(a)
  const victim = (await wsOpen(`${ws}/ws`)).ws!
  const bystander = (await wsOpen(`${ws}/ws`)).ws!
  const done = closed(victim)
  victim.send('boom')
  victim.send('boom') // a second message after the failure is neither delivered nor logged again
  t.same(await done, INTERNAL)
  const failures = errorsLogged(logs, 'message listener failed')
  t.equal(failures.length, 1, 'logged at error exactly once')
  t.equal(failures[0].portcullis.route, '/ws', 'with the route')
  t.equal(failures[0].err.message, 'listener bug')
  // the process is alive: the other connection and a new one are served
  bystander.send('still here')
  t.same(await nextMessages(bystander), ['echo:still here'])
  const fresh = (await wsOpen(`${ws}/ws`)).ws!
  fresh.send('hello')
  t.same(await nextMessages(fresh), ['echo:hello'])
  fresh.close()
  bystander.close()
})

t.test('a message listener that throws behind message guards is contained the same way', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs)
  const guard: ConnectionGuardFactory = () => ({ message: () => undefined })
  a.wsPolicy.addStage({ name: 'guarded', phase: 'custom', evaluate (ctx) { (ctx.state.guards ??= []).push(guard) } })
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    socket.on('message', () => { throw new Error('listener bug') })
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`)).ws!
  const done = closed(s)
  s.send('x')
  t.same(await done, INTERNAL)
  t.equal(errorsLogged(logs, 'message listener failed').length, 1)
})

t.test('a handler that throws at connect closes the connection with 1011, logged at error with the route', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs)
  a.get('/sync', { websocket: true, wsPolicy: { origin: false } }, () => { throw new Error('handler bug') })
  a.get('/async', { websocket: true, wsPolicy: { origin: false } }, async () => {
    await new Promise(resolve => setTimeout(resolve, 10))
    throw new Error('async handler bug')
  })
  a.get('/ok', { websocket: true, wsPolicy: { origin: false } }, (socket) => { socket.send('ok') })
  const { ws } = await listen(a)
  for (const path of ['/sync', '/async']) {
    const r = await wsOpen(`${ws}${path}`)
    t.ok(r.ws, `${path}: the handshake completed`)
    t.same(await closed(r.ws!), INTERNAL, `${path}: closed with 1011, not dropped (1006)`)
  }
  const failures = errorsLogged(logs, 'handler failed')
  t.same(failures.map(l => l.portcullis.route).sort(), ['/async', '/sync'])
  t.same(failures.map(l => l.err.message).sort(), ['async handler bug', 'handler bug'])
  const ok = (await wsOpen(`${ws}/ok`)).ws!
  t.same(await nextMessages(ok), ['ok'], 'the process still serves')
  ok.close()
})

t.test('a peer breaking RFC 6455 is still logged at info, not as a handler failure', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs, { websocket: { maxPayload: 16 } })
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => {})
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`)).ws!
  const done = closed(s)
  s.send('x'.repeat(64))
  t.equal((await done).code, 1009)
  await waitFor(() => logs.lines.some(l => l.msg === 'portcullis: websocket error'), 2000, 'the info line')
  t.equal(logs.lines.find(l => l.msg === 'portcullis: websocket error')!.level, 30, 'info')
  t.same(logs.lines.filter(l => l.level >= 50), [], 'nothing at error')
})

t.test('a guard close() and a close listener that throw skip no other close listener and crash nothing', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs)
  const heard: string[] = []
  const throwingClose: ConnectionGuardFactory = () => ({ message: () => undefined, close () { throw new Error('inspector close bug') } })
  const politeClose: ConnectionGuardFactory = () => ({ message: () => undefined, close () { heard.push('second guard') } })
  a.wsPolicy.addStage({
    name: 'who',
    phase: 'identity',
    evaluate (ctx) {
      ctx.state.identity = { id: 'alice', sessionId: 's1' }
      ;(ctx.state.guards ??= []).push(throwingClose, politeClose)
    }
  })
  a.wsPolicy.onConnectionClose(() => { throw new Error('audit-independent listener bug') })
  a.wsPolicy.onConnectionClose(() => { heard.push('second onConnectionClose') })
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => {
    socket.on('close', () => { throw new Error('app close listener bug') })
    socket.on('close', async () => { throw new Error('async close listener bug') })
    socket.on('close', () => { heard.push('app listener') })
    socket.once('close', () => { heard.push('app once listener') })
  })
  const { ws } = await listen(a)
  const s = (await wsOpen(`${ws}/ws`)).ws!
  t.equal(a.wsPolicy.connectionsOf('alice'), 1)
  s.close()
  await waitFor(() => heard.length === 4, 2000, 'every close listener')
  t.same(heard.sort(), ['app listener', 'app once listener', 'second guard', 'second onConnectionClose'])
  t.equal(a.wsPolicy.connectionsOf('alice'), 0, 'released')
  t.equal(a.wsPolicy.stats().connections, 0)
  t.equal(errorsLogged(logs, 'connection guard close failed').length, 1)
  t.equal(errorsLogged(logs, 'onConnectionClose listener failed').length, 1)
  t.equal(errorsLogged(logs, 'close listener failed').filter(l => l.err.message === 'app close listener bug').length, 1)
  await waitFor(() => errorsLogged(logs, 'close listener failed').some(l => l.err.message === 'async close listener bug'), 2000, 'the async listener\'s rejection is logged, not unhandled')
  const again = (await wsOpen(`${ws}/ws`)).ws!
  t.equal(again.readyState, again.OPEN, 'the process still serves')
  again.close()
})

t.test('a guard factory that throws closes with 1011, leaves no trace in the registry, and does not lock the user out', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs)
  let failNext = true
  let madeThenClosed = 0
  const first: ConnectionGuardFactory = () => ({ message: () => undefined, close () { madeThenClosed++ } })
  const flaky: ConnectionGuardFactory = () => {
    if (failNext) { failNext = false; throw new Error('factory bug') }
    return { message: () => undefined }
  }
  a.wsPolicy.addStage({
    name: 'one-per-user',
    phase: 'identity',
    evaluate (ctx) {
      // a per-identity limit of one connection: a phantom entry would refuse alice forever
      if (a.wsPolicy.connectionsOf('alice') >= 1) return { status: 429, code: 'TOO_MANY', reason: 'one connection per user' }
      ctx.state.identity = { id: 'alice', sessionId: 's1' }
      ;(ctx.state.guards ??= []).push(first, flaky)
    }
  })
  let handled = 0
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => { handled++; socket.send('welcome') })
  const { ws } = await listen(a)
  const r = await wsOpen(`${ws}/ws`)
  t.same(await closed(r.ws!), INTERNAL)
  t.equal(handled, 0, 'the handler never ran')
  t.equal(madeThenClosed, 1, 'the guard made before the failure was closed')
  t.equal(a.wsPolicy.connectionsOf('alice'), 0, 'not counted')
  t.equal(a.wsPolicy.closeSession('s1', 4001, 'revoked'), 0, 'no phantom in the session index')
  t.equal(a.wsPolicy.stats().connections, 0)
  t.equal(errorsLogged(logs, 'connection guard failed to open').length, 1)
  const again = await wsOpen(`${ws}/ws`)
  t.ok(again.ws, 'alice connects again')
  t.same(await nextMessages(again.ws!), ['welcome'])
  t.equal(a.wsPolicy.connectionsOf('alice'), 1)
  again.ws!.close()
})

t.test('an async stage that never settles is denied with 503 PORTCULLIS_STAGE_TIMEOUT within stageTimeoutMs, audited, and the socket is not held', async (t) => {
  const logs = captureLogs()
  const audits: AuditEvent[] = []
  const a = await app(t, logs, { stageTimeoutMs: 200, audit: (e) => audits.push(e) })
  a.wsPolicy.addStage({ name: 'hung-store', phase: 'identity', evaluate: () => new Promise(() => {}) })
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => { socket.send('never') })
  const { port } = await listen(a)
  const started = Date.now()
  // rawHttp resolves when the server closes the TCP connection (or after 3 s): the 503 must come
  // with the close, not after the helper gives up
  const res = await rawHttp(port, ['GET /ws HTTP/1.1', ...upgradeHeaders(`127.0.0.1:${port}`)].join('\r\n') + '\r\n\r\n', { timeoutMs: 3000 })
  const took = Date.now() - started
  t.equal(res.status, 503)
  t.equal(JSON.parse(res.body).code, 'PORTCULLIS_STAGE_TIMEOUT')
  t.ok(took >= 190 && took < 1500, `answered after ${took} ms (stageTimeoutMs 200) and the connection closed`)
  t.match(audits, [{ action: 'deny', code: 'PORTCULLIS_STAGE_TIMEOUT', status: 503, stage: 'hung-store', route: '/ws', transport: 'websocket' }])
  t.same(a.wsPolicy.stats().routes['/ws'].denied, { PORTCULLIS_STAGE_TIMEOUT: 1 })
  t.equal(errorsLogged(logs, 'stage timed out').length, 1)
})

t.test('a stage that answers within stageTimeoutMs is unaffected, and a late answer after the timeout changes nothing', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs, { stageTimeoutMs: 150 })
  let delay = 20
  a.wsPolicy.addStage({ name: 'slow-store', phase: 'identity', evaluate: async () => { await new Promise(resolve => setTimeout(resolve, delay)) } })
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, (socket) => { socket.send('in') })
  const { ws } = await listen(a)
  const fast = await wsOpen(`${ws}/ws`)
  t.same(await nextMessages(fast.ws!), ['in'])
  fast.ws!.close()
  delay = 400
  const slow = await wsOpen(`${ws}/ws`)
  t.equal(slow.status, 503)
  await new Promise(resolve => setTimeout(resolve, 400)) // the late allow arrives: nothing happens
  t.match(a.wsPolicy.stats().routes['/ws'], { allowed: 1, denied: { PORTCULLIS_STAGE_TIMEOUT: 1 }, reported: {} })
})

t.test('fastify.close() answers a handshake whose stage hangs with 503 PORTCULLIS_SHUTTING_DOWN and finishes at once', async (t) => {
  const logs = captureLogs()
  const a = Fastify({ logger: { level: 'info', stream: logs.stream } })
  await a.register(portcullis) // the default stageTimeoutMs (5 s): close must not wait for it
  let entered = 0
  a.wsPolicy.addStage({ name: 'hung-store', phase: 'identity', evaluate: () => { entered++; return new Promise(() => {}) } })
  let handled = 0
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => { handled++ })
  const { ws } = await listen(a)
  const pending = wsOpen(`${ws}/ws`)
  await waitFor(() => entered === 1, 2000, 'the stage to be entered')
  const started = Date.now()
  await a.close()
  const took = Date.now() - started
  t.ok(took < 1000, `closed in ${took} ms with a hung stage (stageTimeoutMs 5000)`)
  const r = await pending
  t.equal(r.status, 503)
  t.equal(JSON.parse(r.body!).code, 'PORTCULLIS_SHUTTING_DOWN')
  t.equal(handled, 0, 'never upgraded')
})

t.test('stageTimeoutMs is validated at startup', async (t) => {
  for (const bad of [0, -1, 1.5, Infinity, NaN, '100', 2 ** 31]) {
    const a = Fastify()
    await t.rejects(async () => { await a.register(portcullis, { stageTimeoutMs: bad as number }) }, { code: 'PORTCULLIS_INVALID_OPTION', message: /stageTimeoutMs/ }, String(bad))
    await a.close()
  }
})

t.test('app.injectWS() goes through the policy: an allowed origin opens, a refused one gets the same status and code as a real upgrade', async (t) => {
  const logs = captureLogs()
  const audits: AuditEvent[] = []
  const a = await app(t, logs, { audit: (e) => audits.push(e) })
  a.wsPolicy.addStage(testOriginStage)
  a.get('/ws', { websocket: true, wsPolicy: { testOrigins: ['https://app.example.com'] } }, (socket, request) => {
    socket.on('message', (data) => socket.send(`${request.portcullis!.transport}:${String(data)}`))
  })
  await a.ready()
  const ok = await a.injectWS('/ws', { headers: { origin: 'https://app.example.com' } })
  ok.send('hi')
  const reply = await new Promise<unknown>(resolve => ok.once('message', (data) => resolve(data)))
  t.equal(String(reply), 'websocket:hi')
  ok.terminate()
  await t.rejects(a.injectWS('/ws', { headers: { origin: 'https://evil.example.com' } }), /Unexpected server response: 403/)
  t.same(audits.map(e => [e.code, e.status]), [['TEST_ORIGIN_DENIED', 403]])
  // the same refusal over a real socket
  const { ws } = await listen(a)
  const real = await wsOpen(`${ws}/ws`, { origin: 'https://evil.example.com' })
  t.equal(real.status, 403)
  t.equal(JSON.parse(real.body!).code, 'TEST_ORIGIN_DENIED')
  t.same(audits.map(e => [e.code, e.status]), [['TEST_ORIGIN_DENIED', 403], ['TEST_ORIGIN_DENIED', 403]])
})

t.test('the real-upgrade handshake checks are not weakened by the injectWS allowance', async (t) => {
  const logs = captureLogs()
  const a = await app(t, logs)
  a.get('/ws', { websocket: true, wsPolicy: { origin: false } }, () => {})
  const { port } = await listen(a)
  // a numeric-looking version is a string on the wire: HTTP/1.0 and version 8 are still refused
  const old = await rawHttp(port, ['GET /ws HTTP/1.0', ...upgradeHeaders(`127.0.0.1:${port}`)].join('\r\n') + '\r\n\r\n')
  t.equal(old.status, 400)
  const v8 = await rawHttp(port, ['GET /ws HTTP/1.1', ...upgradeHeaders(`127.0.0.1:${port}`, { 'Sec-WebSocket-Version': '8' })].join('\r\n') + '\r\n\r\n')
  t.equal(v8.status, 426)
  const noHost = await rawHttp(port, ['GET /ws HTTP/1.1', ...upgradeHeaders(`127.0.0.1:${port}`, { Host: null })].join('\r\n') + '\r\n\r\n')
  t.equal(noHost.status, 400, 'Host is still required on the network')
  t.equal(JSON.parse(noHost.body).code, 'PORTCULLIS_BAD_HANDSHAKE')
})

t.test('only injectWS\'s plain-object request is taken for an injected one, never a request from Node\'s parser', async (t) => {
  const headers = { host: 'localhost', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': 13 }
  const injected = { method: 'GET', url: '/ws', httpVersion: '1.1', headers }
  t.ok(isInjectedUpgrade(injected as never))
  t.equal(checkHandshake(injected as never), undefined, 'accepted: HTTP/1.1 and version 13 as injectWS sets them')
  // an IncomingMessage without parsed version numbers, dressed like the injected one
  const parsed = Object.assign(new IncomingMessage(new Socket()), { httpVersion: '1.1', headers: { ...headers } })
  t.notOk(isInjectedUpgrade(parsed))
  t.same(checkHandshake(parsed), { status: 400, detail: 'HTTP/1.1 required' })
  // a plain object that has version numbers (a test double of a parsed request) is not injected either
  t.notOk(isInjectedUpgrade({ ...injected, httpVersionMajor: 1, httpVersionMinor: 1 } as never))
  t.equal(checkHandshake({ ...injected, httpVersionMajor: 1, httpVersionMinor: 1 } as never)?.status, 426, 'the number 13 is not the header "13"')
})
