import type { Context } from './context.js'
import type { Category, Door, Result } from './types.js'

export interface Verdict {
  result: Result
  detail: string
}

/** A check as the runner sees it: what it is, what to do when it fails, how to run it. */
export interface CheckDef {
  id: string
  category: Category
  door: Door
  remedy: string
  run: (ctx: Context) => Promise<Verdict>
}

export const pass = (detail: string): Verdict => ({ result: 'pass', detail })
export const fail = (detail: string): Verdict => ({ result: 'fail', detail })
export const skip = (detail: string): Verdict => ({ result: 'skip', detail })
