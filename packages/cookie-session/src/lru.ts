/**
 * A small bounded cache with least-recently-used eviction by the CLOCK ("second chance")
 * approximation. Used for verified signed cookie values → session id.
 *
 * Why CLOCK and not a strict LRU: a strict LRU built on a `Map`'s insertion order pays a get, a
 * delete and a set on every hit, and a hit is the common case here (every reconnect of a known
 * cookie). Here a hit only marks its entry as used; the map is reordered only when something
 * must be evicted: from the oldest end, a used entry loses its mark and moves to the young end
 * (its second chance), the first unmarked one is evicted. Each insertion clears at most as many
 * marks as hits set since, so eviction is amortized O(1). An entry hit since the last eviction
 * pass is never the one evicted while an unmarked entry exists.
 *
 * Why this is safe for signatures: a key is inserted only after `unsignCookie` verified it in
 * constant time, and a lookup compares the whole signed value (id + MAC). A forged value is never
 * a key, so it always misses and goes to the real verification; the cache cannot be used to test
 * guesses of a MAC, it only skips re-verifying a value that already verified.
 */
export class Lru<V> {
  readonly #max: number
  readonly #map = new Map<string, Entry<V>>()

  constructor (max: number) {
    this.#max = max
  }

  get size (): number {
    return this.#map.size
  }

  get (key: string): V | undefined {
    const e = this.#map.get(key)
    if (e === undefined) return undefined
    e.used = true
    return e.value
  }

  set (key: string, value: V): void {
    if (this.#max <= 0) return
    const map = this.#map
    const e = map.get(key)
    if (e !== undefined) {
      e.value = value
      e.used = true
      return
    }
    if (map.size >= this.#max) this.#evictOne()
    map.set(key, { value, used: false })
  }

  clear (): void {
    this.#map.clear()
  }

  /** Evict the oldest entry not used since it was last given its second chance. */
  #evictOne (): void {
    const map = this.#map
    // bounded: every pass over a marked entry clears its mark, so within size + 1 steps an
    // unmarked entry is at the front
    for (let i = map.size; i >= 0; i--) {
      const next = map.entries().next()
      if (next.done === true) return
      const [key, e] = next.value
      map.delete(key)
      if (!e.used) return
      e.used = false
      map.set(key, e)
    }
  }
}

interface Entry<V> {
  value: V
  used: boolean
}
