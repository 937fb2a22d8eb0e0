import { expect, test } from 'tstyche'
import { probe, type Check, type ProbeOptions, type Report } from '@portcullis/probe'

test('probe() takes the documented options and resolves with { target, checks, findings }', () => {
  expect(probe({ url: 'wss://app.example.com/live', origin: 'https://app.example.com', cookie: 'sid=1', protocol: 'chat.v1', fallback: true, maxRequests: 100, timeoutMs: 2000 })).type.toBe<Promise<Report>>()
  expect<Report>().type.toBe<{ target: string, checks: Check[], findings: number }>()
  expect<Check['result']>().type.toBe<'pass' | 'fail' | 'skip'>()
  expect<Check['door']>().type.toBe<'websocket' | 'long-poll'>()
  expect<Check['category']>().type.toBe<'origin' | 'session' | 'subprotocol' | 'handshake' | 'framing' | 'limits' | 'fallback'>()
})

test('url and origin are required; a misspelt option fails to compile', () => {
  expect(probe({ url: 'ws://127.0.0.1/' })).type.toRaiseError()
  expect(probe({ url: 'ws://127.0.0.1/', origin: 'http://a.test', timeout: 10 })).type.toRaiseError()
  expect<ProbeOptions>().type.not.toBeAssignableFrom({ url: 'ws://x/', origin: 'http://a.test', fallback: 'yes' })
})
