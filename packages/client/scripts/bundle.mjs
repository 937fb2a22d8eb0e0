// Builds the browser bundle of @portcullis/client: one minified ES module in dist/browser/, and
// prints its minified and min+gzip sizes (the README quotes the gzip figure). Quick (esbuild), so
// the chat example's `start` runs it every time. Tests import `bundleClient()` and build in
// memory, so parallel test processes never race on the file.
import { build } from 'esbuild'
import { mkdirSync, writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
export const outfile = root + 'dist/browser/portcullis-client.min.js'

/** The minified ES module, and its sizes in bytes. */
export async function bundleClient () {
  const result = await build({
    entryPoints: [root + 'src/index.ts'],
    bundle: true,
    write: false,
    format: 'esm',
    minify: true,
    target: ['es2022'],
    platform: 'browser',
    legalComments: 'none',
    logLevel: 'warning'
  })
  const code = Buffer.from(result.outputFiles[0].contents)
  return { code, minified: code.length, gzipped: gzipSync(code, { level: 9 }).length }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { code, minified, gzipped } = await bundleClient()
  mkdirSync(root + 'dist/browser', { recursive: true })
  writeFileSync(outfile, code)
  console.log(`@portcullis/client browser bundle: ${outfile.slice(root.length)} ${minified} B minified, ${gzipped} B min+gzip`)
}
