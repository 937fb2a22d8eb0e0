// The chat page. It only knows PortcullisSocket: whether the WebSocket or the long-poll fallback
// carries the messages is the client's business (the page shows which).
import { PortcullisSocket } from '/client.js'

const $ = (id) => document.getElementById(id)
let socket = null

function setState (state) {
  document.body.dataset.state = state
  $('state').textContent = state
}

async function post (path, body) {
  return fetch(path, {
    method: 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin'
  })
}

function showLogin () {
  $('chat').hidden = true
  $('login-form').hidden = false
  $('who').textContent = ''
}

function showChat (user) {
  $('login-form').hidden = true
  $('chat').hidden = false
  $('who').textContent = user + ' ·'
  $('text').focus()
  connect()
}

function connect () {
  if (socket !== null) socket.close(1000, 'reconnecting')
  setState('connecting')
  $('close-reason').textContent = ''
  const s = new PortcullisSocket(new URL('/chat', document.baseURI), 'chat.v1', { reconnect: true })
  socket = s
  s.onopen = () => {
    setState('open')
    $('transport').textContent = s.transport
    $('close-reason').textContent = ''
  }
  s.onmessage = (ev) => {
    const msg = JSON.parse(ev.data)
    if (msg.type === 'said') addLine(msg)
  }
  s.onclose = (ev) => {
    if (socket !== s) return
    setState(ev.reconnecting ? 'reconnecting' : 'closed')
    $('close-reason').textContent = `${ev.code}${ev.reason === '' ? '' : ' ' + ev.reason}`
    // 4001 revoked / 4002 expired / 4401 no session: back to the login form
    if (!ev.reconnecting && (ev.code === 4001 || ev.code === 4002 || ev.code === 4003 || ev.code === 4401)) showLogin()
  }
}

function addLine (msg) {
  const li = document.createElement('li')
  const user = document.createElement('span')
  user.className = 'user'
  user.textContent = msg.user
  const text = document.createElement('span')
  text.className = 'text'
  text.textContent = msg.text
  const time = document.createElement('time')
  time.dateTime = new Date(msg.ts).toISOString()
  time.textContent = new Date(msg.ts).toLocaleTimeString()
  li.append(user, text, time)
  $('messages').append(li)
  li.scrollIntoView({ block: 'nearest' })
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  $('login-error').textContent = ''
  const res = await post('/login', { user: $('user').value, password: $('password').value })
  if (!res.ok) {
    $('login-error').textContent = 'Wrong user or password'
    return
  }
  showChat((await res.json()).user)
})

$('say-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const text = $('text').value
  if (text === '' || socket === null || socket.readyState !== PortcullisSocket.OPEN) return
  socket.send(JSON.stringify({ type: 'say', text }))
  $('text').value = ''
})

$('logout').addEventListener('click', async () => {
  // the server closes this tab's connection (and every other tab's) with 4001
  await post('/logout')
  showLogin()
})

const me = await fetch('/me', { credentials: 'same-origin' })
if (me.ok) {
  showChat((await me.json()).user)
} else {
  setState('logged out')
  showLogin()
}
