import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'

/**
 * Run a README's usage snippet as written, so the documented example cannot rot. The snippet's
 * `import` lines are bound to `modules` (imported by the test itself, so they resolve from the
 * repository), `scope` supplies what the snippet leaves to the reader ("yours"), and `edits` are
 * plain text replacements (the port to listen on, a logger). Returns the snippet's `app`.
 * Used by the README tests of origin-guard, cookie-session and subprotocols.
 */
export async function runReadmeSnippet (opts: {
  readme: string
  /** The heading the snippet follows, e.g. `## Usage`. */
  heading: string
  modules: Record<string, Record<string, unknown>>
  scope?: Record<string, unknown>
  edits?: Array<[string, string]>
}): Promise<FastifyInstance> {
  const text = readFileSync(opts.readme, 'utf8')
  const at = text.indexOf(`\n${opts.heading}\n`)
  if (at === -1) throw new Error(`no heading "${opts.heading}" in ${opts.readme}`)
  const open = text.indexOf('```js\n', at)
  const code = text.slice(open + 6, text.indexOf('\n```', open))
  let body = code.split('\n').map((line) => {
    const m = /^import (.+) from '([^']+)'$/.exec(line)
    if (m === null) return line
    const [, clause, from] = m
    if (!(from in opts.modules)) throw new Error(`the snippet imports ${from}: pass it in modules`)
    const ref = `M[${JSON.stringify(from)}]`
    const named = /\{(.*)\}/.exec(clause)
    const def = clause.replace(/,?\s*\{.*\}/, '').trim()
    const out: string[] = []
    if (def.length > 0) out.push(`const ${def} = ${ref}.default`)
    if (named !== null) out.push(`const { ${named[1].replace(/\s+as\s+/g, ': ')} } = ${ref}`)
    return out.join('; ')
  }).join('\n')
  body = body.replace('await app.listen({ port: 3000 })', 'await app.listen({ port: 0, host: \'127.0.0.1\' })')
  for (const [from, to] of opts.edits ?? []) {
    if (!body.includes(from)) throw new Error(`the snippet no longer contains ${JSON.stringify(from)}`)
    body = body.replace(from, to)
  }
  const scope = opts.scope ?? {}
  const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor as new (...args: string[]) => (...values: unknown[]) => Promise<FastifyInstance>
  const run = new AsyncFunction('M', ...Object.keys(scope), `${body}\nreturn app`)
  return run(opts.modules, ...Object.values(scope))
}
