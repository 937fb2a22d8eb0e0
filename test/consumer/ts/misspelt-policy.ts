// MUST NOT compile: `sesion` is not a `wsPolicy` key (the typo would turn the session check off
// if it were accepted). scripts/consumer-check.mjs expects tsc to fail on exactly this line.
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import '@portcullis/cookie-session'

export async function build (): Promise<void> {
  const app = Fastify()
  await app.register(portcullis)
  app.get('/live', { websocket: true, wsPolicy: { sesion: 'required' } }, (socket) => socket.send('x'))
}
