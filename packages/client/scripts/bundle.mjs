// Builds the browser bundle of @portcullis/client: one minified ES module in dist/browser/, and
// prints its minified and min+gzip sizes (the README quotes the gzip figure). Quick (esbuild), so
// the chat example's `start` runs it every time. Tests import `bundleClient()` and build in
// memory, so parallel test processes never race on the file.
//
// The bundle is src/index.ts with its imports inlined, so its API is exactly the ES module build's:
// its declaration file re-exports dist/esm's .d.ts (written by scripts/build-package.mjs) rather
// than a second copy of the types. `./browser` in package.json points its `types` at it.
import { build } from 'esbuild'
import { mkdirSync, writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
export const outfile = root + 'dist/browser/portcullis-client.min.js'
export const typesFile = root + 'dist/browser/portcullis-client.min.d.ts'
const typesSource = "// Types of the browser bundle: the same API as the ES module build.\nexport * from '../esm/index.js'\n"

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
  writeFileSync(typesFile, typesSource)
  console.log(`@portcullis/client browser bundle: ${outfile.slice(root.length)} ${minified} B minified, ${gzipped} B min+gzip`)
}
