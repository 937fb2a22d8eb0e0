// Builds the browser bundle of @portcullis/client: one minified ES module in dist/browser/, and
// prints its minified and min+gzip sizes (the README quotes the gzip figure). Idempotent and
// quick (esbuild), so the chat example's `start` runs it every time.
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const outfile = root + 'dist/browser/portcullis-client.min.js'
await build({
  entryPoints: [root + 'src/index.ts'],
  outfile,
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2022'],
  platform: 'browser',
  legalComments: 'none',
  logLevel: 'warning'
})
const code = readFileSync(outfile)
const gz = gzipSync(code, { level: 9 }).length
console.log(`@portcullis/client browser bundle: ${outfile.slice(root.length)} ${code.length} B minified, ${gz} B min+gzip`)
