import t from 'tap'
import { MemoryStore } from '../src/index.js'
import { record, startStore, storeConformance } from './store-conformance.js'

t.test('the in-memory store follows the store rules', async (t) => {
  storeConformance(t, () => new MemoryStore())
})

t.test('the in-memory store refuses an outbound seq that is not the next one', async (t) => {
  const { store } = await startStore(() => new MemoryStore())
  t.teardown(() => store.stop())
  const rec = record(store)
  await store.create(rec, { perIdentity: 0, perIp: 0, total: 0 })
  await t.rejects(store.pushOutbound(rec.sid, [{ seq: 2, type: 'text', data: 'x', bytes: 1 }]), RangeError)
})

t.test('the in-memory store forgets everything on stop', async (t) => {
  const memory = new MemoryStore({ nodeId: 'n1' })
  const { store } = await startStore(() => memory)
  t.equal(store.nodeId, 'n1')
  const rec = record(store)
  await store.create(rec, { perIdentity: 0, perIp: 0, total: 0 })
  await store.pushOutbound(rec.sid, [{ seq: 1, type: 'text', data: 'xyz', bytes: 3 }])
  t.equal(memory.queuedBytes, 3)
  await store.stop()
  t.equal(memory.size, 0)
  t.equal(memory.queuedBytes, 0)
})
