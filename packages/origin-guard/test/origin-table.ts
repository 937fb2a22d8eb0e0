/**
 * The origin table: one allowlist and the verdict for each incoming `Origin`. Runs against the
 * WebSocket door here (packages/origin-guard/test/websocket-door.test.ts) and is exported so the
 * long-poll door's parity suite (top-level test/) runs the very same rows.
 *
 * `{self}` in a value stands for the server's own origin (`http://127.0.0.1:<port>`), `{port}` for
 * its port; `expandOrigin` fills them in.
 * `origin: undefined` sends no Origin header; an array sends one header line per value.
 */
export const tableAllow: readonly string[] = Object.freeze([
  'self',
  'https://app.example.com',
  'HTTP://LOCALHOST:3000', // normalized to http://localhost:3000
  'https://app.example.com:8443',
  'http://[0:0::1]:8080', // normalized to http://[::1]:8080
  'https://bücher.example', // normalized to https://xn--bcher-kva.example
  'https://*.example.org'
])

export type OriginVerdict =
  | 'allow'
  | 'PORTCULLIS_ORIGIN_NOT_ALLOWED'
  | 'PORTCULLIS_ORIGIN_MISSING'
  | 'PORTCULLIS_ORIGIN_MALFORMED'
  | 'PORTCULLIS_ORIGIN_CROSS_SITE'

export interface OriginCase {
  /** Reads as a sentence after "the origin guard ...". */
  name: string
  origin: string | readonly string[] | undefined
  /** Extra request headers (Fetch Metadata, legacy headers). */
  headers?: Readonly<Record<string, string>>
  expect: OriginVerdict
}

const ALLOW: OriginVerdict = 'allow'
const NOT: OriginVerdict = 'PORTCULLIS_ORIGIN_NOT_ALLOWED'
const MISSING: OriginVerdict = 'PORTCULLIS_ORIGIN_MISSING'
const BAD: OriginVerdict = 'PORTCULLIS_ORIGIN_MALFORMED'
const CROSS: OriginVerdict = 'PORTCULLIS_ORIGIN_CROSS_SITE'

