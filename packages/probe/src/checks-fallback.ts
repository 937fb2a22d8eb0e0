/**
 * Checks on the long-poll door (packages/fallback/PROTOCOL.md): the same origin, session and
 * subprotocol attacks as on the upgrade, and the attacks only a fallback has — simple
 * (preflight-free) requests, a missing marker header, a stolen or guessed session id, query
 * strings, JSONP, caching, CORS. Polls are held by a sound server only when they are valid, so
 * a hostile poll that is held instead of refused counts as accepted.
 */
import { fail, pass, skip, type CheckDef, type Verdict } from './check.js'
import { cookiePairs, describe, forge, joinCookies, Skip, tamper, type Context, type LpAnswer, type LpSpec } from './context.js'
import { busy, lookalikes } from './checks-websocket.js'
import { delay, header, WireError } from './wire.js'

const UNREGISTERED = 'portcullis-probe.unregistered'
const SEND_BODY = JSON.stringify({ seq: 1, messages: [{ text: 'portcullis-probe' }] })

function live (ctx: Context): { sid: string } {
  if (ctx.lp === undefined) throw new Skip(ctx.lpUnavailable)
  return ctx.lp
}

function lpNeedsCookie (ctx: Context): void {
  if (ctx.cookie === undefined) throw new Skip('no --cookie given')
  const needs = ctx.needsCookie['long-poll']
  if (needs === undefined) throw new Skip('session.no-cookie could not tell whether the long-poll door needs a cookie')
  if (!needs) throw new Skip('the long-poll door opens without the cookie, so it does not need one')
}

/** Send a long-poll request that must be refused; a 2xx (or a held poll) is the finding. */
async function lpRefused (ctx: Context, endpoint: 'open' | 'poll' | 'send' | 'close', spec: LpSpec, what: string): Promise<Verdict> {
  let answer: LpAnswer
  try {
    answer = endpoint === 'open' ? await ctx.lpOpen(spec) : await ctx.lpRequest(endpoint, spec)
  } catch (err) {
    if (err instanceof WireError && err.kind === 'timeout') return fail(`${what}: held for ${ctx.timeoutMs} ms instead of refused`)
    if (err instanceof WireError) return pass(`${what}: not answered (${err.message})`)
    throw err
  }
  if (answer.status >= 200 && answer.status < 300) return fail(`${what}: accepted with ${answer.status}`)
  busy(answer.status, what)
  return pass(`${what}: refused with ${describe(answer)}`)
}

function lpOriginCheck (id: string, pick: (o: Record<string, string>) => string, what: (v: string) => string, remedy: string): CheckDef {
  return {
    id,
    category: 'origin',
    door: 'long-poll',
    remedy,
    run: async (ctx) => {
      live(ctx)
      const v = pick(lookalikes(ctx.origin))
      return await lpRefused(ctx, 'open', { origin: v }, what(v))
    }
  }
}

const SAME = 'run the same origin check on every long-poll request as on the upgrade (one policy, both doors)'

const lpDoorChecks: CheckDef[] = [
  lpOriginCheck('origin.cross-site', (o) => o.crossSite, (v) => `open from ${v} with the cookie`, SAME),
  lpOriginCheck('origin.suffix', (o) => o.suffix, (v) => `open from suffix lookalike ${v}`, SAME + '; compare exactly'),
  lpOriginCheck('origin.null', () => 'null', () => 'open from Origin: null', SAME + '; never allow "null"'),
  {
    id: 'session.no-cookie',
    category: 'session',
    door: 'long-poll',
    remedy: 'run the session check on the long-poll open exactly as on the upgrade',
    run: async (ctx) => {
      live(ctx)
      if (ctx.cookie === undefined) return skip('no --cookie given')
      const v = await lpRefused(ctx, 'open', { cookie: null }, 'open without the cookie')
      ctx.needsCookie['long-poll'] = v.result === 'pass'
      if (v.result === 'fail') return skip('the long-poll door opens without the cookie, so it does not need one')
      return v
    }
  },
  {
    id: 'session.tampered',
    category: 'session',
    door: 'long-poll',
    remedy: 'verify the session cookie on the long-poll door exactly as on the upgrade',
    run: async (ctx) => {
      live(ctx)
      lpNeedsCookie(ctx)
      const c = joinCookies(cookiePairs(ctx.cookie as string).map(([n, v]) => [n, tamper(v)]))
      for (const [, v] of cookiePairs(c)) ctx.secret(v)
      return await lpRefused(ctx, 'open', { cookie: c }, 'open with the cookie changed by one character')
    }
  },
  {
    id: 'subprotocol.unregistered',
    category: 'subprotocol',
    door: 'long-poll',
    remedy: 'negotiate the long-poll open\'s protocols with the same code as the upgrade; never echo the offer',
    run: async (ctx) => {
      live(ctx)
      const a = await ctx.lpOpen({}, [UNREGISTERED])
      if (a.status !== 200) {
        busy(a.status, `open offering ${UNREGISTERED}`)
        return pass(`open offering ${UNREGISTERED}: refused with ${describe(a)}`)
      }
      const p = a.json?.protocol
      if (p === UNREGISTERED) return fail(`open offering ${UNREGISTERED}: the server selected it`)
      return pass(`open offering ${UNREGISTERED}: accepted with protocol ${JSON.stringify(p ?? '')}`)
    }
  }
]

