/**
 * The chat protocol `chat.v1` and the room. Transport-neutral: the same handler serves the
 * WebSocket route and its long-poll twin, so everything here works on a `PortcullisSocket`.
 *
 *   client → server  {"type":"say","text":"…"}                       text: 1–1000 characters
 *   server → client  {"type":"said","user":"alice","text":"…","ts":<ms>}
 *
 * Anything else closes the connection with 1008 (policy violation, RFC 6455 §7.4.1); a message
 * over 16 KiB closes it with 1009 (message too big) before it is parsed.
 */
import type { PortcullisSocket } from '@portcullis/policy'

export const PROTOCOL = 'chat.v1'
export const MAX_MESSAGE_BYTES = 16 * 1024
export const MAX_TEXT_CHARS = 1000

export interface Violation {
  code: number
  reason: string
}

/** Parse one inbound message: the text to say, or the violation to close with. */
export function parseSay (data: Buffer | string, isBinary: boolean): string | Violation {
  const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length
  if (size > MAX_MESSAGE_BYTES) return { code: 1009, reason: 'message too big' }
  if (isBinary) return { code: 1008, reason: 'chat.v1 messages are JSON text' }
  let msg: unknown
  try {
    msg = JSON.parse(String(data))
  } catch {
    return { code: 1008, reason: 'chat.v1 messages are JSON text' }
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return { code: 1008, reason: 'expected {"type":"say","text":"..."}' }
  const keys = Object.keys(msg)
  const { type, text } = msg as { type?: unknown, text?: unknown }
  if (keys.length !== 2 || type !== 'say' || typeof text !== 'string') return { code: 1008, reason: 'expected {"type":"say","text":"..."}' }
  const chars = countCodePoints(text, MAX_TEXT_CHARS + 1)
  if (chars < 1 || chars > MAX_TEXT_CHARS) return { code: 1008, reason: 'text must be 1-1000 characters' }
  return text
}

/** Unicode code points in `s`, counting at most `cap` (what a person would call characters). */
function countCodePoints (s: string, cap: number): number {
  let n = 0
  for (let i = 0; i < s.length && n < cap; i++) {
    const c = s.charCodeAt(i)
    // a high surrogate followed by a low one is one character
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) i++
    }
    n++
  }
  return n
}

/**
 * Everyone connected to this node, on either door. An accepted message goes to `fanOut` (by
 * default straight back to `broadcast`; with several nodes, through Redis to every node's room).
 */
export class Room {
  readonly #members = new Set<PortcullisSocket>()
  readonly #fanOut: (text: string) => void

  constructor (fanOut?: (text: string) => void) {
    this.#fanOut = fanOut ?? ((text) => this.broadcast(text))
  }

  get size (): number {
    return this.#members.size
  }

  join (socket: PortcullisSocket, user: string): void {
    this.#members.add(socket)
    socket.on('message', (data: Buffer | string, isBinary: boolean) => {
      const said = parseSay(data, isBinary)
      if (typeof said !== 'string') {
        socket.close(said.code, said.reason)
        return
      }
      this.#fanOut(JSON.stringify({ type: 'said', user, text: said, ts: Date.now() }))
    })
    socket.on('close', () => this.#members.delete(socket))
  }

  broadcast (text: string): void {
    for (const member of this.#members) {
      if (member.readyState === 1) member.send(text)
    }
  }
}
