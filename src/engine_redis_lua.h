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

/* Shared prelude: netstring, integer text, and the start of a room's meta
 * (a fresh epoch also drops a stream left behind without its meta). */
#define LUA_PRELUDE                                                                                \
    "local function ns(s) return #s .. ':' .. s end\n"                                             \
    "local function d(n) return string.format('%d', n) end\n"

/* KEYS: meta, stream, dedupe. ARGV: epoch candidate, ts, from, text, cmid,
 * client, maxlen, dedupe ttl (s), channel.
 * Returns {offset, ts, duplicate, epoch}. */
static const char lua_publish[] = LUA_PRELUDE
    "if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then redis.call('DEL', KEYS[2]) end\n"
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "if ARGV[5] ~= '' then\n"
    "  local old = redis.call('GET', KEYS[3])\n"
    "  if old then\n"
    "    local o, t = string.match(old, '^(%d+):(-?%d+)$')\n"
    "    if o then return {o, t, 1, e} end\n"
    "  end\n"
    "end\n"
    "local o = d(redis.call('HINCRBY', KEYS[1], 'o', 1))\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], o .. '-0', 't', ARGV[2], 'f', ARGV[3],\n"
    "  'x', ARGV[4], 'c', ARGV[5], 'k', ARGV[6])\n"
    "if ARGV[5] ~= '' then redis.call('SET', KEYS[3], o .. ':' .. ARGV[2], 'EX', ARGV[8]) end\n"
    "redis.call('PUBLISH', ARGV[9], 'm' .. ns(e) .. ns(o) .. ns(ARGV[2]) .. ns(ARGV[3]) ..\n"
    "  ns(ARGV[4]) .. ns(ARGV[5]) .. ns(ARGV[6]))\n"
    "return {o, ARGV[2], 0, e}\n";

/* KEYS: meta, stream. ARGV: epoch candidate, dir (0 latest, 1 before,
 * 2 after), pos, limit. Returns {epoch, last, first, complete, rows...},
 * rows oldest first, each {id, {t, ts, f, from, x, text, c, cmid, k, client}}. */
static const char lua_read[] = LUA_PRELUDE
    "if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then redis.call('DEL', KEYS[2]) end\n"
    "local e = redis.call('HGET', KEYS[1], 'e')\n"
    "local last = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')\n"
    "local first = last + 1\n"
    "local f = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)\n"
    "if #f > 0 then first = tonumber(string.match(f[1][1], '^(%d+)')) end\n"
    "local dir, pos, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local out = {e, d(last), d(first), 1}\n"
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
    "if rev then\n"
    "  for i = #rows, 1, -1 do out[#out + 1] = rows[i] end\n"
    "  out[4] = (tonumber(string.match(rows[#rows][1], '^(%d+)')) <= first) and 1 or 0\n"
    "else\n"
    "  for i = 1, #rows do out[#out + 1] = rows[i] end\n"
    "  out[4] = (tonumber(string.match(rows[#rows][1], '^(%d+)')) >= last) and 1 or 0\n"
    "end\n"
    "return out\n";

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
