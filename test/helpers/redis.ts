/**
 * A real `redis-server` per test (Debian's, installed by scripts/ensure-system.mjs): on a free
 * 127.0.0.1 port, no persistence (`--save ''`, `--appendonly no`) in its own temp dir, so a
 * restart loses every key exactly as a crashed production Redis without persistence would.
 * Supports `restart()` on the same port (clients reconnect to the same URL) and `kill()`.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, connect } from 'node:net'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server'

export interface RedisServer {
  port: number
  /** `redis://127.0.0.1:<port>` */
  url: string
  /** True while the process runs. */
  readonly running: boolean
  /** Graceful stop (SIGTERM; nothing is saved). Resolves when the process has exited. */
  stop: () => Promise<void>
  /** SIGKILL, like a crash. Resolves when the process has exited. */
  kill: () => Promise<void>
  /** Start again on the same port (after stop/kill), empty. Resolves when it answers PING. */
  start: () => Promise<void>
  /** stop() then start(): every key is gone afterwards. */
  restart: () => Promise<void>
}

/** Whether redis-server is installed (tests fail with a clear message when it is not). */
export function hasRedisServer (): boolean {
  return existsSync(REDIS_SERVER)
}

/** Start a redis-server, stopped (and its temp dir removed) in `t.teardown`. */
export async function startRedis (t: { teardown: (fn: () => unknown) => void }): Promise<RedisServer> {
  if (!hasRedisServer()) throw new Error(`${REDIS_SERVER} not found: run node scripts/ensure-system.mjs (apt-get install redis-server)`)
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-redis-'))
  const port = await freePort()
  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()

  async function start (): Promise<void> {
    if (child !== undefined) throw new Error('redis-server already running')
    const proc = spawn(REDIS_SERVER, [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning', '--logfile', ''
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    // A test process that dies without its teardown (uncaught exception, process.exit) must
    // not leave a redis-server behind.
    const reap = (): void => {
      proc.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
    process.once('exit', reap)
    proc.once('exit', () => process.removeListener('exit', reap))
    let output = ''
    proc.stdout?.on('data', (c: Buffer) => { output += String(c) })
    proc.stderr?.on('data', (c: Buffer) => { output += String(c) })
    exited = new Promise((resolve) => proc.once('exit', () => {
      if (child === proc) child = undefined
      resolve()
    }))
    // Port just freed by a previous run may need a moment; PING until it answers.
    const until = Date.now() + 10_000
    while (!(await ping(port))) {
      if (child !== proc) throw new Error(`redis-server exited on start: ${output.slice(0, 2000)}`)
      if (Date.now() > until) throw new Error(`redis-server did not answer PING on port ${port}: ${output.slice(0, 2000)}`)
      await new Promise(resolve => setTimeout(resolve, 25))
    }
  }

  async function signal (sig: NodeJS.Signals): Promise<void> {
    const proc = child
    if (proc === undefined) return
    proc.kill(sig)
    await exited
  }

  await start()
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running () { return child !== undefined },
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
    start,
    restart: async () => { await signal('SIGTERM'); await start() }
  }
  t.teardown(async () => {
    await signal('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  return server
}

/** A port the kernel just handed out on 127.0.0.1 (closed again, for redis-server to bind). */
function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      if (addr === null || typeof addr === 'string') return reject(new Error('no address'))
      srv.close(() => resolve(addr.port))
    })
  })
}

/** One inline PING over raw TCP; true on `+PONG`. */
function ping (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' })
    let buf = ''
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(1000, () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (c) => { buf += String(c); if (buf.includes('\r\n')) done(buf.startsWith('+PONG')) })
    socket.on('error', () => done(false))
  })
}
