/**
 * Turns samples into the report: medians and min–max per row, paired ratios against the
 * baseline (each rep's value divided by the same rep's baseline — the interleaved runs sit next
 * to each other in time, so drift cancels), a client-limit flag, and the Markdown tables.
 */
import type { Row, RunResult, Sample, ScenarioResult } from './model.js'
import { max, median, min } from './stats.js'

export interface RowSummary {
  key: string
  label: string
  n: number
  median: number
  min: number
  max: number
  serverCpu: number | null
  clientCpu: number | null
  /** Most samples had the load generator near a full core while the server was not. */
  clientBound: boolean
  errors: number
  lastError?: string
  extra: Record<string, number | string>
  /** Median of per-rep ratios to the baseline row (value / baseline), with min–max. */
  ratio?: { median: number, min: number, max: number }
}

const CLIENT_LIMIT = 0.9

export function isClientBound (s: Sample): boolean {
  return s.clientCpu !== null && s.clientCpu >= CLIENT_LIMIT && (s.serverCpu === null || s.serverCpu < CLIENT_LIMIT)
}

function medianOf (samples: Sample[], pick: (s: Sample) => number | null): number | null {
  const xs = samples.map(pick).filter((x): x is number => x !== null && Number.isFinite(x))
  return xs.length === 0 ? null : median(xs)
}

export function summarize (scenario: ScenarioResult): RowSummary[] {
  const base = scenario.rows.find(r => r.key === scenario.baseline)
  return scenario.rows.map((row) => summarizeRow(row, base))
}

function summarizeRow (row: Row, base: Row | undefined): RowSummary {
  const values = row.samples.map(s => s.value).filter(Number.isFinite)
  const extra: Record<string, number | string> = {}
  const keys = new Set(row.samples.flatMap(s => Object.keys(s.extra)))
  for (const k of keys) {
    const xs = row.samples.map(s => s.extra[k])
    if (xs.every(x => typeof x === 'number')) extra[k] = median(xs as number[])
    else extra[k] = [...new Set(xs.filter(x => x !== undefined).map(String))].join(' / ')
  }
  const s: RowSummary = {
    key: row.key,
    label: row.label,
    n: values.length,
    median: median(values),
    min: min(values),
    max: max(values),
    serverCpu: medianOf(row.samples, x => x.serverCpu),
    clientCpu: medianOf(row.samples, x => x.clientCpu),
    clientBound: row.samples.filter(isClientBound).length * 2 > row.samples.length,
    errors: row.samples.reduce((a, x) => a + x.errors, 0),
    lastError: row.samples.map(x => x.lastError).filter(Boolean).pop() ?? row.failures[row.failures.length - 1],
    extra
  }
  if (base !== undefined && base !== row) {
    const ratios: number[] = []
    for (const sample of row.samples) {
      const b = base.samples.find(x => x.rep === sample.rep)
      if (b !== undefined && b.value > 0 && Number.isFinite(sample.value)) ratios.push(sample.value / b.value)
    }
    if (ratios.length > 0) s.ratio = { median: median(ratios), min: min(ratios), max: max(ratios) }
  }
  return s
}

export function fmt (n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–'
  if (Math.abs(n) >= 1000 && digits === 0) return Math.round(n).toLocaleString('en-US')
  return n.toFixed(digits)
}

function pct (n: number | null): string {
  return n === null ? '–' : `${Math.round(n * 100)}%`
}

/** Value formatting per unit: rates as integers, bytes and µs with sensible precision. */
function val (n: number, unit: string): string {
  if (unit === 'µs') return fmt(n, n < 10 ? 2 : n < 100 ? 1 : 0)
  if (unit === 'bytes') return fmt(n, 0)
  return fmt(n, 0)
}

export function scenarioMarkdown (sc: ScenarioResult): string {
  const rows = summarize(sc)
  const extraCols = [...new Set(rows.flatMap(r => Object.keys(r.extra)))]
  const head = ['contender', `${sc.metric} (median)`, 'min–max', sc.baseline === null ? undefined : 'ratio (min–max)', ...extraCols, 'server CPU', 'client CPU', 'notes'].filter((x): x is string => x !== undefined)
  const lines = [`### ${sc.title}`, '', `Unit: ${sc.unit}; ${sc.higherIsBetter ? 'higher' : 'lower'} is better. ${rows[0]?.n ?? 0} interleaved repeats per row.`, '']
  lines.push('| ' + head.join(' | ') + ' |')
  lines.push('|' + head.map((_, i) => i === 0 ? ' --- ' : ' ---: ').join('|') + '|')
  for (const r of rows) {
    const notes: string[] = []
    if (r.clientBound) notes.push('**client-bound**')
    if (r.errors > 0) notes.push(`${r.errors} errors (${(r.lastError ?? '').slice(0, 60)})`)
    if (r.n === 0) notes.push(`not measured: ${(r.lastError ?? 'failed').slice(0, 80)}`)
    const cells = [
      r.label,
      val(r.median, sc.unit),
      `${val(r.min, sc.unit)}–${val(r.max, sc.unit)}`,
      sc.baseline === null ? undefined : r.key === sc.baseline ? '1.00 (baseline)' : r.ratio === undefined ? '–' : `${r.ratio.median.toFixed(2)}× (${r.ratio.min.toFixed(2)}–${r.ratio.max.toFixed(2)})`,
      ...extraCols.map(k => typeof r.extra[k] === 'number' ? fmt(r.extra[k] as number, (r.extra[k] as number) < 100 ? 2 : 0) : String(r.extra[k] ?? '–')),
      pct(r.serverCpu),
      pct(r.clientCpu),
      notes.join('; ')
    ].filter((x): x is string => x !== undefined)
    lines.push('| ' + cells.join(' | ') + ' |')
  }
  if (sc.targets.length > 0) {
    lines.push('', '| target | goal | measured | met |', '| --- | --- | --- | --- |')
    for (const t of sc.targets) lines.push(`| ${t.name} | ${t.target} | ${t.value} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`)
  }
  if (sc.partial.length > 0) lines.push('', `**Partial:** ${sc.partial.join('; ')}.`)
  for (const n of sc.notes) lines.push('', n)
  return lines.join('\n')
}

export function runMarkdown (run: RunResult): string {
  const m = run.machine
  const lines = [
    `## Results — ${run.mode} run, ${run.date}`,
    '',
    `Machine: ${String(m.nproc)} × ${String(m.cpu)}, ${String(m.memoryGiB)} GiB, Node.js ${String(m.node)}, ${String(m.platform)}; ` +
      `load average ${(m.loadavg as number[]).join(' ')} at start, ${((m.loadavgEnd ?? []) as number[]).join(' ')} at the end (shared machine). ${run.pinning}. ` +
      `Versions: ${Object.entries(run.versions).map(([k, v]) => `${k} ${v}`).join(', ')}. Run time ${Math.round(run.seconds)} s.`,
    '',
    ...((run.config as { budgetHit?: boolean }).budgetHit === true ? ['**The time budget was reached: some repeats were skipped.**', ''] : []),
    `Build: ${run.build}.`,
    '',
    'Ratios are medians of per-repeat ratios (each repeat of a contender ran right next to the same repeat of the baseline). ' +
      'CPU columns are a fraction of one core over the measured window; **client-bound** marks rows where the load generator, not the server, was the limit.',
    ''
  ]
  for (const sc of run.scenarios) lines.push(scenarioMarkdown(sc), '')
  return lines.join('\n')
}
