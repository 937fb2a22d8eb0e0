/**
 * A server-sent-events parser (HTML Living Standard §9.2.6, "Interpreting an event stream") for the
 * fallback's `stream` endpoint, which the client reads with `fetch` and a `ReadableStream`: the
 * browser's `EventSource` cannot send the marker header (PROTOCOL.md, v2).
 *
 * Fed decoded text in chunks of any size; lines end with CRLF, LF or CR (a CR that ends a chunk
 * ends its line at once, and an LF opening the next chunk is its pair). Comment lines (`:`) are skipped; `event`
 * and `data` fields build an event, dispatched at a blank line; `id` and `retry` are not used by the
 * protocol and are ignored, as are unknown fields.
 */
export type SseListener = (type: string, data: string) => void

export interface SseParser {
  push: (text: string) => void
}

export function sseParser (onEvent: SseListener): SseParser {
  let buffer = ''
  let type = ''
  let data: string[] = []
  let skipLf = false

  function line (l: string): void {
    if (l === '') {
      // dispatch: an event without data is no event (§9.2.6 step "dispatch the event")
      if (data.length > 0) onEvent(type === '' ? 'message' : type, data.join('\n'))
      type = ''
      data = []
      return
    }
    if (l.charCodeAt(0) === 0x3a /* : */) return
    const colon = l.indexOf(':')
    const field = colon === -1 ? l : l.slice(0, colon)
    let value = colon === -1 ? '' : l.slice(colon + 1)
    if (value.charCodeAt(0) === 0x20) value = value.slice(1)
    if (field === 'event') type = value
    else if (field === 'data') data.push(value)
  }

  return {
    push (text) {
      // a CR ended the last chunk: an LF opening this one belongs to it
      if (skipLf && text.charCodeAt(0) === 0x0a) text = text.slice(1)
      skipLf = false
      buffer += text
      let start = 0
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer.charCodeAt(i)
        if (c !== 0x0a && c !== 0x0d) continue
        line(buffer.slice(start, i))
        if (c === 0x0d) {
          if (i + 1 === buffer.length) skipLf = true
          else if (buffer.charCodeAt(i + 1) === 0x0a) i++
        }
        start = i + 1
      }
      buffer = buffer.slice(start)
    }
  }
}
