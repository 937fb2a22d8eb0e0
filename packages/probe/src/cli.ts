/**
 * `portcullis-probe <ws:// or wss:// URL> --origin <origin> [options]`. Exit status: 0 no
 * finding, 1 findings, 2 a usage error or an unreachable target (or a refused baseline).
 */
import { plan, probe } from './probe.js'
import { describePlan, formatReport } from './report.js'
import type { ProbeOptions } from './types.js'

export const USAGE = `usage: portcullis-probe <ws:// or wss:// URL> --origin <an origin the app allows>
         [--cookie '<Cookie header of a logged-in user>'] [--protocol <subprotocol>] [--fallback]
         [--json] [--max-requests N] [--timeout-ms N] [--rate N]

  --origin        an origin the route allows (required), e.g. https://app.example.com
  --cookie        the Cookie header of a logged-in user; never printed (session checks need it)
  --protocol      the subprotocol the route negotiates (subprotocol checks need it)
  --fallback      also probe the Portcullis long-poll door at <path>/_lp/*
  --json          print { target, checks, findings } as JSON on stdout
  --max-requests  at most N connections (default 200, 1-1000)
  --timeout-ms    timeout of every step in ms (default 5000, 100-60000)
  --rate          at most N new connections per second (default 20, 1-100)

exit status: 0 no finding, 1 findings, 2 usage error or unreachable target`

export interface Io {
  stdout: { write: (s: string) => unknown, isTTY?: boolean }
  stderr: { write: (s: string) => unknown }
  env?: Record<string, string | undefined>
}

class UsageError extends Error {}

const VALUE_FLAGS = new Set(['--origin', '--cookie', '--protocol', '--max-requests', '--timeout-ms', '--rate'])
const BOOL_FLAGS = new Set(['--fallback', '--json', '--help', '-h'])

export function parseArgs (argv: string[]): { opts: ProbeOptions, json: boolean, help: boolean } {
  const values = new Map<string, string>()
  const flags = new Set<string>()
  const positional: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('-') || arg === '-') { positional.push(arg); continue }
    const eq = arg.indexOf('=')
    const name = eq === -1 ? arg : arg.slice(0, eq)
    if (VALUE_FLAGS.has(name)) {
      const v = eq === -1 ? argv[++i] : arg.slice(eq + 1)
      if (v === undefined) throw new UsageError(`${name} needs a value`)
      if (values.has(name)) throw new UsageError(`${name} given twice`)
      values.set(name, v)
    } else if (BOOL_FLAGS.has(name) && eq === -1) {
      flags.add(name)
    } else {
      throw new UsageError(`unknown option ${name}`)
    }
  }
  const help = flags.has('--help') || flags.has('-h')
  if (help) return { opts: { url: '', origin: '' }, json: false, help }
  if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'the URL of the route is required' : 'only one URL may be given')
  const int = (name: string): number | undefined => {
    const v = values.get(name)
    if (v === undefined) return undefined
    if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${name} must be a whole number`)
    return Number(v)
  }
  const origin = values.get('--origin')
  if (origin === undefined) throw new UsageError('--origin is required: an origin the app allows')
  const opts: ProbeOptions = {
    url: positional[0],
    origin,
    cookie: values.get('--cookie'),
    protocol: values.get('--protocol'),
    fallback: flags.has('--fallback'),
    maxRequests: int('--max-requests'),
    ratePerSecond: int('--rate'),
    timeoutMs: int('--timeout-ms')
  }
  return { opts, json: flags.has('--json'), help }
}

/** Run the CLI; resolves with the exit status. */
export async function main (argv: string[], io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  let parsed
  try {
    parsed = parseArgs(argv)
    if (parsed.help) {
      io.stdout.write(USAGE + '\n')
      return 0
    }
    io.stderr.write(describePlan(plan(parsed.opts)) + '\n\n')
  } catch (err) {
    io.stderr.write(`portcullis-probe: ${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  let report
  try {
    report = await probe(parsed.opts)
  } catch (err) {
    const e = err as Error & { code?: string }
    io.stderr.write(`portcullis-probe: ${e.code !== undefined ? `${e.code}: ` : ''}${e.message}\n`)
    return 2
  }
  if (parsed.json) {
    io.stdout.write(JSON.stringify(report, null, 2) + '\n')
  } else {
    const env = io.env ?? {}
    const color = io.stdout.isTTY === true && env.NO_COLOR === undefined && env.TERM !== 'dumb'
    io.stdout.write(formatReport(report, { color }) + '\n')
  }
  return report.findings === 0 ? 0 : 1
}
