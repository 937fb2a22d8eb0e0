/**
 * One probe run's state: the target, the request budget and rate, the baseline credentials,
 * and helpers that build handshakes and fallback requests from them. Every connection the
 * probe opens goes through `take()`, so the bounds hold whatever the checks do.
 */
import { randomBytes } from 'node:crypto'
import { acceptFor, Connection, exchange, head, header, newKey, type HeaderLines, type HttpAnswer, type Target } from './wire.js'

export const USER_AGENT = 'portcullis-probe/0.1'

/** The request budget is spent: the remaining checks are skipped, never squeezed in. */
export class BudgetSpent extends Error {}

/** A check cannot run here (the reason becomes its `skip` detail). */
export class Skip extends Error {}

/** At most `max` connections, at least `1000 / rate` ms apart. */
export class Budget {
  readonly max: number
  readonly rate: number
  used = 0
  #next = 0

  constructor (max: number, rate: number) {
    this.max = max
    this.rate = rate
  }

  async take (): Promise<void> {
    if (this.used >= this.max) throw new BudgetSpent(`request budget of ${this.max} spent`)
    this.used++
    const now = Date.now()
    const at = Math.max(now, this.#next)
    this.#next = at + 1000 / this.rate
    if (at > now) await new Promise((resolve) => setTimeout(resolve, at - now))
  }
}

export interface UpgradeSpec {
  method?: string
  /** Request target. Default: the route's path. */
  path?: string
  httpVersion?: string
  /** `undefined`: the given origin; `null`: no Origin line; an array: one line each. */
  origin?: string | string[] | null
  /** `undefined`: the given cookie (if any); `null`: no Cookie line. */
  cookie?: string | null
  /** `undefined`: the given protocol (if any); `null`: no Sec-WebSocket-Protocol line. */
  protocol?: string | string[] | null
  key?: string | string[] | null
  version?: string | string[] | null
  /** `undefined`: the target's host; `null`: no Host line. */
  host?: string | null
}

export interface Upgrade {
  answer: HttpAnswer
  /** The open connection, when the server answered 101. */
  conn?: Connection
  /** The subprotocol the server selected (101 only). */
  selected?: string
  /** `Sec-WebSocket-Accept` matched the key (101 only). */
  acceptOk?: boolean
}

export interface LpSpec {
  method?: string
  /** Appended to the endpoint path as is (e.g. `?callback=x`). */
  query?: string
  origin?: string | null
  cookie?: string | null
  /** Send `X-Portcullis-Fallback: 1`. Default true. */
  marker?: boolean
  /** `undefined`: `application/json` on POST; `null`: none. */
  contentType?: string | null
  /** `undefined`: the run's live sid on poll/send/close; `null`: none. */
  sid?: string | null
  body?: string
}

export interface LpAnswer extends HttpAnswer {
  json?: any
}

export interface ContextInit {
  target: Target
  /** The URL shown in reports. */
  shown: string
  origin: string
  cookie?: string
  protocol?: string
  timeoutMs: number
  budget: Budget
}

export class Context {
  readonly target: Target
  readonly shown: string
  readonly origin: string
  readonly cookie: string | undefined
  readonly protocol: string | undefined
  readonly timeoutMs: number
  readonly budget: Budget
  /** Set by `session.no-cookie` on each door: does the route refuse a request without the cookie? */
  needsCookie: { websocket?: boolean, 'long-poll'?: boolean } = {}
  /** The long-poll door, once its baseline `open` succeeded. */
  lp: { sid: string, base: string } | undefined
  /** Why the long-poll door could not be probed (a skip reason for its checks). */
  lpUnavailable = 'not probed (pass --fallback)'
  /** The baseline long-poll open succeeded at some point of the run. */
  lpOpened = false
  /** Every long-poll answer, with the Origin it was asked with (CORS is checked over all of them). */
  readonly lpSeen: Array<{ origin: string | null, answer: LpAnswer }> = []
  /** Session ids the run opened on the long-poll door (closed at the end; always redacted). */
  readonly sids = new Set<string>()
  readonly #secrets: string[] = []

