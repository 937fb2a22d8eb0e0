import type { FastifyRequest } from 'fastify'
import { ownSymbol } from './own-symbol.js'

/** The description of Fastify's private request symbol for the route's context (lib/symbols.js). */
const ROUTE_CONTEXT = 'fastify.context'

type Config = Record<symbol, unknown> | undefined

// undefined: not looked yet; null: looked, and the symbol was not there or did not hold the config
let key: symbol | null | undefined

/**
 * The route config of `request`: what `request.routeOptions.config` returns, without building
 * `routeOptions`. That getter makes a 12-field object and asks the router for its constraint
 * strategies on every call, which was 0.4 % of a handshake's server time in the bench profile
 * (the stray-upgrade check runs on every upgrade, the CORS hook on every fallback request).
 *
 * The config sits on Fastify's private route context. Its symbol is found once, by its
 * description, and kept only if the context it names holds the very object `routeOptions.config`
 * returns. A request it does not fit (another copy of Fastify, a renamed symbol) reads
 * `routeOptions`, as before. Every use looks for a key only Portcullis sets, so a wrong object
 * could only make a check refuse, never let a request through.
 */
export function routeConfigOf (request: FastifyRequest): Config {
  if (key != null) {
    const context = (request as unknown as Record<symbol, { config?: Config } | undefined>)[key]
    if (context !== undefined) return context.config
  }
  const config = request.routeOptions.config as unknown as Config
  if (key === undefined) key = ownSymbol(request, ROUTE_CONTEXT, (context) => (context as { config?: Config } | undefined)?.config === config)
  return config
}
