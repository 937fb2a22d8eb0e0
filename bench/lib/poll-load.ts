/**
 * Lean long-poll load: keep-alive HTTP (`node:http` Agent with keepAlive, so no request opens a
 * TCP connection after the first) and a minimal engine.io v4 polling client — just enough of the
 * protocol to open a session, join the default namespace, echo events and answer pings.
 *
 * Engine.IO v4 polling, as used here: `GET ?EIO=4&transport=polling` answers `0{"sid":…}`;
 * later GETs (one outstanding at a time) return packets joined by the record separator 0x1e;
 * POSTs carry packets and answer `ok`. Packet types: 1 close, 2 ping, 3 pong, 4 message,
 * 6 noop. Socket.IO v5 rides inside message packets: `40` connects the main namespace,
 * `42["event",data]` is an event.
 */
import { Agent, request, type ClientRequest } from 'node:http'
import { startWindow, type WindowResult } from './cpu.js'
import { latencySummary } from './stats.js'
import { sleep } from './ws-load.js'

const HOST = '127.0.0.1'
const RS = '\x1e'
const REQUEST_TIMEOUT_MS = 35_000
const ECHO_TIMEOUT_MS = 10_000

export interface HttpResult {
  status: number
  body: string
  headers: Record<string, string | string[] | undefined>
}

/** One HTTP exchange on the keep-alive agent; rejects on network error or timeout. */
export function http (agent: Agent, port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const h: Record<string, string | number> = { ...headers }
    if (body !== undefined) h['content-length'] = Buffer.byteLength(body)
    const req = request({ host: HOST, port, method, path, agent, headers: h, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }))
      res.on('error', reject)
    })
    req.setNoDelay(true)
    req.on('timeout', () => req.destroy(new Error('request timeout')))
    req.on('error', reject)
    req.end(body)
  })
}

export interface EchoClient {
  /** Send one echo request; resolves when its echo came back. */
  echo: () => Promise<void>
  close: () => Promise<void>
}

export interface PollEchoResult extends WindowResult {
  rate: number
  ops: number
  p50: number
  p99: number
  errors: number
  lastError?: string
}

/**
 * `clients` clients, each with one echo in flight at a time, for a warm-up and a window. RTT
 * percentiles come from the window's echoes (one in flight per client: little queueing).
 */
export async function pollEcho (open: () => Promise<EchoClient>, serverPid: number, clients: number, warmupMs: number, windowMs: number): Promise<PollEchoResult> {
  const list: EchoClient[] = []
  for (let i = 0; i < clients; i += 10) {
    list.push(...await Promise.all(Array.from({ length: Math.min(10, clients - i) }, open)))
  }
  let measuring = false
  const ctl = { stop: false }
  let ops = 0
  let errors = 0
  let lastError: string | undefined
  const rtts: number[] = []
  const loop = async (c: EchoClient): Promise<void> => {
    while (!ctl.stop) {
      const t0 = process.hrtime.bigint()
      try {
        await c.echo()
      } catch (err) {
        errors++
        lastError = (err as Error).message
        await sleep(50)
        continue
      }
      if (measuring && !ctl.stop) {
        ops++
        rtts.push(Number(process.hrtime.bigint() - t0) / 1e6)
      }
    }
  }
  const loops = list.map(loop)
  await sleep(warmupMs)
  measuring = true
  const baseErrors = errors
  const win = startWindow(serverPid)
  await sleep(windowMs)
  const r = win.end()
  const n = ops
  ctl.stop = true
  await Promise.race([Promise.all(loops), sleep(REQUEST_TIMEOUT_MS)])
  await Promise.race([Promise.all(list.map(c => c.close().catch(() => {}))), sleep(5000)])
  const s = latencySummary(rtts)
  return { ...r, ops: n, rate: n / r.seconds, p50: s.p50, p99: s.p99, errors: errors - baseErrors, lastError }
}

/**
 * A lean engine.io v4 polling client for a socket.io server: opens a session, connects the main
 * namespace, keeps one GET outstanding, and answers pings. `echo()` emits `echo` with the
 * message and waits for the server's `echo` event.
 */
