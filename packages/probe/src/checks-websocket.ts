/**
 * Checks on the WebSocket door: each writes one upgrade request (and, once accepted, frames)
 * on its own raw connection. A check that expects a refusal passes on any answer but a 101.
 */
import { randomBytes } from 'node:crypto'
import { fail, pass, skip, type CheckDef, type Verdict } from './check.js'
import { cookiePairs, describe, forge, joinCookies, Skip, tamper, type Context, type UpgradeSpec } from './context.js'
import { closePayload, delay, frame, Op, WireError, type Connection } from './wire.js'
import type { Category } from './types.js'

/** The lookalikes of the given origin (RFC 6454 §6.2 serialization: scheme "://" host [":" port]). */
export function lookalikes (origin: string): Record<string, string> {
  const u = new URL(origin)
  const scheme = u.protocol.slice(0, -1)
  const host = u.hostname
  const port = u.port === '' ? '' : ':' + u.port
  return {
    allowed: origin,
    crossSite: 'https://portcullis-probe.invalid',
    suffix: `${scheme}://evil-${host}${port}`,
    prefix: `${origin}.portcullis-probe.invalid`,
    userinfo: `${scheme}://${host}${port}@portcullis-probe.invalid`,
    list: `${origin} https://portcullis-probe.invalid`,
    trailingDot: `${scheme}://${host}.${port}`,
    scheme: `${scheme === 'https' ? 'http' : 'https'}://${host}${port}`,
    port: `${scheme}://${host}:${u.port === '8443' ? '8444' : '8443'}`,
    upper: `${scheme.toUpperCase()}://${host.toUpperCase()}${port}`
  }
}

/** Send a handshake that must be refused; a 101 is the finding. */
async function refused (ctx: Context, spec: UpgradeSpec, what: string): Promise<Verdict> {
  let up
  try {
    up = await ctx.upgrade(spec)
  } catch (err) {
    if (err instanceof WireError) return pass(`${what}: not upgraded (${err.message})`)
    throw err
  }
  if (up.conn !== undefined) {
    await up.conn.close()
    return fail(`${what}: accepted with 101${up.selected !== undefined ? ` (protocol ${up.selected})` : ''}`)
  }
  busy(up.answer.status, what)
  return pass(`${what}: refused with ${describe(up.answer)}`)
}

/** A 429 or 503 refuses everything alike: it says nothing about the check. */
export function busy (status: number, what: string): void {
  if (status === 429 || status === 503) throw new Skip(`${what}: answered ${status} (rate limit or overload), which proves nothing; try a lower --rate`)
}

function originCheck (id: string, value: (o: Record<string, string>) => string | string[] | null, what: (v: string) => string, remedy: string): CheckDef {
  return {
    id,
    category: 'origin',
    door: 'websocket',
    remedy,
    run: async (ctx) => {
      const v = value(lookalikes(ctx.origin))
      return await refused(ctx, { origin: v }, what(Array.isArray(v) ? v.join(' + ') : String(v)))
    }
  }
}

const EXACT = 'compare the whole serialized Origin (RFC 6454 §6.2) exactly against an allowlist: no substring, prefix, suffix or regex match'

const originChecks: CheckDef[] = [
  originCheck('origin.cross-site', (o) => o.crossSite, (v) => `a cross-site Origin ${v} with the cookie`,
    'check Origin on every upgrade (CORS does not apply to WebSocket): refuse origins not on your allowlist with 403'),
  originCheck('origin.suffix', (o) => o.suffix, (v) => `suffix lookalike ${v}`, EXACT),
  originCheck('origin.prefix', (o) => o.prefix, (v) => `prefix lookalike ${v}`, EXACT),
  originCheck('origin.userinfo', (o) => o.userinfo, (v) => `user-info lookalike ${v}`, EXACT + '; an origin never carries user info'),
  originCheck('origin.list', (o) => o.list, (v) => `an origin list "${v}"`, 'accept exactly one serialized origin in the header; a list is never a match'),
  originCheck('origin.trailing-dot', (o) => o.trailingDot, (v) => `trailing-dot host ${v}`, 'do not normalize hosts before comparing: a trailing dot is a different origin string'),
  originCheck('origin.null', () => 'null', () => 'Origin: null', 'never allow the "null" origin: sandboxed iframes and data: pages send it'),
  originCheck('origin.missing', () => null, () => 'no Origin, with the cookie', 'refuse upgrades without Origin; a route that serves non-browser clients should authenticate them without cookies'),
  originCheck('origin.scheme', (o) => o.scheme, (v) => `other scheme ${v}`, 'compare the scheme too: http and https pages are different origins'),
  originCheck('origin.port', (o) => o.port, (v) => `other port ${v}`, 'compare the port too: another port is another origin (and often another app)'),
  originCheck('origin.case', (o) => o.upper, (v) => `upper-case ${v}`, 'browsers send origins in lower case: refuse, do not case-fold, anything else'),
  originCheck('origin.duplicate', (o) => [o.crossSite, o.allowed], (v) => `two Origin lines ${v}`, 'refuse a request with more than one Origin line (a joined value or the last line can hide a foreign origin)')
]

