import t from 'tap'
import type { ConnectionContext } from '@portcullis/policy'
import { OriginMatcher } from '../src/origin.js'
import { OriginPolicy } from '../src/guard.js'

/** The few context fields the origin stage reads (it never reads ctx.transport). */
function ctx (origin: string | string[] | undefined, headers: Record<string, string> = {}, host = 'app.example.com', scheme: 'http' | 'https' = 'https'): ConnectionContext {
  const count = origin === undefined ? 0 : Array.isArray(origin) ? origin.length : 1
  return {
    originHeaderCount: count,
    origin: count === 1 ? origin as string : undefined,
    headers: { ...headers, origin: Array.isArray(origin) ? origin.join(', ') : origin },
    host,
    scheme,
    get transport (): never { throw new Error('the origin stage must not look at the transport') }
  } as unknown as ConnectionContext
}

const policy = (allow: string[], missing: 'deny' | 'allow' = 'deny', fetchMetadata = true): OriginPolicy =>
  new OriginPolicy(new OriginMatcher(allow), missing, fetchMetadata)

t.test('the stage decides without ever reading the transport', async (t) => {
  const p = policy(['self', 'https://a.example'])
  t.equal(p.decide(ctx('https://a.example')), 'list')
  t.equal(p.decide(ctx('https://app.example.com')), 'self')
  t.equal(p.evaluate(ctx('https://a.example')), undefined)
  t.match(p.evaluate(ctx('https://b.example')), { status: 403, code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' })
})

t.test('self that is also listed survives a cross-site Fetch Metadata mark', async (t) => {
  const both = policy(['self', 'https://*.example.com'])
  t.equal(both.decide(ctx('https://app.example.com', { 'sec-fetch-site': 'cross-site' })), 'self')
  const selfOnly = policy(['self'])
  t.match(selfOnly.decide(ctx('https://app.example.com', { 'sec-fetch-site': 'cross-site' })), { code: 'PORTCULLIS_ORIGIN_CROSS_SITE' })
})

t.test('self is refused when the browser says same-site: the request went to another host of the site', async (t) => {
  const selfOnly = policy(['self'])
  t.match(selfOnly.decide(ctx('https://app.example.com', { 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'websocket' })), { code: 'PORTCULLIS_ORIGIN_CROSS_SITE' })
  t.equal(selfOnly.decide(ctx('https://app.example.com', { 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'websocket' })), 'self')
  const listed = policy(['self', 'https://app.example.com'])
  t.equal(listed.decide(ctx('https://app.example.com', { 'sec-fetch-site': 'same-site' })), 'list', 'listed explicitly: the list vouches for it')
})

t.test('an Origin-less same-origin browser request is judged as the request\'s own origin', async (t) => {
  const listed = policy(['https://app.example.com'])
  t.equal(listed.decide(ctx(undefined, { 'sec-fetch-site': 'same-origin' })), 'list', 'own origin listed explicitly')
  const other = policy(['https://other.example'])
  t.match(other.decide(ctx(undefined, { 'sec-fetch-site': 'same-origin' })), { code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' })
  t.match(other.decide(ctx(undefined, { 'sec-fetch-site': 'same-origin' }, 'bad host/')), { code: 'PORTCULLIS_ORIGIN_NOT_ALLOWED' }, 'an unparsable Host is no origin')
  t.match(policy(['self'], 'deny', false).decide(ctx(undefined, { 'sec-fetch-site': 'same-origin' })), { code: 'PORTCULLIS_ORIGIN_MISSING' }, 'not with fetchMetadata off')
})

t.test('missing: allow admits non-browser clients only', async (t) => {
  const p = policy(['self'], 'allow')
  t.equal(p.decide(ctx(undefined)), 'missing')
  for (const site of ['cross-site', 'same-site', 'none']) {
    t.match(p.decide(ctx(undefined, { 'sec-fetch-site': site })), { code: 'PORTCULLIS_ORIGIN_MISSING' }, site)
  }
})

t.test('navigations and no-cors requests from other origins are refused', async (t) => {
  const p = policy(['https://a.example'])
  for (const mode of ['navigate', 'no-cors']) {
    for (const site of ['cross-site', 'same-site']) {
      t.match(p.decide(ctx('https://a.example', { 'sec-fetch-site': site, 'sec-fetch-mode': mode })), { code: 'PORTCULLIS_ORIGIN_CROSS_SITE' }, `${site} ${mode}`)
    }
  }
  for (const mode of ['cors', 'websocket']) {
    t.equal(p.decide(ctx('https://a.example', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': mode })), 'list', mode)
  }
})

t.test('CORS is vouched only for cross-origin requests from listed origins', async (t) => {
  const p = policy(['self', 'https://a.example', 'https://app.example.com'])
  t.ok(p.corsAllows(ctx('https://a.example')))
  t.notOk(p.corsAllows(ctx('https://app.example.com')), 'same origin, even when listed')
  t.notOk(p.corsAllows(ctx('https://b.example')))
  t.notOk(p.corsAllows(ctx(undefined)))
  t.notOk(policy(['self'], 'allow').corsAllows(ctx(undefined)))
  t.notOk(p.corsAllows(ctx(['https://a.example', 'https://a.example'])))
})