const rows: OriginCase[] = [
  // exact entries
  { name: 'allows a listed origin', origin: 'https://app.example.com', expect: ALLOW },
  { name: 'allows a listed origin with a port', origin: 'http://localhost:3000', expect: ALLOW },
  { name: 'allows a listed origin on a non-default port', origin: 'https://app.example.com:8443', expect: ALLOW },
  { name: 'allows a listed IPv6 origin (entry normalized)', origin: 'http://[::1]:8080', expect: ALLOW },
  { name: 'allows the server\'s own origin through self', origin: '{self}', expect: ALLOW },
  // case
  { name: 'refuses an uppercase scheme and host (not a serialization)', origin: 'HTTPS://APP.EXAMPLE.COM', expect: BAD },
  { name: 'refuses a mixed-case host', origin: 'https://App.Example.com', expect: BAD },
  { name: 'refuses an uppercase scheme only', origin: 'Https://app.example.com', expect: BAD },
  // ports
  { name: 'refuses an explicit default port (not a serialization)', origin: 'https://app.example.com:443', expect: BAD },
  { name: 'refuses another port of a listed host', origin: 'https://app.example.com:444', expect: NOT },
  { name: 'refuses a neighbouring port', origin: 'http://localhost:3001', expect: NOT },
  { name: 'refuses a listed host on its default port when only :3000 is listed', origin: 'http://localhost', expect: NOT },
  { name: 'refuses a port with a leading zero', origin: 'https://app.example.com:08443', expect: BAD },
  { name: 'refuses a port out of range', origin: 'https://app.example.com:99999', expect: BAD },
  { name: 'refuses an empty port', origin: 'https://app.example.com:', expect: BAD },
  { name: 'refuses the server\'s host on another port', origin: 'http://127.0.0.1', expect: NOT },
  // schemes
  { name: 'refuses http for a listed https origin', origin: 'http://app.example.com', expect: NOT },
  { name: 'refuses wss for a listed https origin', origin: 'wss://app.example.com', expect: NOT },
  { name: 'refuses https for a listed http origin', origin: 'https://localhost:3000', expect: NOT },
  { name: 'refuses an extension scheme on a listed host', origin: 'chrome-extension://app.example.com', expect: NOT },
  { name: 'refuses https for the server\'s own http origin', origin: 'https://127.0.0.1:{port}', expect: NOT },
  // IDN
  { name: 'allows the punycode form of a Unicode entry', origin: 'https://xn--bcher-kva.example', expect: ALLOW },
  { name: 'refuses a raw Unicode host', origin: 'https://bücher.example', expect: BAD },
  { name: 'refuses a homoglyph (Cyrillic а) in punycode', origin: 'https://xn--pp-6kc.example.com', expect: NOT },
  // wildcards and lookalikes
  { name: 'allows a subdomain of a wildcard entry', origin: 'https://a.example.org', expect: ALLOW },
  { name: 'allows a deeper subdomain of a wildcard entry', origin: 'https://deep.a.example.org', expect: ALLOW },
  { name: 'refuses the apex of a wildcard entry', origin: 'https://example.org', expect: NOT },
  { name: 'refuses a hyphenated lookalike of a wildcard suffix', origin: 'https://evil-example.org', expect: NOT },
  { name: 'refuses a wildcard suffix followed by another domain', origin: 'https://example.org.evil.net', expect: NOT },
  { name: 'refuses a listed origin followed by another domain', origin: 'https://app.example.com.evil.net', expect: NOT },
  { name: 'refuses a prefixed lookalike of a listed host', origin: 'https://evilapp.example.com', expect: NOT },
  { name: 'refuses a subdomain of an exact entry', origin: 'https://x.app.example.com', expect: NOT },
  { name: 'refuses a truncated TLD lookalike', origin: 'https://app.example.co', expect: NOT },
  { name: 'refuses a wildcard match on another scheme', origin: 'http://a.example.org', expect: NOT },
  { name: 'refuses a wildcard match on another port', origin: 'https://a.example.org:8443', expect: NOT },
  { name: 'refuses a trailing dot', origin: 'https://app.example.com.', expect: BAD },
  { name: 'refuses a trailing dot on a wildcard match', origin: 'https://a.example.org.', expect: BAD },
  // parser confusion
  { name: 'refuses a trailing slash', origin: 'https://app.example.com/', expect: BAD },
  { name: 'refuses a path', origin: 'https://app.example.com/app', expect: BAD },
  { name: 'refuses a query', origin: 'https://app.example.com?x=1', expect: BAD },
  { name: 'refuses a fragment', origin: 'https://app.example.com#x', expect: BAD },
  { name: 'refuses userinfo', origin: 'https://user@app.example.com', expect: BAD },
  { name: 'refuses userinfo naming a listed host', origin: 'https://app.example.com@evil.net', expect: BAD },
  { name: 'refuses a listed host as userinfo', origin: 'https://evil.net@app.example.com', expect: BAD },
  { name: 'refuses a space-separated origin list', origin: 'https://app.example.com https://evil.net', expect: BAD },
  { name: 'refuses a comma-separated origin list', origin: 'https://app.example.com, https://evil.net', expect: BAD },
  { name: 'refuses padding inside the value', origin: 'https:// app.example.com', expect: BAD },
  { name: 'refuses a backslash', origin: 'https://app.example.com\\@evil.net', expect: BAD },
  { name: 'refuses a percent-encoded dot', origin: 'https://app.example.com%2eevil.net', expect: BAD },
  { name: 'refuses a single slash after the scheme', origin: 'https:/app.example.com', expect: BAD },
  { name: 'refuses a scheme without slashes', origin: 'https:app.example.com', expect: BAD },
  { name: 'refuses a scheme-relative origin', origin: '//app.example.com', expect: BAD },
  { name: 'refuses a bare host', origin: 'app.example.com', expect: BAD },
  { name: 'refuses an empty Origin header', origin: '', expect: BAD },
  { name: 'refuses a hexadecimal IPv4 host', origin: 'http://0x7f.0.0.1', expect: BAD },
  { name: 'refuses a non-canonical IPv6 host', origin: 'http://[0:0::1]:8080', expect: BAD },
  { name: 'refuses a wildcard sent as an origin', origin: 'https://*.example.org', expect: BAD },
  { name: 'refuses a very long origin', origin: 'https://' + 'a'.repeat(400) + '.example.org', expect: BAD },
  // null
  { name: 'refuses the null origin unless listed', origin: 'null', expect: NOT },
  { name: 'refuses an uppercase NULL', origin: 'NULL', expect: BAD },
  { name: 'refuses a doubled null', origin: 'null null', expect: BAD },
  // missing
  { name: 'refuses a request without Origin by default', origin: undefined, expect: MISSING },
  { name: 'judges an Origin-less same-origin browser request as self', origin: undefined, headers: { 'Sec-Fetch-Site': 'same-origin' }, expect: ALLOW },
  { name: 'refuses an Origin-less cross-site browser request', origin: undefined, headers: { 'Sec-Fetch-Site': 'cross-site' }, expect: MISSING },
  // duplicates
  { name: 'refuses two identical Origin lines', origin: ['https://app.example.com', 'https://app.example.com'], expect: BAD },
  { name: 'refuses two different Origin lines', origin: ['https://evil.net', 'https://app.example.com'], expect: BAD },
  // Fetch Metadata
  { name: 'refuses self when the browser says cross-site', origin: '{self}', headers: { 'Sec-Fetch-Site': 'cross-site' }, expect: CROSS },
  { name: 'refuses self when the browser says same-site', origin: '{self}', headers: { 'Sec-Fetch-Site': 'same-site' }, expect: CROSS },
  { name: 'allows a listed origin the browser calls cross-site', origin: 'https://app.example.com', headers: { 'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'websocket' }, expect: ALLOW },
  { name: 'refuses a cross-site navigation even from a listed origin', origin: 'https://app.example.com', headers: { 'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'navigate' }, expect: CROSS },
  { name: 'refuses a same-site no-cors request', origin: 'https://a.example.org', headers: { 'Sec-Fetch-Site': 'same-site', 'Sec-Fetch-Mode': 'no-cors' }, expect: CROSS },
  { name: 'ignores an unknown Sec-Fetch-Site value', origin: '{self}', headers: { 'Sec-Fetch-Site': 'bogus' }, expect: ALLOW },
  // legacy header
  { name: 'never trusts Sec-WebSocket-Origin in place of Origin', origin: undefined, headers: { 'Sec-WebSocket-Origin': 'https://app.example.com' }, expect: MISSING },
  { name: 'never trusts Sec-WebSocket-Origin over Origin', origin: 'https://evil.net', headers: { 'Sec-WebSocket-Origin': 'https://app.example.com' }, expect: NOT }
]

export const originTable: readonly OriginCase[] = Object.freeze(rows)

/** Fill in `{self}` and `{port}` for a server whose own origin is `self` (e.g. `http://127.0.0.1:4321`). */
export function expandOrigin (value: string, self: string): string {
  return value.replaceAll('{self}', self).replaceAll('{port}', self.slice(self.lastIndexOf(':') + 1))
}
