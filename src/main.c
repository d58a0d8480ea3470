/*
 * main.c: command line to configuration, then the loop.
 *
 * Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the hub
 * cannot start (port in use, unreadable --public directory), 2 for a usage
 * error or an unusable --tls-cert/--tls-key. The loop must close with no
 * live handles; anything else is a bug and exits 1.
 */
#include "hub/history.h"
#include "hub/engine.h"
#include "hub/access.h"
#include "hub/auth.h"
#include "hub/deflate.h"
#include "hub/log.h"
#include "hub/redisurl.h"
#include "hub/server.h"
#include "hub/api.h"
#ifdef HUB_HAVE_TLS
#include "hub/tls.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h> /* S_IFMT, S_IFDIR (mingw has them too) */
#include <uv.h>
#ifndef _WIN32
#include <signal.h>
#include <sys/resource.h>
#endif

#ifndef HUB_VERSION
#define HUB_VERSION "0.0.0"
#endif

#define MAX_ORIGINS 64
#define MAX_SERVER_NAMES 64  /* --server-name values */
#define MAX_METRICS_ALLOW 64 /* --metrics-allow networks */
#define MAX_PROXIES 64

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: chathub [options]\n"
        "\n"
        "A real-time WebSocket chat hub: open http://localhost:8080/ and chat in rooms.\n"
        "\n"
        "Options:\n"
        "  --port N              TCP port to listen on (default 8080; 0 picks a free one)\n"
        "  --host ADDR           address to bind (default 0.0.0.0, all interfaces)\n"
        "  --public DIR          serve files from DIR instead of the built-in page\n"
        "  --welcome TEXT        greet each raw WebSocket client with TEXT (default: off)\n"
        "  --allow-origin PAT    also accept WebSockets from pages at PAT: an origin\n"
        "                        (https://chat.example.com), a wildcard (*.example.com)\n"
        "                        or * (repeatable; default: same origin only)\n"
        "  --server-name NAME    answer only to Host NAME (and localhost), others get 421\n"
        "                        (repeatable; default: any Host, or only localhost,\n"
        "                        127.0.0.1 and [::1] when bound to loopback)\n"
        "  --metrics-allow CIDR  serve /metrics to peers in CIDR, e.g. 10.0.0.0/8, others\n"
        "                        get 403 (repeatable; default: loopback peers only,\n"
        "                        127.0.0.0/8 and ::1; list those too to keep them)\n"
        "  --log-level LEVEL     error, warn, info or debug (default info)\n"
        "  --help                show this help and exit\n"
        "  --version             show the version and exit\n"
        "\n"
        "Limits (see docs/operations.md):\n"
        "  --max-message BYTES   largest WebSocket message (default 65536; over: close 1009)\n"
        "  --max-fragments N     frames per WebSocket message (default 128)\n"
        "  --max-header-bytes N  HTTP request head size (default 8192; over: 431)\n"
        "  --max-headers N       HTTP header lines (default 100; over: 431)\n"
        "  --handshake-timeout S seconds to complete an HTTP request (default 10)\n"
        "  --max-conns N         connections in total (default 100000; 0 = unlimited)\n"
        "  --max-conns-per-ip N  connections per client address (default 64; 0 = unlimited)\n"
        "  --max-rooms N         rooms per connection (default 64)\n"
        "  --max-output BYTES    output queued per client before it is closed (default 1048576)\n"
        "  --soft-output BYTES   output a client may hold for --soft-hold (default 262144);\n"
        "                        while a member is over it, senders into its rooms are\n"
        "                        not read until it drains to half\n"
        "  --soft-hold S         seconds over --soft-output before closing 4008 (default 10)\n"
        "  --rate N              messages per second per connection (default 20; 0 = off);\n"
        "                        over it the connection is not read until it may send\n"
        "                        again (see docs/operations.md)\n"
        "  --burst N             messages per connection at once (default 40)\n"
        "  --ping-interval S     seconds between WebSocket pings (default 25)\n"
        "  --pong-timeout S      seconds of silence after a ping before closing (default 10)\n"
        "  --drain-timeout S     seconds shutdown waits for clients (default 10)\n"
        "\n"
        "History:\n"
        "  --data-dir DIR        where the SQLite history lives (default ./chathub-data)\n"
        "  --history N           messages kept per room (default 1000)\n"
        "  --history-ttl S       drop messages older than S seconds (default 0: keep)\n"
        "  --no-persist          keep history in memory only (lost on restart)\n"
        "  --history-max-bytes N bytes of history kept: on disk, database and log\n"
        "                        (default 1073741824, 1 GiB); with --no-persist, in\n"
        "                        memory (default 67108864); at least 1048576, 0 = no\n"
        "                        limit. Past it the oldest messages of the largest rooms go\n"
        "                        first (each keeps its newest)\n"
        "  --search-index on|off|auto  keep an SQLite full-text index (FTS5) for the\n"
        "                        search op (default auto: only with --history over 20000,\n"
        "                        where a search without it scans the newest 20000)\n"
        "\n"
        "Global caps (see docs/operations.md):\n"
        "  --max-total-rooms N   rooms that exist at once, over all clients (default 10000;\n"
        "                        0 = no limit): joins past it fail too_many_rooms_total,\n"
        "                        raw upgrades into a new room get 503\n"
        "  --max-total-output BYTES  output queued to all clients together before the hub\n"
        "                        stops reading from publishers (default 268435456; 0 = off)\n"
        "\n"
        "Compression:\n"
        "  --deflate on|off      accept permessage-deflate from clients that offer it\n"
        "                        (default on when built with zlib)\n"
        "  --deflate-min BYTES   send messages shorter than this uncompressed (default 128)\n"
        "\n"
        "Several hubs, one chat (Redis; see docs/operations.md):\n"
        "  --redis URL           share rooms, history, presence and nicks with other hubs\n"
        "                        through Redis at redis://[:password@]host:port[/db];\n"
        "                        repeat to shard rooms over several Redis servers. History\n"
        "                        then lives in Redis: --data-dir and --no-persist do not\n"
        "                        apply, --history sets the stream length kept per room.\n"
        "%s"
        "  --node-id ID          this hub's name among the others: 1-64 of A-Z a-z 0-9 . _ -\n"
        "                        (default: random at each start)\n"
        "  --redis-prefix P      prefix of every Redis key and channel (default chathub:)\n"
        "  --node-lease S        seconds after which a dead hub's members and nicks vanish\n"
        "                        from the others (default 30; fractions such as 1.5 allowed)\n"
        "\n"
        "Origins, proxies and logs (see docs/operations.md):\n"
        "  --strict-origin       on a loopback address too, admit only same-origin pages\n"
        "                        and --allow-origin (default there: also file:// pages\n"
        "                        and http://localhost:* dev servers)\n"
        "  --trust-proxy CIDR    take the client address from X-Forwarded-For or Forwarded\n"
        "                        on connections from CIDR (e.g. 127.0.0.1/32; repeatable;\n"
        "                        default: trust nobody)\n"
        "  --log-format FORMAT   text (default) or json: one JSON object per line\n"
        "\n"
        "Signed users (see docs/operations.md):\n"
        "  --auth-secret-file FILE  require a connection token (HS256 JWT) signed with the\n"
        "                        secret in FILE (at least 32 bytes; whitespace around it\n"
        "                        is ignored)\n"
        "  --guests              with --auth-secret-file, also admit clients without a token\n"
        "                        as guests (their nicks shown as ~nick)\n"
        "\n"
        "Server API (see docs/operations.md):\n"
        "  --api-key-file FILE   serve the HTTP API under /api/ to callers that send\n"
        "                        \"Authorization: Bearer KEY\", KEY being FILE's content\n"
        "                        (at least 16 bytes; whitespace around it is ignored);\n"
        "                        without it every /api/ path is 404\n"
        "  --api-rate N          API requests per second, all callers together (default\n"
        "                        100; 0 = no limit); beyond it: 429\n"
        "\n"
        "TLS (see docs/operations.md):\n",
        hub_engine_have_redis() ? ""
                                : "                        (not in this build: it was built "
                                  "without hiredis)\n");
    /* Apart, so that no preprocessor line sits inside a call's arguments. */
