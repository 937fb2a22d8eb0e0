// Remembers, for the page session, which transports failed for a URL, so the next connect does
// not wait for them again (the same idea as Phoenix's client): a WebSocket that could not open,
// and a stream whose first byte never came (an intermediary that buffers responses). sessionStorage
// is per tab and per origin and can throw (disabled storage, sandboxed frames): memory backs it up.
import type { TransportName } from './types.js'

const memory = new Map<string, Set<TransportName>>()
const PREFIX = 'portcullis:failed:'

function storage (): Storage | undefined {
  try {
    return (globalThis as { sessionStorage?: Storage }).sessionStorage
  } catch {
    return undefined
  }
}

/** Note that `transport` failed for `url` (`'websocket'` or `'stream'`). */
export function remember (url: string, transport: TransportName): void {
  const set = failed(url)
  set.add(transport)
  memory.set(url, set)
  try { storage()?.setItem(PREFIX + url, [...set].join(',')) } catch {}
}

/** A WebSocket opened for `url`: whatever failed before was the network of then. */
export function forget (url: string): void {
  memory.delete(url)
  try { storage()?.removeItem(PREFIX + url) } catch {}
}

/** The transports that failed for `url` in this page session. */
export function failed (url: string): Set<TransportName> {
  const set = new Set(memory.get(url))
  try {
    const stored = storage()?.getItem(PREFIX + url)
    if (typeof stored === 'string') for (const t of stored.split(',')) if (t === 'websocket' || t === 'stream') set.add(t)
  } catch {}
  return set
}
