/*
 * metrics.c: counters and their Prometheus text rendering.
 */
#include "hub/metrics.h"

struct hub_metrics hub_metrics;

void hub_metrics_close(uint16_t code)
{
    switch (code) {
#define X(c)                                                                                       \
    case c:                                                                                        \
        hub_metrics.close_##c++;                                                                   \
        return;
        HUB_METRICS_CLOSE_CODES
#undef X
    }
    hub_metrics.close_other++;
}

static const char *const refusal_names[HUB_REFUSE_COUNT] = {
    "bad_handshake", "bad_room", "origin", "max_conns", "per_ip", "draining", "timeout", "nomem",
};

static void counter(struct hub_buf *b, const char *name, const char *help, uint64_t v)
{
    hub_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                   (unsigned long long)v);
}

int hub_metrics_render(struct hub_buf *b, size_t rooms, int draining)
{
    const struct hub_metrics *m = &hub_metrics;
    hub_buf_puts(b, "# HELP chathub_connections Open connections by mode.\n"
                    "# TYPE chathub_connections gauge\n");
    hub_buf_printf(b, "chathub_connections{mode=\"http\"} %llu\n",
                   (unsigned long long)m->conns_http);
    hub_buf_printf(b, "chathub_connections{mode=\"raw\"} %llu\n", (unsigned long long)m->conns_raw);
    hub_buf_printf(b, "chathub_connections{mode=\"json\"} %llu\n",
                   (unsigned long long)m->conns_json);
    hub_buf_printf(b,
                   "# HELP chathub_rooms Rooms with members.\n# TYPE chathub_rooms gauge\n"
                   "chathub_rooms %zu\n",
                   rooms);
    hub_buf_printf(b,
                   "# HELP chathub_draining 1 while the hub shuts down.\n"
                   "# TYPE chathub_draining gauge\nchathub_draining %d\n",
                   draining);
    hub_buf_printf(b,
                   "# HELP chathub_output_queued_bytes Bytes queued to all connections, not yet "
                   "written.\n# TYPE chathub_output_queued_bytes gauge\n"
                   "chathub_output_queued_bytes %llu\n",
                   (unsigned long long)m->output_queued);
    counter(b, "chathub_accepted_total", "TCP connections accepted.", m->accepted);
    counter(b, "chathub_http_requests_total", "HTTP requests answered.", m->http_requests);
    counter(b, "chathub_messages_in_total", "WebSocket messages received.", m->messages_in);
    counter(b, "chathub_messages_out_total", "WebSocket messages queued to clients.",
            m->messages_out);
    counter(b, "chathub_bytes_in_total", "Bytes read from clients.", m->bytes_in);
    counter(b, "chathub_bytes_out_total", "Bytes written to clients.", m->bytes_out);
    counter(b, "chathub_published_total", "Chat messages sequenced into rooms.", m->published);
    hub_buf_puts(b, "# HELP chathub_raw_dropped_total Raw lines dropped unsent, by reason.\n"
                    "# TYPE chathub_raw_dropped_total counter\n");
    hub_buf_printf(b, "chathub_raw_dropped_total{reason=\"unavailable\"} %llu\n",
                   (unsigned long long)m->raw_dropped);
    counter(b, "chathub_unavailable_total",
            "Requests answered \"unavailable\" because the engine could not serve them.",
            m->unavailable);
    counter(b, "chathub_slow_client_closes_total", "Clients closed for not reading (4008).",
            m->slow_closes);
    counter(b, "chathub_rate_limited_total", "Requests refused by the rate limit.",
            m->rate_limited);
    counter(b, "chathub_heartbeat_closes_total", "Clients dropped for not answering pings.",
            m->heartbeat_closes);
    counter(b, "chathub_read_pauses_total",
            "Times a connection stopped being read because its output passed the high watermark.",
            m->read_pauses);
    hub_buf_puts(b, "# HELP chathub_refused_handshakes_total Refused connections by reason.\n"
                    "# TYPE chathub_refused_handshakes_total counter\n");
    for (int i = 0; i < HUB_REFUSE_COUNT; i++)
        hub_buf_printf(b, "chathub_refused_handshakes_total{reason=\"%s\"} %llu\n",
                       refusal_names[i], (unsigned long long)m->refused[i]);
    hub_buf_puts(b, "# HELP chathub_closes_total WebSocket close frames sent, by code.\n"
                    "# TYPE chathub_closes_total counter\n");
#define X(c)                                                                                       \
    hub_buf_printf(b, "chathub_closes_total{code=\"%d\"} %llu\n", c,                               \
                   (unsigned long long)m->close_##c);
    HUB_METRICS_CLOSE_CODES
#undef X
    return hub_buf_printf(b, "chathub_closes_total{code=\"other\"} %llu\n",
                          (unsigned long long)m->close_other);
}