#ifdef HUB_HAVE_TLS
    fputs("  --tls-cert FILE       serve https:// and wss:// only, with this PEM certificate\n"
          "                        (the chain may follow it in the file); needs --tls-key;\n"
          "                        SIGHUP re-reads both files\n"
          "  --tls-key FILE        the PEM private key of --tls-cert (unencrypted, chmod 600)\n",
          f);
#else
    fputs("  not available in this build (built without OpenSSL 3, as the Windows and macOS\n"
          "  cross builds are): the TLS flags exit 2; put a TLS proxy in front instead\n",
          f);
#endif
}

/* Loads --tls-cert/--tls-key into *out (NULL when neither is given) and logs
 * the certificate and any warnings. Returns 0, or 2 (the usage-error exit
 * status) after printing why. */
static int load_tls(const char *cert, const char *key, struct hub_tls_ctx **out)
{
    *out = NULL;
    if (cert == NULL && key == NULL)
        return 0;
    if (cert == NULL || key == NULL) {
        fprintf(stderr, "chathub: %s needs %s as well\n", cert ? "--tls-cert" : "--tls-key",
                cert ? "--tls-key" : "--tls-cert");
        return 2;
    }
#ifdef HUB_HAVE_TLS
    char err[512];
    unsigned warn = 0;
    if (hub_tls_ctx_new(out, cert, key, 0, &warn, err, sizeof(err)) != 0) {
        fprintf(stderr, "chathub: %s\n", err);
        return 2;
    }
    for (unsigned bit = 1; bit != 0 && bit <= warn; bit <<= 1)
        if (warn & bit)
            hub_log_warn("%s", hub_tls_warning_text(bit));
    char desc[512];
    hub_tls_ctx_describe(*out, desc, sizeof(desc));
    hub_log_info("TLS certificate: %s", desc);
    return 0;
#else
    fprintf(stderr, "chathub: --tls-cert: this chathub was built without TLS (OpenSSL 3)\n");
    return 2;
#endif
}

