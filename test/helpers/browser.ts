/**
 * Real-browser helpers: Debian's Chromium driven by playwright-core (never a downloaded browser),
 * the chat example on 127.0.0.1 port 0, and small page actions. Every wait is bounded.
 */
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import type { FastifyInstance } from 'fastify'
import { buildChat, type ChatOptions } from '../../examples/chat/src/app.js'
// @ts-expect-error: a plain ES module script without type declarations
import { bundleClient } from '../../packages/client/scripts/bundle.mjs'

export const CHROMIUM = '/usr/bin/chromium'
export const CHROMIUM_ARGS = Object.freeze([
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'
])
/** Upper bound for any single wait on the page. */
export const WAIT_MS = 10_000

export const artifacts = fileURLToPath(new URL('../artifacts/', import.meta.url))

interface Teardown { teardown: (fn: () => unknown) => void }

/** Launch Chromium once for a test file; closed in teardown (even when a test failed). */
export async function launchBrowser (t: Teardown): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS], timeout: 30_000 })
  t.teardown(() => browser.close())
  return browser
}

/** A fresh browser context (its own cookie jar and sessionStorage): one "person". */
export async function newContext (t: Teardown, browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext()
  context.setDefaultTimeout(WAIT_MS)
  t.teardown(() => context.close())
  return context
}

let bundle: Promise<Buffer> | undefined

/** The client bundle, built in memory once per test process (no file races between processes). */
export function clientBundle (): Promise<Buffer> {
  if (bundle === undefined) {
    const built: Promise<Buffer> = bundleClient().then((b: { code: Buffer }) => b.code)
    bundle = built
  }
  return bundle
}

export interface Chat {
  app: FastifyInstance
  /** `http://127.0.0.1:<port>/` */
  url: string
  origin: string
  port: number
}

/** The chat example on 127.0.0.1 port 0, closed in teardown. */
export async function startChat (t: Teardown, opts: Partial<ChatOptions> = {}, beforeListen?: (app: FastifyInstance) => void): Promise<Chat> {
  const app = await buildChat({ sessionSecret: 'browser-test-secret-'.padEnd(40, 'x'), logger: false, clientBundle: await clientBundle(), ...opts })
  beforeListen?.(app)
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  const origin = `http://127.0.0.1:${address.port}`
  return { app, url: origin + '/', origin, port: address.port }
}

/** Open the chat page, log in through its form, and wait until the socket is open. */
export async function openLoggedIn (context: BrowserContext, chat: Chat, user: string): Promise<Page> {
  const page = await context.newPage()
  await page.goto(chat.url)
  await page.waitForSelector('#login-form:not([hidden]), #chat:not([hidden])')
  if (await page.isVisible('#login-form')) {
    await page.fill('#user', user)
    await page.fill('#password', 'demo')
    await page.click('#login')
  }
  await waitForState(page, 'open')
  return page
}

/** Open the chat page in a context that is already logged in. */
export async function openChat (context: BrowserContext, chat: Chat): Promise<Page> {
  const page = await context.newPage()
  await page.goto(chat.url)
  await waitForState(page, 'open')
  return page
}

export async function waitForState (page: Page, state: string): Promise<void> {
  await page.waitForSelector(`body[data-state="${state}"]`, { timeout: WAIT_MS })
}

export async function say (page: Page, text: string): Promise<void> {
  await page.fill('#text', text)
  await page.click('#send')
}

/** The chat lines on the page, as `user: text`. */
export async function lines (page: Page): Promise<string[]> {
  return page.$$eval('#messages li', (items) => items.map((li) => `${li.querySelector('.user')?.textContent ?? ''}: ${li.querySelector('.text')?.textContent ?? ''}`))
}

/** Wait until the page shows at least `n` chat lines, then return them. */
export async function waitForLines (page: Page, n: number): Promise<string[]> {
  await page.waitForFunction((count) => document.querySelectorAll('#messages li').length >= count, n, { timeout: WAIT_MS })
  return lines(page)
}

/** The transport the page's badge shows, as the client names it (`websocket`, `long-poll`, ...). */
export async function transportOf (page: Page): Promise<string> {
  return (await page.getAttribute('#transport', 'data-transport')) ?? ''
}

/** The page's notice: its sentence, its tone and the close code/reason shown as a detail. */
export async function noticeOf (page: Page): Promise<{ text: string, tone: string, detail: string }> {
  return page.evaluate(() => ({
    text: document.getElementById('notice-text')?.textContent ?? '',
    tone: document.getElementById('notice')?.dataset.tone ?? '',
    detail: document.getElementById('close-reason')?.textContent ?? ''
  }))
}

/** Save a screenshot under test/artifacts/ (gitignored) and return its path. */
export async function screenshot (page: Page, name: string): Promise<string> {
  mkdirSync(artifacts, { recursive: true })
  const path = artifacts + name
  await page.screenshot({ path, fullPage: true })
  return path
}
