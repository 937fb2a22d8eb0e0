/**
 * Load-generator child process: runs one job at a time, sent by bench/run.ts over IPC, against a
 * server on 127.0.0.1, and answers with the job's result (its own CPU and the server's CPU over
 * the measured window included). Exits when the parent goes away.
 */
import { Agent } from 'node:http'
import { closeAll, echoThroughput, handshakeLatency, handshakeThroughput, openMany, type Target } from './lib/ws-load.js'
import { hostileRun, malformedProtocolRequest, manyHeadersRequest, plainRequest } from './lib/hostile.js'
import { openPortcullisPolling, openPortcullisStream, openSocketIoPolling, pollEcho, type EchoClient } from './lib/poll-load.js'
import { openSocketIoWs } from './lib/sio-ws.js'

export type Job =
  | { kind: 'handshake', target: Target, concurrency: number, warmupMs: number, windowMs: number, latencyCount: number, latencyMaxMs: number }
  | { kind: 'echo', target: Target, message: string, conns: number, inFlight: number, warmupMs: number, windowMs: number }
  | { kind: 'idle', target: Target, n: number, warm: number }
  | { kind: 'poll', flavor: 'socketio-polling' | 'socketio-ws' | 'portcullis' | 'portcullis-stream' | 'node-http-floor', target: Target, message: string, clients: number, warmupMs: number, windowMs: number }
  | { kind: 'hostile', target: Target, variant: 'plain' | 'protocol' | 'headers', size: number, latencyCount: number, windowMs: number, parallel?: number }

type Msg = { type: 'job', id: number, job: Job } | { type: 'continue', id: number } | { type: 'exit' }

const continues = new Map<number, () => void>()

function step (id: number, name: string, data: Record<string, unknown> = {}): Promise<void> {
  return new Promise((resolve) => {
    continues.set(id, resolve)
    process.send?.({ type: 'step', id, step: name, ...data })
  })
}

async function run (id: number, job: Job): Promise<unknown> {
  switch (job.kind) {
    case 'handshake': {
      const throughput = await handshakeThroughput(job.target, job.concurrency, job.warmupMs, job.windowMs)
      const latency = await handshakeLatency(job.target, job.latencyCount, job.latencyMaxMs)
      return { throughput, latency }
    }
    case 'echo':
      return await echoThroughput(job.target, job.message, job.conns, job.inFlight, job.warmupMs, job.windowMs)
    case 'idle': {
      // warm the server's code paths (and ours) so the baseline is not taken on a cold heap
      await closeAll((await openMany(job.target, job.warm, 50)).map(o => o.socket))
      await step(id, 'baseline')
      const t0 = Date.now()
      const open = await openMany(job.target, job.n, 100)
      const openMs = Date.now() - t0
      for (const o of open) o.socket.on('data', () => {})
      await step(id, 'loaded', { opened: open.length })
      await closeAll(open.map(o => o.socket))
      return { opened: open.length, openMs }
    }
    case 'poll': {
      const agent = new Agent({ keepAlive: true, maxSockets: job.clients * 2 + 4 })
      try {
        const t = job.target
        const open = (): Promise<EchoClient> => job.flavor === 'socketio-polling'
          ? openSocketIoPolling(agent, t.port, job.message)
          : job.flavor === 'socketio-ws'
            ? openSocketIoWs(t.port, job.message)
            : job.flavor === 'portcullis-stream'
              ? openPortcullisStream(agent, t.port, t.path, t.headers, job.message)
              : openPortcullisPolling(agent, t.port, t.path, t.headers, job.message, job.flavor === 'node-http-floor' ? 1 : 2)
        return await pollEcho(open, t.serverPid, job.clients, job.warmupMs, job.windowMs)
      } finally {
        agent.destroy()
      }
    }
    case 'hostile': {
      const t = job.target
      const bytes = job.variant === 'plain'
        ? plainRequest(t.port)
        : job.variant === 'protocol'
          ? malformedProtocolRequest(t.port, t.path, t.headers, job.size)
          : manyHeadersRequest(t.port, t.path, t.headers, job.size)
      return { requestBytes: bytes.length, ...await hostileRun(t.port, t.serverPid, bytes, job.latencyCount, job.windowMs, job.parallel) }
    }
  }
}

process.on('message', (msg: Msg) => {
  if (msg.type === 'exit') process.exit(0)
  if (msg.type === 'continue') {
    const fn = continues.get(msg.id)
    continues.delete(msg.id)
    fn?.()
    return
  }
  run(msg.id, msg.job).then(
    (result) => process.send?.({ type: 'result', id: msg.id, result }),
    (err: Error) => process.send?.({ type: 'error', id: msg.id, message: err.stack ?? err.message })
  )
})
process.on('disconnect', () => process.exit(0))
process.send?.({ type: 'ready', pid: process.pid })