export async function openSocketIoPolling (agent: Agent, port: number, message: string): Promise<EchoClient> {
  const base = '/socket.io/?EIO=4&transport=polling'
  const open = await http(agent, port, 'GET', base)
  if (open.status !== 200 || open.body[0] !== '0') throw new Error(`engine.io open failed: ${open.status} ${open.body.slice(0, 80)}`)
  const sid = (JSON.parse(open.body.slice(1)) as { sid: string }).sid
  const path = `${base}&sid=${encodeURIComponent(sid)}`
  const post = async (payload: string): Promise<void> => {
    const r = await http(agent, port, 'POST', path, payload, { 'content-type': 'text/plain;charset=UTF-8' })
    if (r.status !== 200) throw new Error(`engine.io POST ${r.status} ${r.body.slice(0, 80)}`)
  }
  const event = `42${JSON.stringify(['echo', JSON.parse(message)])}`
  let waiting: (() => void) | undefined
  let connected: (() => void) | undefined
  const isConnected = new Promise<void>((resolve) => { connected = resolve })
  let closed = false
  let pollError: Error | undefined
  const poll = async (): Promise<void> => {
    while (!closed) {
      let r: HttpResult
      try {
        r = await http(agent, port, 'GET', path)
      } catch (err) {
        pollError = err as Error
        return
      }
      if (r.status !== 200) { pollError = new Error(`engine.io GET ${r.status}`); return }
      for (const packet of r.body.split(RS)) {
        const type = packet.charCodeAt(0)
        if (type === 0x34 /* 4 message */) {
          if (packet.charCodeAt(1) === 0x30 /* 0 connect */) connected?.()
          else if (packet.charCodeAt(1) === 0x32 /* 2 event */) { const w = waiting; waiting = undefined; w?.() }
        } else if (type === 0x32 /* 2 ping */) {
          post('3').catch(() => {})
        } else if (type === 0x31 /* 1 close */) {
          closed = true
        }
      }
    }
  }
  await post('40')
  poll().catch(() => {})
  await Promise.race([isConnected, sleep(5000).then(() => { throw new Error('socket.io connect timeout') })])
  return {
    echo: () => new Promise<void>((resolve, reject) => {
      if (pollError !== undefined || closed) { reject(pollError ?? new Error('closed')); return }
      const timer = setTimeout(() => { waiting = undefined; reject(new Error('echo timeout')) }, ECHO_TIMEOUT_MS)
      waiting = () => { clearTimeout(timer); resolve() }
      post(event).catch(reject)
    }),
    close: async () => {
      closed = true
      await post('1').catch(() => {})
    }
  }
}

/**
 * A lean client of the Portcullis long-poll fallback (packages/fallback/PROTOCOL.md): opens a
 * session with the reference cookie, origin and subprotocol, keeps one poll in flight (acking
 * what it received), and sends one message per `echo()`. `version: 2` (the default) offers
 * `versions: [2, 1]`: the send carries the client's ack and its answer carries the reply, so an
 * echo is one HTTP exchange (the held poll is not woken for it). `version: 1` is the two-exchange
 * protocol (the reply comes by the poll), which the node:http floor also speaks.
 */
export async function openPortcullisPolling (agent: Agent, port: number, route: string, headers: Array<[string, string]>, message: string, version: 1 | 2 = 2): Promise<EchoClient> {
  const s = await openSession(agent, port, route, headers, version)
  const { common, jsonSid } = s
  const withSid = { ...common, 'x-portcullis-sid': s.sid }
  const sendBody = (seq: number): string => `{"seq":${seq},"messages":[{"text":${JSON.stringify(message)}}]}`
  let lastIn = 0
  let nextOut = 1
  let waiting: (() => void) | undefined
  let closed = false
  let pollError: Error | undefined
  const take = (list: Array<{ seq: number }> | undefined): void => {
    let fresh = 0
    for (const m of list ?? []) {
      if (m.seq > lastIn) { lastIn = m.seq; fresh++ }
    }
    if (fresh > 0) { const w = waiting; waiting = undefined; w?.() }
  }
  const poll = async (): Promise<void> => {
    while (!closed) {
      let r: HttpResult
      try {
        r = await http(agent, port, 'GET', `${route}/_lp/poll`, undefined, { ...withSid, 'x-portcullis-ack': String(lastIn) })
      } catch (err) {
        pollError = err as Error
        return
      }
      if (r.status !== 200) { pollError = new Error(`fallback poll ${r.status} ${r.body.slice(0, 120)}`); return }
      const answer = JSON.parse(r.body) as { messages: Array<{ seq: number }>, close?: { code: number } }
      take(answer.messages)
      if (answer.close !== undefined) { closed = true; pollError = new Error(`fallback closed ${answer.close.code}`) }
    }
  }
  poll().catch(() => {})
  return {
    echo: () => new Promise<void>((resolve, reject) => {
      if (pollError !== undefined || closed) { reject(pollError ?? new Error('closed')); return }
      const timer = setTimeout(() => { waiting = undefined; reject(new Error('echo timeout')) }, ECHO_TIMEOUT_MS)
      waiting = () => { clearTimeout(timer); resolve() }
      const seq = nextOut++
      const h = version === 2 ? { ...jsonSid, 'x-portcullis-ack': String(lastIn) } : jsonSid
      http(agent, port, 'POST', `${route}/_lp/send`, sendBody(seq), h).then((r) => {
        if (r.status !== 200) return reject(new Error(`fallback send ${r.status} ${r.body.slice(0, 120)}`))
        // v2: the reply rides the send answer
        if (version === 2) take((JSON.parse(r.body) as { messages?: Array<{ seq: number }> }).messages)
      }, reject)
    }),
    close: async () => {
      closed = true
      await http(agent, port, 'POST', `${route}/_lp/close`, '{"code":1000}', jsonSid).catch(() => {})
    }
  }
}

