#!/usr/bin/env node
// The `portcullis-probe` command. A published package runs its build (dist/); in the
// workspace, before any build, it runs the TypeScript source through tsx.
import { existsSync } from 'node:fs'

const built = new URL('../dist/esm/index.js', import.meta.url)
let entry
if (existsSync(built)) {
  entry = await import(built.href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  entry = await import(new URL('../src/index.ts', import.meta.url).href)
}
const code = await entry.main(process.argv.slice(2))
// exit once the report is flushed, whatever sockets a misbehaving target left half-open
process.stdout.write('', () => process.exit(code))
