// Type-checked (never run) by scripts/consumer-check.mjs with `tsc --noEmit`, twice: as an ES
// module (NodeNext, "type": "module") and as CommonJS (Node16), against the packed tarballs'
// declarations. It uses what the READMEs show: route options (`websocket`, `wsPolicy` with every
// stage's key), the handler's types, the decorators and the plugins' options.
import Fastify from 'fastify'
import type { WebSocket } from 'ws'
import portcullis, { CloseCodes, type PortcullisRoutePolicy, type StageDefinition } from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import subprotocols, { json, parsedMessage } from '@portcullis/subprotocols'
import fallback, { type LongPollSocket } from '@portcullis/fallback'
import fallbackRedis from '@portcullis/fallback-redis'
import { PortcullisSocket, isTransientClose } from '@portcullis/client'

type IsAny<T> = 0 extends 1 & T ? true : false

export async function build (): Promise<void> {
  const app = Fastify()
  await app.register(portcullis, { websocket: { maxPayload: 64 * 1024 } })
  await app.register(originGuard, { allow: ['self', 'https://app.example'] })
  await app.register(cookieSession, {
    authenticate: async (request) => request.headers.authorization === 'Bearer ok' ? { id: 'alice', expiresAt: Date.now() + 60_000 } : null
  })
  await app.register(subprotocols, {
    protocols: { 'chat.v1': json({ schemas: { say: { type: 'object', properties: { text: { type: 'string' } } } } }) }
  })
  await app.register(fallback, { pollTimeoutMs: 25_000 })

  const stage: StageDefinition = { name: 'office-hours', phase: 'custom', evaluate: () => undefined }
  app.wsPolicy.addStage(stage)

  const policy: PortcullisRoutePolicy = { session: 'optional', protocols: ['chat.v1'], fallback: true, origin: { allow: ['https://admin.example'] } }
  app.get('/admin', { websocket: true, wsPolicy: policy }, (socket) => socket.send('hello admin'))

  app.get('/live', { websocket: true, wsPolicy: { session: 'required', protocols: ['chat.v1'], fallback: true, reportOnly: ['origin'] } }, (socket, request) => {
    // @fastify/websocket's declaration merging reaches the consumer: the socket is ws's WebSocket
    const ws: WebSocket = socket
    const notAny: IsAny<typeof socket> = false
    const user: string | undefined = request.portcullis?.state.identity?.id
    const protocol: string | undefined = request.portcullis?.state.protocol
    ws.on('message', (data) => {
      const message: unknown = parsedMessage(socket, data)
      socket.send(JSON.stringify({ user, protocol, message, notAny }))
    })
    socket.close(CloseCodes.SESSION_REVOKED, 'bye')
  })

  const describe: string = app.wsPolicy.describeTable()
  app.log.info(describe)
  await app.listen({ port: 0, host: '127.0.0.1' })
}

// the fallback's socket and the client's are typed too
export function sendBoth (a: LongPollSocket, b: PortcullisSocket): boolean {
  a.send('x')
  b.send('y')
  return isTransientClose(1006)
}

export const redisPlugin: typeof fallbackRedis = fallbackRedis