function needsCookie (ctx: Context): void {
  if (ctx.cookie === undefined) throw new Skip('no --cookie given')
  const needs = ctx.needsCookie.websocket
  if (needs === undefined) throw new Skip('session.no-cookie could not tell whether the route needs a cookie')
  if (!needs) throw new Skip('the route accepts the handshake without the cookie, so it does not need one')
}

function sessionCheck (id: string, cookie: (c: string) => string, what: string, remedy: string): CheckDef {
  return {
    id,
    category: 'session',
    door: 'websocket',
    remedy,
    run: async (ctx) => {
      needsCookie(ctx)
      const c = cookie(ctx.cookie as string)
      for (const [, v] of cookiePairs(c)) ctx.secret(v)
      return await refused(ctx, { cookie: c }, what)
    }
  }
}

const tampered = (c: string): string => joinCookies(cookiePairs(c).map(([n, v]) => [n, tamper(v)]))

const sessionChecks: CheckDef[] = [
  {
    id: 'session.no-cookie',
    category: 'session',
    door: 'websocket',
    remedy: 'require an authenticated session at the handshake (401 before the 101)',
    run: async (ctx) => {
      if (ctx.cookie === undefined) return skip('no --cookie given')
      const v = await refused(ctx, { cookie: null }, 'the handshake without the cookie')
      ctx.needsCookie.websocket = v.result === 'pass'
      if (v.result === 'fail') return skip('the route accepts the handshake without the cookie, so it does not need one')
      return v
    }
  },
  sessionCheck('session.tampered', tampered, 'the cookie with one character changed',
    'verify the cookie\'s signature (or look the session up) at the handshake, not only that a cookie is present'),
  sessionCheck('session.forged', (c) => joinCookies(cookiePairs(c).map(([n, v]) => [n, forge(v)])), 'a random cookie value of the same shape',
    'look the session up server-side or verify its signature; never trust a cookie\'s shape'),
  sessionCheck('session.tossed-first', (c) => `${tampered(c)}; ${c}`, 'a tossed cookie of the same name before the real one',
    'refuse a Cookie header that names the session cookie twice (cookie tossing from a sibling domain); use a __Host- cookie'),
  sessionCheck('session.tossed-last', (c) => `${c}; ${tampered(c)}`, 'a second cookie of the same name after the real one',
    'refuse a Cookie header that names the session cookie twice (first-wins and last-wins readers disagree); use a __Host- cookie')
]

const UNREGISTERED = 'portcullis-probe.unregistered'

function protocolCheck (id: string, header: (p: string) => string, what: string, remedy: string): CheckDef {
  return {
    id,
    category: 'subprotocol',
    door: 'websocket',
    remedy,
    run: async (ctx) => {
      if (ctx.protocol === undefined) return skip('no --protocol given')
      return await refused(ctx, { protocol: header(ctx.protocol) }, what)
    }
  }
}

