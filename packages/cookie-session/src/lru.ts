/**
 * A small bounded LRU map (a `Map` keeps insertion order: a hit is re-inserted at the end, the
 * first key is the least recently used). Used for verified signed cookie values → session id.
 *
 * Why this is safe for signatures: a key is inserted only after `unsignCookie` verified it in
 * constant time, and a lookup compares the whole signed value (id + MAC). A forged value is never
 * a key, so it always misses and goes to the real verification; the cache cannot be used to test
 * guesses of a MAC, it only skips re-verifying a value that already verified.
 */
export class Lru<V> {
  readonly #max: number
  readonly #map = new Map<string, V>()

  constructor (max: number) {
    this.#max = max
  }

  get size (): number {
    return this.#map.size
  }

  get (key: string): V | undefined {
    const v = this.#map.get(key)
    if (v !== undefined) {
      this.#map.delete(key)
      this.#map.set(key, v)
    }
    return v
  }

  set (key: string, value: V): void {
    if (this.#max <= 0) return
    this.#map.delete(key)
    this.#map.set(key, value)
    if (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value as string
      this.#map.delete(oldest)
    }
  }

  clear (): void {
    this.#map.clear()
  }
}
