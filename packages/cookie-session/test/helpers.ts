import Fastify, { type FastifyInstance } from 'fastify'
import portcullis from '@portcullis/policy'
import cookieSession, { type CookieSessionOptions } from '../src/index.js'
import type { LogCapture } from '../../../test/helpers/index.js'

/**
 * A fresh app: `before` registers the HTTP session plugins (@fastify/cookie, @fastify/session,
 * @fastify/secure-session), then the core (origin checks off: origin is not the point here)
 * and this plugin. Closed in teardown.
 */
export interface TestLike { teardown: (fn: () => unknown) => void }

export async function sessionApp (
  t: TestLike,
  before: (app: FastifyInstance) => Promise<unknown> | unknown,
  opts: CookieSessionOptions,
  logs?: LogCapture
): Promise<FastifyInstance> {
  const app = Fastify({ logger: logs === undefined ? false : { level: 'debug', stream: logs.stream } })
  t.teardown(() => app.close())
  await before(app)
  await app.register(portcullis, { defaults: { origin: false } })
  await app.register(cookieSession, opts)
  return app
}

/** The `name=value` pair of a Set-Cookie header, ready for a Cookie header. */
export function cookiePair (setCookie: string | string[] | undefined, name: string): string {
  const all = setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie]
  for (const c of all) {
    const pair = c.split(';', 1)[0]
    if (pair.startsWith(name + '=')) return pair
  }
  throw new Error(`no ${name} cookie in ${all.length} Set-Cookie headers`)
}

/** Replace the character at `i` of a string with a different one (tampering). */
export function flipChar (s: string, i: number): string {
  const c = s[i] === 'A' ? 'B' : 'A'
  return s.slice(0, i) + c + s.slice(i + 1)
}
