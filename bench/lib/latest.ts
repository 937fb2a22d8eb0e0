import { readFileSync } from 'node:fs'

/**
 * The median of one sample field (e.g. `server µs/op`) of one row in the last full run
 * (bench/results/latest-full.json), or undefined when there is no such run or row.
 */
export function latestMedian (scenario: string, key: string, field: string): number | undefined {
  try {
    const latest = JSON.parse(readFileSync(new URL('../results/latest-full.json', import.meta.url), 'utf8'))
    const row = latest.scenarios?.find((s: { id: string }) => s.id === scenario)?.rows?.find((r: { key: string }) => r.key === key)
    const xs = (row?.samples ?? []).map((x: { extra?: Record<string, number> }) => x.extra?.[field]).filter((x: unknown) => typeof x === 'number').sort((a: number, b: number) => a - b)
    return xs.length === 0 ? undefined : xs[Math.floor(xs.length / 2)]
  } catch {
    return undefined
  }
}

/** The median of `runs` calls of `measure` (after one warm-up call). */
export function medianOf (runs: number, measure: () => number): number {
  measure()
  const xs: number[] = []
  for (let r = 0; r < runs; r++) xs.push(measure())
  return xs.sort((a, b) => a - b)[Math.floor(runs / 2)]
}
