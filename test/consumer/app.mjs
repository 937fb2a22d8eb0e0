// An ES module app built from the packed tarballs (run by scripts/consumer-check.mjs in a scratch
// npm project outside the workspace: no source condition, no TypeScript loader). It registers
// every server plugin, declares one protected route, then drives real connections at itself.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import Fastify from 'fastify'
import portcullis from '@portcullis/policy'
import originGuard from '@portcullis/origin-guard'
import cookieSession from '@portcullis/cookie-session'
import subprotocols, { json, parsedMessage } from '@portcullis/subprotocols'
import fallback from '@portcullis/fallback'

const { drive, loadAll, report, ALLOWED, TOKEN } = createRequire(import.meta.url)('./drive.cjs')

const app = Fastify()
await app.register(portcullis)
await app.register(originGuard, { allow: [ALLOWED] })
await app.register(cookieSession, {
  authenticate: (request) => {
    const h = request.headers.authorization
    if (h === undefined) return null
    return h === TOKEN ? { id: 'alice' } : false
  }
})
await app.register(subprotocols, {
  protocols: {
    'chat.v1': json({
      schemas: {
        say: { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string', maxLength: 100 } }, required: ['type', 'text'], additionalProperties: false }
      }
    })
  }
})
await app.register(fallback, {})

app.get('/live', { websocket: true, wsPolicy: { session: 'required', protocols: ['chat.v1'], fallback: true } }, (socket, request) => {
  socket.send(JSON.stringify({ hello: request.portcullis.state.identity.id, format: 'esm' }))
  socket.on('message', (data) => socket.send(JSON.stringify({ echo: parsedMessage(socket, data) })))
})

await app.listen({ host: '127.0.0.1', port: 0 })
try {
  const names = Object.keys(JSON.parse(readFileSync('package.json', 'utf8')).dependencies).filter((n) => n.startsWith('@portcullis/'))
  report([...await loadAll(names, (name) => import(name)), ...await drive(app.server.address().port, 'esm')])
} finally {
  await app.close()
}
