/** The results model shared by the runner and the report. */

export interface Sample {
  rep: number
  value: number
  /** Server CPU over the window, fraction of one core (null when unreadable or not applicable). */
  serverCpu: number | null
  /** Load generator CPU over the window, fraction of one core (null when not applicable). */
  clientCpu: number | null
  errors: number
  lastError?: string
  /** Scenario-specific numbers (latency percentiles, RSS, statuses...). */
  extra: Record<string, number | string>
}

export interface Row {
  /** Row key: the contender, plus a variant for scenarios with several (e.g. `portcullis@8192`). */
  key: string
  contender: string
  label: string
  samples: Sample[]
  failures: string[]
}

export interface TargetCheck {
  name: string
  target: string
  value: string
  met: boolean | null
}

export interface ScenarioResult {
  id: string
  title: string
  metric: string
  unit: string
  higherIsBetter: boolean
  /** Row key the ratios are taken against. */
  baseline: string | null
  rows: Row[]
  notes: string[]
  targets: TargetCheck[]
  /** Portcullis parts that were inline stand-ins rather than the real plugins. */
  partial: string[]
  seconds: number
}

export interface RunResult {
  version: 1
  date: string
  mode: 'quick' | 'full'
  seconds: number
  machine: Record<string, unknown>
  versions: Record<string, string>
  /** How the server and load processes were built. */
  build: string
  pinning: string
  portcullis: Record<string, unknown>
  config: Record<string, unknown>
  scenarios: ScenarioResult[]
}
