import { randomBytes } from 'node:crypto'
import type { CloseFrame, InboundFrame, NewSessionRecord, StoreNode } from '@portcullis/fallback'
import { RedisStore } from '../src/index.js'
import type { RedisStoreOptions } from '../src/index.js'

export interface RecordingNode extends StoreNode {
  inbox: Array<{ sid: string, frames: InboundFrame[] }>
  closes: Array<{ sid: string, close: CloseFrame }>
  revocations: Array<{ sessionId: string, code: number, reason: string }>
}

/** A StoreNode that records every callback. */
export function recordingNode (): RecordingNode {
  const node: RecordingNode = {
    inbox: [],
    closes: [],
    revocations: [],
    inbound: (sid, frames) => { node.inbox.push({ sid, frames }) },
    clientClose: (sid, close) => { node.closes.push({ sid, close }) },
    revocation: (sessionId, code, reason) => { node.revocations.push({ sessionId, code, reason }) }
  }
  return node
}

/** A started RedisStore with a recording node, stopped in teardown. */
export async function startedStore (t: { teardown: (fn: () => unknown) => void }, opts: RedisStoreOptions): Promise<{ store: RedisStore, node: RecordingNode }> {
  const store = new RedisStore(opts)
  const node = recordingNode()
  await store.start(node)
  t.teardown(() => store.stop())
  return { store, node }
}

export function newRecord (node: string, over: Partial<NewSessionRecord> = {}): NewSessionRecord {
  return {
    sid: randomBytes(24).toString('base64url'),
    node,
    route: '/chat',
    protocol: 'chat.v1',
    identityId: 'alice',
    sessionId: 'sess-1',
    origin: 'http://127.0.0.1:3000',
    ip: '127.0.0.1',
    createdAt: Date.now(),
    ttlMs: 60_000,
    ...over
  }
}

export const noLimits = Object.freeze({ perIdentity: 0, perIp: 0, total: 0 })

export function prefix (): string {
  return `t${randomBytes(4).toString('hex')}:`
}
