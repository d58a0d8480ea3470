/*
 * redis_harness.h: a private redis-server for the Redis engine's tests.
 *
 * Each server runs on a free loopback port with its own temporary directory
 * and no persistence (so a restart loses the data, which the epoch tests
 * want). It is started with fork/exec and stopped by its PID; nothing else is
 * ever signalled. The blocking hiredis client here is for the test's own
 * checks and fault injection, never for the engine under test.
 */
#ifndef HUB_TEST_REDIS_HARNESS_H
#define HUB_TEST_REDIS_HARNESS_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct test_redis {
    int port;      /* loopback port */
    pid_t pid;     /* 0 while stopped */
    char dir[256]; /* its working directory */
};

/* Returns the path of redis-server, or NULL if it is not installed. */
static inline const char *test_redis_binary(void)
{
    static const char *const paths[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server",
                                        "/usr/sbin/redis-server"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

/* Asks the kernel for a free loopback port. */
static inline int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static inline void test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A blocking connection to the server, or NULL. */
static inline redisContext *test_redis_connect(const struct test_redis *r)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (c != NULL && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Starts (or restarts) the server on r->port. Returns 0 once it answers PING. */
static inline int test_redis_start(struct test_redis *r)
{
    if (r->dir[0] == '\0') {
        snprintf(r->dir, sizeof(r->dir), "/tmp/chathub-redis-XXXXXX");
        if (mkdtemp(r->dir) == NULL)
            return -1;
    }
    if (r->port == 0)
        r->port = test_free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execl(test_redis_binary(), "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
              r->dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode",
              "no", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    for (int i = 0; i < 200; i++) {
        redisContext *c = test_redis_connect(r);
        if (c != NULL) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return 0;
        }
        test_sleep_ms(25);
    }
    return -1;
}

/* Sends sig to the server (by its PID); SIGKILL also reaps it. */
static inline void test_redis_signal(struct test_redis *r, int sig)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Stops the server and removes its directory. */
static inline void test_redis_stop(struct test_redis *r)
{
    test_redis_signal(r, SIGCONT);
    test_redis_signal(r, SIGKILL);
    if (r->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", r->dir);
    }
}

/* Runs a command on a fresh blocking connection; returns the integer reply
 * (or -1). */
static inline long long test_redis_int(const struct test_redis *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline long long test_redis_int(const struct test_redis *r, const char *fmt, ...)
{
    redisContext *c = test_redis_connect(r);
    if (c == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = -1;
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    else if (rep != NULL && rep->type == REDIS_REPLY_STRING)
        v = atoll(rep->str);
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* Redis's own CPU time (user + sys) in microseconds, from INFO CPU. */
static inline double test_redis_cpu_us(const struct test_redis *r)
{
    redisContext *c = test_redis_connect(r);
    if (c == NULL)
        return -1;
    redisReply *rep = redisCommand(c, "INFO CPU");
    double v = -1;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        const char *u = strstr(rep->str, "used_cpu_user:"), *s = strstr(rep->str, "used_cpu_sys:");
        if (u && s)
            v = (atof(u + 14) + atof(s + 13)) * 1e6;
    }
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return v;
}

#endif
