import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { type PortcullisOptions, type StageDefinition } from '@portcullis/policy'
import subprotocols, { type SubprotocolsOptions } from '../src/index.js'

/**
 * A test identity stage: the `x-user` header names the identity (the real one is
 * @portcullis/cookie-session). Lets per-identity limits and the STOMP ACL be tested alone.
 */
export const testIdentityStage: StageDefinition = {
  name: 'test-identity',
  phase: 'identity',
  evaluate (ctx) {
    const user = ctx.headers['x-user']
    if (typeof user === 'string') ctx.state.identity = { id: user }
  }
}

/**
 * A fresh app: the core (origin opted out — origin is not the point here), the test identity
 * stage and @portcullis/subprotocols with `opts`. Closed in teardown.
 */
export async function protoApp (
  t: { teardown: (fn: () => unknown) => void },
  opts: SubprotocolsOptions = {},
  core: PortcullisOptions = {}
): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(portcullis, { ...core, defaults: { origin: false, ...core.defaults } })
  app.wsPolicy.addStage(testIdentityStage)
  await app.register(subprotocols, opts)
  return app
}

/** Messages a handler received, as strings, with a way to wait for the next one. */
export function inbox (): { seen: string[], push: (m: unknown) => void } {
  const seen: string[] = []
  return { seen, push: (m) => { seen.push(String(m)) } }
}

/** What `fn` threw, or undefined: for asserting on an error's fields (`problem`, `index`). */
export function catchError (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}