const fallbackChecks: CheckDef[] = [
  {
    id: 'fallback.no-marker-open',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'require a custom header (X-Portcullis-Fallback: 1) on every fallback request, so cross-origin pages need a preflight',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'open', { marker: false }, 'open without the marker header') }
  },
  {
    id: 'fallback.no-marker-poll',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'require the marker header on polls too: a cross-origin <script> or <img> can send a simple GET',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'poll', { marker: false }, 'poll with a valid sid, without the marker header') }
  },
  {
    id: 'fallback.no-marker-send',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'require the marker header on sends: without it a cross-origin form can post',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'send', { marker: false, body: SEND_BODY }, 'send with a valid sid, without the marker header') }
  },
  {
    id: 'fallback.text-plain-open',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'accept only application/json bodies: text/plain is a simple request that skips the CORS preflight',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'open', { contentType: 'text/plain;charset=UTF-8' }, 'open as text/plain') }
  },
  {
    id: 'fallback.text-plain-send',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'accept only application/json bodies: text/plain is a simple request that skips the CORS preflight',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'send', { contentType: 'text/plain;charset=UTF-8', body: SEND_BODY }, 'send as text/plain') }
  },
  {
    id: 'fallback.form-send',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'accept only application/json bodies: an HTML form posts application/x-www-form-urlencoded cross-origin',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'send', { contentType: 'application/x-www-form-urlencoded', body: SEND_BODY }, 'send as a urlencoded form') }
  },
  {
    id: 'fallback.multipart-send',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'accept only application/json bodies: an HTML form posts multipart/form-data cross-origin',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'send', { contentType: 'multipart/form-data; boundary=probe', body: SEND_BODY }, 'send as multipart/form-data') }
  },
  {
    id: 'fallback.evil-origin-poll',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'check Origin on every poll, not only at open: a leaked sid must be useless from another origin',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'poll', { origin: lookalikes(ctx.origin).crossSite }, 'poll with a valid sid from a foreign origin') }
  },
  {
    id: 'fallback.evil-origin-send',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'check Origin on every send, not only at open: a leaked sid must be useless from another origin',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'send', { origin: lookalikes(ctx.origin).crossSite, body: SEND_BODY }, 'send with a valid sid from a foreign origin') }
  },
  {
    id: 'fallback.guessed-sid',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'answer an unknown session id with 404, the same as a mismatched one',
    run: async (ctx) => {
      const { sid } = live(ctx)
      const guess = forge(sid)
      ctx.secret(guess)
      return await lpRefused(ctx, 'poll', { sid: guess }, 'poll with a guessed sid of the same shape')
    }
  },
  {
    id: 'fallback.sid-strength',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'make session ids at least 128 bits from a CSPRNG (crypto.randomBytes), not counters, timestamps or UUID v1',
    run: async (ctx) => {
      const { sid } = live(ctx)
      const bits = entropyBits(sid)
      if (bits >= 128) return pass(`the session id has about ${bits} bits (${sid.length} characters)`)
      return fail(`the session id has at most about ${bits} bits (${sid.length} characters)`)
    }
  },
  {
    id: 'fallback.query-string',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'refuse fallback URLs with a query string: ids and callbacks in URLs end up in logs and in JSONP',
    run: async (ctx) => { live(ctx); return await lpRefused(ctx, 'open', { query: '?portcullis-probe=1' }, 'open with a query string') }
  },
  {
    id: 'fallback.jsonp',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'never serve JSONP: a callback parameter lets any page read the poll with the user\'s cookie',
    run: async (ctx) => {
      live(ctx)
      const v = await lpRefused(ctx, 'poll', { query: '?callback=portcullisProbe' }, 'poll with ?callback=portcullisProbe')
      const last = ctx.lpSeen[ctx.lpSeen.length - 1]?.answer
      if (v.result === 'pass' && last !== undefined && last.body.toString('latin1').trimStart().startsWith('portcullisProbe(')) {
        return fail('poll with ?callback=portcullisProbe: the answer is a JSONP script')
      }
      return v
    }
  },
  {
    id: 'fallback.sid-without-cookie',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'bind the session id to the authenticated session that opened it and check the cookie on every request',
    run: async (ctx) => { live(ctx); lpNeedsCookie(ctx); return await lpRefused(ctx, 'poll', { cookie: null }, 'poll with a valid sid and no cookie') }
  },
  {
    id: 'fallback.sid-other-cookie',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'bind the session id to the authenticated session that opened it: another cookie must not reach it',
    run: async (ctx) => {
      live(ctx)
      lpNeedsCookie(ctx)
      const c = joinCookies(cookiePairs(ctx.cookie as string).map(([n, v]) => [n, forge(v)]))
      for (const [, v] of cookiePairs(c)) ctx.secret(v)
      return await lpRefused(ctx, 'poll', { cookie: c }, 'poll with a valid sid and another cookie')
    }
  },
  {
    id: 'fallback.cors-preflight',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'answer CORS preflights only for allowed origins; never Access-Control-Allow-Origin: * or a reflected origin',
    run: async (ctx) => {
      live(ctx)
      const evil = lookalikes(ctx.origin).crossSite
      const a = await ctx.lpRequest('send', {
        method: 'OPTIONS',
        origin: evil,
        marker: false,
        sid: null,
        body: undefined,
        contentType: null
      })
      const acao = header(a, 'access-control-allow-origin')
      if (acao === '*' || acao === evil) return fail(`preflight from ${evil}: ${a.status} with Access-Control-Allow-Origin: ${acao}`)
      return pass(`preflight from ${evil}: ${a.status}, no Access-Control-Allow-Origin for it`)
    }
  },
  {
    id: 'fallback.cache-headers',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'send Cache-Control: no-store on every fallback answer, so no proxy or browser cache keeps a user\'s messages',
    run: async (ctx) => {
      const { sid } = live(ctx)
      // a valid poll is held: close the session under it, which answers it (PROTOCOL.md §8)
      const poll = ctx.lpRequest('poll', {}).then((a) => a, (err: Error) => err)
      await delay(Math.min(300, ctx.timeoutMs / 4))
      const closed = await ctx.lpRequest('close', { body: JSON.stringify({ code: 1000, reason: 'portcullis-probe done' }) })
      ctx.sids.delete(sid)
      ctx.lp = undefined
      ctx.lpUnavailable = 'the probe\'s long-poll session is closed'
      const polled = await poll
      const seen: Array<[string, LpAnswer]> = [['close', closed]]
      if (!(polled instanceof Error)) seen.push(['poll', polled])
      const open = ctx.lpSeen.find((s) => s.answer.status === 200 && typeof s.answer.json?.sid === 'string')
      if (open !== undefined) seen.push(['open', open.answer])
      const bad = seen.filter(([, a]) => a.status === 200 && !/\bno-store\b/i.test(header(a, 'cache-control') ?? ''))
      if (bad.length > 0) return fail(`${bad.map(([n, a]) => `${n} (Cache-Control: ${header(a, 'cache-control') ?? 'none'})`).join(', ')} may be cached`)
      if (polled instanceof Error) return pass(`open and close answers carry no-store (the poll was not answered: ${polled.message})`)
      return pass(`${seen.map(([n]) => n).join(', ')} answers carry Cache-Control: no-store`)
    }
  },
  {
    id: 'fallback.cors-responses',
    category: 'fallback',
    door: 'long-poll',
    remedy: 'add CORS headers for allowed origins only, never *, and never reflect the request\'s Origin',
    run: async (ctx) => {
      // only the answers of a door that exists say anything about its CORS
      if (!ctx.lpOpened) return skip(ctx.lpUnavailable)
      const allowed = new Set([ctx.origin])
      for (const { origin, answer } of ctx.lpSeen) {
        const acao = header(answer, 'access-control-allow-origin')
        if (acao === undefined) continue
        if (acao === '*') return fail(`an answer carries Access-Control-Allow-Origin: * (${answer.status})`)
        if (origin !== null && acao === origin && !allowed.has(origin)) return fail(`the answer to Origin ${origin} grants it Access-Control-Allow-Origin (${answer.status})`)
      }
      return pass(`no CORS grant to * or to a foreign origin in ${ctx.lpSeen.length} answers`)
    }
  }
]

