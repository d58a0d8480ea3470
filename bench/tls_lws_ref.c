/*
 * tls_lws_ref.c: the reference server for bench/tls_run.sh, on Debian's
 * libwebsockets (libwebsockets-dev 4.1, built with OpenSSL).
 *
 * The same load as chathub's raw mode: every text message received is sent
 * to every connected client, sender included, in order. It follows
 * libwebsockets' own minimal-ws-server example: one ring of messages per
 * vhost, each session with its own tail, one message per WRITEABLE
 * callback (libwebsockets' model: it has no cork of its own). With
 * --tls-cert/--tls-key it serves wss:// with libwebsockets' default TLS
 * settings. Prints "listening on http(s)://127.0.0.1:PORT/" once bound
 * (--port 0 picks a free port) and exits on SIGTERM or SIGINT.
 */
#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msg {
    void *payload; /* LWS_PRE bytes of headroom, then the message */
    size_t len;    /* message bytes */
};

struct pss {
    struct pss *pss_list; /* the vhost's sessions */
    struct lws *wsi;      /* this session */
    uint32_t tail;        /* its position in the ring */
};

struct vhd {
    struct pss *pss_list;  /* every session */
    struct lws_ring *ring; /* messages not yet sent to everyone */
};

static volatile sig_atomic_t interrupted;
static struct lws_context *context;

static void destroy_message(void *m)
{
    struct msg *msg = m;
    free(msg->payload);
    msg->payload = NULL;
    msg->len = 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct pss *pss = user;
    struct vhd *vhd = lws_protocol_vh_priv_get(lws_get_vhost(wsi), lws_get_protocol(wsi));
    switch (reason) {
    case LWS_CALLBACK_PROTOCOL_INIT:
        vhd = lws_protocol_vh_priv_zalloc(lws_get_vhost(wsi), lws_get_protocol(wsi), sizeof(*vhd));
        vhd->ring = lws_ring_create(sizeof(struct msg), 8192, destroy_message);
        return vhd->ring == NULL ? -1 : 0;
    case LWS_CALLBACK_PROTOCOL_DESTROY:
        if (vhd != NULL)
            lws_ring_destroy(vhd->ring);
        break;
    case LWS_CALLBACK_ESTABLISHED:
        lws_ll_fwd_insert(pss, pss_list, vhd->pss_list);
        pss->tail = lws_ring_get_oldest_tail(vhd->ring);
        pss->wsi = wsi;
        break;
    case LWS_CALLBACK_CLOSED:
        lws_ll_fwd_remove(struct pss, pss_list, pss, vhd->pss_list);
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        const struct msg *m = lws_ring_get_element(vhd->ring, &pss->tail);
        if (m == NULL)
            break;
        int n = lws_write(wsi, (unsigned char *)m->payload + LWS_PRE, m->len, LWS_WRITE_TEXT);
        if (n < (int)m->len)
            return -1;
        lws_ring_consume_and_update_oldest_tail(vhd->ring, struct pss, &pss->tail, 1, vhd->pss_list,
                                                tail, pss_list);
        if (lws_ring_get_element(vhd->ring, &pss->tail) != NULL)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_RECEIVE: {
        if (lws_ring_get_count_free_elements(vhd->ring) == 0)
            break; /* full: dropped (the bench's window keeps far below) */
        struct msg m = {malloc(LWS_PRE + len), len};
        if (m.payload == NULL)
            break;
        memcpy((char *)m.payload + LWS_PRE, in, len);
        if (!lws_ring_insert(vhd->ring, &m, 1)) {
            destroy_message(&m);
            break;
        }
        lws_start_foreach_llp(struct pss **, ppss, vhd->pss_list)
        {
            lws_callback_on_writable((*ppss)->wsi);
        }
        lws_end_foreach_llp(ppss, pss_list);
        break;
    }
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"bench", callback, sizeof(struct pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    if (context != NULL)
        lws_cancel_service(context);
}

int main(int argc, char **argv)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    const char *cert = NULL, *key = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            info.port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--tls-cert") == 0)
            cert = argv[i + 1];
        else if (strcmp(argv[i], "--tls-key") == 0)
            key = argv[i + 1];
    }
    lws_set_log_level(LLL_ERR, NULL);
    info.protocols = protocols;
    info.iface = "127.0.0.1";
    info.fd_limit_per_thread = 65536;
    if (cert != NULL && key != NULL) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cert;
        info.ssl_private_key_filepath = key;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    context = lws_create_context(&info);
    if (context == NULL) {
        fprintf(stderr, "tls_lws_ref: cannot create the context\n");
        return 1;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(context, "default");
    printf("lws %s listening on %s://127.0.0.1:%d/\n", lws_get_library_version(),
           cert != NULL ? "https" : "http", vh != NULL ? lws_get_vhost_listen_port(vh) : -1);
    fflush(stdout);
    int n = 0;
    while (n >= 0 && !interrupted)
        n = lws_service(context, 0);
    lws_context_destroy(context);
    return 0;
}
