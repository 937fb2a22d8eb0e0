/**
 * Lua scripts. Every state change of a session is ONE script, so it is atomic in Redis (no node
 * ever sees half of it, and a retried request racing its original is handled once) and costs one
 * round trip. The three keys of a session share the hash tag `{sid}`.
 *
 * Session hash fields: rec (JSON binding, written once), node (owner: runs the handler), ip, idn
 * (identity id or ''), ttl, lastSeen, state (open|closed), code, reason, lastSeq (outbound),
 * outAck, outBytes (unacked bytes), inAck (inbound accepted), inDone (inbound delivered to the
 * handler), wn/wt (node and token of the waiting poll).
 *
 * Both queues are Streams whose entry ids ARE the sequence numbers (`<seq>-0`): "everything after
 * the ack" is one XRANGE, "forget what was acked" one XTRIM MINID (Redis ≥ 6.2).
 *
 * Session bounds are sorted sets of sids scored by the time the session is forgotten, so entries
 * of sessions that expired silently (TTL) are purged by score before counting: no keyspace
 * notifications needed, and the count can never leak upward.
 *
 * Node liveness: each node refreshes `<prefix>node:<id>` (PX nodeTtl). A script that finds an
 * open session whose owner's key is gone closes it with 4011 (NODE_GONE) then and there, so
 * every node gives the client the same answer.
 *
 * Not Redis Cluster safe: count sets and liveness keys live in other slots than the session.
 */

// ARGV[1] is always the key prefix.
const prelude = `
local P = ARGV[1]
local function now ()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire (ms)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
  redis.call('PEXPIRE', KEYS[3], ms)
end
local function follow (key)
  local ms = redis.call('PTTL', KEYS[1])
  if ms > 0 then redis.call('PEXPIRE', key, ms) end
end
local function countKeys (ip, idn)
  local k = { P .. 'n:all', P .. 'n:ip:' .. ip }
  if idn ~= '' then k[3] = P .. 'n:id:' .. idn end
  return k
end
local function score (sid, ms)
  local m = redis.call('HMGET', KEYS[1], 'ip', 'idn')
  local at = now() + ms
  for _, k in ipairs(countKeys(m[1], m[2])) do
    redis.call('ZADD', k, at, sid)
    if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
  end
end
local function notify (node, msg)
  if node and node ~= '' then redis.call('PUBLISH', P .. 'ch:' .. node, cjson.encode(msg)) end
end
local function wakeWaiter (kind, sid)
  local w = redis.call('HMGET', KEYS[1], 'wn', 'wt')
  if w[1] then notify(w[1], { k = kind, t = w[2], s = sid }) end
end
local function markClosed (sid, code, reason, linger)
  redis.call('HSET', KEYS[1], 'state', 'closed', 'code', code, 'reason', reason)
  expire(linger)
  score(sid, linger)
  wakeWaiter('d', sid)
end
-- An open session whose owner stopped refreshing its liveness key: close it (4011) for everyone.
local function ownerCheck (sid, linger)
  local m = redis.call('HMGET', KEYS[1], 'state', 'node')
  if m[1] == 'open' and redis.call('EXISTS', P .. 'node:' .. m[2]) == 0 then
    markClosed(sid, 4011, 'node gone', linger)
  end
end
`

/**
 * KEYS: meta, out, in. ARGV: prefix, sid, node, ip, idn, rec, lastSeen, ttl, total, perIp,
 * perIdentity, nodeTtl, candidate epoch. Returns { ok | total | ip | identity | exists, epoch }.
 * Also beats for the owner and reads the epoch: right after a Redis restart, a session opened
 * before the owner's next heartbeat must neither look orphaned nor be mistaken for a lost one.
 */
