/*
 * engine_redis_lua.h: the Lua scripts of the Redis engine, as C strings.
 *
 * Each runs atomically in Redis (EVALSHA, loaded with SCRIPT LOAD on every
 * connect; EVAL when Redis answers NOSCRIPT). docs/engine.md lists the keys.
 * Channel payloads are a kind letter followed by netstrings "<len>:<bytes>",
 * which the C side parses without copying. Numbers are formatted with %d so
 * offsets past 1e14 do not turn into floating-point text.
 */
#ifndef HUB_ENGINE_REDIS_LUA_H
#define HUB_ENGINE_REDIS_LUA_H

/* Shared prelude: netstring, integer text, stream fields, and the
 * amendment state of messages (docs/engine.md: the hash P x:<room>:<offset>
 * with e edited_ts, t edited text, d tombstone, o the emoji in first-reaction
 * order as netstrings, c<emoji> its count, u<len>:<who><emoji> one user's
 * reaction; the sorted set P ai:<room> lists the offsets that have one). */
#define LUA_PRELUDE                                                                                \
    "local function ns(s) return #s .. ':' .. s end\n"                                             \
    "local function d(n) return string.format('%d', n) end\n"                                      \
    "local function fields(f) local t = {} for i = 1, #f, 2 do t[f[i]] = f[i + 1] end return t "   \
    "end\n"                                                                                        \
    "local function idnum(id) return tonumber(string.match(id, '^(%d+)')) end\n"                   \
    "local function emojis(o)\n"                                                                   \
    "  local out, i = {}, 1\n"                                                                     \
    "  while o and i <= #o do\n"                                                                   \
    "    local c = string.find(o, ':', i, true)\n"                                                 \
    "    if not c then break end\n"                                                                \
    "    local n = tonumber(string.sub(o, i, c - 1))\n"                                            \
    "    out[#out + 1] = string.sub(o, c + 1, c + n)\n"                                            \
    "    i = c + n + 1\n"                                                                          \
    "  end\n"                                                                                      \
    "  return out\n"                                                                               \
    "end\n"                                                                                        \
    "local function clean(ai, xp, below)\n"                                                        \
    "  local olds\n"                                                                               \
    "  if below then olds = redis.call('ZRANGEBYSCORE', ai, '-inf', '(' .. d(below))\n"            \
    "  else olds = redis.call('ZRANGE', ai, 0, -1) end\n"                                          \
    "  for _, o in ipairs(olds) do redis.call('DEL', xp .. o) end\n"                               \
    "  if #olds > 0 then\n"                                                                        \
    "    if below then redis.call('ZREMRANGEBYSCORE', ai, '-inf', '(' .. d(below))\n"              \
    "    else redis.call('DEL', ai) end\n"                                                         \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function row(r, amended, xp, viewer)\n"                                                 \
    "  local f = fields(r[2])\n"                                                                   \
    "  local off = string.match(r[1], '^(%d+)')\n"                                                 \
    "  local text, men, ets, del, rx = f.x or '', f.n or '', '0', 0, {}\n"                         \
    "  if amended[off] then\n"                                                                     \
    "    local k = xp .. off\n"                                                                    \
    "    local h = redis.call('HMGET', k, 'e', 't', 'd', 'o')\n"                                   \
    "    if h[3] then\n"                                                                           \
    "      text, men, del = '', '', 1\n"                                                           \
    "    else\n"                                                                                   \
    "      if h[1] then ets, text = h[1], h[2] or '' end\n"                                        \
    "      for _, em in ipairs(emojis(h[4])) do\n"                                                 \
    "        local mine = 0\n"                                                                     \
    "        if viewer ~= '' and redis.call('HEXISTS', k, 'u' .. #viewer .. ':' .. viewer .. em) " \
    "== 1 then mine = 1 end\n"                                                                     \
    "        rx[#rx + 1] = em\n"                                                                   \
    "        rx[#rx + 1] = redis.call('HGET', k, 'c' .. em) or '0'\n"                              \
    "        rx[#rx + 1] = mine\n"                                                                 \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return {off, f.t or '0', f.f or '', text, f.c or '', f.k or '', f.a or '', men, f.p or "    \
    "'0', ets, del, rx}\n"                                                                         \
    "end\n"

/* KEYS: meta, stream, dedupe, amended offsets (P ai:<room>), then the
 * actor's room ban, room mute, hub ban and hub mute keys, and the
 * amendment log (P al:<room>). ARGV: epoch
 * candidate, ts, from, text, cmid, client, maxlen, dedupe ttl (s), channel,
 * author, actor ("" = no check), mentions, reply_to, amendment key prefix
 * (P x:<room>:). Returns {offset, ts, status, epoch}: status 0 stored,
 * 1 duplicate, 2 banned, 3 muted, 4 bad reply_to (2..4: nothing stored).
 * When the stream's trimming passed messages with amendment state, that
 * state is deleted here (each offset once, so the cost is amortised). */
static const char lua_publish[] = LUA_PRELUDE
    "if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then\n"
    "  redis.call('DEL', KEYS[2], KEYS[9])\n"
    "  clean(KEYS[4], ARGV[14], nil)\n"
    "end\n"
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if ARGV[5] ~= '' then\n"
    "  local old = redis.call('GET', KEYS[3])\n"
    "  if old then\n"
    "    local o, t = string.match(old, '^(%d+):(-?%d+)$')\n"
    "    if o then return {o, t, 1, e} end\n"
    "  end\n"
    "end\n"
    "if ARGV[11] ~= '' then\n"
    "  local ts = tonumber(ARGV[2])\n"
    "  for i = 5, 8 do\n"
    "    local u = redis.call('GET', KEYS[i])\n"
    "    if u and tonumber(u) > ts then return {'0', '0', (i % 2 == 1) and 2 or 3, e} end\n"
    "  end\n"
    "end\n"
    "local rt = tonumber(ARGV[13]) or 0\n"
    "if rt ~= 0 and rt > tonumber(redis.call('HGET', KEYS[1], 'o') or '0') then\n"
    "  return {'0', '0', 4, e}\n"
    "end\n"
    "local o = d(redis.call('HINCRBY', KEYS[1], 'o', 1))\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], o .. '-0', 't', ARGV[2], 'f', ARGV[3],\n"
    "  'x', ARGV[4], 'c', ARGV[5], 'k', ARGV[6], 'a', ARGV[10], 'n', ARGV[12], 'p', ARGV[13])\n"
    "if ARGV[5] ~= '' then redis.call('SET', KEYS[3], o .. ':' .. ARGV[2], 'EX', ARGV[8]) end\n"
    "local lo = redis.call('ZRANGE', KEYS[4], 0, 0)\n"
    "if #lo > 0 then\n"
    "  local f = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)\n"
    "  local first = tonumber(o) + 1\n"
    "  if #f > 0 then first = idnum(f[1][1]) end\n"
    "  if tonumber(lo[1]) < first then clean(KEYS[4], ARGV[14], first) end\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[9], 'm' .. ns(e) .. ns(o) .. ns(ARGV[2]) .. ns(ARGV[3]) ..\n"
    "  ns(ARGV[4]) .. ns(ARGV[5]) .. ns(ARGV[6]) .. ns(ARGV[10]) .. ns(ARGV[12]) .. "
    "ns(ARGV[13]))\n"
    "return {o, ARGV[2], 0, e}\n";

/* KEYS: meta, stream, amended offsets, and for a query also the topic and
 * the actor's room ban, room mute, hub ban, hub mute keys. ARGV: epoch
 * candidate, dir (0 latest, 1 before, 2 after), pos, limit, amendment key
 * prefix, viewer, actor, now (ms), the amendment log's key (deleted with a
 * fresh epoch). Returns {epoch, last, first, complete, topic, ban_until,
 * mute_until, amendment sequence, rows...}, rows oldest first, each {offset,
 * ts, from, text, cmid, client, author, mentions, reply_to, edited_ts,
 * deleted, {emoji, count, mine, ...}} with the amendments applied. */
static const char lua_read[] = LUA_PRELUDE
    "if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then\n"
    "  redis.call('DEL', KEYS[2], ARGV[9])\n"
    "  clean(KEYS[3], ARGV[5], nil)\n"
    "end\n"
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "local last = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')\n"
    "local first = last + 1\n"
    "local f = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)\n"
    "if #f > 0 then first = idnum(f[1][1]) end\n"
    "local dir, pos, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local out = {e, d(last), d(first), 1, '', '0', '0', redis.call('HGET', KEYS[1], 'a') or '0'}\n"
    "if KEYS[4] then\n"
    "  out[5] = redis.call('GET', KEYS[4]) or ''\n"
    "  if ARGV[7] ~= '' then\n"
    "    local now = tonumber(ARGV[8])\n"
    "    for i = 5, 6 do\n"
    "      local best, bn = '0', 0\n"
    "      for _, k in ipairs({KEYS[i], KEYS[i + 2]}) do\n"
    "        local u = redis.call('GET', k)\n"
    "        if u and tonumber(u) > now and tonumber(u) > bn then best, bn = u, tonumber(u) end\n"
    "      end\n"
    "      out[i + 1] = best\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if limit == 0 or first > last then return out end\n"
    "local rows, rev = nil, true\n"
    "if dir == 1 then\n"
    "  local hi = pos - 1\n"
    "  if hi > last then hi = last end\n"
    "  if hi < first then return out end\n"
    "  rows = redis.call('XREVRANGE', KEYS[2], d(hi), '-', 'COUNT', limit)\n"
    "elseif dir == 2 then\n"
    "  if pos >= last then return out end\n"
    "  local lo = pos + 1\n"
    "  if lo < first then lo = first end\n"
    "  rows = redis.call('XRANGE', KEYS[2], d(lo), '+', 'COUNT', limit)\n"
    "  rev = false\n"
    "else\n"
    "  rows = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)\n"
    "end\n"
    "if #rows == 0 then return out end\n"
    "local a, b = idnum(rows[1][1]), idnum(rows[#rows][1])\n"
    "if a > b then a, b = b, a end\n"
    "local amended = {}\n"
    "for _, x in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], a, b)) do amended[x] = true end\n"
    "if rev then\n"
    "  for i = #rows, 1, -1 do out[#out + 1] = row(rows[i], amended, ARGV[5], ARGV[6]) end\n"
    "  out[4] = (idnum(rows[#rows][1]) <= first) and 1 or 0\n"
    "else\n"
    "  for i = 1, #rows do out[#out + 1] = row(rows[i], amended, ARGV[5], ARGV[6]) end\n"
    "  out[4] = (idnum(rows[#rows][1]) >= last) and 1 or 0\n"
    "end\n"
    "return out\n";

/* KEYS: meta, stream, amended offsets, the message's amendment hash, the
 * amendment log. ARGV: offset, kind (1 edit, 2 delete, 3 react, 4 unreact),
 * who, moderator ("1"), text, emoji, ts, window ms, max emoji, nick,
 * channel, log length. Checks and applies one amendment, numbers it (the
 * meta's a, from 1 per epoch), appends it to the log (id <seq>-0, field p
 * the payload, MAXLEN ~ log length) and publishes it on the room's channel
 * ("a": epoch, offset, kind, text, edited_ts, emoji, count, who, nick, seq),
 * so that a node that missed a publication reads it from the log.
 * Returns {"ok", changed, edited_ts, count, author, from}, or {"noent"},
 * {"perm", why}, {"limit"}. */
static const char lua_amend[] = LUA_PRELUDE
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if not e then return {'noent'} end\n"
    "local off = ARGV[1]\n"
    "local r = redis.call('XRANGE', KEYS[2], off .. '-0', off .. '-0')\n"
    "if #r == 0 then return {'noent'} end\n"
    "local f = fields(r[1][2])\n"
    "local author, from, mts = f.a or '', f.f or '', tonumber(f.t or '0') or 0\n"
    "local kind, h = tonumber(ARGV[2]), KEYS[4]\n"
    "local deleted = redis.call('HEXISTS', h, 'd') == 1\n"
    "local function pub(text, ets, em, count)\n"
    "  local s = d(redis.call('HINCRBY', KEYS[1], 'a', 1))\n"
    "  local p = 'a' .. ns(e) .. ns(off) .. ns(ARGV[2]) .. ns(text) .. ns(ets) .. ns(em) .. "
    "ns(count) ..\n"
    "    ns(ARGV[3]) .. ns(ARGV[10]) .. ns(s)\n"
    "  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], s .. '-0', 'p', p)\n"
    "  redis.call('PUBLISH', ARGV[11], p)\n"
    "end\n"
    "if kind == 1 or kind == 2 then\n"
    "  if deleted then\n"
    "    if kind == 1 then return {'noent'} end\n"
    "    return {'ok', 0, '0', 0, author, from}\n"
    "  end\n"
    "  if ARGV[4] ~= '1' then\n"
    "    if author == '' or author ~= ARGV[3] then return {'perm', 'author'} end\n"
    "    if tonumber(ARGV[7]) - mts > tonumber(ARGV[8]) then return {'perm', 'window'} end\n"
    "  end\n"
    "  redis.call('ZADD', KEYS[3], off, off)\n"
    "  if kind == 1 then\n"
    "    redis.call('HSET', h, 'e', ARGV[7], 't', ARGV[5])\n"
    "    pub(ARGV[5], ARGV[7], '', '0')\n"
    "    return {'ok', 1, ARGV[7], 0, author, from}\n"
    "  end\n"
    "  redis.call('DEL', h)\n"
    "  redis.call('HSET', h, 'd', '1')\n"
    "  pub('', '0', '', '0')\n"
    "  return {'ok', 1, '0', 0, author, from}\n"
    "end\n"
    "local em = ARGV[6]\n"
    "local mk, ck = 'u' .. #ARGV[3] .. ':' .. ARGV[3] .. em, 'c' .. em\n"
    "if deleted then\n"
    "  if kind == 3 then return {'noent'} end\n"
    "  return {'ok', 0, '0', 0, author, from}\n"
    "end\n"
    "local cnt = tonumber(redis.call('HGET', h, ck) or '0')\n"
    "local has = redis.call('HEXISTS', h, mk) == 1\n"
    "if kind == 3 then\n"
    "  if has then return {'ok', 0, '0', cnt, author, from} end\n"
    "  if cnt == 0 then\n"
    "    local o = redis.call('HGET', h, 'o') or ''\n"
    "    if #emojis(o) >= tonumber(ARGV[9]) then return {'limit'} end\n"
    "    redis.call('HSET', h, 'o', o .. ns(em))\n"
    "  end\n"
    "  redis.call('HSET', h, mk, '1')\n"
    "  cnt = redis.call('HINCRBY', h, ck, 1)\n"
    "else\n"
    "  if not has then return {'ok', 0, '0', cnt, author, from} end\n"
    "  redis.call('HDEL', h, mk)\n"
    "  cnt = redis.call('HINCRBY', h, ck, -1)\n"
    "  if cnt <= 0 then\n"
    "    cnt = 0\n"
    "    redis.call('HDEL', h, ck)\n"
    "    local keep = ''\n"
    "    for _, x in ipairs(emojis(redis.call('HGET', h, 'o') or '')) do\n"
    "      if x ~= em then keep = keep .. ns(x) end\n"
    "    end\n"
    "    if keep == '' then redis.call('HDEL', h, 'o') else redis.call('HSET', h, 'o', keep) end\n"
    "  end\n"
    "end\n"
    "redis.call('ZADD', KEYS[3], off, off)\n"
    "pub('', '0', em, d(cnt))\n"
    "return {'ok', 1, '0', cnt, author, from}\n";

/* KEYS: meta, stream, amended offsets. ARGV: before (0: from the newest),
 * limit, most entries to scan, amendment key prefix, then the query. Scans
 * the stream newest first. Tokens are runs of ASCII letters and digits and
 * non-ASCII bytes, compared in ASCII lower case (the stores' tokenizer,
 * src/history.c). The query's white-space separated words (the first 16)
 * must all match: a word's tokens occur in a row in the text (the edited
 * text; tombstones never match), the last one as a prefix of a token.
 * Returns {complete, rows...} newest first (rows as lua_read's), or {-1}
 * when the query has no token. */
static const char lua_search[] = LUA_PRELUDE
    "local words = {}\n"
    "for w in string.gmatch(string.lower(ARGV[5]), '%S+') do\n"
    "  local toks = {}\n"
    "  for t in string.gmatch(w, '[%w\\128-\\255]+') do toks[#toks + 1] = t end\n"
    "  if #toks > 0 and #words < 16 then words[#words + 1] = toks end\n"
    "end\n"
    "if #words == 0 then return {-1} end\n"
    "local function match(text)\n"
    "  for _, ws in ipairs(words) do\n"
    "    if not string.find(text, ws[1], 1, true) then return false end\n"
    "  end\n"
    "  local tt = {}\n"
    "  for t in string.gmatch(text, '[%w\\128-\\255]+') do tt[#tt + 1] = t end\n"
    "  for _, ws in ipairs(words) do\n"
    "    local found = false\n"
    "    for i = 1, #tt - #ws + 1 do\n"
    "      local ok = true\n"
    "      for k = 1, #ws do\n"
    "        local t = tt[i + k - 1]\n"
    "        if k < #ws then\n"
    "          if t ~= ws[k] then ok = false break end\n"
    "        elseif string.sub(t, 1, #ws[k]) ~= ws[k] then ok = false break end\n"
    "      end\n"
    "      if ok then found = true break end\n"
    "    end\n"
    "    if not found then return false end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local out = {1}\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return out end\n"
    "local before, limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local hi = '+'\n"
    "if before > 0 then\n"
    "  if before <= 1 then return out end\n"
    "  hi = d(before - 1)\n"
    "end\n"
    "local amended = {}\n"
    "for _, x in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do amended[x] = true end\n"
    "local scanned, found = 0, 0\n"
    "while true do\n"
    "  if scanned >= cap then out[1] = 0 return out end\n"
    "  local rows = redis.call('XREVRANGE', KEYS[2], hi, '-', 'COUNT', 200)\n"
    "  if #rows == 0 then return out end\n"
    "  for _, r in ipairs(rows) do\n"
    "    scanned = scanned + 1\n"
    "    local off, text = string.match(r[1], '^(%d+)'), nil\n"
    "    if amended[off] then\n"
    "      local h = redis.call('HMGET', ARGV[4] .. off, 'd', 'e', 't')\n"
    "      if not h[1] and h[2] then text = h[3] or '' elseif h[1] then text = false end\n"
    "    end\n"
    "    if text == nil then\n"
    "      local f = r[2]\n"
    "      for i = 1, #f, 2 do if f[i] == 'x' then text = f[i + 1] break end end\n"
    "    end\n"
    "    if text then\n"
    "      if match(string.lower(text)) then\n"
    "        found = found + 1\n"
    "        if found > limit then out[1] = 0 return out end\n"
    "        out[#out + 1] = row(r, amended, ARGV[4], '')\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local lo = idnum(rows[#rows][1])\n"
    "  if lo <= 1 then return out end\n"
    "  hi = d(lo - 1)\n"
    "end\n";

/* KEYS: meta, amendment log. ARGV: first sequence wanted, count. Returns
 * {epoch, sequence, payloads...} (the payloads from the first wanted on,
 * as published). */
static const char lua_afill[] = "local e = redis.call('HGET', KEYS[1], 'e')\n"
                                "local out = {e or '', redis.call('HGET', KEYS[1], 'a') or '0'}\n"
                                "if not e then return out end\n"
                                "for _, r in ipairs(redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', "
                                "'+', 'COUNT', ARGV[2])) do\n"
                                "  out[#out + 1] = r[2][2]\n"
                                "end\n"
                                "return out\n";

/* KEYS: a restriction key (P ban:<room length>:<room><actor> or P mute:...,
 * room length 0 for the whole hub), and for a hub-wide one the list of
 * the hub's restrictions (P hr: key without the prefix -> until). ARGV:
 * until (ms, "0" lifts), a PEXPIRE in ms ("" for good), the key without
 * the prefix, now (ms: ended entries of the list are dropped). The value is the until time that
 * publishes and queries compare with; the expiry only frees the key a while after the restriction
 * ended. */
static const char lua_restrict[] =
    "if KEYS[2] then\n"
    "  local all, now = redis.call('HGETALL', KEYS[2]), tonumber(ARGV[4])\n"
    "  for i = 1, #all, 2 do\n"
    "    if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[2], all[i]) end\n"
    "  end\n"
    "end\n"
    "if ARGV[1] == '0' then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  if KEYS[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end\n"
    "  return 0\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "if KEYS[2] then redis.call('HSET', KEYS[2], ARGV[3], ARGV[1]) end\n"
    "return 1\n";

/* KEYS: the hub's restriction list (P hr). ARGV: now (ms). Drops the
 * entries that ended and returns the others {key suffix, until, ...}. */
static const char lua_hlist[] = "local now, out = tonumber(ARGV[1]), {}\n"
                                "local all = redis.call('HGETALL', KEYS[1])\n"
                                "for i = 1, #all, 2 do\n"
                                "  if tonumber(all[i + 1]) > now then\n"
                                "    out[#out + 1] = all[i]\n"
                                "    out[#out + 1] = all[i + 1]\n"
                                "  else\n"
                                "    redis.call('HDEL', KEYS[1], all[i])\n"
                                "  end\n"
                                "end\n"
                                "return out\n";

/* KEYS: the hub's restriction list (P hr) of a shard that came back.
 * ARGV: prefix, now (ms), slack (ms), then key suffix, until pairs (the
 * first shard's list). Writes the restrictions the shard lacks (it lost
 * its data, or it is new). Returns how many it wrote. */
static const char lua_heal[] = LUA_PRELUDE
    "local now, slack, n = tonumber(ARGV[2]), tonumber(ARGV[3]), 0\n"
    "for i = 4, #ARGV - 1, 2 do\n"
    "  local f, u = ARGV[i], ARGV[i + 1]\n"
    "  local un = tonumber(u)\n"
    "  if un and un > now then\n"
    "    local k = ARGV[1] .. f\n"
    "    if redis.call('EXISTS', k) == 0 then\n"
    "      redis.call('SET', k, u)\n"
    "      if u ~= '9223372036854775807' then redis.call('PEXPIRE', k, d(un - now + slack)) end\n"
    "      n = n + 1\n"
    "    end\n"
    "    redis.call('HSET', KEYS[1], f, u)\n"
    "  end\n"
    "end\n"
    "return n\n";

/* KEYS: members, node's member set, rooms zset. ARGV: client, node, nick,
 * room, channel, silent ("1": a member written again after Redis lost its
 * data, whom every node still shows: no join event). Returns 1 if the
 * client was not a member yet. */
static const char lua_join[] = LUA_PRELUDE
    "local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\\n' .. ARGV[3])\n"
    "redis.call('SADD', KEYS[2], ns(ARGV[4]) .. ARGV[1])\n"
    "if new == 1 then\n"
    "  local n = redis.call('HLEN', KEYS[1])\n"
    "  redis.call('ZADD', KEYS[3], n, ARGV[4])\n"
    "  if ARGV[6] ~= '1' then\n"
    "    redis.call('PUBLISH', ARGV[5], 'j' .. ns(ARGV[1]) .. ns(ARGV[3]) .. ns(d(n)) .. "
    "ns(ARGV[2]))\n"
    "  end\n"
    "end\n"
    "return new\n";

/* KEYS: members, rooms zset. ARGV: client, room, channel, prefix.
 * Returns 1 if the client was a member. */
static const char lua_leave[] = LUA_PRELUDE
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not v then return 0 end\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "local node, nick = string.match(v, '^([^\\n]*)\\n(.*)$')\n"
    "redis.call('SREM', ARGV[4] .. 'nm:' .. node, ns(ARGV[2]) .. ARGV[1])\n"
    "local n = redis.call('HLEN', KEYS[1])\n"
    "if n == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) else redis.call('ZADD', KEYS[2], n, "
    "ARGV[2]) end\n"
    "redis.call('PUBLISH', ARGV[3], 'l' .. ns(ARGV[1]) .. ns(nick) .. ns(d(n)) .. ns(node))\n"
    "return 1\n";

/* KEYS: members. ARGV: client, node, nick, old nick, channel. */
static const char lua_renick[] = LUA_PRELUDE
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not v then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\\n' .. ARGV[3])\n"
    "local n = redis.call('HLEN', KEYS[1])\n"
    "redis.call('PUBLISH', ARGV[5], 'n' .. ns(ARGV[1]) .. ns(ARGV[4]) .. ns(ARGV[3]) .. ns(d(n)) "
    ".. ns(ARGV[2]))\n"
    "return 1\n";

/* KEYS: members. ARGV: limit. Returns {total, client, nick, ...}, the list
 * only when total <= limit. */
static const char lua_members[] = "local n = redis.call('HLEN', KEYS[1])\n"
                                  "local out = {n}\n"
                                  "if n > tonumber(ARGV[1]) then return out end\n"
                                  "local all = redis.call('HGETALL', KEYS[1])\n"
                                  "for i = 1, #all, 2 do\n"
                                  "  out[#out + 1] = all[i]\n"
                                  "  out[#out + 1] = string.match(all[i + 1], '\\n(.*)$') or ''\n"
                                  "end\n"
                                  "return out\n";

/* KEYS: nick key, node's nick set. ARGV: node, client, nick, folded nick.
 * Returns 1 if claimed, 0 if another client holds it. */
static const char lua_claim[] = "local me = ARGV[1] .. '\\n' .. ARGV[2] .. '\\n'\n"
                                "local cur = redis.call('GET', KEYS[1])\n"
                                "if cur and string.sub(cur, 1, #me) ~= me then return 0 end\n"
                                "redis.call('SET', KEYS[1], me .. ARGV[3])\n"
                                "redis.call('SADD', KEYS[2], ARGV[4])\n"
                                "return 1\n";

/* KEYS: nick key, node's nick set. ARGV: node, client, folded nick. */
static const char lua_release[] = "local me = ARGV[1] .. '\\n' .. ARGV[2] .. '\\n'\n"
                                  "local cur = redis.call('GET', KEYS[1])\n"
                                  "if cur and string.sub(cur, 1, #me) == me then\n"
                                  "  redis.call('DEL', KEYS[1])\n"
                                  "  redis.call('SREM', KEYS[2], ARGV[3])\n"
                                  "  return 1\n"
                                  "end\n"
                                  "return 0\n";

/* KEYS: nick key. ARGV: room, from, prefix. Publishes an invite on the
 * holder's node channel. Returns 1, or 0 if nobody holds the nick. */
static const char lua_invite[] = LUA_PRELUDE
    "local cur = redis.call('GET', KEYS[1])\n"
    "if not cur then return 0 end\n"
    "local node, client, nick = string.match(cur, '^([^\\n]*)\\n([^\\n]*)\\n(.*)$')\n"
    "if not node then return 0 end\n"
    "redis.call('PUBLISH', ARGV[3] .. 'n:' .. node, 'i' .. ns(client) .. ns(nick) .. ns(ARGV[1]) "
    ".. ns(ARGV[2]))\n"
    "return 1\n";

/* KEYS: lease, nodes set, node's mark. ARGV: node, lease ms, mark ttl (s).
 * Returns 1 if the lease was still alive (0: it lapsed, and others may have
 * swept this node), plus 2 if the node's mark was there: the mark outlives
 * the lease (a week), so without it Redis lost its data (restarted empty,
 * flushed) rather than swept this node, and nobody was told its members
 * left. */
static const char lua_lease[] = "local had = redis.call('EXISTS', KEYS[1])\n"
                                "local kept = redis.call('EXISTS', KEYS[3])\n"
                                "redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])\n"
                                "redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])\n"
                                "redis.call('SADD', KEYS[2], ARGV[1])\n"
                                "return had + 2 * kept\n";

/* KEYS: nodes set. ARGV: prefix, node to clean now ("" = every node whose
 * lease lapsed). Removes the node's members (publishing leave events with
 * the new counts) and nick claims. Returns the number of nodes swept. */
static const char lua_sweep[] = LUA_PRELUDE
    "local P = ARGV[1]\n"
    "local function clean(node)\n"
    "  local tag = node .. '\\n'\n"
    "  for _, r in ipairs(redis.call('SMEMBERS', P .. 'nm:' .. node)) do\n"
    "    local len, rest = string.match(r, '^(%d+):(.*)$')\n"
    "    if len then\n"
    "      local room = string.sub(rest, 1, tonumber(len))\n"
    "      local client = string.sub(rest, tonumber(len) + 1)\n"
    "      local mk = P .. 'm:' .. room\n"
    "      local v = redis.call('HGET', mk, client)\n"
    "      if v and string.sub(v, 1, #tag) == tag then\n"
    "        redis.call('HDEL', mk, client)\n"
    "        local n = redis.call('HLEN', mk)\n"
    "        if n == 0 then redis.call('ZREM', P .. 'z', room) else redis.call('ZADD', P .. 'z', "
    "n, room) end\n"
    "        redis.call('PUBLISH', P .. 'c:' .. room, 'l' .. ns(client) .. ns(string.sub(v, #tag "
    "+ 1)) .. ns(d(n)) .. ns(node))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', P .. 'nm:' .. node)\n"
    "  for _, f in ipairs(redis.call('SMEMBERS', P .. 'nk:' .. node)) do\n"
    "    local cur = redis.call('GET', P .. 'k:' .. f)\n"
    "    if cur and string.sub(cur, 1, #tag) == tag then redis.call('DEL', P .. 'k:' .. f) end\n"
    "  end\n"
    "  redis.call('DEL', P .. 'nk:' .. node)\n"
    "end\n"
    "if ARGV[2] ~= '' then clean(ARGV[2]) return 0 end\n"
    "local swept = 0\n"
    "for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('EXISTS', P .. 'L:' .. node) == 0 then\n"
    "    clean(node)\n"
    "    redis.call('SREM', KEYS[1], node)\n"
    "    swept = swept + 1\n"
    "  end\n"
    "end\n"
    "return swept\n";

#endif
