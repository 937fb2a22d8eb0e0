/**
 * CPU accounting for a measurement window: the server's from `/proc/<pid>/stat` (utime + stime,
 * all threads), the load generator's own from `process.cpuUsage()`. Both are reported as a
 * fraction of one core over the window's wall time, so 1.0 means "a core was saturated".
 */
import { readdirSync, readFileSync } from 'node:fs'

/** Clock ticks per second for /proc times (USER_HZ, 100 on every Linux ABI Node supports). */
const TICKS = 100

/** Seconds of CPU a process has used, or undefined when /proc is not there (not Linux). */
export function procCpuSeconds (pid: number): number | undefined {
  try {
    return statCpuSeconds(readFileSync(`/proc/${pid}/stat`, 'latin1'))
  } catch {
    return undefined
  }
}

export interface WindowResult {
  seconds: number
  /** Server CPU as a fraction of one core, or null when it could not be read. */
  serverCpu: number | null
  /** Server CPU seconds used in the window, or null. */
  serverCpuSeconds: number | null
  clientCpu: number
}

export interface Window {
  end: () => WindowResult
}

/** utime + stime of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line, in seconds. */
function statCpuSeconds (stat: string): number {
  // the command name (field 2) is in parentheses and may hold spaces: count from the last ')'
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state); utime is field 14, stime field 15
  return (Number(fields[11]) + Number(fields[12])) / TICKS
}

/** CPU seconds of each thread of a process, by thread name (BENCH_THREADS=1 diagnostics). */
function threadCpu (pid: number): Map<string, number> {
  const out = new Map<string, number>()
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1')
      const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      out.set(name, (out.get(name) ?? 0) + statCpuSeconds(stat))
    }
  } catch {}
  return out
}

export function startWindow (serverPid: number): Window {
  const threads = process.env.BENCH_THREADS === '1' ? threadCpu(serverPid) : undefined
  const t0 = process.hrtime.bigint()
  const s0 = procCpuSeconds(serverPid)
  const c0 = process.cpuUsage()
  return {
    end () {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const s1 = procCpuSeconds(serverPid)
      const c = process.cpuUsage(c0)
      const serverCpuSeconds = s0 === undefined || s1 === undefined ? null : s1 - s0
      if (threads !== undefined) {
        const after = threadCpu(serverPid)
        const parts = [...after].map(([k, v]) => [k, v - (threads.get(k) ?? 0)] as const).filter(([, v]) => v > 0)
        process.stderr.write(`[threads ${serverPid}] ${parts.map(([k, v]) => `${k}=${(v / seconds * 100).toFixed(0)}%`).join(' ')}\n`)
      }
      return {
        seconds,
        serverCpu: serverCpuSeconds === null ? null : serverCpuSeconds / seconds,
        serverCpuSeconds,
        clientCpu: (c.user + c.system) / 1e6 / seconds
      }
    }
  }
}
