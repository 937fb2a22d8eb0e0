/**
 * What the probe prints: the plan it states before sending anything, the human table (coloured
 * on a TTY only), and the summary line. The cookie never appears: the plan names it only by
 * its number of pairs, and check details are redacted by the runner.
 */
import { cookiePairs } from './context.js'
import type { Plan } from './probe.js'
import type { Check, Report } from './types.js'

/** What will be sent and to where, said before the first byte goes out. */
export function describePlan (p: Plan): string {
  const t = p.target
  const where = `${t.hostname.includes(':') ? `[${t.hostname}]` : t.hostname}:${t.port}`
  const door = p.fallback ? ` and its long-poll door ${p.target.secure ? 'https' : 'http'}://${t.host}${p.target.path.split('?')[0].replace(/\/+$/, '')}/_lp/*` : ''
  const cookie = p.cookie === undefined ? 'no cookie' : `Cookie [redacted: ${cookiePairs(p.cookie).length} pair(s)]`
  return [
    `portcullis-probe: probing ${p.shown}${door}`,
    `  to:    ${where} only, at most ${p.maxRequests} connections, at most ${p.ratePerSecond} per second, ${p.timeoutMs} ms timeout on every step`,
    `  with:  Origin ${p.origin}, ${cookie}, ${p.protocol === undefined ? 'no subprotocol' : `Sec-WebSocket-Protocol ${p.protocol}`}`,
    '  sends: lookalike and foreign origins, altered and duplicated cookies, malformed handshakes and frames,',
    '         a frame header declaring 100 MiB (the payload is not sent), one 1 MiB and one 20000-fragment unfinished message' +
      (p.fallback ? ',\n         simple (text/plain, form) and marker-less fallback requests, foreign-origin polls, a guessed sid' : '')
  ].join('\n')
}

const COLORS = { pass: '\u001b[32m', fail: '\u001b[31;1m', skip: '\u001b[33m', dim: '\u001b[2m', reset: '\u001b[0m' }

/** The report as a table: one line per check, the remedy under each failure, a summary line. */
export function formatReport (report: Report, opts: { color?: boolean } = {}): string {
  const color = opts.color === true
  const paint = (c: keyof typeof COLORS, s: string): string => color ? COLORS[c] + s + COLORS.reset : s
  const idWidth = Math.max(5, ...report.checks.map((c) => c.id.length))
  const lines = [`${'RESULT'.padEnd(6)}  ${'CHECK'.padEnd(idWidth)}  ${'DOOR'.padEnd(9)}  DETAIL`]
  for (const c of report.checks) {
    const result = c.result === 'fail' ? 'FAIL' : c.result
    lines.push(`${paint(c.result, result.padEnd(6))}  ${c.id.padEnd(idWidth)}  ${c.door.padEnd(9)}  ${c.detail}`)
    if (c.result === 'fail') lines.push(`${' '.repeat(8 + idWidth + 2 + 9 + 2)}${paint('dim', 'remedy: ' + c.remedy)}`)
  }
  lines.push('', summary(report))
  return lines.join('\n')
}

export function summary (report: Report): string {
  const n = (r: Check['result']): number => report.checks.filter((c) => c.result === r).length
  const tail = report.findings === 0 ? 'no findings' : `${report.findings} finding${report.findings === 1 ? '' : 's'}`
  return `${report.target}: ${report.checks.length} checks, ${n('pass')} pass, ${n('fail')} fail, ${n('skip')} skip: ${tail}`
}
