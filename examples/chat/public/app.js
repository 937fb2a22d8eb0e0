// The chat page. It only knows PortcullisSocket: whether the WebSocket or a fallback carries the
// messages is the client's business (the page shows which, and why). No framework, no bundler,
// no inline script or style (the CSP forbids both).
import { PortcullisSocket } from '/client.js'

const $ = (id) => document.getElementById(id)
let socket = null
let me = null
// set while this tab logs out, so that its own 4001 reads "You logged out", not as an error
let loggingOut = null

// ---- connection state, in words -------------------------------------------------------------

const STATE_WORDS = {
  loading: 'Loading…',
  connecting: 'Connecting…',
  open: 'Connected',
  reconnecting: 'Connection lost. Reconnecting…',
  closed: 'Disconnected',
  'logging out': 'Logging out…',
  'logged out': 'Not signed in'
}

function setState (state) {
  document.body.dataset.state = state
  $('state').textContent = STATE_WORDS[state] ?? state
  $('send').disabled = state !== 'open'
}

const TRANSPORTS = {
  websocket: { label: 'WebSocket', why: '' },
  'long-poll': {
    label: 'Long-poll',
    why: 'The WebSocket could not be opened from here (a proxy or the network may block it), so messages travel over ordinary HTTP requests. The same security checks apply.'
  },
  stream: {
    label: 'Stream',
    why: 'The WebSocket could not be opened from here, so messages arrive over one held HTTP response. The same security checks apply.'
  }
}

function showTransport (name) {
  const badge = $('transport')
  badge.dataset.transport = name
  const known = TRANSPORTS[name]
  // a transport this page does not know yet is shown by its name, with a generic reason
  const label = known?.label ?? (name === '' ? '–' : name)
  const why = known?.why ?? (name === '' || name === 'websocket' ? '' : `The WebSocket could not be opened from here, so the chat uses ${name}.`)
  badge.textContent = label
  badge.title = why === '' ? 'Messages travel over a WebSocket.' : why
  $('transport-why').textContent = why
}

// ---- notices ----------------------------------------------------------------------------------

/** tone: 'neutral' (information), 'warn' (transient trouble), 'error' (a denial or a failure) */
function notice (text, tone = 'neutral', detail = '') {
  const box = $('notice')
  box.hidden = text === ''
  box.dataset.tone = text === '' ? '' : tone
  $('notice-text').textContent = text
  $('close-reason').textContent = detail
}

/** A close, as a sentence a person understands. The code and reason stay visible as a detail. */
function closeSentence (code, reason) {
  if (code === 4001) return { text: 'You were logged out, in another tab or window. Log in again to keep chatting.', tone: 'neutral' }
  if (code === 4002) return { text: 'Your session expired. Please log in again.', tone: 'neutral' }
  if (code === 4003) return { text: 'Your session is no longer valid. Please log in again.', tone: 'neutral' }
  if (code === 4401) return { text: 'Your session has expired or ended. Please log in again.', tone: 'neutral' }
  if (code === 4403) {
    return reason.startsWith('PORTCULLIS_ORIGIN')
      ? { text: 'This page’s address is not allowed to open the chat (origin not allowed). Open the chat from its own address.', tone: 'error' }
      : { text: 'The server refused the connection.', tone: 'error' }
  }
  if (code === 4400) return { text: 'The server did not accept this chat client. Reload the page to get the current version.', tone: 'error' }
  if (code === 1008) return { text: 'The server closed the chat because a message broke its rules.', tone: 'error' }
  if (code === 1009) return { text: 'That message was too large to send.', tone: 'error' }
  if (code === 4008 || code === 4429) return { text: 'The server is busy right now.', tone: 'warn' }
  if (code === 4009) return { text: 'The connection fell too far behind and was closed.', tone: 'warn' }
  if (code === 1001 || code === 1012) return { text: 'The server is restarting.', tone: 'warn' }
  if (code === 1011) return { text: 'The server ran into a problem.', tone: 'warn' }
  if (code === 1013) return { text: 'The server is overloaded right now.', tone: 'warn' }
  if (code === 1014) return { text: 'A gateway between you and the server failed.', tone: 'warn' }
  if (code === 1006) return { text: 'The server cannot be reached. Check your connection, then reload the page.', tone: 'error' }
  return { text: 'The chat connection closed.', tone: 'error' }
}

// ---- views ------------------------------------------------------------------------------------

/** keepUser: a session that ended by itself keeps the name typed in, and asks for the password */
function showLogin ({ keepUser = false } = {}) {
  me = null
  $('chat').hidden = true
  $('session').hidden = true
  $('status-row').hidden = true
  $('login-card').hidden = false
  $('login-form').hidden = false
  $('who').textContent = ''
  $('password').value = ''
  $('login-error').textContent = ''
  $('messages').replaceChildren()
  if (!keepUser) $('user').value = ''
  if (keepUser && $('user').value !== '') $('password').focus()
  else $('user').focus()
}

function showChat (user) {
  me = user
  $('login-card').hidden = true
  $('login-form').hidden = true
  $('password').value = ''
  $('login-error').textContent = ''
  $('session').hidden = false
  $('status-row').hidden = false
  $('chat').hidden = false
  $('who').textContent = user
  notice('')
  $('text').focus()
  connect()
}

