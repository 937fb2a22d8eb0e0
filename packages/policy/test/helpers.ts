import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import portcullis from '../src/index.js'
import type { PortcullisOptions, StageDefinition } from '../src/index.js'

/**
 * A minimal origin stage for the core's own tests (the real one is @portcullis/origin-guard):
 * allows the origins in its route option, denies the rest with 403.
 */
export const testOriginStage: StageDefinition<string[], Set<string>> = {
  name: 'test-origin',
  phase: 'origin',
  option: 'testOrigins',
  compile (value) {
    if (value !== undefined && !Array.isArray(value)) throw new TypeError('testOrigins must be an array')
    return new Set(value ?? [])
  },
  evaluate (ctx, allowed) {
    if (ctx.origin !== undefined && allowed.has(ctx.origin)) return
    return { status: 403, code: 'TEST_ORIGIN_DENIED', reason: 'Origin not allowed' }
  },
  describe: (allowed) => `allow ${[...allowed].join(', ')}`
}

declare module '../src/index.js' {
  interface PortcullisRoutePolicy {
    testOrigins?: string[]
  }
}

/** A fresh app with the core and the test origin stage registered, closed in teardown. */
export async function coreApp (t: { teardown: (fn: () => unknown) => void }, opts: PortcullisOptions = {}, server: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(server)
  t.teardown(() => app.close())
  await app.register(portcullis, opts)
  app.wsPolicy.addStage(testOriginStage)
  return app
}