export const CREATE = prelude + `
redis.call('SET', P .. 'node:' .. ARGV[3], '1', 'PX', tonumber(ARGV[12]))
redis.call('SET', P .. 'epoch', ARGV[13], 'NX')
local epoch = redis.call('GET', P .. 'epoch')
local function create ()
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
  local t = now()
  local ks = countKeys(ARGV[4], ARGV[5])
  for _, k in ipairs(ks) do redis.call('ZREMRANGEBYSCORE', k, '-inf', t) end
  if tonumber(ARGV[9]) > 0 and redis.call('ZCARD', ks[1]) >= tonumber(ARGV[9]) then return 'total' end
  if tonumber(ARGV[10]) > 0 and redis.call('ZCARD', ks[2]) >= tonumber(ARGV[10]) then return 'ip' end
  if ks[3] and tonumber(ARGV[11]) > 0 and redis.call('ZCARD', ks[3]) >= tonumber(ARGV[11]) then return 'identity' end
  redis.call('HSET', KEYS[1], 'rec', ARGV[6], 'node', ARGV[3], 'ip', ARGV[4], 'idn', ARGV[5],
    'ttl', ARGV[8], 'lastSeen', ARGV[7], 'state', 'open', 'lastSeq', 0, 'outAck', 0, 'outBytes', 0,
    'inAck', 0, 'inDone', 0)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]))
  score(ARGV[2], tonumber(ARGV[8]))
  return 'ok'
end
return { create(), epoch }
`

/** KEYS: meta, out, in. ARGV: prefix, sid, linger. The record (after the owner check) or nil. */
export const GET = prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
ownerCheck(ARGV[2], tonumber(ARGV[3]))
return redis.call('HMGET', KEYS[1], 'rec', 'lastSeen', 'inAck', 'outAck', 'state', 'code', 'reason')
`

/** KEYS: meta, out, in. ARGV: prefix, sid, now. 0 unknown, 1 known (refreshed only when open). */
export const TOUCH = prelude + `
local m = redis.call('HMGET', KEYS[1], 'state', 'lastSeen', 'ttl')
if not m[1] then return 0 end
if m[1] ~= 'open' then return 1 end
if tonumber(ARGV[3]) > tonumber(m[2]) then redis.call('HSET', KEYS[1], 'lastSeen', ARGV[3]) end
expire(tonumber(m[3]))
score(ARGV[2], tonumber(m[3]))
return 1
`

/** KEYS: meta, out, in. ARGV: prefix, sid. Forget the session; wake its poll with gone. */
export const DESTROY = prelude + `
local m = redis.call('HMGET', KEYS[1], 'ip', 'idn')
if not m[1] then return 0 end
wakeWaiter('g', ARGV[2])
for _, k in ipairs(countKeys(m[1], m[2])) do redis.call('ZREM', k, ARGV[2]) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
`

/**
 * Owner: append frames. KEYS: meta, out, in. ARGV: prefix, sid, then (seq, type, data, bytes)...
 * Returns { messages, bytes } of the queue; { 0, 0 } when unknown or closed; error SEQ on a bad seq.
 */
export const PUSH_OUT = prelude + `
local m = redis.call('HMGET', KEYS[1], 'state', 'lastSeq', 'outBytes')
if m[1] ~= 'open' then return { 0, 0 } end
local last = tonumber(m[2])
for i = 3, #ARGV, 4 do
  local seq = tonumber(ARGV[i])
  if seq ~= last + 1 then return redis.error_reply('SEQ outbound seq ' .. seq .. ' after ' .. last) end
  last = seq
end
local bytes = tonumber(m[3])
for i = 3, #ARGV, 4 do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 't', ARGV[i + 1], 'd', ARGV[i + 2], 'b', ARGV[i + 3])
  bytes = bytes + tonumber(ARGV[i + 3])
