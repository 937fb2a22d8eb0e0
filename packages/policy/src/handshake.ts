import { IncomingMessage } from 'node:http'

/** Why an upgrade request is not a valid RFC 6455 opening handshake, or undefined when it is. */
export type HandshakeProblem =
  | { status: 400, detail: string }
  | { status: 426, detail: string }

/**
 * Checks the client's opening handshake (RFC 6455 §4.2.1) before any stage runs, so a malformed
 * request never reaches a stage or a handler. `ws` checks some of this too, but later (after our
 * stages) and it still accepts the draft version 8; we answer first and only accept 13.
 */
export function checkHandshake (req: IncomingMessage): HandshakeProblem | undefined {
  const injected = isInjectedUpgrade(req)
  // §4.2.1 (1): an HTTP/1.1 or higher GET request. The route is GET-only already. An injected
  // request has no parsed version numbers: injectWS always speaks HTTP/1.1.
  if (!injected && (req.httpVersionMajor !== 1 || req.httpVersionMinor < 1)) {
    return { status: 400, detail: 'HTTP/1.1 required' }
  }
  // §4.2.1 (2): a |Host| header field. Node checks it for plain requests only, not upgrades.
  if (typeof req.headers.host !== 'string' || req.headers.host.length === 0) {
    return { status: 400, detail: 'Host required' }
  }
  // §4.2.1 (3): |Upgrade| containing "websocket" (case-insensitive). Node joins duplicate lines.
  const upgrade = req.headers.upgrade
  // (length first: lower-casing a huge header would cost time linear in what the client sent)
  if (typeof upgrade !== 'string' || upgrade.length !== 9 || upgrade.toLowerCase() !== 'websocket') {
    return { status: 400, detail: 'Upgrade must be websocket' }
  }
  // §4.2.1 (5): |Sec-WebSocket-Key|, base64 of 16 bytes: exactly 24 characters ending "==".
  // A duplicated header arrives joined with ", " and fails the length check.
  const key = req.headers['sec-websocket-key']
  if (typeof key !== 'string' || !isValidKey(key)) {
    return { status: 400, detail: 'Sec-WebSocket-Key must be one base64-encoded 16-byte value' }
  }
  // §4.2.1 (6) and §4.4: version 13 only; anything else gets 426 naming the version we speak.
  // (injectWS sets the number 13; a parsed header is always a string)
  const version = req.headers['sec-websocket-version'] as unknown
  if (version !== '13' && !(injected && version === 13)) {
    return { status: 426, detail: 'Sec-WebSocket-Version must be 13' }
  }
  return undefined
}

/**
 * Whether `req` is the request `app.injectWS()` (@fastify/websocket's test helper) emits: a
 * plain object with `httpVersion: '1.1'` and no parsed version numbers, handed straight to the
 * server's `upgrade` event. A request from the network is always an `http.IncomingMessage`
 * built by Node's parser, whatever bytes the client sends, so no client can pass for one.
 */
export function isInjectedUpgrade (req: IncomingMessage): boolean {
  const r = req as { httpVersion?: unknown, httpVersionMajor?: unknown }
  // the version number first: Node's parser always sets it, so a network request is answered
  // by one property read (the same conditions, cheapest first)
  return r.httpVersionMajor === undefined && r.httpVersion === '1.1' &&
    !(req instanceof IncomingMessage) && Object.getPrototypeOf(req) === Object.prototype
}

const BASE64 = new Uint8Array(128)
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') BASE64[c.charCodeAt(0)] = 1

function isValidKey (key: string): boolean {
  if (key.length !== 24 || key.charCodeAt(22) !== 0x3d || key.charCodeAt(23) !== 0x3d) return false
  for (let i = 0; i < 22; i++) {
    const c = key.charCodeAt(i)
    if (c >= 128 || BASE64[c] === 0) return false
  }
  // the 22nd character carries only 2 significant bits for 16 bytes: its low 4 bits must be 0
  return 'AQgw'.includes(key[21])
}
