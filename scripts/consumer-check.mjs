// The consumer check: what a user gets from the registry, tried the way a user would, outside the
// workspace. Inside the monorepo, packages import each other's source (the `portcullis-source`
// condition) and every test is green; this script checks the boundary instead.
//
//   1. runs the root build (`pnpm build`);
//   2. packs every package with `pnpm pack` (which rewrites `workspace:` ranges; `npm pack` does
//      not) and checks each tarball's manifest and files;
//   3. installs the tarballs, with fastify, @fastify/websocket, ws, typescript and @types/node from
//      the registry, into a scratch npm project in the OS temp directory (npm's default cache, so
//      a rerun is quick), and checks every @portcullis/* package came from a tarball;
//   4. runs an ES module app and a CommonJS app (test/consumer/app.mjs, app.cjs): every server
//      plugin registered, one protected route, real connections on 127.0.0.1 (allowed Origin
//      opens, evil Origin gets 403, the fallback opens and refuses alike);
//   5. type-checks test/consumer/ts/app.ts with tsc as NodeNext ES module and as Node16 CommonJS,
//      and requires test/consumer/ts/misspelt-policy.ts (a misspelt `wsPolicy` key) to FAIL;
//   6. runs publint (--strict: warnings fail too) and @arethetypeswrong/cli on every tarball.
//
// Prints one line per check and a summary; exits 1 on any failure (the scratch directory is kept
// then, and its path printed). Usage: node scripts/consumer-check.mjs [--no-build] [--keep]
//   --no-build  reuse the packages' dist/ (for a quick rerun after a build)
//   --keep      keep the scratch directory even when everything passed
import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const fixtures = join(root, 'test/consumer')
const flags = new Set(process.argv.slice(2))
for (const f of flags) {
  if (f !== '--no-build' && f !== '--keep') {
    console.error(`consumer-check: unknown option ${f} (allowed: --no-build, --keep)`)
    process.exit(2)
  }
}
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const started = Date.now()
const results = []

// The scratch project's registry dependencies, at the versions the workspace tests with.
const REGISTRY_DEPS = ['fastify', '@fastify/websocket', 'ws', 'typescript', '@types/node']

// attw runs per package. `./browser` of @portcullis/client is the browser bundle: an ES module
// by design, with no `require` condition and no file at a node10-resolvable path. The strict
// profile would report it as "resolution failed" (node10) and "CJS resolves to ESM"; so the
// package's other entry points are checked strictly, and `./browser` alone with the esm-only
// profile (node16 from ESM and bundler must resolve it, with types).
function attwRuns (name) {
  if (name === '@portcullis/client') {
    return [
      { label: 'strict, without ./browser', args: ['--exclude-entrypoints', './browser'] },
      { label: 'esm-only, ./browser', args: ['--entrypoints', './browser', '--profile', 'esm-only'] }
    ]
  }
  return [{ label: 'strict', args: [] }]
}

// ---- helpers -------------------------------------------------------------------------------

// Child processes get the environment minus npm/pnpm config variables (set by `pnpm run`) and
// NODE_OPTIONS (tap's or tsx's loaders, the source condition): the scratch project must see
// what a user's shell sees.
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm|pnpm)_/i.test(k) && k !== 'NODE_OPTIONS'))

/** Runs a command; resolves `{ code, out, ms }` (stdout and stderr interleaved), never rejects. */
function run (cmd, args, { cwd = root, timeoutMs = 300_000, env = cleanEnv } = {}) {
  const t0 = Date.now()
  return new Promise((resolve) => {
    let out = ''
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    const timer = setTimeout(() => { out += `\n[timed out after ${timeoutMs} ms]`; child.kill('SIGKILL') }, timeoutMs)
    child.stdout.on('data', (c) => { out += c })
    child.stderr.on('data', (c) => { out += c })
    child.on('error', (err) => { out += `\n${err.message}` })
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? 1, out, ms: Date.now() - t0 }) })
  })
}

