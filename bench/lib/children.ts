/**
 * Child processes of a benchmark run: servers pinned to core 0, the load generator to core 1
 * (with `taskset` when it is there), each with an IPC channel. Every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Built } from './build.js'

const here = fileURLToPath(new URL('../', import.meta.url))
const TSX_ARGS = ['--conditions=portcullis-source', '--import=tsx']

/**
 * Compiled entry points (see build.ts); until `useBuilt` is called, children run the
 * TypeScript sources through tsx.
 */
let built: Built | undefined
export function useBuilt (b: Built | undefined): void {
  built = b
}

let tasksetOk: boolean | undefined
/** Whether `taskset` exists and may pin to cores 0 and 1 here. */
export function hasTaskset (): boolean {
  if (tasksetOk === undefined) {
    const r = spawnSync('taskset', ['-c', '0,1', 'true'], { stdio: 'ignore' })
    tasksetOk = r.status === 0
  }
  return tasksetOk
}

function spawnNode (script: 'server' | 'load', args: string[], core: number | undefined, env: Record<string, string> = {}): ChildProcess {
  const entry = built === undefined ? [...TSX_ARGS, `${here}${script}.ts`] : [built[script]]
  // BENCH_NODE_FLAGS: V8/Node flags for the servers only (e.g. `--trace-opt --trace-deopt`)
  const flags = script === 'server' ? (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(f => f.length > 0) : []
  const argv = ['--expose-gc', ...flags, ...entry, ...args]
  const opts = { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] as Array<'ignore' | 'inherit' | 'ipc'>, cwd: fileURLToPath(new URL('../../', import.meta.url)), env: { ...process.env, ...env } }
  // taskset execs node: the child's pid is node's, so /proc/<pid>/stat is the server's own
  if (core !== undefined && hasTaskset()) return spawn('taskset', ['-c', String(core), process.execPath, ...argv], opts)
  return spawn(process.execPath, argv, opts)
}

function waitFor<T> (child: ChildProcess, match: (msg: any) => T | undefined, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`${what}: no answer in ${ms} ms`)) }, ms)
    const onMessage = (msg: unknown): void => {
      const v = match(msg)
      if (v !== undefined) { cleanup(); resolve(v) }
    }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`${what}: child exited with ${code}`)) }
    const cleanup = (): void => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

/** Ask a child to exit; kill it after `graceMs` (a profiling server first writes its profile). */
function stop (child: ChildProcess, graceMs = 3000): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
    child.once('exit', () => { clearTimeout(timer); resolve() })
    if (child.connected) child.send({ type: 'exit' })
    else child.kill('SIGTERM')
  })
}

export interface ServerHandle {
  contender: string
  port: number
  pid: number
  info: Record<string, unknown>
  clientHeaders: Array<[string, string]>
  memory: () => Promise<{ heapUsed: number, rss: number, external: number }>
  close: () => Promise<void>
}

let memIds = 0

/** Start a contender's server on core 0. `cpuProfile`: write a CPU profile of its run to this file. */
export async function startServer (contender: string, opts: { cpuProfile?: string } = {}): Promise<ServerHandle> {
  const child = spawnNode('server', [contender], 0, opts.cpuProfile === undefined ? {} : { BENCH_CPU_PROFILE: opts.cpuProfile })
  try {
    const ready = await waitFor(child, (m: any) => m?.type === 'ready' ? m : undefined, 30_000, `server ${contender}`)
    return {
      contender,
      port: ready.port,
      pid: ready.pid,
      info: ready.info,
      clientHeaders: ready.clientHeaders,
      memory: async () => {
        const id = ++memIds
        child.send({ type: 'mem', id })
        return await waitFor(child, (m: any) => m?.type === 'mem' && m.id === id ? m : undefined, 15_000, `memory of ${contender}`)
      },
      close: () => stop(child, opts.cpuProfile === undefined ? 3000 : 60_000)
    }
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  }
}

export interface LoadHandle {
  pid: number
  /** Run a job; `onStep` is called for intermediate steps and must resolve before the job goes on. */
  run: (job: unknown, timeoutMs: number, onStep?: (step: any) => Promise<void>) => Promise<any>
  close: () => Promise<void>
}

let jobIds = 0

export async function startLoad (): Promise<LoadHandle> {
  const child = spawnNode('load', [], 1)
  const ready = await waitFor(child, (m: any) => m?.type === 'ready' ? m : undefined, 30_000, 'load generator')
  return {
    pid: ready.pid,
    run: (job, timeoutMs, onStep) => {
      const id = ++jobIds
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { cleanup(); reject(new Error(`job ${id} timed out after ${timeoutMs} ms`)) }, timeoutMs)
        const onMessage = (m: any): void => {
          if (m?.id !== id) return
          if (m.type === 'step') {
            const go = onStep === undefined ? Promise.resolve() : onStep(m)
            go.then(() => child.send({ type: 'continue', id }), (err: Error) => { cleanup(); reject(err) })
          } else if (m.type === 'result') {
            cleanup()
            resolve(m.result)
          } else if (m.type === 'error') {
            cleanup()
            reject(new Error(m.message))
          }
        }
        const onExit = (code: number | null): void => { cleanup(); reject(new Error(`load generator exited with ${code}`)) }
        const cleanup = (): void => {
          clearTimeout(timer)
          child.off('message', onMessage)
          child.off('exit', onExit)
        }
        child.on('message', onMessage)
        child.on('exit', onExit)
        child.send({ type: 'job', id, job })
      })
    },
    close: () => stop(child)
  }
}
