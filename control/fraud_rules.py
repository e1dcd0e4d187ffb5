"""The anti-fraud rules: their names, and the Redis script that counts events and applies them atomically.

``JUDGE_EVENTS_LUA`` judges a chunk of events in one call (``control/fraud.py`` pipelines the chunks of a
batch): for each event in turn it records the event in the sliding windows of its actors (the user, the
device, the IP), then compares the windows with the limits of ``FraudSettings``. Windows are sorted sets
scored by the event time in ms, counted inclusively, ``ts - w <= score <= ts``, so the event itself counts
(a user's last time on a device or IP is refreshed at most once a minute: the distinct-user counts are exact
to a minute). Every rule and its action:

===================  ======  =================================================================================
rule                 action  fires when
===================  ======  =================================================================================
``request_rate``     block   the actor's distinct requests (slates shown) in 60 s exceed ``requests_per_min``
                             (a request is counted at its first impression; no request id: each impression)
``click_rate``       block   its clicks in 60 s exceed ``clicks_per_min`` or in 3600 s ``clicks_per_hour``
``shared``           flag /  a device / IP has seen ``users_flag`` (flag) or ``users_block`` (block) distinct
                     block   users in ``users_window_s``; a blocked device blocks its users too (propagation)
``abnormal_ctr``     flag    a click, and the actor's clicks / impressions in ``ctr_window_s`` exceed
                             ``max_ctr`` with at least ``ctr_min_impressions`` impressions
``no_impression``    flag    a click whose item was not shown to the user (or in the click's request) in the
                             ``impression_window_s`` before it
``click_too_fast``   flag    a click sooner than ``min_click_delay_ms`` after its item's impression
``duplicate_click``  flag    the user clicked the same item within ``duplicate_click_window_s``
``duplicate_event``  flag    the event_id was judged before (``event_id_ttl_s``); it is not counted again
``escalation``       block   the actor's flagged clicks (abnormal_ctr, no_impression, click_too_fast,
                             duplicate_click) in 3600 s exceed ``max_flags_per_hour``
``blocked``          block   an actor of the event is blocked (reason ``blocked:<kind>(<cause>)``)
``blocklist``        block   an actor of the event is in the published blocklist
===================  ======  =================================================================================

A reason is ``<rule>:<kind>`` for the actor rules (``click_rate:device``) and ``<rule>`` for the rules of
the click itself. A block lasts ``block_ttl_s`` of event time after its cause, and each new cause extends it.
Flagged and blocked events are still counted in the windows: they are what the actor did.

A chunk runs atomically: Redis serves nothing else meanwhile (10-15 ms for ``SCRIPT_CHUNK`` = 250 events).
The script builds its keys from templates (``key_templates``) instead of declaring them, and one event's
keys (user, device, IP) hash to different slots: run the guard on one Redis instance, not on Redis Cluster
(or one instance per shard, with users, devices and IPs sharded together).
"""

from __future__ import annotations

from enum import StrEnum

from recstack.features.keys import RedisKey
from recstack.features.settings import FraudActorLimits, FraudSettings


class FraudAction(StrEnum):
    """What happens to an event: used (allow), kept out of training and features (flag), or that and the
    actor denied personalisation (block)."""

    ALLOW = "allow"
    FLAG = "flag"
    BLOCK = "block"


class ActorKind(StrEnum):
    """Who an event is counted against."""

    USER = "user"
    DEVICE = "device"
    IP = "ip"


ACTOR_KINDS: tuple[ActorKind, ...] = (ActorKind.USER, ActorKind.DEVICE, ActorKind.IP)


class FraudRule(StrEnum):
    """Names of the rules (the first part of a verdict's reasons)."""

    REQUEST_RATE = "request_rate"
    CLICK_RATE = "click_rate"
    SHARED = "shared"
    ABNORMAL_CTR = "abnormal_ctr"
    NO_IMPRESSION = "no_impression"
    CLICK_TOO_FAST = "click_too_fast"
    DUPLICATE_CLICK = "duplicate_click"
    DUPLICATE_EVENT = "duplicate_event"
    ESCALATION = "escalation"
    BLOCKED = "blocked"
    BLOCKLIST = "blocklist"


def reason_rule(reason: str) -> FraudRule:
    """The rule that caused ``reason``; for ``blocked:<kind>(<cause>)``, the rule of the cause."""
    if reason.startswith(FraudRule.BLOCKED.value) and "(" in reason:
        return reason_rule(reason[reason.index("(") + 1 : reason.rindex(")")])
    return FraudRule(reason.split(":", 1)[0])


