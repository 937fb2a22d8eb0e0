/**
 * What several chat nodes must share: the login sessions and the room's messages. One node keeps
 * them in memory; with `REDIS_URL`, sessions live in Redis (any node can check a cookie) and every
 * message is published on one channel that every node relays to its own sockets — so each node
 * shows the room in the same order (Redis delivers a channel's messages in publish order).
 * The long-poll sessions and revocations are shared by @portcullis/fallback-redis.
 */
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'

export interface Session {
  user: string
  expiresAt: number
}

export interface Shared {
  getSession: (id: string) => Session | undefined | Promise<Session | undefined>
  setSession: (id: string, session: Session) => Promise<void>
  deleteSession: (id: string) => Promise<void>
  /** Send a room message to every node's sockets (this node's included). */
  publish: (text: string) => void
  /** Called with every room message, on every node. */
  onMessage: (fn: (text: string) => void) => void
  close: () => Promise<void>
}

export function memoryShared (): Shared {
  const sessions = new Map<string, Session>()
  const listeners: Array<(text: string) => void> = []
  return {
    getSession: (id) => sessions.get(id),
    setSession: async (id, s) => { sessions.set(id, s) },
    deleteSession: async (id) => { sessions.delete(id) },
    publish: (text) => { for (const fn of listeners) fn(text) },
    onMessage: (fn) => { listeners.push(fn) },
    close: async () => { sessions.clear() }
  }
}

export async function redisShared (url: string, prefix: string, log: FastifyBaseLogger): Promise<Shared> {
  const commands = new Redis(url, { maxRetriesPerRequest: 2 })
  const subscriber = commands.duplicate()
  const channel = prefix + 'room'
  const listeners: Array<(text: string) => void> = []
  subscriber.on('message', (ch: string, text: string) => {
    if (ch === channel) for (const fn of listeners) fn(text)
  })
  await subscriber.subscribe(channel)
  return {
    async getSession (id) {
      const raw = await commands.get(prefix + 'session:' + id)
      return raw === null ? undefined : JSON.parse(raw) as Session
    },
    async setSession (id, s) {
      await commands.set(prefix + 'session:' + id, JSON.stringify(s), 'PX', Math.max(1, s.expiresAt - Date.now()))
    },
    async deleteSession (id) {
      await commands.del(prefix + 'session:' + id)
    },
    publish (text) {
      commands.publish(channel, text).catch((err: Error) => log.error({ err }, 'chat: a message could not be published'))
    },
    onMessage: (fn) => { listeners.push(fn) },
    async close () {
      subscriber.disconnect()
      commands.disconnect()
    }
  }
}
