"""The Lua scripts behind RolloutStore: each one decision, applied atomically inside one slot."""

from __future__ import annotations

ASSIGN = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
    if ARGV[i + 2] == 'pending' then
      redis.call('ZADD', KEYS[3], cjson.decode(ARGV[i + 1]).b, ARGV[i])
    end
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[2], '_v', 1) end
return n
"""

# A job goes out only for a device that is still pending: the one check that keeps two
# replicas (or a replayed tick) from ever issuing it twice.
ISSUE = """
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local ok = 0
  if raw then
    local rec = cjson.decode(raw)
    if rec.s == 'pending' then
      rec.s = 'issued'; rec.j = ARGV[i + 1]; rec.t = now
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
      redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
      redis.call('HINCRBY', KEYS[2], 'pending', -1)
      redis.call('HINCRBY', KEYS[2], 'issued', 1)
      ok = 1
    end
  end
  redis.call('ZREM', KEYS[3], ARGV[i])
  out[#out + 1] = ok
end
redis.call('HINCRBY', KEYS[2], '_v', 1)
return out
"""

# A job not started yet gets a fresh manifest (same job id) before its expiry passes.
REFRESH = """
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local ok = 0
  if raw then
    local rec = cjson.decode(raw)
    if rec.s == 'issued' and rec.j == ARGV[i + 1] then
      rec.t = now
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
      ok = 1
    end
  end
  out[#out + 1] = ok
end
return out
"""

TERMINAL_LUA = "{succeeded=1, failed=1, rolled_back=1, rejected=1, timed_out=1, withdrawn=1}"

# A device's progress report: applied only to its current job, never after a terminal state,
# except that a terminal report replaces `timed_out` (PROTOCOL §3: the device's word is the truth,
# a slow link must not hide a good or bad install). That late report is recorded as an event in
# the rollout's list (KEYS[4] meta, KEYS[5] events), its seq the rollout's next rev, and the
# script answers with the event's JSON; otherwise with the state it replaced or why it did not.
REPORT = """
local terminal = TERMINAL_LUA
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 'nojob' end
local rec = cjson.decode(raw)
if rec.j ~= ARGV[2] then return 'nojob' end
local old, new, now = rec.s, ARGV[3], tonumber(ARGV[4])
local late = old == 'timed_out' and terminal[new] and new ~= 'timed_out' and new ~= 'withdrawn'
if terminal[old] and not late then return 'terminal' end
if old == new then return 'same' end
rec.s = new
if new == 'in_progress' then
  rec.p = now
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[1])
else
  rec.d = now
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if late then rec.l = 1 end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
redis.call('HINCRBY', KEYS[2], old, -1)
redis.call('HINCRBY', KEYS[2], new, 1)
redis.call('HINCRBY', KEYS[2], '_v', 1)
if not late then return old end
local event = cjson.decode(ARGV[6])
event.seq = redis.call('HINCRBY', KEYS[4], 'rev', 1)
event.stage = tonumber(redis.call('HGET', KEYS[4], 'stage')) or 0
event.from = redis.call('HGET', KEYS[4], 'state') or cjson.null
event.state = event.from
local text = cjson.encode(event)
redis.call('RPUSH', KEYS[5], text)
return text
""".replace("TERMINAL_LUA", TERMINAL_LUA)

EXPIRE = """
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
local out = {}
for _, dev in ipairs(due) do
  redis.call('ZREM', KEYS[3], dev)
  local raw = redis.call('HGET', KEYS[1], dev)
  if raw then
    local rec = cjson.decode(raw)
    if rec.s == 'in_progress' then
      rec.s = 'timed_out'; rec.d = now
      redis.call('HSET', KEYS[1], dev, cjson.encode(rec))
      redis.call('HINCRBY', KEYS[2], 'in_progress', -1)
      redis.call('HINCRBY', KEYS[2], 'timed_out', 1)
      out[#out + 1] = dev; out[#out + 1] = rec.j
    end
  end
end
if #out > 0 then redis.call('HINCRBY', KEYS[2], '_v', 1) end
return out
"""

# Halt/abort: nothing more goes out; jobs not started yet are withdrawn. Returns every device
# that ever had a job and its job id (flat pairs), so the planner clears each retained job topic.
WITHDRAW = """
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  if rec.s == 'pending' or rec.s == 'issued' then
    redis.call('HINCRBY', KEYS[2], rec.s, -1)
    redis.call('HINCRBY', KEYS[2], 'withdrawn', 1)
    rec.s = 'withdrawn'; rec.d = now
    redis.call('HSET', KEYS[1], all[i], cjson.encode(rec))
  end
  if rec.j then out[#out + 1] = all[i]; out[#out + 1] = rec.j end
end
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[2], '_v', 1)
return out
"""

CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'rev', 1)
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# Compare-and-set on the rollout's meta: a transition decided on stale state is recomputed.
TRANSITION = """
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
if ARGV[2] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[2]) end
return rev
"""

# The highest event seq known to be published: a replica taking a rollout over sends the rest again.
MARK_SENT = """
local seq = tonumber(ARGV[1])
if (tonumber(redis.call('HGET', KEYS[1], 'evpub')) or 0) < seq then
  redis.call('HSET', KEYS[1], 'evpub', seq)
end
return 1
"""

LEASE = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# One job slot per device (the retained job topic): taken by one rollout at a time. KEYS[2] is the
# device's registry hash (same hash tag): the answer is the encoding the device last used.
CLAIM = """
local rid = redis.call('HGET', KEYS[1], 'rid')
if rid and rid ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rid', ARGV[1], 'job', ARGV[2])
return redis.call('HGET', KEYS[2], 'enc') or 'json'
"""

RELEASE = """
if redis.call('HGET', KEYS[1], 'job') == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""
