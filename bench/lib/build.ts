/**
 * Compiles the server and load-generator entry points to plain JavaScript before a run, so the
 * measured processes run what ships and not a TypeScript loader's output: `tsx` compiles with
 * esbuild's `keepNames`, which wraps every named function and closure in a `__name()` call that
 * redefines its `name` — one property store more for each closure a connection creates (and a
 * call per creation). The packages ship from plain `tsc` (scripts/build-package.mjs), without it.
 *
 * Portcullis packages are bundled from source (the `portcullis-source` condition); every other
 * package stays external and is imported from the absolute path esbuild resolved it to from the
 * importing file, so pnpm's strict layout (a package sees only its own dependencies) still holds.
 */
import { build, type Plugin } from 'esbuild'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const benchDir = fileURLToPath(new URL('../', import.meta.url))

const externals: Plugin = {
  name: 'portcullis-bench-externals',
  setup (b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.path.startsWith('node:')) return { path: args.path, external: true }
      if (args.path.startsWith('@portcullis/') || args.pluginData === 'resolving') return undefined
      const r = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: 'resolving' })
      if (r.errors.length > 0) return { errors: r.errors }
      // a Node built-in without the node: prefix resolves to itself
      return { path: r.external ? args.path : r.path, external: true }
    })
  }
}

export interface Built {
  server: string
  load: string
}

export async function buildBench (): Promise<Built> {
  const out = await buildEntries({ server: 'server.ts', load: 'load.ts' })
  return { server: out.server, load: out.load }
}

/** Compile entry points of bench/ (name → file relative to bench/) to `.mjs` files in a temp dir. */
export async function buildEntries (entries: Record<string, string>): Promise<Record<string, string>> {
  const outdir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
  // the compiled files serve this run only (its children are gone by the time it exits)
  process.once('exit', () => rmSync(outdir, { recursive: true, force: true }))
  await build({
    entryPoints: Object.fromEntries(Object.entries(entries).map(([name, file]) => [name, join(benchDir, file)])),
    outdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    // one chunk per dynamic import: a server process loads only its contender's modules (bench/server.ts)
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['portcullis-source'],
    keepNames: false,
    minify: false,
    sourcemap: false,
    logLevel: 'warning',
    plugins: [externals]
  })
  return Object.fromEntries(Object.keys(entries).map((name) => [name, join(outdir, `${name}.mjs`)]))
}
