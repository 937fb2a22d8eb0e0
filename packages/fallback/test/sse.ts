/**
 * A reader of the stream transport's server-sent events over `fetch` (undici), for tests: the
 * way the browser client reads it (a ReadableStream, never EventSource).
 */
export interface SseEvent {
  event: string
  data: any
}

export interface OpenStream {
  status: number
  headers: Headers
  /** The raw text received so far (prelude included). */
  raw: () => string
  /** The next event, or `null` once the response has ended. Rejects after `ms` without one. */
  next: (ms?: number) => Promise<SseEvent | null>
  abort: () => void
}

export async function openStream (port: number, path: string, headers: Record<string, string>): Promise<OpenStream> {
  const ac = new AbortController()
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers, signal: ac.signal })
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let buf = ''
  let all = ''
  let ended = false
  const events: SseEvent[] = []
  // one read at a time: a read that outlives a timeout is taken up by the next call, so no chunk is lost
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined
  const parse = (): void => {
    let i
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, i)
      buf = buf.slice(i + 2)
      let event = 'message'
      const data: string[] = []
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue
        if (line.startsWith('event: ')) event = line.slice(7)
        else if (line.startsWith('data: ')) data.push(line.slice(6))
      }
      if (data.length > 0) events.push({ event, data: JSON.parse(data.join('\n')) })
    }
  }
  const next = async (ms = 5000): Promise<SseEvent | null> => {
    const until = Date.now() + ms
    while (events.length === 0) {
      if (ended) return null
      let timer: NodeJS.Timeout | undefined
      pending ??= reader.read()
      const r = await Promise.race([
        pending,
        new Promise<'timeout'>((resolve) => { timer = setTimeout(resolve, Math.max(until - Date.now(), 1), 'timeout') })
      ]).catch(() => ({ done: true, value: undefined }))
      clearTimeout(timer)
      if (r === 'timeout') throw new Error('no event in time')
      pending = undefined
      if (r.done === true) {
        ended = true
        continue
      }
      const text = decoder.decode(r.value, { stream: true })
      all += text
      buf += text
      parse()
    }
    return events.shift()!
  }
  return { status: res.status, headers: res.headers, raw: () => all, next, abort: () => ac.abort() }
}
