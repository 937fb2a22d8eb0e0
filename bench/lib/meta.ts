/** Versions and machine facts for the results' metadata. */
import { existsSync, readFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join } from 'node:path'

/** The workspace root: the nearest directory holding pnpm-workspace.yaml (cwd for bundles). */
function findRoot (): string {
  for (let dir = process.cwd(); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir + '/'
    if (dirname(dir) === dir) return process.cwd() + '/'
  }
}
const root = new URL(`file://${findRoot()}`)

/** The installed version of a package in the workspace root (or in a workspace package). */
export function version (name: string, from = ''): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL(`${from}node_modules/${name}/package.json`, root), 'utf8')) as { version: string }
    return pkg.version
  } catch {
    return '?'
  }
}

export interface Machine {
  nproc: number
  cpu: string
  memoryGiB: number
  node: string
  platform: string
  loadavg: number[]
}

export function machine (): Machine {
  const list = cpus()
  return {
    nproc: list.length,
    cpu: list[0]?.model ?? '?',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadavg: loadavg().map(n => Math.round(n * 100) / 100)
  }
}
