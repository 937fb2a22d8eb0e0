import t from 'tap'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { wsOpen, nextMessages } from './helpers/index.js'

const root = fileURLToPath(new URL('..', import.meta.url))

// The published shape: build @portcullis/policy with its own build script, then load dist/ from a
// CommonJS app and from an ES module app (no source condition, no TypeScript loader).
// The build is two tsc runs (10-60 s on a busy 2-core machine): asynchronous, so tap's timers keep
// running, and with a timeout sized for it.
t.setTimeout(240_000)
t.before(async () => {
  await promisify(execFile)(process.execPath, ['../../scripts/build-package.mjs'], { cwd: `${root}packages/policy` })
})

for (const [kind, file, expected] of [['a CommonJS', 'app.cjs', 'cjs'], ['an ES module', 'app.mjs', 'esm']] as const) {
  t.test(`${kind} Fastify app loads the built package and enforces its policy`, async (t) => {
    const child = spawn(process.execPath, [`${root}test/fixtures/esm-cjs/${file}`], {
      cwd: root,
      // no TypeScript loader, no source condition: what a user's app gets from the registry
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' },
      stdio: ['ignore', 'pipe', 'inherit']
    })
    t.teardown(() => { child.kill() })
    const port = await new Promise<number>((resolve, reject) => {
      let out = ''
      child.stdout.on('data', (c) => {
        out += String(c)
        const m = /PORT (\d+)/.exec(out)
        if (m !== null) resolve(Number(m[1]))
      })
      child.on('exit', (code) => reject(new Error(`app exited with ${code}`)))
    })
    const ok = await wsOpen(`ws://127.0.0.1:${port}/ws`, { origin: 'https://ok.example' })
    t.ok(ok.ws, 'allowed origin opens')
    t.same(await nextMessages(ok.ws!), [expected])
    ok.ws!.close()
    const denied = await wsOpen(`ws://127.0.0.1:${port}/ws`, { origin: 'https://evil.example' })
    t.equal(denied.status, 403)
  })
}
