// Remembers, for the page session, which URLs needed the long-poll fallback, so the next connect
// does not wait for a WebSocket that cannot open (the same idea as Phoenix's client). sessionStorage
// is per tab and per origin and can throw (disabled storage, sandboxed frames): memory backs it up.
const memory = new Set<string>()
const PREFIX = 'portcullis:long-poll:'

function storage (): Storage | undefined {
  try {
    return (globalThis as { sessionStorage?: Storage }).sessionStorage
  } catch {
    return undefined
  }
}

export function remember (url: string): void {
  memory.add(url)
  try { storage()?.setItem(PREFIX + url, '1') } catch {}
}

export function forget (url: string): void {
  memory.delete(url)
  try { storage()?.removeItem(PREFIX + url) } catch {}
}

export function isRemembered (url: string): boolean {
  if (memory.has(url)) return true
  try { return storage()?.getItem(PREFIX + url) === '1' } catch { return false }
}
