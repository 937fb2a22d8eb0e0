/**
 * The streaming downstream, `GET <path>/_lp/stream` (PROTOCOL.md §13): one held response per
 * session writes server messages as they are queued, in server-sent-events framing (HTML
 * Living Standard §9.2.6 "Interpreting an event stream"), read by the client with `fetch` and
 * a `ReadableStream`. Frames stay queued until the client acks them (on its next stream, or a
 * v2 send), so a stream that breaks loses nothing: the next one resumes after the client's ack.
 */
import { PassThrough } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { FallbackStore, ReadResult } from './store.js'
import type { Hold, HoldReason } from './session.js'

/** `: portcullis v2` and a 2 KiB padding comment: the first bytes reach the client at once unless an intermediary buffers. */
export const STREAM_PRELUDE = `: portcullis v2\n\n: ${' '.repeat(2048)}\n\n`
/** Ends a stream the client must reopen at once (hold over, or superseded). */
export const STREAM_REOPEN = 'event: reopen\ndata: {}\n\n'

export interface StreamLimits {
  pollTimeoutMs: number
  maxMessagesPerRequest: number
  maxPollBytes: number
}

export interface StreamContext {
  store: FallbackStore
  limits: StreamLimits
  sid: string
  /** The client's ack from `X-Portcullis-Ack` (already checked against the queue by the first read). */
  ack: number
  /** The first read, done by the caller (it answers 404 / 400 before any stream starts). */
  first: ReadResult & { found: true }
  hold: Hold
  /** Unregisters the watch the caller set up before its first read (the stream re-watches after each wake). */
  unwatch: () => void
  /** False once a newer poll or stream of the session took over on this node (its watch must not be displaced by ours). */
  current: () => boolean
  /** Called once when the stream has ended, whatever the reason (frees the per-IP slot, the watch, the registries). */
  done: () => void
}

/**
 * Answer `request` with the stream. Returns once the response is handed to Fastify; the
 * writing goes on until the hold is over, the session closes, a newer request supersedes it,
 * the client goes away or the server shuts down. The returned promise settles when it has ended.
 */
export function serveStream (request: FastifyRequest, reply: FastifyReply, c: StreamContext): Promise<void> {
  const out = new PassThrough()
  reply
    .header('content-type', 'text/event-stream; charset=utf-8')
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
    // nginx buffers proxied responses unless told not to
    .header('x-accel-buffering', 'no')
  reply.send(out)
  return run(request, reply, out, c)
}

async function run (request: FastifyRequest, reply: FastifyReply, out: PassThrough, c: StreamContext): Promise<void> {
  const { store, limits, sid, hold } = c
  const onAbort = (): void => {
    hold.fire('aborted')
    // a write waiting for 'drain' hears it too
    out.destroy()
  }
  reply.raw.once('close', onAbort)
  // expiry and origin are judged again at least every pollTimeoutMs: the next stream runs the full policy
  const timer = setTimeout(hold.fire, limits.pollTimeoutMs, 'timeout')
  let unwatch: () => void = c.unwatch
  let written = c.ack
  let sentAck = -1
  const readLimits = { messages: limits.maxMessagesPerRequest, bytes: limits.maxPollBytes, after: 0 }
  try {
    out.write(STREAM_PRELUDE)
    let r: ReadResult = c.first
    for (;;) {
      // the client went away (or a newer request took over) while we read
      if (!r.found || out.destroyed) return
      let chunk = ''
      for (const f of r.frames) {
        chunk += f.type === 'text'
          ? `data: {"seq":${f.seq},"text":${JSON.stringify(f.data)}}\n\n`
          : `data: {"seq":${f.seq},"binary":"${f.data}"}\n\n`
        written = f.seq
      }
      if (r.inAck !== sentAck) {
        chunk += `event: ack\ndata: {"ack":${r.inAck}}\n\n`
        sentAck = r.inAck
      }
      if (r.close !== undefined) {
        chunk += `event: close\ndata: ${JSON.stringify({ code: r.close.code, reason: r.close.reason })}\n\n`
        out.end(chunk)
        return
      }
      if (!out.write(chunk) && await drained(out) === 'aborted') return
      // a full batch: more may be queued already, read on without waiting
      const more = r.frames.length >= limits.maxMessagesPerRequest
      if (!more) {
        const reason: HoldReason = await hold.next()
        if (reason === 'aborted') return
        if (reason === 'timeout' || reason === 'superseded') {
          out.end(STREAM_REOPEN)
          return
        }
      }
      // A newer request of the session took over while we were woken: re-watching would
      // displace its watch, so this one ends as superseded.
      if (!c.current()) {
        out.end(STREAM_REOPEN)
        return
      }
      // watch before reading: a message pushed between the read and the next wait still wakes us
      unwatch()
      unwatch = store.watch(sid, hold.fire)
      readLimits.after = written
      r = await store.readOutbound(sid, c.ack, readLimits)
    }
  } catch (err) {
    // a store failure mid-stream: end it; the client reopens and gets the store's 503 then
    request.log.warn({ err, portcullis: { code: 'PORTCULLIS_FALLBACK_STREAM_FAILED' } }, 'portcullis: fallback stream ended by a store failure')
  } finally {
    clearTimeout(timer)
    reply.raw.removeListener('close', onAbort)
    unwatch()
    if (!out.writableEnded) out.end()
    c.done()
    // Settle once the response is finished: shutdown waits for this before the server closes
    // its idle connections, so a stream's connection is not left open until keepAliveTimeout.
    await finished(reply)
  }
}

function finished (reply: FastifyReply): Promise<void> {
  const res = reply.raw
  if (res.writableFinished || res.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('finish', done)
      res.off('close', done)
      resolve()
    }
    res.once('finish', done)
    res.once('close', done)
  })
}

/** Wait until the client has taken what was written (a slow reader holds no more than the socket's buffers), or has gone. */
async function drained (out: PassThrough): Promise<'drain' | 'aborted'> {
  if (out.destroyed) return 'aborted'
  return await new Promise((resolve) => {
    const onDrain = (): void => { out.off('close', onClose); resolve('drain') }
    const onClose = (): void => { out.off('drain', onDrain); resolve('aborted') }
    out.once('drain', onDrain)
    out.once('close', onClose)
  })
}
