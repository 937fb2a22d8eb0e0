/**
 * A lean socket.io client over engine.io's WebSocket transport (for context next to the
 * long-poll runs): raw TCP, prebuilt upgrade, pre-masked frames. engine.io sends `0{…}` (open)
 * first; `40` joins the main namespace, answered by `40{…}`; `2` is a ping answered by `3`.
 */
import { connect } from 'node:net'
import { FrameReader, OPCODE_CLOSE, OPCODE_TEXT, buildUpgrade, maskedClose, maskedFrame, readHead } from './frames.js'
import type { EchoClient } from './poll-load.js'

const HOST = '127.0.0.1'
const PONG = maskedFrame(OPCODE_TEXT, '3')
const CONNECT = maskedFrame(OPCODE_TEXT, '40')

export function openSocketIoWs (port: number, message: string): Promise<EchoClient> {
  const req = buildUpgrade(`${HOST}:${port}`, '/socket.io/?EIO=4&transport=websocket')
  const event = maskedFrame(OPCODE_TEXT, `42${JSON.stringify(['echo', JSON.parse(message)])}`)
  return new Promise((resolve, reject) => {
    const s = connect(port, HOST)
    s.setNoDelay(true)
    let head: Buffer | undefined
    let upgraded = false
    let waiting: (() => void) | undefined
    let failed: Error | undefined
    const timer = setTimeout(() => { s.destroy(); reject(new Error('socket.io ws connect timeout')) }, 5000)
    const client: EchoClient = {
      echo: () => new Promise<void>((resolve, reject) => {
        if (failed !== undefined) { reject(failed); return }
        const t = setTimeout(() => { waiting = undefined; reject(new Error('echo timeout')) }, 10_000)
        waiting = () => { clearTimeout(t); resolve() }
        s.write(event)
      }),
      close: () => new Promise<void>((resolve) => {
        if (s.destroyed) return resolve()
        s.once('close', () => resolve())
        s.write(maskedClose(1000))
        setTimeout(() => { s.destroy() }, 1000).unref()
      })
    }
    const reader = new FrameReader((opcode, payload) => {
      if (opcode === OPCODE_CLOSE) { failed = new Error('server closed'); return }
      if (opcode !== OPCODE_TEXT) return
      const type = payload[0]
      if (type === 0x30 /* 0 open */) {
        s.write(CONNECT)
      } else if (type === 0x32 /* 2 ping */) {
        s.write(PONG)
      } else if (type === 0x34 /* 4 message */) {
        if (payload[1] === 0x30 /* 0 connect */) { clearTimeout(timer); resolve(client) } else if (payload[1] === 0x32 /* 2 event */) { const w = waiting; waiting = undefined; w?.() }
      }
    })
    s.on('data', (chunk: Buffer) => {
      if (upgraded) { reader.push(chunk); return }
      head = head === undefined ? chunk : Buffer.concat([head, chunk])
      const h = readHead(head, req.accept)
      if (!h.done) return
      if (!h.ok) { clearTimeout(timer); s.destroy(); reject(new Error(h.reason)); return }
      upgraded = true
      if (h.rest.length > 0) reader.push(h.rest)
    })
    s.on('error', (err) => { failed = err; clearTimeout(timer); reject(err) })
    s.on('close', () => { failed ??= new Error('closed') })
    s.write(req.bytes)
  })
}
