import type { FastifyReply } from 'fastify'
import { ownSymbol } from './own-symbol.js'

/** The description of @fastify/cookie's private reply symbol for the cookies a reply will set. */
const SET_COOKIES = 'fastify.reply.setCookies'

/**
 * What an admitted upgrade's reply need not keep. @fastify/cookie's request hook gives every
 * reply an empty Map for the cookies it may set: 184 B with its table. An upgraded reply is
 * never sent (ws writes the 101 itself), yet @fastify/websocket keeps the reply for the whole
 * life of the connection, because the socket's error listener closes over it. So every idle
 * connection would keep an empty map. This returns an empty map to the `null` that
 * @fastify/cookie decorates replies with.
 *
 * Nothing is lost:
 * - a later `reply.setCookie` makes a new map, as @fastify/cookie does for any reply its hook
 *   has not run on;
 * - a map with cookies in it is left alone.
 *
 * The key is @fastify/cookie's private symbol. It is found once, by its description, on the
 * first admitted reply; an app without @fastify/cookie (or with its hook off) pays one look.
 */
export function upgradedReplyRelease (): (reply: FastifyReply) => void {
  // undefined: not looked yet; null: the first admitted reply had no such map
  let key: symbol | null | undefined
  return function portcullisReleaseUpgradedReply (reply) {
    if (key === null) return
    const r = reply as unknown as Record<symbol, unknown>
    if (key === undefined && (key = ownSymbol(r, SET_COOKIES, isMap)) === null) return
    const map = r[key]
    if (map instanceof Map && map.size === 0) r[key] = null
  }
}

function isMap (v: unknown): boolean {
  return v instanceof Map
}
