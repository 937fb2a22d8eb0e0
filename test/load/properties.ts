/**
 * Shared support for the property (fuzz) suites: one seed and run count for every property, so
 * CI is deterministic and a longer hunt is one environment variable away:
 *
 *   FC_SEED=123 FC_RUNS=20000 npx tap test/fuzz-*.test.ts
 *
 * and a linear-time check that compares the cost of an input with the cost of one ten times
 * longer (a quadratic parser costs ~100×, a linear one ~10×).
 */
import fc from 'fast-check'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

// A collection before each measurement keeps garbage of the previous one out of its time.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Fixed in CI (reproducible); override with `FC_SEED`. */
export const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x5eed
/** Runs per property; override with `FC_RUNS` for a longer hunt. */
export const RUNS = process.env.FC_RUNS !== undefined ? Number(process.env.FC_RUNS) : 300

export function params<T> (extra: fc.Parameters<T> = {}): fc.Parameters<T> {
  return { seed: SEED, numRuns: RUNS, ...extra }
}

/** Distinctive text no parser message contains; used to prove a message never echoes input. */
export const CANARY = 'zqxjkvcanary'

/** Strings biased to what breaks header and frame parsers: separators, quotes, escapes, controls, Unicode. */
export function hostileString (maxLength = 200): fc.Arbitrary<string> {
  const pieces = fc.oneof(
    fc.constantFrom(',', ';', '=', ' ', '\t', '"', '\\', ':', '/', '.', '*', '[', ']', '@', '?', '#', '%', '\r', '\n', '\0',
      'null', 'http', 'https', '://', 'example.com', 'xn--', '\u00e9', '\u{1F600}', '\ud800', '\uffff', CANARY),
    fc.string({ maxLength: 8 }),
    fc.string({ unit: 'binary', maxLength: 4 })
  )
  return fc.array(pieces, { maxLength: Math.ceil(maxLength / 4) }).map(a => a.join('').slice(0, maxLength))
}

function timeOnce (fn: () => void, iterations: number): number {
  const start = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) fn()
  return Number(process.hrtime.bigint() - start)
}

/**
 * Best-of-4 time of `fn(input)`, looping enough iterations that one sample takes ≥ 1 ms
 * (timer noise out), in nanoseconds per call.
 */
export function costOf (fn: (input: string) => unknown, input: string): number {
  const call = (): void => { try { fn(input) } catch {} }
  let iterations = 1
  while (timeOnce(call, iterations) < 1e6 && iterations < 1 << 20) iterations *= 2
  gc()
  let best = Infinity
  for (let k = 0; k < 4; k++) best = Math.min(best, timeOnce(call, iterations) / iterations)
  return best
}

/**
 * Ratio of the cost of `make(10 n)` to `make(n)`. Linear ≈ 10; the suites allow 20 (noise on a
 * shared 2-core CI machine); quadratic would be ≈ 100. Noise only ever makes one sample slower,
 * so the lowest ratio of up to `attempts` measurements is kept (a quadratic parser never gets
 * near 20 however often it is measured).
 */
export function growth (fn: (input: string) => unknown, make: (n: number) => string, n: number, good = 12, attempts = 3): { ratio: number, small: number, large: number } {
  const small = make(n)
  const large = make(n * 10)
  // warm up both sizes so JIT tiers do not skew the first measurement
  costOf(fn, small)
  costOf(fn, large)
  let best = { ratio: Infinity, small: 0, large: 0 }
  // stop early once a measurement is clearly good (`good`: ~12 for linear, ~2 for capped inputs)
  for (let k = 0; k < attempts && best.ratio >= good; k++) {
    const s = costOf(fn, small)
    const l = costOf(fn, large)
    if (l / s < best.ratio) best = { ratio: l / s, small: s, large: l }
  }
  return best
}