end
redis.call('HSET', KEYS[1], 'lastSeq', last, 'outBytes', bytes)
follow(KEYS[2])
wakeWaiter('d', ARGV[2])
return { redis.call('XLEN', KEYS[2]), bytes }
`

/**
 * Owner: close (first close wins). KEYS: meta, out, in. ARGV: prefix, sid, code, reason, linger,
 * dropQueued (1|0). Returns 1, or 0 when unknown or already closed.
 */
export const CLOSE_OUT = prelude + `
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
if ARGV[6] == '1' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'outBytes', 0)
end
markClosed(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
return 1
`

/**
 * Any node: drop frames ≤ ack, read the rest within limits. KEYS: meta, out, in.
 * ARGV: prefix, sid, ack, maxMessages, maxBytes, linger, after (frames a stream wrote; optional).
 * Returns nil (unknown) or { inAck, lastSeq, state, code, reason, all (1|0), seq, type, data, bytes, ... }.
 */
export const READ_OUT = prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
ownerCheck(ARGV[2], tonumber(ARGV[6]))
local m = redis.call('HMGET', KEYS[1], 'state', 'code', 'reason', 'lastSeq', 'outAck', 'inAck')
local lastSeq = tonumber(m[4])
local acked = tonumber(m[5])
local ack = math.min(tonumber(ARGV[3]), lastSeq)
if ack > acked then
  local freed = 0
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', ack .. '-0')) do freed = freed + tonumber(e[2][6]) end
  redis.call('XTRIM', KEYS[2], 'MINID', (ack + 1) .. '-0')
  redis.call('HSET', KEYS[1], 'outAck', ack)
  -- (never HINCRBY by -0: Lua prints it as "-0", which Redis refuses)
  if freed > 0 then redis.call('HINCRBY', KEYS[1], 'outBytes', -freed) end
  acked = ack
end
-- ARGV[7] (optional): frames up to this seq were written to a stream; skip them, unacked
local from = math.max(acked, tonumber(ARGV[7] or '0'))
local entries = redis.call('XRANGE', KEYS[2], '(' .. from .. '-0', '+', 'COUNT', tonumber(ARGV[4]))
local out = { tonumber(m[6]), lastSeq, m[1], m[2] or '', m[3] or '', 0 }
local n, bytes, maxBytes = 0, 0, tonumber(ARGV[5])
for _, e in ipairs(entries) do
  local b = tonumber(e[2][6])
  if n > 0 and bytes + b > maxBytes then break end
  n = n + 1
  bytes = bytes + b
  out[#out + 1] = string.match(e[1], '^(%d+)')
  out[#out + 1] = e[2][2]
  out[#out + 1] = e[2][4]
  out[#out + 1] = e[2][6]
end
-- the close comes last: only once every queued frame past \`from\` has been read
if n >= redis.call('XLEN', KEYS[2]) - (from - acked) then out[6] = 1 end
return out
`

/**
 * Any node: register (mode 1) or re-check (mode 0) the session's one waiting poll.
 * KEYS: meta, out, in. ARGV: prefix, sid, node, token, mode, linger.
 * Returns gone | superseded | data | wait.
 *
 * The plugin registers BEFORE its first read, on the same connection, so Redis runs this script
 * before the read: whatever was queued earlier the read sees, whatever comes later wakes the
 * watcher. The re-check (heartbeat) wakes on anything queued or a close since.
 */
export const WATCH = prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
ownerCheck(ARGV[2], tonumber(ARGV[6]))
local w = redis.call('HMGET', KEYS[1], 'wn', 'wt')
if ARGV[5] == '1' then
  if w[2] and w[2] ~= ARGV[4] then notify(w[1], { k = 's', t = w[2], s = ARGV[2] }) end
  redis.call('HSET', KEYS[1], 'wn', ARGV[3], 'wt', ARGV[4])
  return 'wait'
end
if w[2] ~= ARGV[4] then return 'superseded' end
if redis.call('HGET', KEYS[1], 'state') ~= 'open' or redis.call('XLEN', KEYS[2]) > 0 then return 'data' end
return 'wait'
`

/** KEYS: meta, out, in. ARGV: prefix, sid, token. Drop the waiting-poll registration if still ours. */
export const UNWATCH = `
if redis.call('HGET', KEYS[1], 'wt') == ARGV[3] then redis.call('HDEL', KEYS[1], 'wn', 'wt') end
return 1
`

/**
 * Any node: accept client frames in order, once. KEYS: meta, out, in.
 * ARGV: prefix, sid, reply node, linger, then (seq, type, data)...
 * Returns { status, inAck, inDone, accepted } — status unknown | closed | gap | ok.
 */
export const PUSH_IN = prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return { 'unknown', 0, 0, 0 } end
ownerCheck(ARGV[2], tonumber(ARGV[4]))
local m = redis.call('HMGET', KEYS[1], 'state', 'node', 'inAck', 'inDone')
local inAck = tonumber(m[3])
if m[1] ~= 'open' then return { 'closed', inAck, tonumber(m[4]), 0 } end
if #ARGV < 5 then return { 'ok', inAck, tonumber(m[4]), 0 } end
if tonumber(ARGV[5]) > inAck + 1 then return { 'gap', inAck, tonumber(m[4]), 0 } end
local accepted = 0
for i = 5, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq == inAck + 1 then
    redis.call('XADD', KEYS[3], seq .. '-0', 't', ARGV[i + 1], 'd', ARGV[i + 2], 'r', ARGV[3])
    inAck = seq
    accepted = accepted + 1
  end
end
if accepted > 0 then
  redis.call('HSET', KEYS[1], 'inAck', inAck)
  follow(KEYS[3])
  notify(m[2], { k = 'i', s = ARGV[2] })
elseif tonumber(m[4]) < inAck then
  -- A retry of frames still on their way to the owner: this node waits too; have it told.
  local rw = redis.call('HGET', KEYS[1], 'rw') or ''
  if not string.find(',' .. rw .. ',', ',' .. ARGV[3] .. ',', 1, true) then
    redis.call('HSET', KEYS[1], 'rw', rw == '' and ARGV[3] or (rw .. ',' .. ARGV[3]))
  end
end
return { 'ok', inAck, tonumber(m[4]), accepted }
`

/**
 * Any node: where delivery of inbound frames stands (re-checked while a send waits).
 * KEYS: meta, out, in. ARGV: prefix, sid, linger. Returns nil or { state, inDone, node }.
 */
export const IN_STATE = prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
ownerCheck(ARGV[2], tonumber(ARGV[3]))
return redis.call('HMGET', KEYS[1], 'state', 'inDone', 'node')
`

/** Owner: inbound entries not yet delivered. KEYS: meta, out, in. ARGV: prefix, sid, max. */
export const INBOX = `
local done = redis.call('HGET', KEYS[1], 'inDone')
if not done then return nil end
return redis.call('XRANGE', KEYS[3], '(' .. done .. '-0', '+', 'COUNT', tonumber(ARGV[3]))
`

/**
 * Owner: frames up to seq were handed to the handler; tell each sending node.
 * KEYS: meta, out, in. ARGV: prefix, sid, seq, reply nodes...
 */
export const DELIVERED = prelude + `
local done = tonumber(redis.call('HGET', KEYS[1], 'inDone') or '-1')
if done < 0 then return 0 end
local seq = tonumber(ARGV[3])
if seq > done then
  redis.call('HSET', KEYS[1], 'inDone', seq)
  redis.call('XTRIM', KEYS[3], 'MINID', (seq + 1) .. '-0')
  done = seq
end
for i = 4, #ARGV do notify(ARGV[i], { k = 'a', s = ARGV[2], n = done }) end
local rw = redis.call('HGET', KEYS[1], 'rw')
if rw then
  for node in string.gmatch(rw, '[^,]+') do notify(node, { k = 'a', s = ARGV[2], n = done }) end
  redis.call('HDEL', KEYS[1], 'rw')
end
return 1
`

/**
 * Any node: route a client close to the owner. KEYS: meta, out, in.
 * ARGV: prefix, sid, code, reason, this node, linger.
 * Returns 0 unknown, 1 already closed, 2 sent to the owner, 3 the owner is this node.
 */
export const CLIENT_CLOSE = prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
ownerCheck(ARGV[2], tonumber(ARGV[6]))
local m = redis.call('HMGET', KEYS[1], 'state', 'node')
if m[1] ~= 'open' then return 1 end
if m[2] == ARGV[5] then return 3 end
notify(m[2], { k = 'c', s = ARGV[2], c = tonumber(ARGV[3]), r = ARGV[4] })
return 2
`

/**
 * Node heartbeat: refresh this node's liveness key and read the store epoch (created when
 * missing: a Redis that lost its data gets a new epoch, which every node notices).
 * ARGV: prefix, node, ttl, candidate epoch. Returns the epoch.
 */
export const HEARTBEAT = `
redis.call('SET', ARGV[1] .. 'node:' .. ARGV[2], '1', 'PX', tonumber(ARGV[3]))
redis.call('SET', ARGV[1] .. 'epoch', ARGV[4], 'NX')
return redis.call('GET', ARGV[1] .. 'epoch')
`

/**
 * Revocation: kept in a capped stream (so a node whose subscription dropped catches up) and
 * published. ARGV: prefix, sessionId, code, reason, max length. Returns the entry id.
 */
export const REVOKE = `
local id = redis.call('XADD', ARGV[1] .. 'revocations', 'MAXLEN', '~', tonumber(ARGV[5]), '*',
  's', ARGV[2], 'c', ARGV[3], 'r', ARGV[4])
redis.call('PUBLISH', ARGV[1] .. 'ch:revoke', cjson.encode({ id = id, s = ARGV[2], c = tonumber(ARGV[3]), r = ARGV[4] }))
return id
`