/** `pnpm`: the one running this script when it is `pnpm run`, else the pinned one through npx. */
function pnpmCommand () {
  const execpath = process.env.npm_execpath
  if (execpath !== undefined && /pnpm[^/]*$/.test(execpath)) {
    // pnpm 12 is a native executable; older ones are a script for node
    return /\.[cm]?js$/.test(execpath) ? [process.execPath, [execpath]] : [execpath, []]
  }
  return ['npx', ['-y', rootPkg.packageManager]]
}

// publint and attw are root devDependencies (publint's `exports` hides its package.json from require.resolve).
function binOf (pkgName, bin) {
  const pkgJson = join(root, 'node_modules', pkgName, 'package.json')
  const manifest = JSON.parse(readFileSync(pkgJson, 'utf8'))
  const rel = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin[bin]
  return join(pkgJson, '..', rel)
}

function record (name, ok, ms, detail = '') {
  results.push({ name, ok, ms, detail })
  const note = ok && detail !== '' ? ` — ${detail}` : ''
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} (${(ms / 1000).toFixed(1)} s)${note}`)
  if (!ok && detail !== '') console.log(indent(detail))
}

function indent (text) {
  const lines = String(text).trimEnd().split('\n')
  const shown = lines.length > 60 ? [...lines.slice(0, 20), `... (${lines.length - 40} lines) ...`, ...lines.slice(-20)] : lines
  return shown.map((l) => `       ${l}`).join('\n')
}

const tarballName = (pkg) => `${pkg.name.replace(/^@/, '').replace('/', '-')}-${pkg.version}.tgz`

// ---- the steps -----------------------------------------------------------------------------

async function build () {
  if (flags.has('--no-build')) return true
  const [cmd, pre] = pnpmCommand()
  const r = await run(cmd, [...pre, 'build'], { timeoutMs: 900_000 })
  record('root build (pnpm build)', r.code === 0, r.ms, r.code === 0 ? '' : r.out)
  return r.code === 0
}

function discover () {
  const pkgs = []
  for (const dir of readdirSync(join(root, 'packages')).sort()) {
    const file = join(root, 'packages', dir, 'package.json')
    if (!existsSync(file)) continue
    const manifest = JSON.parse(readFileSync(file, 'utf8'))
    if (manifest.private === true) continue
    pkgs.push({ dir: join(root, 'packages', dir), name: manifest.name, version: manifest.version, manifest })
  }
  return pkgs
}

/** `pnpm pack` of every package at once (one pnpm start instead of one per package). */
async function packAll (pkgs, dest) {
  const [cmd, pre] = pnpmCommand()
  const r = await run(cmd, [...pre, '-r', '--filter', './packages/*', 'pack', '--pack-destination', dest], { timeoutMs: 300_000 })
  for (const pkg of pkgs) pkg.tarball = join(dest, tarballName(pkg))
  const missing = pkgs.filter((pkg) => !existsSync(pkg.tarball)).map((pkg) => `no ${tarballName(pkg)}`)
  const ok = r.code === 0 && missing.length === 0
  record(`pnpm pack of ${pkgs.length} packages`, ok, r.ms, ok ? '' : [...missing, r.out].join('\n'))
  return ok
}

async function inspectTarball (pkg) {
  // What is inside: the manifest as published, and the files every package must ship.
  const t0 = Date.now()
  const list = await run('tar', ['-tzf', pkg.tarball])
  const files = new Set(list.out.split('\n').map((l) => l.trim().replace(/^package\//, '')))
  const manifest = JSON.parse((await run('tar', ['-xzOf', pkg.tarball, 'package/package.json'])).out)
  const problems = []
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
    for (const [dep, range] of Object.entries(manifest[field] ?? {})) {
      if (String(range).startsWith('workspace:')) problems.push(`${field}.${dep} is still "${range}"`)
    }
  }
  for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/esm/index.js', 'dist/esm/index.d.ts', 'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/cjs/package.json']) {
    if (!files.has(f)) problems.push(`${f} is missing`)
  }
  for (const field of ['repository', 'homepage', 'bugs', 'license']) {
    if (manifest[field] === undefined) problems.push(`no "${field}"`)
  }
  if (manifest.publishConfig?.access !== 'public' || manifest.publishConfig?.provenance !== true) problems.push('publishConfig is not { access: "public", provenance: true }')
  record(`tarball contents ${pkg.name}`, problems.length === 0, Date.now() - t0, problems.join('\n'))
  return problems.length === 0
}

async function install (pkgs, app) {
  const dependencies = {}
  const overrides = {}
  for (const pkg of pkgs) {
    dependencies[pkg.name] = `file:${pkg.tarball}`
    // every dependent's `@portcullis/policy@^0.1.0` resolves to this tarball, never the registry
    overrides[pkg.name] = `$${pkg.name}`
  }
  for (const dep of REGISTRY_DEPS) dependencies[dep] = rootPkg.devDependencies[dep]
  mkdirSync(app, { recursive: true })
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'portcullis-consumer-check', version: '0.0.0', private: true, dependencies, overrides }, null, 2) + '\n')
  const r = await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, timeoutMs: 600_000 })
  if (r.code !== 0) {
    record(`npm install of ${pkgs.length} tarballs + ${REGISTRY_DEPS.join(', ')}`, false, r.ms, r.out)
    return false
  }
  // Every @portcullis/* package in the tree must be one of the tarballs.
  const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8'))
  const strays = Object.entries(lock.packages).filter(([path, entry]) => /node_modules\/@portcullis\//.test(path) && !String(entry.resolved ?? '').startsWith('file:'))
  const detail = strays.map(([path, entry]) => `${path} resolved from ${entry.resolved}`).join('\n')
  record(`npm install of ${pkgs.length} tarballs + ${REGISTRY_DEPS.join(', ')}`, strays.length === 0, r.ms, detail)
  return strays.length === 0
}

async function runApp (app, file, label) {
  const r = await run(process.execPath, [file], { cwd: app, timeoutMs: 60_000 })
  const line = r.out.split('\n').find((l) => l.startsWith('RESULTS '))
  const checks = line === undefined ? [] : JSON.parse(line.slice('RESULTS '.length))
  const failed = checks.filter((c) => !c.ok)
  const ok = r.code === 0 && checks.length > 0 && failed.length === 0
  const detail = ok
    ? `${checks.length}/${checks.length} checks`
    : [...failed.map((c) => `failed: ${c.name} (${c.detail})`), checks.length === 0 ? r.out : ''].join('\n')
  record(`${label} app (${file})`, ok, r.ms, detail)
  if (ok) for (const c of checks) console.log(`       - ${c.name}`)
  return ok
}

async function tsc (app, dir, project, label) {
  const bin = join(app, 'node_modules/typescript/bin/tsc')
  const r = await run(process.execPath, [bin, '-p', project], { cwd: join(app, dir), timeoutMs: 300_000 })
  record(`tsc ${label}`, r.code === 0, r.ms, r.code === 0 ? '' : r.out)
  return r.code === 0
}

/** The misspelt key must be the one and only error, on its line, naming the key. */
async function tscMustFail (app) {
  const bin = join(app, 'node_modules/typescript/bin/tsc')
  const r = await run(process.execPath, [bin, '-p', 'tsconfig.misspelt.json', '--pretty', 'false'], { cwd: join(app, 'nodenext-esm'), timeoutMs: 300_000 })
  const source = readFileSync(join(fixtures, 'ts/misspelt-policy.ts'), 'utf8').split('\n')
  const line = source.findIndex((l) => l.includes('wsPolicy: { sesion')) + 1
  const errors = r.out.split('\n').filter((l) => /error TS\d+/.test(l))
  const ok = r.code !== 0 && errors.length === 1 && errors[0].startsWith(`misspelt-policy.ts(${line},`) && r.out.includes("'sesion' does not exist")
  record('tsc NodeNext ESM rejects a misspelt wsPolicy key (misspelt-policy.ts)', ok, r.ms, ok ? r.out.split('\n').find((l) => l.includes("'sesion' does not exist")).trim() : `exit ${r.code}, expected exactly one error on line ${line} naming 'sesion':\n${r.out}`)
  return ok
}

async function publint (pkg) {
  const r = await run(process.execPath, [binOf('publint', 'publint'), '--strict', pkg.tarball], { timeoutMs: 120_000 })
  record(`publint --strict ${pkg.name}`, r.code === 0, r.ms, r.code === 0 ? '' : r.out)
  return r.code === 0
}

async function attw (pkg) {
  let all = true
  for (const { label, args } of attwRuns(pkg.name)) {
    const r = await run(process.execPath, [binOf('@arethetypeswrong/cli', 'attw'), pkg.tarball, '--no-definitely-typed', '--format', 'ascii', '--no-color', ...args], { timeoutMs: 180_000 })
    // exit 0: no problem in the resolutions the profile checks (attw exits 1 on any other)
    const ok = r.code === 0
    record(`attw ${pkg.name} (${label})`, ok, r.ms, ok ? 'no problems' : r.out)
    all &&= ok
  }
  return all
}

// ---- main ----------------------------------------------------------------------------------

const scratch = mkdtempSync(join(tmpdir(), 'portcullis-consumer-'))
const tarballs = join(scratch, 'tarballs')
const app = join(scratch, 'app')
mkdirSync(tarballs)
console.log(`consumer-check: scratch directory ${scratch}`)

let ok = await build()
const pkgs = discover()
if (ok) {
  console.log(`consumer-check: ${pkgs.length} packages: ${pkgs.map((p) => p.name).join(', ')}`)
  ok = await packAll(pkgs, tarballs) && (await Promise.all(pkgs.map(inspectTarball))).every(Boolean)
}
if (ok) {
  // Two lanes on a 2-core machine: the scratch project (install, apps, tsc) and the linters.
  const consumer = async () => {
    if (!await install(pkgs, app)) return false
    for (const f of ['app.mjs', 'app.cjs', 'drive.cjs']) cpSync(join(fixtures, f), join(app, f))
    cpSync(join(fixtures, 'nodenext-esm'), join(app, 'nodenext-esm'), { recursive: true })
    cpSync(join(fixtures, 'node16-cjs'), join(app, 'node16-cjs'), { recursive: true })
    for (const f of ['app.ts', 'browser.ts', 'misspelt-policy.ts']) cpSync(join(fixtures, 'ts', f), join(app, 'nodenext-esm', f))
    cpSync(join(fixtures, 'ts/app.ts'), join(app, 'node16-cjs/app.ts'))
    const steps = [
      await runApp(app, 'app.mjs', 'ES module'),
      await runApp(app, 'app.cjs', 'CommonJS'),
      await tsc(app, 'nodenext-esm', 'tsconfig.json', 'NodeNext ESM ("type": "module") over app.ts + browser.ts'),
      await tsc(app, 'node16-cjs', 'tsconfig.json', 'Node16 CommonJS over app.ts'),
      await tscMustFail(app)
    ]
    return steps.every(Boolean)
  }
  const linters = async () => {
    const steps = []
    for (const pkg of pkgs) steps.push(await publint(pkg), await attw(pkg))
    return steps.every(Boolean)
  }
  ok = (await Promise.all([consumer(), linters()])).every(Boolean)
}

const failed = results.filter((r) => !r.ok)
const seconds = ((Date.now() - started) / 1000).toFixed(1)
console.log('')
console.log(`consumer-check: ${results.length - failed.length} passed, ${failed.length} failed, ${seconds} s`)
for (const f of failed) console.log(`  FAILED: ${f.name}`)
if (ok && failed.length === 0 && !flags.has('--keep')) {
  rmSync(scratch, { recursive: true, force: true })
} else {
  console.log(`consumer-check: scratch directory kept: ${scratch}`)
}
process.exit(ok && failed.length === 0 ? 0 : 1)
