/** Small statistics over samples: median, min, max and nearest-rank percentiles. */

export function median (xs: number[]): number {
  return percentile(xs, 50)
}

/**
 * Percentile by linear interpolation between closest ranks (p in 0..100). For p50 of an even
 * count this is the mean of the two middle values, the usual median.
 */
export function percentile (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = (p / 100) * (s.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  return s[lo] + (s[hi] - s[lo]) * (rank - lo)
}

export function min (xs: number[]): number {
  return xs.length === 0 ? NaN : Math.min(...xs)
}

export function max (xs: number[]): number {
  return xs.length === 0 ? NaN : Math.max(...xs)
}

/** Percentiles of a large latency list without copying it twice. */
export function latencySummary (ms: number[]): { n: number, p50: number, p99: number, max: number } {
  if (ms.length === 0) return { n: 0, p50: NaN, p99: NaN, max: NaN }
  const s = Float64Array.from(ms).sort()
  const at = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
  return { n: s.length, p50: at(50), p99: at(99), max: s[s.length - 1] }
}
