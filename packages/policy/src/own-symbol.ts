/**
 * The own symbol-keyed property of `target` named `description` whose value `fits`, or `null`.
 * How the core reaches another plugin's private state (Fastify's route context, @fastify/cookie's
 * Set-Cookie map): looked up once by the caller, and kept only when the value is the one expected,
 * so a renamed or repurposed symbol is never used.
 */
export function ownSymbol (target: object, description: string, fits: (value: unknown) => boolean): symbol | null {
  const t = target as Record<symbol, unknown>
  for (const s of Object.getOwnPropertySymbols(target)) {
    if (s.description === description && fits(t[s])) return s
  }
  return null
}
