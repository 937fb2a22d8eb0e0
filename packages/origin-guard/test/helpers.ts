import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import portcullis, { type PortcullisOptions } from '@portcullis/policy'
import originGuard, { type OriginGuardOptions } from '../src/index.js'

/** A fresh app with the core and the origin guard registered (routes not yet), closed in teardown. */
export async function guardApp (
  t: { teardown: (fn: () => unknown) => void },
  opts: OriginGuardOptions = {},
  core: PortcullisOptions = {},
  server: FastifyServerOptions = {}
): Promise<FastifyInstance> {
  const app = Fastify(server)
  t.teardown(() => app.close())
  await app.register(portcullis, core)
  await app.register(originGuard, opts)
  return app
}
