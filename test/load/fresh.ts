/** After an attack: a fresh WebSocket client still completes the handshake and is echoed. */
import type { Test } from 'tap'
import { rawConnect, frame, Op } from '../helpers/frames.js'

export async function freshWebSocketServed (tt: Test, s: { port: number, creds: Record<string, string> }): Promise<void> {
  const { client } = await rawConnect(s.port, { headers: s.creds })
  tt.ok(client, 'a fresh WebSocket client completes the handshake')
  client!.send(frame({ opcode: Op.TEXT, payload: 'fresh' }))
  tt.equal((await client!.next(Op.TEXT)).payload.toString(), 'fresh', 'and is served')
  client!.destroy()
}