  constructor (init: ContextInit) {
    this.target = init.target
    this.shown = init.shown
    this.origin = init.origin
    this.cookie = init.cookie
    this.protocol = init.protocol
    this.timeoutMs = init.timeoutMs
    this.budget = init.budget
    if (init.cookie !== undefined) {
      this.secret(init.cookie)
      for (const [name, value] of cookiePairs(init.cookie)) { this.secret(value); this.secret(`${name}=${value}`) }
    }
  }

  /** Remember a value that must never reach a report. */
  secret (value: string): void {
    if (value.length >= 3 && !this.#secrets.includes(value)) {
      this.#secrets.push(value)
      this.#secrets.sort((a, b) => b.length - a.length)
    }
  }

  /** Replace every secret (and its URL-encoded form) with `[redacted]`. */
  redact (text: string): string {
    let out = text
    for (const s of this.#secrets) {
      for (const form of [s, encodeURIComponent(s)]) out = out.split(form).join('[redacted]')
    }
    return out
  }

  async upgrade (spec: UpgradeSpec = {}): Promise<Upgrade> {
    const lines: HeaderLines = []
    const add = (name: string, v: string | string[] | null | undefined): void => {
      if (v === null || v === undefined) return
      for (const one of Array.isArray(v) ? v : [v]) lines.push([name, one])
    }
    const key = spec.key === undefined ? newKey() : spec.key
    add('Host', spec.host === undefined ? this.target.host : spec.host)
    add('User-Agent', USER_AGENT)
    add('Upgrade', 'websocket')
    add('Connection', 'Upgrade')
    add('Sec-WebSocket-Key', key)
    add('Sec-WebSocket-Version', spec.version === undefined ? '13' : spec.version)
    add('Origin', spec.origin === undefined ? this.origin : spec.origin)
    add('Cookie', spec.cookie === undefined ? this.cookie : spec.cookie)
    add('Sec-WebSocket-Protocol', spec.protocol === undefined ? this.protocol : spec.protocol)
    if (spec.method !== undefined && spec.method !== 'GET') add('Content-Length', '0')
    await this.budget.take()
    const answer = await exchange(this.target, head(spec.method ?? 'GET', spec.path ?? this.target.path, spec.httpVersion ?? '1.1', lines), this.timeoutMs)
    const out: Upgrade = { answer }
    if (answer.upgraded !== undefined) {
      out.conn = new Connection(answer.upgraded.socket, answer.upgraded.rest)
      out.selected = header(answer, 'sec-websocket-protocol')
      out.acceptOk = typeof key === 'string' && header(answer, 'sec-websocket-accept') === acceptFor(key)
    }
    return out
  }

  /** The well-formed handshake; a check that needs an open connection starts here. */
  async openConnection (): Promise<Connection> {
    const up = await this.upgrade()
    if (up.conn === undefined) throw new Skip(`the baseline handshake was refused this time (${describe(up.answer)})`)
    return up.conn
  }

