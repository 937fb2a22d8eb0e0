import { expect, test } from 'tstyche'
import WebSocket from 'ws'
import { PortcullisSocket, isTransientClose, type PortcullisCloseEvent, type TransportName } from '@portcullis/client'

test('the constructor takes a URL, protocols and typed options', () => {
  expect(new PortcullisSocket('wss://example.com/chat')).type.toBe<PortcullisSocket>()
  expect(new PortcullisSocket(new URL('wss://example.com/chat'), ['chat.v1'], { reconnect: { retries: 3 } })).type.not.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { transports: ['long-poll', 'websocket'], openTimeoutMs: 1000 })).type.not.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { transports: ['smoke-signals'] })).type.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { reconect: true })).type.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { pollTimeoutMarginMs: 5000 })).type.not.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { pollTimeoutMarginMs: '5s' })).type.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { transports: ['websocket', 'stream', 'long-poll'], streamFirstByteMs: 1500 })).type.not.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { streamFirstByteMs: '3s' })).type.toRaiseError()
  expect(new PortcullisSocket('/chat', 'chat.v1', { WebSocket, headers: { origin: 'https://example.com' } })).type.not.toRaiseError()
})

test('the socket reads like a WebSocket, plus its transport', () => {
  const s = new PortcullisSocket('/chat')
  expect(s.transport).type.toBe<TransportName | ''>()
  expect(s.protocol).type.toBe<string>()
  expect(s.readyState).type.toBe<number>()
  expect(s.send('text')).type.toBe<void>()
  expect(s.send(new Uint8Array(1))).type.not.toRaiseError()
  expect(s.send({ not: 'data' })).type.toRaiseError()
  s.onclose = (ev) => {
    expect(ev).type.toBe<PortcullisCloseEvent>()
    expect(ev.reconnecting).type.toBe<boolean>()
  }
  s.onmessage = (ev) => {
    expect(ev).type.toBe<MessageEvent>()
  }
  expect(isTransientClose(1006)).type.toBe<boolean>()
})
