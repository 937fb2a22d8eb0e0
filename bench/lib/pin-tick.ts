/**
 * `BENCH_PIN_TICK=1` (diagnostic, off by default): keep one of Node's tick objects alive for the
 * server process's life.
 *
 * Why: `process.nextTick` builds each tick object with one object literal. V8 holds the maps of
 * that literal's property chain weakly, so a major GC that runs while no tick object is alive
 * clears them, and the next tick makes new ones. After four such GCs the literal's inline caches
 * are megamorphic for good (`%DebugPrint(process.nextTick)`: three of its four
 * DefineKeyedOwnPropertyInLiteral slots), and each `nextTick` costs about 1 µs instead of about
 * 0.1 µs. Whether a process draws that depends on when its GCs run, so two runs of one server
 * can differ by it. A live tick object keeps the chain's maps alive (a map holds its parent), and
 * the caches stay monomorphic. Applied to every contender alike, it takes this lottery out of a
 * comparison; the default bench leaves processes as they ship.
 */
import { createHook } from 'node:async_hooks'

let pinned: object | undefined

export function pinTickObject (): boolean {
  const hook = createHook({
    init (_id, type, _trigger, resource) {
      if (type === 'TickObject' && pinned === undefined) pinned = resource as object
    }
  })
  hook.enable()
  process.nextTick(() => {})
  hook.disable()
  return pinned !== undefined
}