const subprotocolChecks: CheckDef[] = [
  {
    id: 'subprotocol.unregistered',
    category: 'subprotocol',
    door: 'websocket',
    remedy: 'select only subprotocols the server implements (RFC 6455 §4.2.2); never echo the offer',
    run: async (ctx) => {
      const up = await ctx.upgrade({ protocol: UNREGISTERED })
      if (up.conn === undefined) {
        busy(up.answer.status, `offer ${UNREGISTERED}`)
        return pass(`offer ${UNREGISTERED}: refused with ${describe(up.answer)}`)
      }
      await up.conn.close()
      if (up.selected === undefined) return pass(`offer ${UNREGISTERED}: accepted without selecting a subprotocol`)
      return fail(`offer ${UNREGISTERED}: the server selected "${up.selected}"`)
    }
  },
  {
    id: 'subprotocol.preference',
    category: 'subprotocol',
    door: 'websocket',
    remedy: 'pick from the server\'s own list in the server\'s order of preference, not the client\'s first offer',
    run: async (ctx) => {
      if (ctx.protocol === undefined) return skip('no --protocol given')
      const up = await ctx.upgrade({ protocol: `${UNREGISTERED}, ${ctx.protocol}` })
      if (up.conn === undefined) busy(up.answer.status, `offer "${UNREGISTERED}, ${ctx.protocol}"`)
      if (up.conn === undefined) return fail(`offer "${UNREGISTERED}, ${ctx.protocol}": refused with ${describe(up.answer)}, though ${ctx.protocol} was offered`)
      await up.conn.close()
      if (up.selected === ctx.protocol) return pass(`offer "${UNREGISTERED}, ${ctx.protocol}": selected ${ctx.protocol}`)
      return fail(`offer "${UNREGISTERED}, ${ctx.protocol}": selected ${up.selected === undefined ? 'nothing' : `"${up.selected}"`}`)
    }
  },
  protocolCheck('subprotocol.empty-element', (p) => `${p},,${UNREGISTERED}`, 'a list with an empty element',
    'parse Sec-WebSocket-Protocol as RFC 6455 §4.1 1#token and refuse malformed lists with 400'),
  protocolCheck('subprotocol.bad-token', (p) => `${p}, probe/v1 "x"`, 'a list with characters outside RFC 7230 tokens',
    'parse Sec-WebSocket-Protocol as RFC 6455 §4.1 1#token and refuse malformed lists with 400'),
  protocolCheck('subprotocol.duplicate', (p) => `${p}, ${p}`, 'the same subprotocol offered twice',
    'refuse duplicated values: RFC 6455 §4.1 requires each offered value to be unique'),
  protocolCheck('subprotocol.many-values', (p) => [p, ...Array.from({ length: 99 }, (_, i) => `probe-${i}`)].join(', '), 'a list of 100 values',
    'cap the header\'s length and number of values before parsing (e.g. 4096 characters, 32 values)')
]

const handshakeChecks: CheckDef[] = [
  {
    id: 'handshake.version-8',
    category: 'handshake',
    door: 'websocket',
    remedy: 'accept only Sec-WebSocket-Version: 13 and answer others with 426 and the version you speak (RFC 6455 §4.4)',
    run: (ctx) => refused(ctx, { version: '8' }, 'Sec-WebSocket-Version: 8')
  },
  {
    id: 'handshake.http-1.0',
    category: 'handshake',
    door: 'websocket',
    remedy: 'accept upgrades only on HTTP/1.1 or later (RFC 6455 §4.1 item 1)',
    run: (ctx) => refused(ctx, { httpVersion: '1.0' }, 'an HTTP/1.0 upgrade')
  },
  {
    id: 'handshake.bad-key',
    category: 'handshake',
    door: 'websocket',
    remedy: 'check that Sec-WebSocket-Key decodes to exactly 16 bytes (RFC 6455 §4.2.1 item 5)',
    run: (ctx) => refused(ctx, { key: Buffer.alloc(15, 7).toString('base64') }, 'a 15-byte Sec-WebSocket-Key')
  },
  {
    id: 'handshake.duplicate-key',
    category: 'handshake',
    door: 'websocket',
    remedy: 'refuse a request with more than one Sec-WebSocket-Key line',
    run: (ctx) => refused(ctx, { key: [randomBytes(16).toString('base64'), randomBytes(16).toString('base64')] }, 'two Sec-WebSocket-Key lines')
  },
  {
    id: 'handshake.missing-key',
    category: 'handshake',
    door: 'websocket',
    remedy: 'refuse an upgrade without Sec-WebSocket-Key with 400',
    run: (ctx) => refused(ctx, { key: null }, 'no Sec-WebSocket-Key')
  },
  {
    id: 'handshake.post',
    category: 'handshake',
    door: 'websocket',
    remedy: 'upgrade GET requests only (RFC 6455 §4.1 item 2)',
    run: (ctx) => refused(ctx, { method: 'POST' }, 'a POST with upgrade headers')
  },
  {
    id: 'handshake.missing-host',
    category: 'handshake',
    door: 'websocket',
    remedy: 'refuse a request without Host (RFC 6455 §4.2.1 item 2; RFC 9112 §3.2)',
    run: (ctx) => refused(ctx, { host: null }, 'no Host line')
  },
  {
    id: 'handshake.other-path',
    category: 'handshake',
    door: 'websocket',
    remedy: 'upgrade only on the paths of your WebSocket routes; answer other upgrades with 400 or 404',
    run: (ctx) => {
      const path = new URL(`portcullis-probe-${randomBytes(4).toString('hex')}`, 'http://x' + ctx.target.path).pathname
      return refused(ctx, { path }, `an upgrade to ${path}, not a WebSocket route`)
    }
  },
  {
    id: 'handshake.refusal-echo',
    category: 'handshake',
    door: 'websocket',
    remedy: 'answer refusals with a fixed code and message: never echo request headers (cookies, origins) in the body',
    run: async (ctx) => {
      const marker = 'probe' + randomBytes(8).toString('hex')
      ctx.secret(marker)
      const origin = `https://${marker}.invalid`
      const cookie = ctx.cookie === undefined ? `probe_echo=${marker}` : `${ctx.cookie}; probe_echo=${marker}`
      const up = await ctx.upgrade({ origin, cookie })
      if (up.conn !== undefined) {
        await up.conn.close()
        return skip('the foreign origin was accepted, so there is no refusal to inspect (see origin.cross-site)')
      }
      busy(up.answer.status, 'a foreign origin with a marked cookie')
      const body = up.answer.body.toString('latin1')
      const secrets = [marker, ...(ctx.cookie === undefined ? [] : cookiePairs(ctx.cookie).map(([, v]) => v).filter((v) => v.length >= 6))]
      if (secrets.some((s) => body.includes(s) || body.includes(encodeURIComponent(s)))) {
        return fail(`the ${describe(up.answer)} refusal body echoes what the request sent (cookie or origin)`)
      }
      return pass(`the ${describe(up.answer)} refusal echoes neither the cookie nor the origin`)
    }
  }
]