/* Checks a --node-id: 1..64 of [A-Za-z0-9._-]. */
static int valid_node_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > HUB_ENGINE_NODE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Parses seconds with an optional fraction ("30", "1.5") into ms in
 * [min_ms, max_ms]. Returns 0 or -1. */
static int parse_seconds_ms(const char *s, uint32_t min_ms, uint32_t max_ms, uint32_t *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v * 1000.0 >= min_ms) || !(v * 1000.0 <= max_ms))
        return -1;
    *out = (uint32_t)(v * 1000.0 + 0.5);
    return 0;
}

/* A usage error is one line naming the problem and where help is; the
 * 40 lines of usage would bury it. Returns the exit status 2. */
/* The token verifier of --auth-secret-file (a global: early exits need not
 * free it, and it is freed after the loop). */
static struct hub_auth *auth;

HUB_PRINTF_LIKE(1, 2) static int usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "chathub: %s (see chathub --help)\n", msg);
    return 2;
}

/* Checks that --public names a directory the hub can list, so that the error
 * names the path and the OS's reason ("permission denied") rather than what
 * the site loader makes of it. Runs synchronous requests on loop before it
 * runs. Returns 0, or 1 after printing the error. */
static int check_public_dir(uv_loop_t *loop, const char *dir)
{
    uv_fs_t req;
    int rc = uv_fs_stat(loop, &req, dir, NULL);
    uint64_t mode = req.statbuf.st_mode;
    uv_fs_req_cleanup(&req);
    if (rc == 0 && (mode & S_IFMT) != S_IFDIR)
        rc = UV_ENOTDIR;
    if (rc == 0) {
        rc = uv_fs_scandir(loop, &req, dir, 0, NULL);
        uv_dirent_t ent;
        while (rc >= 0 && uv_fs_scandir_next(&req, &ent) == 0)
            continue;
        uv_fs_req_cleanup(&req);
    }
    if (rc >= 0)
        return 0;
    fprintf(stderr, "chathub: cannot serve --public %s: %s\n", dir, uv_strerror(rc));
    return 1;
}

