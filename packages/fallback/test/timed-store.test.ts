import { test } from 'tap'
import { MemoryStore } from '../src/store.js'
import { timedStore } from '../src/timed-store.js'

test('the built-in MemoryStore is used as it is, with no deadline wrapper', async (t) => {
  const store = new MemoryStore()
  t.equal(timedStore(store, 50), store)
})

test('a MemoryStore with a replaced method is user code again: a hung call fails with 503 PORTCULLIS_STORE_UNAVAILABLE', async (t) => {
  const store = new MemoryStore()
  store.get = () => new Promise(() => {})
  const timed = timedStore(store, 20)
  t.not(timed, store)
  await t.rejects(timed.get('sid'), { code: 'PORTCULLIS_STORE_UNAVAILABLE', statusCode: 503 })
})

test('a subclass that overrides a method is bounded by the deadline', async (t) => {
  class SlowStore extends MemoryStore {
    override async touch (): Promise<boolean> {
      return await new Promise(() => {})
    }
  }
  const timed = timedStore(new SlowStore(), 20)
  await t.rejects(timed.touch('sid', Date.now()), { code: 'PORTCULLIS_STORE_UNAVAILABLE' })
})
