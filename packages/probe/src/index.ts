/**
 * @portcullis/probe: an attack kit you run against your own WebSocket route (and its Portcullis
 * long-poll door) to see that it is not hijackable. Programmatic API and the CLI's entry point.
 */
export { probe, plan, defaults, checkDefinitions, type Plan } from './probe.js'
export { main, parseArgs, USAGE, type Io } from './cli.js'
export { describePlan, formatReport, summary } from './report.js'
export { PORTCULLIS_PROBE_BAD_OPTION, PORTCULLIS_PROBE_BASELINE_REFUSED, PORTCULLIS_PROBE_UNREACHABLE } from './errors.js'
export type { Category, Check, Door, ProbeOptions, Report, Result } from './types.js'
