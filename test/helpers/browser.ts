/**
 * Real-browser helpers: Debian's Chromium driven by playwright-core (never a downloaded browser),
 * the chat example on 127.0.0.1 port 0, and small page actions. Every wait is bounded.
 */
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core'
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

/** A fresh browser context (its own cookie jar and sessionStorage): one "person" (`options`: viewport, ...). */
export async function newContext (t: Teardown, browser: Browser, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  const context = await browser.newContext(options)
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
  await page.screenshot({ path, fullPage: true, animations: 'disabled', caret: 'hide' })
  return path
}

/** The two widths the page is checked at. */
export const VIEWPORTS = Object.freeze({
  desktop: Object.freeze({ width: 1280, height: 800 }),
  phone: Object.freeze({ width: 390, height: 844 })
})

export interface Layout {
  viewport: { width: number, height: number }
  /** the document's own scroll size: the page itself should not scroll sideways */
  documentWidth: number
  documentHeight: number
  /** visible inputs, buttons, the badge and the message list that leave the viewport */
  outside: string[]
  /** pairs of them whose boxes intersect */
  overlaps: string[]
  checked: string[]
}

// The two page scripts below are plain JavaScript strings, not functions: tsx (esbuild
// keepNames) would wrap their inner helpers in a `__name()` that does not exist in the page.
const LAYOUT_SCRIPT = `(() => {
  const vw = document.documentElement.clientWidth
  const vh = window.innerHeight
  const name = (e) => e.id !== '' ? '#' + e.id : e.tagName.toLowerCase() + '.' + e.className
  const els = [...document.querySelectorAll('input, button, .badge, #messages')].filter((e) => {
    const r = e.getBoundingClientRect()
    return r.width > 1 && r.height > 1 && getComputedStyle(e).visibility !== 'hidden'
  })
  const boxes = els.map((e) => ({ name: name(e), r: e.getBoundingClientRect() }))
  const outside = boxes.filter((b) => b.r.left < 0 || b.r.top < 0 || b.r.right > vw + 0.5 || b.r.bottom > vh + 0.5)
    .map((b) => b.name + ' [' + [b.r.left, b.r.top, b.r.right, b.r.bottom].map(Math.round).join(',') + ']')
  const overlaps = []
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r
      const b = boxes[j].r
      const x = Math.min(a.right, b.right) - Math.max(a.left, b.left)
      const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top)
      if (x > 0.5 && y > 0.5) overlaps.push(boxes[i].name + ' x ' + boxes[j].name)
    }
  }
  return {
    viewport: { width: vw, height: vh },
    documentWidth: document.documentElement.scrollWidth,
    documentHeight: document.documentElement.scrollHeight,
    outside,
    overlaps,
    checked: boxes.map((b) => b.name)
  }
})()`

const CONTRAST_SCRIPT = `((list) => {
  const rgb = (c) => (c.match(/[0-9.]+/g) || []).map(Number)
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      const s = v / 255
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4
    })
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
  }
  const background = (e) => {
    for (let n = e; n !== null; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor)
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c
    }
    return [255, 255, 255]
  }
  const out = {}
  for (const sel of list) {
    const e = document.querySelector(sel)
    if (e === null || e.getBoundingClientRect().width === 0 || (e.textContent || '').trim() === '') continue
    const fg = lum(rgb(getComputedStyle(e).color))
    const bg = lum(background(e))
    out[sel] = Math.round(((Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05)) * 100) / 100
  }
  return out
})`

/** Where the page's controls are: what leaves the viewport, what overlaps what. */
export async function layoutOf (page: Page): Promise<Layout> {
  return page.evaluate(LAYOUT_SCRIPT) as Promise<Layout>
}

/**
 * WCAG 2.x contrast of the first visible element matching each selector against the first opaque
 * background behind it: `{ selector: ratio }`.
 */
export async function contrastOf (page: Page, selectors: string[]): Promise<Record<string, number>> {
  return page.evaluate(`${CONTRAST_SCRIPT}(${JSON.stringify(selectors)})`) as Promise<Record<string, number>>
}

/** Record CSP violations on every page of the context (an init script runs outside the page's CSP). */
export async function recordCspViolations (context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const w = window as unknown as { cspViolations: string[] }
    w.cspViolations = []
    document.addEventListener('securitypolicyviolation', (e) => { w.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`) })
  })
}

export async function cspViolations (page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { cspViolations?: string[] }).cspViolations ?? [])
}