_PER_ACTOR = ("requests_1m", "clicks_1m", "clicks_1h", "ctr_impressions", "ctr_clicks", "users", "flags_1h")
COUNT_NAMES: tuple[str, ...] = (
    *(f"{kind}.{name}" for kind in ACTOR_KINDS for name in _PER_ACTOR),
    "click_delay_ms",
)
"""Names of the numbers the script returns with each verdict (-1: not measured for this event)."""

# One call judges a chunk of events, in order (each event sees the state left by the ones before it).
# ARGV (1-based, as the script reads them):
#   1-38   ``script_config``: 1 blocklist in use ('1' / '0'), 2 impression window (ms), 3 min click delay (ms),
#          4 duplicate-click window (ms), 5 event-id TTL (ms), 6 CTR window (ms), 7 retention of req / imp / clk
#          (ms), 8 propagate device blocks ('1' / '0'), then per actor slot s = 1..3 (user, device, ip) 10
#          limits at 8 + 10 (s - 1) + j: j = 1 requests/min, 2 clicks/min, 3 clicks/hour, 4 max CTR, 5 CTR
#          min impressions, 6 max flags/hour, 7 users flag (0 off), 8 users block (0 off), 9 users window (ms),
#          10 block TTL (ms);
#   39-83  ``key_templates``: 22 (head, tail) pairs, key = head .. id .. tail, then the blocklist set's key;
#   84-    8 fields per event: ts (ms), kind ('i' impression, 'c' click, 'o' other), item id, event id,
#          request id ('' none), user id, device id ('' none), ip ('' none).
# Returns one string per event: ``<action>|<reason>;<reason>...|<COUNT_NAMES numbers, comma-separated>``.
# Keys are trimmed to their windows and get their TTL once per call, after the last event.
N_CONFIG_ARGS = 38
N_TEMPLATES = 22
N_EVENT_FIELDS = 8
JUDGE_EVENTS_LUA = """
local function num(i) return tonumber(ARGV[i]) end
local use_blocklist = ARGV[1] == '1'
local imp_w, min_delay, dup_w, eid_ttl, ctr_w, keep = num(2), num(3), num(4), num(5), num(6), num(7)
local propagate = ARGV[8] == '1'
local LIM = {}
for s = 1, 3 do
  LIM[s] = {}
  for j = 1, 10 do LIM[s][j] = num(8 + 10 * (s - 1) + j) end
end
local BLOCKLIST = ARGV[83]
local FIRST = 84
local NAMES = {'user', 'device', 'ip'}
local MINUTE, HOUR = 60000, 3600000
-- templates: 1 event marker, 2 user's shown items, 3 user's clicked items, 4 request's shown items,
-- 4 + s blocked actor of slot s, 7 + 5 (s - 1) + j its series j (1 req, 2 imp, 3 clk, 4 flags, 5 users)
local function key(t, id) local b = 37 + 2 * t return ARGV[b] .. id .. ARGV[b + 1] end
local function series(s, j, id) return key(7 + 5 * (s - 1) + j, id) end
local function fmt(x) return string.format('%.0f', x) end

local trim, expire = {}, {}   -- key -> {newest score, window}: trimmed once, after the last event
local function add(zkey, score, m, window, opt)
  if opt then redis.call('ZADD', zkey, opt, score, m) else redis.call('ZADD', zkey, score, m) end
  local t = trim[zkey]
  if not t then trim[zkey] = {score, window} elseif score > t[1] then t[1] = score end
end

local function block_actor(k, ts, ttl, why)
  local until_ms = ts + ttl
  local v = redis.call('GET', k)
  if v and tonumber(string.sub(v, 1, string.find(v, ' ', 1, true) - 1)) >= until_ms then return end
  redis.call('SET', k, fmt(until_ms) .. ' ' .. why, 'PX', ttl)
end

local out = {}
for e = FIRST, #ARGV, 8 do
  local ts, kind, item, eid, rid, user = tonumber(ARGV[e]), ARGV[e + 1], ARGV[e + 2], ARGV[e + 3], ARGV[e + 4], ARGV[e + 5]
  local ids = {user, ARGV[e + 6], ARGV[e + 7]}
  local blocks, flags, click_flags, to_block = {}, {}, 0, {}
  local nums = {}
  for i = 1, 22 do nums[i] = -1 end

  -- 1. actors already blocked, or in the published blocklist
  for s = 1, 3 do
    if ids[s] ~= '' then
      local v = redis.call('GET', key(4 + s, ids[s]))
      if v then
        local sp = string.find(v, ' ', 1, true)
        if tonumber(string.sub(v, 1, sp - 1)) > ts then
          blocks[#blocks + 1] = 'blocked:' .. NAMES[s] .. '(' .. string.sub(v, sp + 1) .. ')'
        end
      end
      if use_blocklist and redis.call('SISMEMBER', BLOCKLIST, NAMES[s] .. ':' .. ids[s]) == 1 then
        blocks[#blocks + 1] = 'blocklist:' .. NAMES[s]
      end
    end
  end

  -- 2. a replayed event id is reported and not counted again
  if not redis.call('SET', key(1, eid), fmt(ts), 'NX', 'PX', eid_ttl) then
    flags[#flags + 1] = 'duplicate_event'
  else
    -- 3. the actor windows: count the event, then compare
    local new_request = kind == 'i' and (rid == '' or redis.call('EXISTS', key(4, rid)) == 0)
    for s = 1, 3 do
      local id = ids[s]
      if id ~= '' then
        local o, name, lim = 7 * (s - 1), NAMES[s], LIM[s]
        if kind == 'i' then
          add(series(s, 2, id), ts, eid, keep, nil)
          if new_request then  -- the first impression of a request counts it (the request rate's unit)
            local req = series(s, 1, id)
            add(req, ts, rid ~= '' and rid or eid, keep, 'NX')
            local n = redis.call('ZCOUNT', req, ts - MINUTE, ts)
            nums[o + 1] = n
            if n > lim[1] then
              blocks[#blocks + 1] = 'request_rate:' .. name
              to_block[s] = to_block[s] or ('request_rate:' .. name)
            end
          end
        elseif kind == 'c' then
          local clk = series(s, 3, id)
          add(clk, ts, eid, keep, nil)
          local m1 = redis.call('ZCOUNT', clk, ts - MINUTE, ts)
          local h1 = redis.call('ZCOUNT', clk, ts - HOUR, ts)
          nums[o + 2], nums[o + 3] = m1, h1
          if m1 > lim[2] or h1 > lim[3] then
            blocks[#blocks + 1] = 'click_rate:' .. name
            to_block[s] = to_block[s] or ('click_rate:' .. name)
          end
          local imps = redis.call('ZCOUNT', series(s, 2, id), ts - ctr_w, ts)
          local clks = ctr_w == HOUR and h1 or redis.call('ZCOUNT', clk, ts - ctr_w, ts)
          nums[o + 4], nums[o + 5] = imps, clks
          if imps >= lim[5] and clks > lim[4] * imps then
            flags[#flags + 1] = 'abnormal_ctr:' .. name
            click_flags = click_flags + 1
          end
        end
        if s > 1 then
          local users = series(s, 5, id)
          local seen = redis.call('ZSCORE', users, user)
          if not seen or tonumber(seen) < ts - MINUTE then add(users, ts, user, lim[9], 'GT') end  -- 1 min grain
          local n = redis.call('ZCOUNT', users, ts - lim[9], '+inf')
          nums[o + 6] = n
          if lim[8] > 0 and n >= lim[8] then
            blocks[#blocks + 1] = 'shared:' .. name
            to_block[s] = to_block[s] or ('shared:' .. name)
          elseif lim[7] > 0 and n >= lim[7] then
            flags[#flags + 1] = 'shared:' .. name
          end
        end
      end
    end

    -- 4. the click itself: shown before, not too fast, not a repeat
    if kind == 'c' then
      local shown = false
      local t = redis.call('ZSCORE', key(2, user), item)
      if t then
        t = tonumber(t)
        if t <= ts and t >= ts - imp_w then shown = t end
      end
      if not shown and rid ~= '' then
        t = redis.call('HGET', key(4, rid), item)
        if t then
          t = tonumber(t)
          if t <= ts and t >= ts - imp_w then shown = t end
        end
      end
      if not shown then
        flags[#flags + 1] = 'no_impression'
        click_flags = click_flags + 1
      else
        nums[22] = ts - shown
        if ts - shown < min_delay then
          flags[#flags + 1] = 'click_too_fast'
          click_flags = click_flags + 1
        end
      end
      local clicked = key(3, user)
      local last = redis.call('ZSCORE', clicked, item)
      if last and math.abs(ts - tonumber(last)) <= dup_w then
        flags[#flags + 1] = 'duplicate_click'
        click_flags = click_flags + 1
      end
      add(clicked, ts, item, dup_w, 'GT')
    elseif kind == 'i' then
      add(key(2, user), ts, item, imp_w, 'GT')
      if rid ~= '' then
        local req = key(4, rid)
        redis.call('HSET', req, item, fmt(ts))
        expire[req] = imp_w
      end
    end

    -- 5. escalation: an actor whose clicks keep being flagged is blocked
    if click_flags > 0 and #blocks == 0 then
      for s = 1, 3 do
        if ids[s] ~= '' then
          local fl = series(s, 4, ids[s])
          add(fl, ts, eid, HOUR, nil)
          local n = redis.call('ZCOUNT', fl, ts - HOUR, ts)
          nums[7 * (s - 1) + 7] = n
          if n > LIM[s][6] then
            blocks[#blocks + 1] = 'escalation:' .. NAMES[s]
            to_block[s] = to_block[s] or ('escalation:' .. NAMES[s])
          end
        end
      end
    end

    -- 6. remember the blocked actors; a blocked device takes the accounts seen on it along
    for s, why in pairs(to_block) do
      block_actor(key(4 + s, ids[s]), ts, LIM[s][10], why)
      if s == 2 and propagate then
        for _, u in ipairs(redis.call('ZRANGEBYSCORE', series(2, 5, ids[2]), ts - LIM[2][9], '+inf')) do
          block_actor(key(5, u), ts, LIM[1][10], why)
        end
      end
    end
  end

  local action = 'allow'
  if #blocks > 0 then action = 'block' elseif #flags > 0 then action = 'flag' end
  for _, r in ipairs(flags) do blocks[#blocks + 1] = r end
  out[#out + 1] = action .. '|' .. table.concat(blocks, ';') .. '|' .. table.concat(nums, ',')
end

for k, t in pairs(trim) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. fmt(t[1] - t[2]))
  redis.call('PEXPIRE', k, t[2])
end
for k, window in pairs(expire) do redis.call('PEXPIRE', k, window) end
return out
"""