/** A rough upper bound on the randomness of an id from its alphabet and length. */
export function entropyBits (id: string): number {
  const core = id.replace(/[-=]/g, '')
  const perChar = /^\d+$/.test(core) ? Math.log2(10) : /^[0-9a-f]+$/i.test(core) ? 4 : /^[A-Za-z0-9]+$/.test(core) ? Math.log2(62) : 6
  return Math.floor(core.length * perChar)
}

export const longPollChecks: CheckDef[] = [...lpDoorChecks, ...fallbackChecks]

/** Open the probe's own long-poll session; without it the long-poll checks are skipped with the reason. */
export async function openLongPoll (ctx: Context): Promise<void> {
  let a: LpAnswer
  try {
    a = await ctx.lpOpen()
  } catch (err) {
    ctx.lpUnavailable = `the long-poll open at ${ctx.lpBase()}open was not answered (${(err as Error).message})`
    return
  }
  const sid = a.json?.sid
  if (a.status === 200 && typeof sid === 'string' && sid !== '') {
    ctx.lp = { sid, base: ctx.lpBase() }
    ctx.lpOpened = true
    return
  }
  ctx.lpUnavailable = a.status === 404
    ? `no long-poll door at ${ctx.lpBase()}open (404)`
    : `the well-formed long-poll open at ${ctx.lpBase()}open was refused with ${describe(a)}`
}

/** Close every session the run opened (best effort, within the budget). */
export async function closeLongPoll (ctx: Context): Promise<void> {
  for (const sid of [...ctx.sids]) {
    ctx.sids.delete(sid)
    try {
      await ctx.lpRequest('close', { sid, body: JSON.stringify({ code: 1000, reason: 'portcullis-probe done' }) })
    } catch {}
  }
}
