/**
 * Echo throughput with and without JSON-Schema inspection on the real WebSocket door.
 * Run: node --import=tsx --conditions=portcullis-source packages/subprotocols/bench/echo.ts
 * Client and server share the process, so compare the two rows, not absolute numbers.
 */
import Fastify from 'fastify'
import WebSocket from 'ws'
import portcullis from '@portcullis/policy'
import subprotocols, { json, parsedMessage } from '../src/index.js'

const CONNECTIONS = 8
const PER_ROUND = 200
const ROUNDS = Number(process.env.ROUNDS ?? 25)
const message = JSON.stringify({ type: 'say', room: 'lobby', text: 'hello there, how are you doing today?', at: 1732870000000 })

const schema = {
  type: 'object',
  properties: {
    type: { const: 'say' },
    room: { type: 'string', pattern: '^[a-z]{1,16}$' },
    text: { type: 'string', maxLength: 500 },
    at: { type: 'integer' }
  },
  required: ['type', 'room', 'text'],
  additionalProperties: false
}

const app = Fastify()
await app.register(portcullis, { defaults: { origin: false } })
await app.register(subprotocols, { protocols: { 'chat.v1': json({ schema }), 'plain.v1': { dataTypes: 'both', limits: { maxMessageBytes: false } } } })
const echo = (socket: { on: (e: string, f: (d: Buffer, b: boolean) => void) => void, send: (d: Buffer, o?: unknown) => void }) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
}
app.get('/none', { websocket: true }, echo as never)
// the realistic pair: a handler that needs the object parses it itself, or reads the inspector's
app.get('/none-parse', { websocket: true }, ((socket: { on: (e: string, f: (d: Buffer) => void) => void, send: (d: string) => void }) => {
  socket.on('message', (data) => { const m = JSON.parse(String(data)); socket.send(JSON.stringify(m)) })
}) as never)
app.get('/json-parsed', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, ((socket: { on: (e: string, f: (d: Buffer) => void) => void, send: (d: string) => void }) => {
  socket.on('message', (data) => { const m = parsedMessage(socket as never, data); socket.send(JSON.stringify(m)) })
}) as never)
app.get('/plain', { websocket: true, wsPolicy: { protocols: ['plain.v1'] } }, echo as never)
app.get('/json', { websocket: true, wsPolicy: { protocols: ['chat.v1'] } }, echo as never)
await app.listen({ port: 0, host: '127.0.0.1' })
const port = (app.server.address() as { port: number }).port

async function open (path: string, protocol?: string): Promise<WebSocket[]> {
  return Promise.all(Array.from({ length: CONNECTIONS }, () => new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, protocol === undefined ? [] : [protocol])
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })))
}

async function round (sockets: WebSocket[]): Promise<number> {
  const started = process.hrtime.bigint()
  await Promise.all(sockets.map(ws => new Promise<void>((resolve) => {
    let got = 0
    const onMessage = (): void => { if (++got === PER_ROUND) { ws.off('message', onMessage); resolve() } }
    ws.on('message', onMessage)
    for (let i = 0; i < PER_ROUND; i++) ws.send(message)
  })))
  return Number(process.hrtime.bigint() - started) / 1e6
}

const none = await open('/none')
const plain = await open('/plain', 'plain.v1')
const inspected = await open('/json', 'chat.v1')
const noneParse = await open('/none-parse')
const jsonParsed = await open('/json-parsed', 'chat.v1')
const times: Record<string, number[]> = { none: [], guard: [], json: [], noneParse: [], jsonParsed: [] }
for (let r = 0; r < ROUNDS; r++) {
  // interleave, so background load hits both the same way
  times.none.push(await round(none))
  times.guard.push(await round(plain))
  times.json.push(await round(inspected))
  times.noneParse.push(await round(noneParse))
  times.jsonParsed.push(await round(jsonParsed))
}
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]
const msgs = CONNECTIONS * PER_ROUND
for (const k of Object.keys(times)) {
  console.log(`${k.padEnd(10)} median ${median(times[k]).toFixed(1)} ms per ${msgs} echoes = ${(msgs / median(times[k]) * 1000).toFixed(0)} msg/s`)
}
console.log(`guard only (core emit wrapper + type/size checks) overhead: ${((median(times.guard) / median(times.none) - 1) * 100).toFixed(1)} %`)
console.log(`JSON-Schema inspection overhead, pure echo: ${((median(times.json) / median(times.none) - 1) * 100).toFixed(1)} %`)
console.log(`JSON-Schema inspection overhead, handler needs the object (parsedMessage vs own JSON.parse): ${((median(times.jsonParsed) / median(times.noneParse) - 1) * 100).toFixed(1)} %`)
for (const ws of [...none, ...plain, ...inspected, ...noneParse, ...jsonParsed]) ws.close()
await app.close()
