/*
 * Relaying bytes both ways: tunnels, bypassed destinations, and upgraded (WebSocket)
 * HTTP connections. Backpressure comes from stream.c (a side is read only while its
 * peer's write queue is under the limit); EOF on one side is passed on as a
 * half-close, and the connection ends when both directions have ended and drained.
 */
#include "proxy/proxy_internal.h"
#include "proxy/tls.h"

static void maybe_done(struct proxy_conn *c)
{
  if (c->down.eof && c->up.eof && c->down.queued == 0 && c->up.queued == 0)
    proxy_conn_close(c, 0, NULL);
}

void proxy_relay_start(struct proxy_conn *c)
{
  uv_buf_t buf;

  c->state = CONN_RELAY;
  if (c->pending_len > 0) {
    buf = uv_buf_init(c->pending, (unsigned)c->pending_len);
    if (proxy_end_write(&c->up, &buf, 1) != 0) {
      proxy_conn_close(c, 1, "upstream_error");
      return;
    }
    proxy_conn_pending_consume(c, c->pending_len);
  }
  proxy_conn_touch(c);
  proxy_conn_arm_timer(c, c->sb->limits.idle_ms);
  proxy_end_want_read(&c->down, 1);
  proxy_end_want_read(&c->up, 1);
  /* A side that ended while the connection was being set up. */
  if (c->down.eof)
    proxy_relay_on_eof(c, &c->down);
}

/*
 * The server of a probing relay spoke or ended first: the probe is settled. Where
 * request-level policy applies nothing may be relayed, so c is closed (reset or not,
 * with reason) and 1 returned; else 0, and the relay goes on.
 */
static int server_settled_probe(struct proxy_conn *c, int reset, const char *reason)
{
  int inspect = c->probing == PROBE_INSPECT;

  proxy_conn_probe_settled(c);
  if (inspect)
    proxy_conn_close(c, reset, reason);
  return inspect;
}

void proxy_relay_on_data(struct proxy_conn *c, struct proxy_end *e, const char *data,
                         size_t len)
{
  uv_buf_t buf = proxy_buf(data, len);

  if (c->probing) {
    if (e == &c->down) {
      proxy_conn_resniff(c, data, len);
      return;
    }
    /* The server spoke first: such a protocol after all. */
    if (server_settled_probe(c, 1, "uninspectable_protocol"))
      return;
  }
  if (proxy_end_write(proxy_end_peer(e), &buf, 1) != 0)
    proxy_conn_close(c, 1, e == &c->down ? "upstream_error" : "sandbox_error");
}

void proxy_relay_on_eof(struct proxy_conn *c, struct proxy_end *e)
{
  if (c->probing && e == &c->up) {
    /* The server ended before either side spoke, which settles the probe as a
     * greeting would: the client's bytes after the close it is told of are not
     * judged anew (and sent, and answered to nobody, on another connection). */
    if (server_settled_probe(c, 0, "upstream_closed"))
      return;
  }
  /* An intercepted upstream (an upgraded connection) whose TCP ended without a
   * close_notify: the end is not proven, and the sandbox's ends the same way. */
  if (e == &c->up && e->tls != NULL && !proxy_tls_close_notified(e->tls))
    c->down.unproven = 1;
  proxy_end_shutdown(proxy_end_peer(e));
  maybe_done(c);
}

void proxy_relay_on_drain(struct proxy_conn *c, struct proxy_end *e)
{
  (void)e;
  maybe_done(c);
}
