// Builds one workspace package (run from its folder): ESM + .d.ts into dist/esm, CommonJS into
// dist/cjs. Plain tsc, twice: no bundler, so what ships is what the tests ran.
import { execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const tsc = require.resolve('typescript/bin/tsc')
rmSync('dist', { recursive: true, force: true })
const common = ['--rootDir', 'src', '--skipLibCheck', '--strict', '--esModuleInterop', '--target', 'ES2022', '--types', 'node', '--lib', 'ES2023,DOM']
const files = ['src/index.ts']
execFileSync(process.execPath, [tsc, ...files, ...common, '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--declaration', '--outDir', 'dist/esm'], { stdio: 'inherit' })
execFileSync(process.execPath, [tsc, ...files, ...common, '--module', 'CommonJS', '--moduleResolution', 'Node10', '--outDir', 'dist/cjs'], { stdio: 'inherit' })
mkdirSync('dist/cjs', { recursive: true })
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n')
