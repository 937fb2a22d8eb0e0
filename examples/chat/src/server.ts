// Placeholder flagship example (the chat app replaces it): one protected WebSocket echo route.
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const app = Fastify({ logger: true })
await app.register(portcullis)
app.wsPolicy.addStage({
  name: 'same-origin',
  phase: 'origin',
  evaluate: (ctx) => ctx.origin === `${ctx.scheme}://${ctx.host}` ? undefined : { status: 403, code: 'ORIGIN_NOT_ALLOWED', reason: 'Origin not allowed' }
})
app.get('/echo', { websocket: true }, (socket) => {
  socket.on('message', (data) => socket.send(String(data)))
})
app.get('/', async (_req, reply) => reply.type('text/html').send('<!doctype html><title>Portcullis</title><p>Portcullis is running.'))
await app.listen({ port, host })
app.log.info(`listening on http://${host}:${port}/`)
