// Builds one workspace package (run from its folder): ES modules + .d.ts into dist/esm, CommonJS +
// .d.ts into dist/cjs. Plain tsc, twice: no bundler, so what ships is what the tests ran.
//
// Each format gets its own declarations. dist/cjs/package.json says `"type": "commonjs"`, so
// TypeScript (and Node) read dist/cjs/*.d.ts as CommonJS declarations: `require` consumers get
// types that describe `exports.default` and the named exports, `import` consumers get ESM types.
// One ESM .d.ts for both conditions is the "masquerading as ESM" bug (TS1479 under Node16 CJS).
//
// The two runs are independent, so they run at once: on the critical path of the workspace build
// (policy, then fallback, then fallback-redis) that shortens the wait on a 2-core machine.
import { execFile } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const tsc = require.resolve('typescript/bin/tsc')
rmSync('dist', { recursive: true, force: true })
// The CommonJS run's package.json first: TypeScript reads it to decide the format of dist/cjs.
mkdirSync('dist/cjs', { recursive: true })
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n')
const common = ['--rootDir', 'src', '--skipLibCheck', '--strict', '--esModuleInterop', '--target', 'ES2022', '--types', 'node', '--lib', 'ES2023,DOM', '--declaration']
const files = ['src/index.ts']

function tscRun (label, args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, ...files, ...common, ...args], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      // tsc prints its diagnostics on stdout; print them whole, once, after the run
      if (stdout !== '' || stderr !== '') process.stdout.write(`${label}:\n${stdout}${stderr}`)
      resolve(err === null)
    })
  })
}

const ok = await Promise.all([
  tscRun('ES modules (dist/esm)', ['--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--outDir', 'dist/esm']),
  tscRun('CommonJS (dist/cjs)', ['--module', 'CommonJS', '--moduleResolution', 'Node10', '--outDir', 'dist/cjs'])
])
if (!ok.every(Boolean)) process.exit(1)