function connect () {
  if (socket !== null) socket.close(1000, 'reconnecting')
  setState('connecting')
  showTransport('')
  delete document.body.dataset.closeCode
  const s = new PortcullisSocket(new URL('/chat', document.baseURI), 'chat.v1', { reconnect: true })
  socket = s
  s.onopen = () => {
    if (socket !== s) return
    setState('open')
    showTransport(s.transport)
    notice('')
  }
  s.onmessage = (ev) => {
    const msg = JSON.parse(ev.data)
    if (msg.type === 'said') addLine(msg)
  }
  s.onclose = (ev) => {
    if (socket !== s) return
    document.body.dataset.closeCode = String(ev.code)
    const detail = `${ev.code}${ev.reason === '' ? '' : ' ' + ev.reason}`
    if (loggingOut !== null && ev.code === 4001) {
      // our own logout: nothing went wrong
      setState('logged out')
      loggingOut.closed()
      return
    }
    if (ev.reconnecting) {
      setState('reconnecting')
      // the next connection may use another transport: say which once it is open
      showTransport('')
      const { text } = closeSentence(ev.code, ev.reason)
      notice(`${text} The chat reconnects by itself.`, 'warn', detail)
      return
    }
    setState('closed')
    const { text, tone } = closeSentence(ev.code, ev.reason)
    // 4001 revoked / 4002 expired / 4003 invalid / 4401 no session: back to the login form
    if (ev.code === 4001 || ev.code === 4002 || ev.code === 4003 || ev.code === 4401) showLogin({ keepUser: true })
    notice(text, tone, detail)
  }
}

function addLine (msg) {
  const list = $('messages')
  // follow the conversation only when the reader is already at the bottom (or wrote it)
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  const mine = msg.user === me
  const li = document.createElement('li')
  if (mine) li.className = 'mine'
  const meta = document.createElement('div')
  meta.className = 'meta'
  const user = document.createElement('span')
  user.className = 'user'
  user.textContent = msg.user
  const when = new Date(msg.ts)
  const time = document.createElement('time')
  time.dateTime = when.toISOString()
  time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  time.title = when.toLocaleString()
  meta.append(user)
  if (mine) {
    const you = document.createElement('span')
    you.className = 'you'
    you.textContent = '(you)'
    meta.append(you)
  }
  meta.append(time)
  const text = document.createElement('span')
  text.className = 'text'
  // textContent, never innerHTML: a message is text, whatever it contains
  text.textContent = msg.text
  li.append(meta, text)
  list.append(li)
  if (atBottom || mine) list.scrollTop = list.scrollHeight
}

// ---- HTTP: login, logout ----------------------------------------------------------------------

async function post (path, body) {
  return fetch(path, {
    method: 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin'
  })
}

async function loginError (res) {
  let code = ''
  try { code = (await res.json()).code ?? '' } catch {}
  const wait = Number(res.headers.get('retry-after'))
  const later = Number.isFinite(wait) && wait > 0 ? ` Try again in ${wait} second${wait === 1 ? '' : 's'}.` : ' Try again later.'
  if (res.status === 401) return 'Wrong user name or password.'
  if (code === 'LOGIN_BACKOFF') return 'Too many failed attempts for this account.' + later
  if (res.status === 429) return 'Too many login attempts from this device.' + later
  if (res.status === 403) return 'This page’s address is not allowed to log in (origin not allowed).'
  if (res.status === 400) return 'Enter a user name and a password.'
  return 'The server could not log you in right now. Try again in a moment.'
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  const user = $('user').value.trim()
  const password = $('password').value
  if (user === '' || password === '') {
    $('login-error').textContent = 'Enter a user name and a password.'
    ;(user === '' ? $('user') : $('password')).focus()
    return
  }
  $('login-error').textContent = ''
  $('login').disabled = true
  let res
  try {
    res = await post('/login', { user, password })
  } catch {
    $('login-error').textContent = 'The server cannot be reached. Check your connection.'
    return
  } finally {
    $('login').disabled = false
  }
  if (!res.ok) {
    $('login-error').textContent = await loginError(res)
    $('password').value = ''
    $('password').focus()
    return
  }
  showChat((await res.json()).user)
})

$('say-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const text = $('text').value
  if (text.trim() === '' || socket === null || socket.readyState !== PortcullisSocket.OPEN) return
  socket.send(JSON.stringify({ type: 'say', text }))
  $('text').value = ''
  $('text').focus()
})

$('logout').addEventListener('click', async () => {
  // The server ends the session and closes this tab's connection (and every other tab's) with
  // 4001. Wait for our own close (bounded), so the page never shows it as an error.
  let closed
  const ownClose = new Promise((resolve) => { closed = resolve })
  loggingOut = { closed }
  $('logout').disabled = true
  setState('logging out')
  try {
    await post('/logout')
    await Promise.race([ownClose, new Promise((resolve) => setTimeout(resolve, 2000))])
  } catch {
    // offline: the session ends when its cookie expires; locally we are logged out anyway
  } finally {
    if (socket !== null && socket.readyState !== PortcullisSocket.CLOSED) socket.close(1000, 'logged out')
    socket = null
    loggingOut = null
    $('logout').disabled = false
  }
  setState('logged out')
  showLogin()
  notice('You logged out.', 'neutral')
})

const mine = await fetch('/me', { credentials: 'same-origin' })
if (mine.ok) {
  showChat((await mine.json()).user)
} else {
  setState('logged out')
  showLogin()
}
