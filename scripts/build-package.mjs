// Builds one workspace package (run from its folder): ES modules + .d.ts into dist/esm, CommonJS +
// .d.ts into dist/cjs. Plain tsc, twice: no bundler, so what ships is what the tests ran.
//
// Each format gets its own declarations. dist/cjs/package.json says `"type": "commonjs"`, so
// TypeScript (and Node) read dist/cjs/*.d.ts as CommonJS declarations: `require` consumers get
// types that describe `exports.default` and the named exports, `import` consumers get ESM types.
// One ESM .d.ts for both conditions is the "masquerading as ESM" bug (TS1479 under Node16 CJS).
import { execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const tsc = require.resolve('typescript/bin/tsc')
rmSync('dist', { recursive: true, force: true })
const common = ['--rootDir', 'src', '--skipLibCheck', '--strict', '--esModuleInterop', '--target', 'ES2022', '--types', 'node', '--lib', 'ES2023,DOM', '--declaration']
const files = ['src/index.ts']
execFileSync(process.execPath, [tsc, ...files, ...common, '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--outDir', 'dist/esm'], { stdio: 'inherit' })
// The package.json first: the CommonJS run reads it when it checks the emitted format.
mkdirSync('dist/cjs', { recursive: true })
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n')
execFileSync(process.execPath, [tsc, ...files, ...common, '--module', 'CommonJS', '--moduleResolution', 'Node10', '--outDir', 'dist/cjs'], { stdio: 'inherit' })
