/*
 * main.c: command line to configuration, then the loop.
 *
 * Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the hub
 * cannot start (port in use, unreadable --public directory), 2 for a usage
 * error. The loop must close with no live handles; anything else is a bug
 * and exits 1.
 */
#include "hub/log.h"
#include "hub/server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#ifndef HUB_VERSION
#define HUB_VERSION "0.0.0"
#endif

static void usage(FILE *f)
{
    fprintf(f, "Usage: chathub [options]\n"
               "\n"
               "A real-time WebSocket chat hub: open http://localhost:8080/ and chat in rooms.\n"
               "\n"
               "Options:\n"
               "  --port N           TCP port to listen on (default 8080; 0 picks a free one)\n"
               "  --host ADDR        address to bind (default 0.0.0.0, all interfaces)\n"
               "  --public DIR       serve files from DIR instead of the built-in page\n"
               "  --welcome TEXT     greet each raw WebSocket client with TEXT (default: off)\n"
               "  --log-level LEVEL  error, warn, info or debug (default info)\n"
               "  --help             show this help and exit\n"
               "  --version          show the version and exit\n");
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chathub: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n");
    usage(stderr);
    return 2;
}

/* Parses a whole decimal number in [min, max]. Returns 0 or -1. */
static int parse_number(const char *s, long min, long max, long *out)
{
    if (*s == '\0')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

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

int main(int argc, char **argv)
{
    struct hub_server_config cfg;
    hub_server_config_default(&cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        int missing = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("chathub %s\n", HUB_VERSION);
            return 0;
        } else if ((v = option_value(argc, argv, &i, "--port", &missing)) != NULL) {
            long port;
            if (parse_number(v, 0, 65535, &port) != 0)
                return usage_error("invalid --port '%s': expected a number from 0 to 65535", v);
            cfg.port = (int)port;
        } else if ((v = option_value(argc, argv, &i, "--host", &missing)) != NULL) {
            if (*v == '\0')
                return usage_error("invalid --host '%s': expected an address", v);
            cfg.host = v;
        } else if ((v = option_value(argc, argv, &i, "--public", &missing)) != NULL) {
            cfg.public_dir = v;
        } else if ((v = option_value(argc, argv, &i, "--welcome", &missing)) != NULL) {
            cfg.welcome = v;
        } else if ((v = option_value(argc, argv, &i, "--log-level", &missing)) != NULL) {
            int level = hub_log_parse_level(v);
            if (level < 0)
                return usage_error("invalid --log-level '%s': expected error, warn, info or debug",
                                   v);
            hub_log_set_level(level);
        } else if (missing) {
            return usage_error("option %s needs a value", a);
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "chathub: cannot initialise the event loop\n");
        return 1;
    }
    struct hub_server *server = NULL;
    char err[256];
    if (hub_server_new(&server, &loop, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "chathub: %s\n", err);
        uv_loop_close(&loop);
        return 1;
    }
    /* The wildcard addresses are not something a browser can open. */
    const char *shown = cfg.host;
    if (strcmp(shown, "0.0.0.0") == 0 || strcmp(shown, "::") == 0)
        shown = "localhost";
    int v6 = strchr(shown, ':') != NULL;
    printf("chathub %s listening on http://%s%s%s:%d/\n", HUB_VERSION, v6 ? "[" : "", shown,
           v6 ? "]" : "", hub_server_port(server));
    fflush(stdout);

    uv_run(&loop, UV_RUN_DEFAULT);
    hub_server_free(server);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        hub_log_error("event loop closed with live handles: %s", uv_strerror(rc));
        return 1;
    }
    hub_log_info("stopped");
    return 0;
}