interface Session {
  sid: string
  common: Record<string, string>
  jsonSid: Record<string, string>
}

async function openSession (agent: Agent, port: number, route: string, headers: Array<[string, string]>, version: 1 | 2): Promise<Session> {
  const common: Record<string, string> = { 'x-portcullis-fallback': '1' }
  let protocols: string[] = []
  for (const [name, value] of headers) {
    if (name.toLowerCase() === 'sec-websocket-protocol') protocols = value.split(',').map(p => p.trim())
    else common[name.toLowerCase()] = value
  }
  const json = { ...common, 'content-type': 'application/json' }
  const body = version === 2 ? { protocols, versions: [2, 1] } : { protocols }
  const open = await http(agent, port, 'POST', `${route}/_lp/open`, JSON.stringify(body), json)
  if (open.status !== 200) throw new Error(`fallback open failed: ${open.status} ${open.body.slice(0, 120)}`)
  const opened = JSON.parse(open.body) as { sid: string, protocol: string, v?: number }
  if ((opened.v ?? 1) !== version) throw new Error(`fallback open answered v${opened.v ?? 1}, wanted v${version}`)
  // later requests repeat the negotiated protocol, so the policy negotiates the same one (§2)
  if (opened.protocol !== undefined && opened.protocol !== '') common['x-portcullis-protocol'] = opened.protocol
  return { sid: opened.sid, common, jsonSid: { ...common, 'content-type': 'application/json', 'x-portcullis-sid': opened.sid } }
}

/**
 * A lean client of the Portcullis `stream` transport (wire v2): one held `GET _lp/stream` read as
 * server-sent events (only `data:` lines with a seq and `event: reopen` matter here; the stream is
 * re-opened after each reopen or drop with the latest ack), and one send per `echo()`, whose ack
 * header acks what the stream delivered (so no ack-only sends are needed while echoing).
 */
export async function openPortcullisStream (agent: Agent, port: number, route: string, headers: Array<[string, string]>, message: string): Promise<EchoClient> {
  const s = await openSession(agent, port, route, headers, 2)
  const { common, jsonSid } = s
  const streamHeaders = { ...common, 'x-portcullis-sid': s.sid }
  const sendBody = (seq: number): string => `{"seq":${seq},"messages":[{"text":${JSON.stringify(message)}}]}`
  let lastIn = 0
  let nextOut = 1
  let waiting: (() => void) | undefined
  let closed = false
  let streamError: Error | undefined
  let current: ClientRequest | undefined
  const take = (seq: number): void => {
    if (seq <= lastIn) return
    lastIn = seq
    const w = waiting
    waiting = undefined
    w?.()
  }
  const openStream = (): Promise<void> => new Promise((resolve) => {
    let rest = ''
    const req = request({ host: HOST, port, method: 'GET', path: `${route}/_lp/stream`, agent, headers: { ...streamHeaders, 'x-portcullis-ack': String(lastIn) } }, (res) => {
      if (res.statusCode !== 200) { streamError = new Error(`fallback stream ${res.statusCode ?? 0}`); res.resume(); resolve(); return }
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        rest += chunk
        let end = rest.indexOf('\n\n')
        while (end !== -1) {
          const ev = rest.slice(0, end)
          rest = rest.slice(end + 2)
          end = rest.indexOf('\n\n')
          if (ev.startsWith('data: {"seq":')) take(parseInt(ev.slice(13), 10))
          else if (ev.startsWith('event: close')) { closed = true; streamError = new Error('fallback closed') }
        }
      })
      res.on('end', resolve)
      res.on('error', () => resolve())
    })
    current = req
    req.setNoDelay(true)
    req.on('error', () => resolve())
    req.end()
  })
  const loop = async (): Promise<void> => {
    // read through a call: both change while the stream is read
    const over = (): boolean => closed || streamError !== undefined
    while (!over()) await openStream()
  }
  loop().catch(() => {})
  return {
    echo: () => new Promise<void>((resolve, reject) => {
      if (streamError !== undefined || closed) { reject(streamError ?? new Error('closed')); return }
      const timer = setTimeout(() => { waiting = undefined; reject(new Error('echo timeout')) }, ECHO_TIMEOUT_MS)
      waiting = () => { clearTimeout(timer); resolve() }
      const seq = nextOut++
      http(agent, port, 'POST', `${route}/_lp/send`, sendBody(seq), { ...jsonSid, 'x-portcullis-ack': String(lastIn) }).then((r) => {
        if (r.status !== 200) return reject(new Error(`fallback send ${r.status} ${r.body.slice(0, 120)}`))
        // a reply the stream did not carry (none when a stream is held on this node) rides the answer
        for (const m of (JSON.parse(r.body) as { messages?: Array<{ seq: number }> }).messages ?? []) take(m.seq)
      }, reject)
    }),
    close: async () => {
      closed = true
      await http(agent, port, 'POST', `${route}/_lp/close`, '{"code":1000}', jsonSid).catch(() => {})
      current?.destroy()
    }
  }
}