  /** One request to the long-poll door: `<path>/_lp/<endpoint>`. */
  async lpRequest (endpoint: 'open' | 'poll' | 'send' | 'close', spec: LpSpec = {}, base?: string): Promise<LpAnswer> {
    const method = spec.method ?? (endpoint === 'poll' ? 'GET' : 'POST')
    const lines: HeaderLines = [['Host', this.target.host], ['User-Agent', USER_AGENT], ['Connection', 'close']]
    const origin = spec.origin === undefined ? this.origin : spec.origin
    if (origin !== null) lines.push(['Origin', origin])
    const cookie = spec.cookie === undefined ? this.cookie : spec.cookie
    if (cookie !== undefined && cookie !== null) lines.push(['Cookie', cookie])
    if (spec.marker !== false) lines.push(['X-Portcullis-Fallback', '1'])
    const sid = spec.sid === undefined ? (endpoint === 'open' ? null : this.lp?.sid ?? null) : spec.sid
    if (sid !== null) lines.push(['X-Portcullis-Sid', sid])
    if (endpoint !== 'open' && this.protocol !== undefined) lines.push(['X-Portcullis-Protocol', this.protocol])
    const body = spec.body === undefined ? undefined : Buffer.from(spec.body)
    if (method === 'POST') {
      const ct = spec.contentType === undefined ? 'application/json' : spec.contentType
      if (ct !== null) lines.push(['Content-Type', ct])
      lines.push(['Content-Length', String(body?.length ?? 0)])
    }
    await this.budget.take()
    const path = (base ?? this.lpBase()) + endpoint + (spec.query ?? '')
    const request = body === undefined ? head(method, path, '1.1', lines) : Buffer.concat([head(method, path, '1.1', lines), body])
    const answer: LpAnswer = await exchange(this.target, request, this.timeoutMs)
    try { answer.json = JSON.parse(answer.body.toString('utf8')) } catch {}
    if (answer.upgraded !== undefined) answer.upgraded.socket.destroy()
    this.lpSeen.push({ origin, answer })
    return answer
  }

  lpBase (): string {
    return this.target.path.split('?')[0].replace(/\/+$/, '') + '/_lp/'
  }

  /** Open a long-poll session with these variations; a created session is remembered and closed. */
  async lpOpen (spec: LpSpec = {}, protocols = this.protocol === undefined ? [] : [this.protocol]): Promise<LpAnswer> {
    const answer = await this.lpRequest('open', { body: JSON.stringify({ protocols }), ...spec })
    const sid = answer.json?.sid
    if (answer.status === 200 && typeof sid === 'string') {
      this.sids.add(sid)
      this.secret(sid)
    }
    return answer
  }
}

/** `name=value` pairs of a Cookie header (RFC 6265 §4.2.1), in order. */
export function cookiePairs (cookie: string): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const part of cookie.split(';')) {
    const p = part.trim()
    if (p === '') continue
    const eq = p.indexOf('=')
    out.push(eq === -1 ? ['', p] : [p.slice(0, eq), p.slice(eq + 1)])
  }
  return out
}

export function joinCookies (pairs: Array<[string, string]>): string {
  return pairs.map(([n, v]) => n === '' ? v : `${n}=${v}`).join('; ')
}

/** The same value with one character changed near its end, in the same character class. */
export function tamper (value: string): string {
  for (let i = Math.floor(value.length * 0.7); i >= 0; i--) {
    const c = value[i]
    let r: string | undefined
    if (/[a-y]/.test(c) || /[A-Y]/.test(c) || /[0-8]/.test(c)) r = String.fromCharCode(c.charCodeAt(0) + 1)
    else if (c === 'z') r = 'a'
    else if (c === 'Z') r = 'A'
    else if (c === '9') r = '0'
    if (r !== undefined) return value.slice(0, i) + r + value.slice(i + 1)
  }
  return value + 'x'
}

/** A random value of the same length, from the characters of base64url. */
export function forge (value: string): string {
  return randomBytes(Math.max(8, value.length)).toString('base64url').slice(0, Math.max(8, value.length))
}

/** `403 PORTCULLIS_ORIGIN_NOT_ALLOWED`: the status and, when the body names one, a stable code. */
export function describe (answer: HttpAnswer): string {
  if (answer.status === 101) return '101'
  let code: unknown
  try { code = JSON.parse(answer.body.toString('utf8'))?.code } catch {}
  // only a short token is shown: a body could echo what the probe sent
  const shown = typeof code === 'string' && /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/.test(code) ? ` ${code}` : ''
  return `${answer.status === 0 ? 'an unparsable answer' : answer.status}${shown}`
}
