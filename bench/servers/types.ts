/** What every benchmark server module returns once it listens on 127.0.0.1. */
export interface BenchServer {
  port: number
  /** What this server is made of (versions; which Portcullis parts are real plugins vs inline stand-ins). */
  info: Record<string, unknown>
  /** Extra headers the load client must send (e.g. the session cookie the server minted). */
  clientHeaders?: Array<[string, string]>
  close: () => Promise<unknown>
}
