/**
 * A backoff on repeated failed logins for one account, whatever address they come from: the
 * per-address rate limit (@fastify/rate-limit) stops one machine guessing fast; this stops many
 * machines guessing one password together (OWASP ASVS V2.2.1, "anti-automation").
 *
 * After `freeFailures` failed attempts in a row, each further attempt waits `baseMs`, then twice
 * as long, up to `maxMs`. While an account waits, its logins are refused BEFORE the password is
 * checked (a guess made during the wait tells nothing), for unknown user names too (the answer
 * does not tell which names exist). A success forgets the account; so does `forgetMs` without a
 * failure. At most `maxAccounts` accounts are remembered (the oldest failure is forgotten first),
 * so a flood of made-up names cannot grow memory.
 *
 * Per process: with several nodes each keeps its own count (documented in the README).
 */

export interface LoginBackoffOptions {
  /** Failed attempts in a row that cost nothing. Default `3`. */
  freeFailures?: number
  /** The first wait, in ms; doubles with each further failure. Default `1000`. */
  baseMs?: number
  /** The longest wait, in ms. Default `300000` (5 minutes). */
  maxMs?: number
  /** An account with no failure for this long starts again from zero, in ms. Default `900000` (15 minutes). */
  forgetMs?: number
  /** Accounts remembered at most. Default `10000`. */
  maxAccounts?: number
}

interface Entry {
  failures: number
  /** when the account may try again (ms since the epoch) */
  until: number
  last: number
}

const defaults = Object.freeze({ freeFailures: 3, baseMs: 1000, maxMs: 300_000, forgetMs: 900_000, maxAccounts: 10_000 })

export class LoginBackoff {
  readonly #o: Required<LoginBackoffOptions>
  // insertion order = order of the last failure: the first key is the one to evict
  readonly #accounts = new Map<string, Entry>()

  constructor (opts: LoginBackoffOptions = {}) {
    const o: Required<LoginBackoffOptions> = { ...defaults }
    for (const key of Object.keys(defaults) as Array<keyof LoginBackoffOptions>) {
      const v = opts[key]
      if (v === undefined) continue
      if (typeof v !== 'number' || !Number.isInteger(v) || v < (key === 'freeFailures' ? 0 : 1)) {
        throw new TypeError(`loginBackoff.${key} must be a whole number${key === 'freeFailures' ? ' ≥ 0' : ' ≥ 1'}, got ${String(v)}`)
      }
      o[key] = v
    }
    this.#o = o
  }

  /** Milliseconds this account must wait before its next attempt; 0 when it may try now. */
  wait (account: string, now = Date.now()): number {
    const e = this.#accounts.get(account)
    if (e === undefined) return 0
    if (now - e.last >= this.#o.forgetMs) {
      this.#accounts.delete(account)
      return 0
    }
    return Math.max(0, e.until - now)
  }

  /** Record a failed attempt; returns the wait it now imposes (0 while failures are free). */
  fail (account: string, now = Date.now()): number {
    const known = this.#accounts.get(account)
    const e: Entry = known !== undefined && now - known.last < this.#o.forgetMs ? known : { failures: 0, until: 0, last: now }
    e.failures++
    e.last = now
    const over = e.failures - this.#o.freeFailures
    const delay = over <= 0 ? 0 : Math.min(this.#o.maxMs, this.#o.baseMs * 2 ** Math.min(over - 1, 30))
    e.until = now + delay
    this.#accounts.delete(account)
    this.#accounts.set(account, e)
    if (this.#accounts.size > this.#o.maxAccounts) {
      const oldest = this.#accounts.keys().next().value
      if (oldest !== undefined) this.#accounts.delete(oldest)
    }
    return delay
  }

  /** A successful login: the account starts again from zero. */
  succeed (account: string): void {
    this.#accounts.delete(account)
  }

  get size (): number {
    return this.#accounts.size
  }
}