/* Parses a whole decimal number in [min, max]. Returns 0 or -1. */
static int parse_number(const char *s, unsigned long long min, unsigned long long max,
                        unsigned long long *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A numeric option: where it goes, its range, and its unit. */
struct num_option {
    const char *name;       /* "--max-conns" */
    unsigned long long min; /* smallest accepted value */
    unsigned long long max; /* largest accepted value */
    int kind;               /* 0: size_t, 1: uint32_t, 2: seconds into uint32_t ms, 3: int,
                               4: uint64_t */
    void *dst;              /* the config field */
};

/* Matches "--name VALUE" and "--name=VALUE". Returns the value, or NULL if
 * argv[*i] is not this option; sets *missing when the value is absent. */
static const char *option_value(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* Every connection is a file descriptor: lift the soft limit to the hard
 * one, so that the default 1024 does not cap the hub. */
static void raise_fd_limit(void)
{
#ifndef _WIN32
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            hub_log_warn("cannot raise the file descriptor limit");
    }
#endif
}

int main(int argc, char **argv)
{
    struct hub_server_config cfg;
    hub_server_config_default(&cfg);
    const char *origins[MAX_ORIGINS];
    size_t norigins = 0;
    const char *redis[HUB_ENGINE_MAX_SHARDS];
    size_t nredis = 0;
    int history_flag = 0; /* --data-dir or --no-persist was given */
    const char *server_names[MAX_SERVER_NAMES];
    size_t nserver_names = 0;
    const char *metrics_allow[MAX_METRICS_ALLOW];
    size_t nmetrics_allow = 0;
    struct hub_cidr proxies[MAX_PROXIES];
    size_t nproxies = 0;
    const char *tls_cert = NULL, *tls_key = NULL; /* --tls-cert, --tls-key */
    const struct num_option nums[] = {
        {"--port", 0, 65535, 3, &cfg.port},
        {"--max-message", 1, 1u << 30, 0, &cfg.max_message},
        {"--max-fragments", 1, 1u << 20, 1, &cfg.max_fragments},
        {"--max-header-bytes", 256, 1u << 20, 0, &cfg.max_header_bytes},
        {"--max-headers", 1, 10000, 1, &cfg.max_headers},
        {"--handshake-timeout", 1, 3600, 2, &cfg.handshake_ms},
        {"--max-conns", 0, 10000000, 1, &cfg.max_conns},
        {"--max-conns-per-ip", 0, 10000000, 1, &cfg.max_conns_per_ip},
        {"--max-rooms", 1, 100000, 1, &cfg.max_rooms},
        {"--max-output", 1024, 1ull << 32, 0, &cfg.max_output},
        {"--soft-output", 1024, 1ull << 32, 0, &cfg.soft_output},
        {"--soft-hold", 1, 3600, 2, &cfg.soft_hold_ms},
        {"--rate", 0, 1000000, 1, &cfg.rate},
        {"--burst", 1, 1000000, 1, &cfg.burst},
        {"--ping-interval", 2, 3600, 2, &cfg.ping_interval_ms},
        {"--pong-timeout", 1, 3600, 2, &cfg.pong_timeout_ms},
        {"--drain-timeout", 0, 3600, 2, &cfg.drain_ms},
        {"--history", 1, 1000000, 1, &cfg.history},
        {"--history-ttl", 0, 100u * 365 * 86400, 1, &cfg.history_ttl_s},
        {"--history-max-bytes", 0, 1ull << 50, 4, &cfg.history_max_bytes},
        {"--max-total-rooms", 0, 100000000, 1, &cfg.max_total_rooms},
        {"--max-total-output", 0, 1ull << 40, 4, &cfg.max_total_output},
        {"--deflate-min", 0, 1u << 30, 1, &cfg.deflate_min},
        {"--api-rate", 0, 1000000, 1, &cfg.api_rate}, /* the server API */
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        int missing = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("chathub %s\n", HUB_VERSION);
            return 0;
        }
        size_t k;
        for (k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
            if ((v = option_value(argc, argv, &i, nums[k].name, &missing)) != NULL || missing)
                break;
        if (v != NULL) {
            const struct num_option *o = &nums[k];
            unsigned long long n;
            if (parse_number(v, o->min, o->max, &n) != 0)
                return usage_error("invalid %s '%s': expected a number from %llu to %llu", o->name,
                                   v, o->min, o->max);
            if (o->kind == 0)
                *(size_t *)o->dst = (size_t)n;
            else if (o->kind == 1)
                *(uint32_t *)o->dst = (uint32_t)n;
            else if (o->kind == 2)
                *(uint32_t *)o->dst = (uint32_t)n * 1000;
            else if (o->kind == 4)
                *(uint64_t *)o->dst = (uint64_t)n;
            else
                *(int *)o->dst = (int)n;
        } else if ((v = option_value(argc, argv, &i, "--auth-secret-file", &missing)) != NULL) {
            if (!hub_auth_available()) {
                fprintf(stderr, "chathub: --auth-secret-file is not available: this build has "
                                "no libcrypto (meson -Dauth)\n");
                return 2;
            }
            char why[300];
            hub_auth_free(auth);
            auth = NULL;
            if (hub_auth_open_file(&auth, v, why, sizeof(why)) != 0)
                return usage_error("invalid --auth-secret-file: %s", why);
        } else if ((v = option_value(argc, argv, &i, "--api-key-file", &missing)) != NULL) {
            /* The server API's key (api.h); static, like the config's other strings. */
            static char api_key[HUB_API_KEY_MAX + 1];
            char why[600];
            if (hub_api_read_key_file(v, api_key, sizeof(api_key), &cfg.api_key_len, why,
                                      sizeof(why)) != 0)
                return usage_error("invalid --api-key-file: %s", why);
            cfg.api_key = api_key;
        } else if (strcmp(a, "--guests") == 0) {
            cfg.guests = 1;
        } else if (missing) {
            return usage_error("option %s needs a value", a);
        } else if ((v = option_value(argc, argv, &i, "--host", &missing)) != NULL) {
            if (*v == '\0')
                return usage_error("invalid --host '': expected an address");
            cfg.host = v;
        } else if (strcmp(a, "--no-persist") == 0) {
            cfg.persist = 0;
            history_flag = 1;
        } else if ((v = option_value(argc, argv, &i, "--data-dir", &missing)) != NULL) {
            if (*v == '\0')
                return usage_error("invalid --data-dir '': expected a directory");
            cfg.data_dir = v;
            history_flag = 1;
        } else if ((v = option_value(argc, argv, &i, "--public", &missing)) != NULL) {
            cfg.public_dir = v;
        } else if ((v = option_value(argc, argv, &i, "--welcome", &missing)) != NULL) {
            cfg.welcome = v;
        } else if ((v = option_value(argc, argv, &i, "--allow-origin", &missing)) != NULL) {
            if (*v == '\0' || norigins == MAX_ORIGINS)
                return usage_error("invalid --allow-origin '%s' (at most %d patterns)", v,
                                   MAX_ORIGINS);
            origins[norigins++] = v;
        } else if ((v = option_value(argc, argv, &i, "--redis-prefix", &missing)) != NULL) {
            if (*v == '\0' || strlen(v) > 64)
                return usage_error("invalid --redis-prefix '%s': expected 1-64 characters", v);
            cfg.redis_prefix = v;
        } else if ((v = option_value(argc, argv, &i, "--redis", &missing)) != NULL) {
            if (!hub_engine_have_redis()) {
                fprintf(stderr, "chathub: --redis is not available: this build has no Redis "
                                "engine (built without hiredis)\n");
                return 2;
            }
            struct hub_redisurl url;
            char why[160];
            if (hub_redisurl_parse(v, &url, why, sizeof(why)) != 0)
                return usage_error("invalid --redis: %s", why);
            if (nredis == HUB_ENGINE_MAX_SHARDS)
                return usage_error("at most %d --redis servers", HUB_ENGINE_MAX_SHARDS);
            redis[nredis++] = v;
        } else if ((v = option_value(argc, argv, &i, "--node-id", &missing)) != NULL) {
            if (!valid_node_id(v))
                return usage_error("invalid --node-id '%s': expected 1-64 of A-Z a-z 0-9 . _ -", v);
            cfg.node_id = v;
        } else if ((v = option_value(argc, argv, &i, "--node-lease", &missing)) != NULL) {
            if (parse_seconds_ms(v, 100, 86400000, &cfg.node_lease_ms) != 0)
                return usage_error("invalid --node-lease '%s': expected seconds from 0.1 to 86400",
                                   v);
        } else if ((v = option_value(argc, argv, &i, "--server-name", &missing)) != NULL) {
            if (!hub_server_name_valid(v) || nserver_names == MAX_SERVER_NAMES)
                return usage_error("invalid --server-name '%s': expected a host name or address "
                                   "without a port (at most %d names)",
                                   v, MAX_SERVER_NAMES);
            server_names[nserver_names++] = v;
        } else if ((v = option_value(argc, argv, &i, "--metrics-allow", &missing)) != NULL) {
            struct hub_cidr cidr;
            if (hub_cidr_parse(v, &cidr) != 0 || nmetrics_allow == MAX_METRICS_ALLOW)
                return usage_error("invalid --metrics-allow '%s': expected ADDR/LEN such as "
                                   "10.0.0.0/8 (at most %d networks)",
                                   v, MAX_METRICS_ALLOW);
            metrics_allow[nmetrics_allow++] = v;
        } else if ((v = option_value(argc, argv, &i, "--log-level", &missing)) != NULL) {
            int level = hub_log_parse_level(v);
            if (level < 0)
                return usage_error("invalid --log-level '%s': expected error, warn, info or debug",
                                   v);
            hub_log_set_level(level);
        } else if ((v = option_value(argc, argv, &i, "--deflate", &missing)) != NULL) {
            if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
                return usage_error("invalid --deflate '%s': expected on or off", v);
            if (strcmp(v, "on") == 0 && !hub_deflate_available())
                return usage_error("--deflate on: this build has no zlib (meson -Ddeflate)");
            cfg.deflate = strcmp(v, "on") == 0;
        } else if ((v = option_value(argc, argv, &i, "--search-index", &missing)) != NULL) {
            if (strcmp(v, "on") == 0)
                cfg.search_index = 1;
            else if (strcmp(v, "off") == 0)
                cfg.search_index = 0;
            else if (strcmp(v, "auto") == 0)
                cfg.search_index = HUB_HISTORY_SEARCH_AUTO;
            else
                return usage_error("invalid --search-index '%s': expected on, off or auto", v);
        } else if (strcmp(a, "--strict-origin") == 0) {
            cfg.strict_origin = 1;
        } else if ((v = option_value(argc, argv, &i, "--trust-proxy", &missing)) != NULL) {
            if (nproxies == MAX_PROXIES || hub_cidr_parse(v, &proxies[nproxies]) != 0)
                return usage_error("invalid --trust-proxy '%s': expected an address or a network "
                                   "such as 10.0.0.0/8 (at most %d)",
                                   v, MAX_PROXIES);
            nproxies++;
        } else if ((v = option_value(argc, argv, &i, "--log-format", &missing)) != NULL) {
            int format = hub_log_parse_format(v);
            if (format < 0)
                return usage_error("invalid --log-format '%s': expected text or json", v);
            hub_log_set_format(format);
        } else if ((v = option_value(argc, argv, &i, "--tls-cert", &missing)) != NULL) {
            tls_cert = v;
        } else if ((v = option_value(argc, argv, &i, "--tls-key", &missing)) != NULL) {
            tls_key = v;
        } else if (missing) {
            return usage_error("option %s needs a value", a);
        } else if (a[0] == '-') {
            return usage_error("unknown flag %s", a);
        } else {
            return usage_error("unexpected argument '%s': flags start with --", a);
        }
    }
    int max_bytes_given = 0;
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--history-max-bytes", 19) == 0)
            max_bytes_given = 1;
    if (!cfg.persist && !max_bytes_given)
        cfg.history_max_bytes = HUB_HISTORY_MAX_BYTES_DEFAULT; /* the memory store's own */
    if (cfg.history_max_bytes != 0 && cfg.history_max_bytes < 1048576)
        return usage_error("invalid --history-max-bytes %llu: expected 0 or at least 1048576",
                           (unsigned long long)cfg.history_max_bytes);
    if (cfg.pong_timeout_ms >= cfg.ping_interval_ms)
        return usage_error("--pong-timeout must be shorter than --ping-interval");
    if (cfg.soft_output > cfg.max_output)
        cfg.soft_output = cfg.max_output;
    cfg.allow_origins = origins;
    cfg.nallow_origins = norigins;
    cfg.redis_urls = redis;
    cfg.nredis = nredis;
    if (nredis > 0 && history_flag)
        hub_log_warn(
            "--data-dir and --no-persist do not apply with --redis: history lives in Redis");
    cfg.server_names = server_names;
    cfg.nserver_names = nserver_names;
    cfg.metrics_allow = metrics_allow;
    cfg.nmetrics_allow = nmetrics_allow;
    cfg.trust_proxy = proxies;
    cfg.ntrust_proxy = nproxies;
    struct hub_tls_ctx *tls = NULL;
    int tls_rc = load_tls(tls_cert, tls_key, &tls);
    if (tls_rc != 0)
        return tls_rc;
    cfg.tls = tls;
    cfg.auth = auth;
    if (cfg.guests && auth == NULL)
        return usage_error("--guests needs --auth-secret-file");

    raise_fd_limit();
#ifndef _WIN32
    /* A write to a socket whose peer has gone must fail with EPIPE, which
     * the connection layer handles, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
#endif
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "chathub: cannot initialise the event loop\n");
        return 1;
    }
    if (cfg.public_dir != NULL && check_public_dir(&loop, cfg.public_dir) != 0) {
        uv_loop_close(&loop);
        return 1;
    }
    struct hub_server *server = NULL;
    char err[256];
    if (hub_server_new(&server, &loop, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "chathub: %s\n", err);
        uv_loop_close(&loop);
#ifdef HUB_HAVE_TLS
        hub_tls_ctx_free(tls);
#endif
        return 1;
    }
    /* The line names the address actually bound, so that an operator sees
     * at once whether the hub is open to the network. A wildcard address is
     * not something a browser can open: the note gives the local URL. */
    char bound[80];
    int loopback = 0;
    hub_server_bound(server, bound, sizeof(bound), &loopback);
    int port = hub_server_port(server);
    const char *scheme = tls ? "https" : "http";
    if (loopback)
        printf("chathub %s listening on %s://%s/ (loopback only)", HUB_VERSION, scheme, bound);
    else if (strncmp(bound, "0.0.0.0:", 8) == 0 || strncmp(bound, "[::]:", 5) == 0)
        printf("chathub %s listening on %s://%s/ (all interfaces: reachable from the network; "
               "on this machine open %s://localhost:%d/)",
               HUB_VERSION, scheme, bound, scheme, port);
    else
        printf("chathub %s listening on %s://%s/ (reachable from the network)", HUB_VERSION, scheme,
               bound);
    if (cfg.nredis > 0)
        printf("; history in Redis\n");
    else if (cfg.persist)
        printf("; history in %s, disk budget %llu bytes%s\n", cfg.data_dir,
               (unsigned long long)cfg.history_max_bytes,
               cfg.history_max_bytes == 0 ? " (no limit)" : "");
    else
        printf("; history in memory only, budget %llu bytes%s\n",
               (unsigned long long)cfg.history_max_bytes,
               cfg.history_max_bytes == 0 ? " (no limit)" : "");
    char engine[256];
    hub_server_engine_info(server, engine, sizeof(engine));
    printf("%s\n", engine);
    fflush(stdout);

    uv_run(&loop, UV_RUN_DEFAULT);
    hub_server_free(server);
#ifdef HUB_HAVE_TLS
    hub_tls_ctx_free(tls);
#endif
    hub_auth_free(auth);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        hub_log_error("event loop closed with live handles: %s", uv_strerror(rc));
        return 1;
    }
    hub_log_info("stopped");
    return 0;
}
