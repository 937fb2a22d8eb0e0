import { expect, test } from 'tstyche'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import portcullis from '@portcullis/policy'
import type { FallbackStore } from '@portcullis/fallback'
import fallbackRedis, { RedisStore, type FallbackRedisOptions, type RedisStoreOptions } from '@portcullis/fallback-redis'

const app = Fastify()
app.register(portcullis)

test('the store implements the fallback\'s store interface', () => {
  expect<RedisStore>().type.toBeAssignableTo<FallbackStore>()
})

test('the decorator exposes the store', () => {
  expect(app.portcullisRedis.store).type.toBe<RedisStore>()
})

test('a Redis URL or an ioredis instance, and typed options', () => {
  expect(app.register(fallbackRedis, { redis: 'redis://127.0.0.1:6379', keyPrefix: 'chat:', nodeTtlMs: 5000 })).type.not.toRaiseError()
  expect(app.register(fallbackRedis, { redis: new Redis({ lazyConnect: true }) })).type.not.toRaiseError()
  expect(app.register(fallbackRedis, { store: new RedisStore({ redis: 'redis://127.0.0.1' }) })).type.not.toRaiseError()
  expect(app.register(fallbackRedis, { redis: 'redis://127.0.0.1', nodeTtlMs: '10s' })).type.toRaiseError()
  expect(app.register(fallbackRedis, { store: {} })).type.toRaiseError()
  expect<RedisStoreOptions>().type.not.toBeAssignableFrom({ keyPrefix: 'x' })
  expect<FallbackRedisOptions>().type.toBeAssignableFrom({ keyPrefix: 'x', lingerMs: 1000 })
})
