import t from 'tap'
import { Lru } from '../src/lru.js'

t.test('a hit protects its entry from the next eviction; an entry unused since is evicted first', async (t) => {
  const c = new Lru<string>(3)
  c.set('a', '1')
  c.set('b', '2')
  c.set('c', '3')
  t.equal(c.get('a'), '1')
  c.set('d', '4') // evicts b: the oldest entry not used since it was inserted
  t.equal(c.get('b'), undefined)
  t.same([c.get('a'), c.get('c'), c.get('d')], ['1', '3', '4'])
  t.equal(c.size, 3)
})

t.test('the cache never holds more than its bound, whatever the mix of hits and inserts', async (t) => {
  const c = new Lru<number>(8)
  for (let i = 0; i < 1000; i++) {
    c.set(`k${i}`, i)
    if (i % 3 === 0) c.get(`k${i - 5}`)
    t.ok(c.size <= 8)
  }
  t.equal(c.size, 8)
  t.equal(c.get('k999'), 999, 'the newest entry is kept')
})

t.test('when every entry was hit, the oldest one is still evicted (no entry is kept forever)', async (t) => {
  const c = new Lru<string>(2)
  c.set('a', '1')
  c.set('b', '2')
  c.get('a')
  c.get('b')
  c.set('c', '3')
  t.equal(c.get('a'), undefined)
  t.same([c.get('b'), c.get('c')], ['2', '3'])
})

t.test('setting a cached key replaces its value without evicting anything', async (t) => {
  const c = new Lru<string>(2)
  c.set('a', '1')
  c.set('b', '2')
  c.set('a', '3')
  t.same([c.get('a'), c.get('b'), c.size], ['3', '2', 2])
})

t.test('a cache of size 0 keeps nothing', async (t) => {
  const c = new Lru<string>(0)
  c.set('a', '1')
  t.equal(c.get('a'), undefined)
  t.equal(c.size, 0)
})
