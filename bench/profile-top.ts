/**
 * Summarize a `.cpuprofile` (from `pnpm bench --profile=<contender>`, or `node --cpu-prof`):
 * self time by function and by package, so a missed target can be explained by what the server
 * actually spent its time on. `node --import=tsx bench/profile-top.ts <file> [top=25]`
 */
import { readFileSync } from 'node:fs'

interface Node {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  hitCount?: number
}
interface Profile { nodes: Node[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }

const [file, topArg] = process.argv.slice(2)
if (file === undefined) throw new Error('usage: profile-top.ts <file.cpuprofile> [top]')
const top = Number(topArg ?? 25)
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(profile.nodes.map(n => [n.id, n]))
const self = new Map<number, number>()
for (let i = 0; i < profile.samples.length; i++) {
  self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0))
}
// percentages are of busy time: a server profiled across a whole scenario idles while the
// other contenders are measured
const idle = new Set(profile.nodes.filter(n => n.callFrame.functionName === '(idle)').map(n => n.id))
for (const id of idle) self.delete(id)
const total = [...self.values()].reduce((a, b) => a + b, 0)
const fn = new Map<string, number>()
const pkg = new Map<string, number>()
for (const [id, us] of self) {
  const n = byId.get(id) as Node
  const url = n.callFrame.url
  const short = url.replace(/^file:\/\//, '').replace(/^.*node_modules\/\.pnpm\/[^/]+\/node_modules\//, '').replace(/^\/work\/main\//, '')
  const key = `${n.callFrame.functionName || '(anonymous)'} ${short}:${n.callFrame.lineNumber + 1}`
  fn.set(key, (fn.get(key) ?? 0) + us)
  const p = url === '' ? n.callFrame.functionName : url.startsWith('node:') ? 'node:' + url.slice(5).split('/')[0] : (short.match(/^(@[^/]+\/[^/]+|packages\/[^/]+|[^/]+)/)?.[1] ?? short)
  pkg.set(p, (pkg.get(p) ?? 0) + us)
}
const show = (title: string, m: Map<string, number>, n: number): void => {
  console.log(`\n${title}`)
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${(us / total * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`)
}
console.log(`${file}: ${(total / 1e6).toFixed(2)} s busy (idle excluded)`)
show('self time by package / area', pkg, 15)
show('self time by function', fn, top)
