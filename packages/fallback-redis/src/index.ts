export { RedisStore, STORE_LOST_CLOSE } from './store.js'
export * as errors from './errors.js'
export type { RedisStoreOptions, StoreLogger } from './types.js'