def _limits_args(limits: FraudActorLimits) -> list[str]:
    return [
        str(limits.requests_per_min), str(limits.clicks_per_min), str(limits.clicks_per_hour),
        repr(float(limits.max_ctr)), str(limits.ctr_min_impressions), str(limits.max_flags_per_hour),
        str(limits.users_flag or 0), str(limits.users_block or 0), str(limits.users_window_s * 1000),
        str(limits.block_ttl_s * 1000),
    ]  # fmt: skip


def script_config(settings: FraudSettings, use_blocklist: bool) -> list[str]:
    """ARGV 1-38 of ``JUDGE_EVENTS_LUA``: the settings, flattened."""
    keep_ms = max(3600, settings.ctr_window_s) * 1000  # longest window read from the req / imp / clk sets
    args = [
        "1" if use_blocklist else "0", str(settings.impression_window_s * 1000),
        str(settings.min_click_delay_ms), str(settings.duplicate_click_window_s * 1000),
        str(settings.event_id_ttl_s * 1000), str(settings.ctr_window_s * 1000), str(keep_ms),
        "1" if settings.propagate_device_block else "0",
    ]  # fmt: skip
    for limits in (settings.user, settings.device, settings.ip):
        args += _limits_args(limits)
    assert len(args) == N_CONFIG_ARGS
    return args


_SENTINEL = "\x00"
SERIES = ("req", "imp", "clk", "flags", "users")


def key_templates(keys: RedisKey, blocklist_key: str) -> list[str]:
    """ARGV 39-83 of ``JUDGE_EVENTS_LUA``: the (head, tail) of every key the script builds from an id, taken
    from ``RedisKey`` so the script and Python name keys the same way, then the blocklist set's key."""
    built = [
        keys.fraud_event(_SENTINEL), keys.fraud_user_shown(_SENTINEL),  # type: ignore[arg-type]
        keys.fraud_user_clicked(_SENTINEL), keys.fraud_request(_SENTINEL),  # type: ignore[arg-type]
        *(keys.fraud_blocked(kind.value, _SENTINEL) for kind in ACTOR_KINDS),
        *(keys.fraud_actor(kind.value, _SENTINEL, series) for kind in ACTOR_KINDS for series in SERIES),
    ]  # fmt: skip
    assert len(built) == N_TEMPLATES
    out = [part for k in built for part in k.split(_SENTINEL)]
    return [*out, blocklist_key]
