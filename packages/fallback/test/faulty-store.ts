/**
 * A MemoryStore whose methods can be made to throw, reject or hang on demand, for the fault
 * tests of both doors: `fail.<method> = 'reject' | 'throw' | 'hang'`. `heal()` clears every
 * fault for later calls; a call that hung stays hung, as one on a dead connection would.
 */
import { Writable } from 'node:stream'
import { MemoryStore, type FallbackStore } from '../src/index.js'

export type Fault = 'reject' | 'throw' | 'hang'
type Method = Exclude<keyof FallbackStore, 'nodeId'>

export class FaultyStore extends MemoryStore {
  readonly fail: Partial<Record<Method, Fault>> = {}
  /** How many calls of each method failed. */
  readonly failures: Partial<Record<Method, number>> = {}

  heal (): void {
    for (const k of Object.keys(this.fail)) delete this.fail[k as Method]
  }

  #fault (m: Method): Promise<never> | undefined {
    const f = this.fail[m]
    if (f === undefined) return undefined
    this.failures[m] = (this.failures[m] ?? 0) + 1
    if (f === 'throw') throw new Error(`${m} broke (thrown)`)
    if (f === 'hang') return new Promise<never>(() => {})
    return Promise.reject(new Error(`${m} broke`))
  }

  override get (...a: Parameters<MemoryStore['get']>): ReturnType<MemoryStore['get']> { return this.#fault('get') ?? super.get(...a) }
  override touch (...a: Parameters<MemoryStore['touch']>): ReturnType<MemoryStore['touch']> { return this.#fault('touch') ?? super.touch(...a) }
  override create (...a: Parameters<MemoryStore['create']>): ReturnType<MemoryStore['create']> { return this.#fault('create') ?? super.create(...a) }
  override pushOutbound (...a: Parameters<MemoryStore['pushOutbound']>): ReturnType<MemoryStore['pushOutbound']> { return this.#fault('pushOutbound') ?? super.pushOutbound(...a) }
  override closeOutbound (...a: Parameters<MemoryStore['closeOutbound']>): ReturnType<MemoryStore['closeOutbound']> { return this.#fault('closeOutbound') ?? super.closeOutbound(...a) }
  override readOutbound (...a: Parameters<MemoryStore['readOutbound']>): ReturnType<MemoryStore['readOutbound']> { return this.#fault('readOutbound') ?? super.readOutbound(...a) }
  override pushInbound (...a: Parameters<MemoryStore['pushInbound']>): ReturnType<MemoryStore['pushInbound']> { return this.#fault('pushInbound') ?? super.pushInbound(...a) }
  override pushClientClose (...a: Parameters<MemoryStore['pushClientClose']>): ReturnType<MemoryStore['pushClientClose']> { return this.#fault('pushClientClose') ?? super.pushClientClose(...a) }
  override stop (...a: Parameters<MemoryStore['stop']>): ReturnType<MemoryStore['stop']> { return this.#fault('stop') ?? super.stop(...a) }
  override watch (...a: Parameters<MemoryStore['watch']>): ReturnType<MemoryStore['watch']> {
    if (this.fail.watch !== undefined) {
      this.failures.watch = (this.failures.watch ?? 0) + 1
      throw new Error('watch broke')
    }
    return super.watch(...a)
  }
}

export interface LogLine { level: number, msg: string, [k: string]: any }

/** A pino destination that keeps every line, parsed. */
export function logSink (): { stream: Writable, lines: LogLine[], errors: () => LogLine[] } {
  const lines: LogLine[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.length > 0) lines.push(JSON.parse(l))
      cb()
    }
  })
  return { stream, lines, errors: () => lines.filter(l => l.level >= 50) }
}
