// A CommonJS app built from the packed tarballs (run by scripts/consumer-check.mjs in a scratch
// npm project outside the workspace): the same app as app.mjs, through `require` and dist/cjs.
'use strict'
const { readFileSync } = require('node:fs')
const Fastify = require('fastify')
const { portcullis } = require('@portcullis/policy')
const { originGuard } = require('@portcullis/origin-guard')
const { portcullisCookieSession } = require('@portcullis/cookie-session')
const { portcullisSubprotocols, json, parsedMessage } = require('@portcullis/subprotocols')
const { portcullisFallback } = require('@portcullis/fallback')
const { drive, loadAll, report, ALLOWED, TOKEN } = require('./drive.cjs')

async function main () {
  const app = Fastify()
  await app.register(portcullis)
  await app.register(originGuard, { allow: [ALLOWED] })
  await app.register(portcullisCookieSession, {
    authenticate: (request) => {
      const h = request.headers.authorization
      if (h === undefined) return null
      return h === TOKEN ? { id: 'alice' } : false
    }
  })
  await app.register(portcullisSubprotocols, {
    protocols: {
      'chat.v1': json({
        schemas: {
          say: { type: 'object', properties: { type: { const: 'say' }, text: { type: 'string', maxLength: 100 } }, required: ['type', 'text'], additionalProperties: false }
        }
      })
    }
  })
  await app.register(portcullisFallback, {})

  app.get('/live', { websocket: true, wsPolicy: { session: 'required', protocols: ['chat.v1'], fallback: true } }, (socket, request) => {
    socket.send(JSON.stringify({ hello: request.portcullis.state.identity.id, format: 'cjs' }))
    socket.on('message', (data) => socket.send(JSON.stringify({ echo: parsedMessage(socket, data) })))
  })

  await app.listen({ host: '127.0.0.1', port: 0 })
  try {
    const names = Object.keys(JSON.parse(readFileSync('package.json', 'utf8')).dependencies).filter((n) => n.startsWith('@portcullis/'))
    report([...await loadAll(names, async (name) => require(name)), ...await drive(app.server.address().port, 'cjs')])
  } finally {
    await app.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
