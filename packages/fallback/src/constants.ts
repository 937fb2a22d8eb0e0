import { VERSIONS } from './wire.js'

/** The highest wire protocol version this server speaks (`open` answers the highest both know as `v`). */
export const PROTOCOL_VERSION = VERSIONS[0]
/** The marker header every fallback request carries (PROTOCOL.md §2). */
export const FALLBACK_HEADER = 'x-portcullis-fallback'
/** Request headers a CORS preflight for the fallback must allow (for `@portcullis/origin-guard`). */
export const FALLBACK_REQUEST_HEADERS = Object.freeze(['content-type', 'x-portcullis-fallback', 'x-portcullis-sid', 'x-portcullis-ack', 'x-portcullis-protocol'])