/** Write `bytes` on an accepted connection (then a ping, unless told not to) and see what the server does. */
async function afterFrames (ctx: Context, bytes: Buffer[], what: string, expected: number): Promise<Verdict> {
  const conn = await steady(ctx)
  try {
    await conn.write(Buffer.concat(bytes))
    const ping = await conn.ping()
    return verdictOf(await conn.outcome(ctx.timeoutMs, ping), what, expected, ctx.timeoutMs)
  } finally {
    await conn.close()
  }
}

/**
 * An accepted connection that a well-formed ping does not end. A server that closes every
 * connection at once would "refuse" every bad frame: then the check is skipped, not passed.
 */
async function steady (ctx: Context): Promise<Connection> {
  const conn = await ctx.openConnection()
  const o = await conn.outcome(Math.min(ctx.timeoutMs, 2000), await conn.ping())
  if (o.kind === 'close' || o.kind === 'dropped') {
    await conn.close()
    throw new Skip(`the server ends an accepted connection before any bad frame (${o.kind === 'close' ? `close ${o.code}` : 'dropped'}), so a close after one proves nothing`)
  }
  return conn
}

function verdictOf (o: Awaited<ReturnType<Connection['outcome']>>, what: string, expected: number, ms: number): Verdict {
  if (o.kind === 'close') return pass(`${what}: closed with ${o.code}${o.code === expected ? '' : ` (RFC 6455 §7.4.1 suggests ${expected})`}`)
  if (o.kind === 'dropped') return pass(`${what}: the connection was dropped`)
  if (o.kind === 'pong') return fail(`${what}: accepted (the connection answered a ping after it)`)
  return fail(`${what}: the connection stayed open for ${ms} ms`)
}

function framingCheck (id: string, bytes: () => Buffer[], what: string, expected: number, remedy: string): CheckDef {
  return { id, category: 'framing', door: 'websocket', remedy, run: (ctx) => afterFrames(ctx, bytes(), what, expected) }
}

const FAIL_FRAMES = 'use a WebSocket implementation that fails the connection on protocol errors (RFC 6455 §7.1.7)'

