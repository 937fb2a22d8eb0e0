// Installs the system packages the test suite drives for real — Debian's `chromium` (browser
// tests) and `redis-server` (multi-node tests) — when they are missing. Needs root and apt-get
// (CI and the dev machines are Debian, as root). Never downloads a browser build of its own.
import { execFileSync, execSync } from 'node:child_process'
import { existsSync } from 'node:fs'

const wanted = [
  { pkg: 'chromium', bin: '/usr/bin/chromium' },
  { pkg: 'redis-server', bin: '/usr/bin/redis-server' }
]
const missing = wanted.filter(w => !existsSync(w.bin)).map(w => w.pkg)
if (missing.length === 0) process.exit(0)

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
let hasApt = true
try { execSync('command -v apt-get', { stdio: 'ignore' }) } catch { hasApt = false }
if (!isRoot || !hasApt) {
  console.error(`ensure-system: missing ${missing.join(', ')}; install them with: sudo apt-get install -y ${missing.join(' ')}`)
  process.exit(1)
}
console.log(`ensure-system: installing ${missing.join(', ')} with apt-get`)
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'inherit', env })