const framingChecks: CheckDef[] = [
  framingCheck('framing.unmasked', () => [frame({ opcode: Op.TEXT, payload: 'portcullis-probe', mask: false })], 'an unmasked text frame', 1002,
    'close the connection on an unmasked client frame (RFC 6455 §5.1): masking protects intermediaries from cache poisoning'),
  framingCheck('framing.rsv1', () => [frame({ opcode: Op.TEXT, payload: 'x', rsv: 4 })], 'RSV1 without a negotiated extension', 1002, FAIL_FRAMES + ', e.g. RSV bits without an extension (§5.2)'),
  framingCheck('framing.rsv2-rsv3', () => [frame({ opcode: Op.TEXT, payload: 'x', rsv: 3 })], 'RSV2 and RSV3 set', 1002, FAIL_FRAMES + ', e.g. RSV bits without an extension (§5.2)'),
  framingCheck('framing.invalid-utf8', () => [frame({ opcode: Op.TEXT, payload: Buffer.from([0x68, 0xc3, 0x28, 0xff]) })], 'invalid UTF-8 in a text frame', 1007,
    'validate UTF-8 of text messages and close with 1007 (RFC 6455 §8.1)'),
  framingCheck('framing.control-too-long', () => [frame({ opcode: Op.PING, payload: Buffer.alloc(126, 0x61) })], 'a ping with a 126-byte payload', 1002,
    FAIL_FRAMES + ', e.g. control frames over 125 bytes (§5.5)'),
  framingCheck('framing.fragmented-control', () => [frame({ opcode: Op.PING, payload: 'p', fin: false })], 'a fragmented ping', 1002,
    FAIL_FRAMES + ', e.g. fragmented control frames (§5.5)'),
  framingCheck('framing.reserved-opcode', () => [frame({ opcode: 0x3, payload: 'x' })], 'reserved opcode 0x3', 1002, FAIL_FRAMES + ', e.g. reserved opcodes (§5.2)'),
  framingCheck('framing.orphan-continuation', () => [frame({ opcode: Op.CONT, payload: 'x' })], 'a continuation frame with no message started', 1002,
    FAIL_FRAMES + ', e.g. a continuation with no message (§5.4)'),
  framingCheck('framing.bad-close-code', () => [frame({ opcode: Op.CLOSE, payload: closePayload(1005) })], 'a close frame with code 1005', 1002,
    FAIL_FRAMES + ', e.g. close codes an endpoint must not send (§7.4.2)')
]

const HUNDRED_MIB = 100 * 1024 * 1024

const limitsChecks: CheckDef[] = [
  {
    id: 'limits.declared-100mib',
    category: 'limits',
    door: 'websocket',
    remedy: 'set a message size limit (ws maxPayload) in line with your protocol and close with 1009 as soon as a header declares more',
    run: async (ctx) => {
      // only the header declares 100 MiB: the probe sends 16 bytes of it, never the payload
      const conn = await steady(ctx)
      try {
        await conn.write(frame({ opcode: Op.BINARY, payload: Buffer.alloc(16), declaredLength: HUNDRED_MIB }))
        return verdictOf(await conn.outcome(ctx.timeoutMs), 'a frame header declaring 100 MiB (payload not sent)', 1009, ctx.timeoutMs)
      } finally {
        await conn.close()
      }
    }
  },
  {
    id: 'limits.endless-fragments',
    category: 'limits',
    door: 'websocket',
    remedy: 'limit the size of a message across its fragments, not only per frame, and close with 1009',
    run: (ctx) => fragmentsCheck(ctx, 256, 4096, 'an unfinished message of 256 fragments × 4 KiB (1 MiB)', 1009)
  },
  {
    id: 'limits.empty-fragments',
    category: 'limits',
    door: 'websocket',
    remedy: 'limit the number of fragments of one message (empty fragments cost memory and CPU but add no bytes)',
    run: (ctx) => fragmentsCheck(ctx, 20_000, 0, 'an unfinished message of 20000 empty fragments', 1008)
  }
]

/** A message that never ends, sent in bounded batches; stops as soon as the server closes. */
async function fragmentsCheck (ctx: Context, count: number, size: number, what: string, expected: number): Promise<Verdict> {
  const conn = await steady(ctx)
  try {
    const chunk = Buffer.alloc(size, 0x61)
    const batch = Math.max(1, Math.floor(64 * 1024 / (size + 6)))
    let sent = 0
    while (sent < count && !conn.closed) {
      const frames: Buffer[] = []
      for (let i = 0; i < batch && sent < count; i++, sent++) frames.push(frame({ opcode: sent === 0 ? Op.TEXT : Op.CONT, payload: chunk, fin: false }))
      await conn.write(Buffer.concat(frames))
      await delay(1)
    }
    if (conn.closed) return verdictOf(await conn.outcome(0), `${what}: stopped after ${sent}`, expected, 0)
    // a ping may come between fragments (§5.5): its pong says the server is still collecting
    const ping = await conn.ping()
    return verdictOf(await conn.outcome(ctx.timeoutMs, ping), what, expected, ctx.timeoutMs)
  } finally {
    await conn.close()
  }
}

export const websocketChecks: CheckDef[] = [
  ...originChecks,
  ...sessionChecks,
  ...subprotocolChecks,
  ...handshakeChecks,
  ...framingChecks,
  ...limitsChecks
]

export const categoriesOf = (defs: CheckDef[]): Category[] => [...new Set(defs.map((d) => d.category))]
