/*
 * The life of a captured connection: accept, recover the original destination, sniff
 * the first bytes (TLS ClientHello, HTTP, or other), learn the destination name,
 * decide, dial the upstream by name, and hand over to the relay, the HTTP engine or
 * TLS interception. Also the connection's timer and its orderly or abortive close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/audit.h"
#include "proxy/clienthello.h"
#include "proxy/dns.h"
#include "proxy/fdbudget.h"
#include "proxy/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/sockready.h"
#include "proxy/tls.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* How many of a name's addresses are tried before giving up. */
#define MAX_DIAL_ATTEMPTS 4

/*
 * How long a connect attempt has to connect or fail before the next address starts
 * beside it (RFC 8305 section 5, "Connection Attempt Delay": 250 ms recommended,
 * 100 ms to 2 s allowed; curl waits 200 ms, Go and Chrome 300 ms). Long enough that
 * an upstream a few continents away, whose first address answers, is seldom dialed
 * twice; short enough that a black-holed IPv6 path costs a tunnel a quarter second
 * instead of its whole share of the connect timeout.
 */
#define ATTEMPT_DELAY_MS 250

/*
 * How many times a dial's timeout, finding that the upstream answered in time (a
 * connect's outcome, or TLS handshake bytes, waiting behind a late loop), starts a
 * whole connect timeout anew. The connect and a TLS 1.2 handshake's two server
 * flights, each once.
 */
#define DIAL_LATE_MAX 3

/* One address's connect attempt: its own handle, since an attempt that loses the race
 * is closed while the winner's socket becomes the connection's upstream. */
struct proxy_dial_attempt {
  uv_tcp_t tcp;
  uv_connect_t req;
  struct proxy_conn *c;
  struct proxy_dial_attempt *next;  /* c's other attempts in flight */
  struct sockaddr_storage ss;       /* the address dialed */
  char addr[INET6_ADDRSTRLEN];      /* for the log */
  int extra;                        /* counted in dial_fds: begun beside another */
};

static void conn_decide(struct proxy_conn *c);
static int dials_callback_name(const struct proxy_conn *c);

/*
 * 1 for the ports of HTTP and HTTPS (80, 443), whose clients speak first. A client
 * there that is silent for server_first_ms is slow, not waiting for a server's
 * greeting: a busy program (curl with 50 transfers at once sent some ClientHellos
 * 0.6 s after its connect) would otherwise be relayed as opaque bytes, past the
 * interception that injects its credentials. It waits for its first bytes as an
 * idle connection waits.
 */
static int client_speaks_first(const struct proxy_conn *c)
{
  return c->port == 80 || c->port == 443;
}

/* 1 with c's connection-level decision in *d, or 0 if c is denied already (an
 * unknown synthetic address). */
static int decide_undenied(struct proxy_conn *c, struct rules_decision *d)
{
  struct rules_dest dest;

  if (c->reason != NULL)
    return 0;
  proxy_conn_dest(c, &dest);
  rules_decide_conn(c->cfg, &dest, d);
  return 1;
}

/*
 * Whether relaying c as opaque bytes, after its client's silence, would pass by its
 * destination's interception: PROBE_INJECT where rules inject headers (its requests
 * would go without them), PROBE_INSPECT where request-level policy applies (its
 * requests could not be held to it, so such a relay is refused), else 0. Such a relay
 * is a probe until one side speaks: a slow client of HTTP or TLS on a port but 80
 * and 443 (an internal API on 8080, a registry on 4873, under a busy program's load)
 * speaks before its server does, and is then judged by its bytes after all
 * (proxy_conn_resniff) instead of going out without its credentials, or being
 * refused as a protocol that cannot be inspected.
 */
static int probe_kind(struct proxy_conn *c)
{
  struct rules_decision d;

  if (!decide_undenied(c, &d) || d.action != RULES_INTERCEPT)
    return 0;
  return d.inspect ? PROBE_INSPECT : PROBE_INJECT;
}

static unsigned host_local(struct proxy_ctx *ctx, const struct sockaddr *sa);

/* The flags of rules_check_resolved that c's dial target gives address sa: a remap
 * named it, or it is the host's own. */
static unsigned target_flags(struct proxy_conn *c, const struct sockaddr *sa)
{
  return (c->remapped ? RULES_RESOLVED_REMAPPED : 0) | host_local(c->sb->ctx, sa);
}

/*
 * 1 if c's upstream is at an address that an egress entry with paths or methods
 * covers, where only requests read one by one may go: a probe dials it as it would for
 * requests (nothing passes until one side speaks), but a server that speaks first
 * there is refused, as where request-level policy applies to the name (PROBE_INSPECT).
 */
static int probe_address_inspected(struct proxy_conn *c)
{
  struct sockaddr_storage ss;
  struct rules_decision d;
  int len = sizeof(ss);
  unsigned flags;

  if (!rules_has_address_requests(c->cfg))
    return 0;
  if (uv_tcp_getpeername(&c->up.tcp, (struct sockaddr *)&ss, &len) != 0)
    return 1;
  flags = target_flags(c, (const struct sockaddr *)&ss);
  return !rules_check_resolved(c->cfg, (const struct sockaddr *)&ss, c->dial_port, flags, &d);
}

void proxy_conn_probe_settled(struct proxy_conn *c)
{
  if (!c->probing)
    return;
  /* Opaque bytes where request-level policy applies: what conn_decide would have
   * done at once, but for the probe. */
  if (c->probing == PROBE_INSPECT)
    c->action = RULES_DENY;
  c->probing = 0;
  c->sb->ctx->counters.actions[c->action]++;
}

void proxy_conn_resniff(struct proxy_conn *c, const char *data, size_t len)
{
  /* Nothing went either way on the upstream: closing it loses nothing. The
   * connection is undecided again, its action counted when it is decided anew (the
   * probe was not: a counter taken back down reads as a reset to Prometheus). */
  c->probing = 0;
  proxy_conn_close_upstream(c);
  c->decided = 0;
  c->entry[0] = '\0';
  c->kind = KIND_UNKNOWN;
  c->state = CONN_SNIFF;
  proxy_conn_on_data(c, &c->down, data, len);
}

static void race_next(struct proxy_conn *c);
static void attempts_close(struct proxy_conn *c);
static int up_open_dup(struct proxy_conn *c, uv_handle_t *from);
static void pool_remove(struct proxy_conn *p);
static void pool_evict_oldest(struct proxy_sandbox *sb);
static void resolve_unqueue(struct proxy_conn *c);
static void resolve_next(struct proxy_sandbox *sb);

uint64_t proxy_now_ms(const struct proxy_conn *c)
{
  return uv_now(c->sb->ctx->loop);
}

void proxy_conn_touch(struct proxy_conn *c)
{
  c->last_active_ms = uv_now(c->sb->ctx->loop);
}

/* ---- closing ---- */

/*
 * A closing connection of a closing sandbox lets go of its name lookup, which the
 * thread pool cannot cancel (proxy_loop_finish): the answer comes to nobody, and
 * neither the sandbox's close (a jail's end, a stop) nor the exit waits for the
 * resolver's timeout. While the sandbox lives, the lookup keeps its place in the
 * sandbox's share of the pool (limits.resolve_max) until the thread is free; let go,
 * its place is the next queued connection's, which the drain is for.
 */
static void drop_lookup(struct proxy_conn *c)
{
  if (c->gai == NULL || c->state != CONN_CLOSING || !c->sb->closing)
    return;
  c->gai->data = NULL;
  (void)uv_cancel((uv_req_t *)c->gai); /* one still queued never takes a thread */
  c->gai = NULL;
  c->ops--;
  c->sb->resolving--;
  proxy_lookup_orphaned();
  resolve_next(c->sb);
}

/* ---- records of open connections ---- */

/*
 * A connection's record is written when it ends, so a tunnel or a stream that stays
 * open for hours would be invisible until then, and lost with a daemon killed
 * outright. Every open connection therefore gets a "conn_open" record each
 * limits.audit_interval_ms. Connections wait in one list in the order their records
 * fall due: each is appended with now plus the interval, which no earlier entry's
 * time exceeds, so one timer at the head's time serves them all, and a record costs
 * no walk over the others.
 */

#define PROGRESS_BATCH 1024 /* records written per timer callback; the rest next turn */

static void progress_cb(uv_timer_t *t);

static void progress_append(struct proxy_conn *c, uint64_t now)
{
  struct proxy_ctx *ctx = c->sb->ctx;

  c->progress_due_ms = now + ctx->limits.audit_interval_ms;
  c->progress_next = NULL;
  c->progress_prev = ctx->progress_tail;
  if (ctx->progress_tail != NULL)
    ctx->progress_tail->progress_next = c;
  else
    ctx->progress_head = c;
  ctx->progress_tail = c;
  c->progress_listed = 1;
  if (!uv_is_active((uv_handle_t *)&ctx->progress_timer))
    uv_timer_start(&ctx->progress_timer, progress_cb, ctx->limits.audit_interval_ms, 0);
}

static void progress_remove(struct proxy_conn *c)
{
  struct proxy_ctx *ctx = c->sb->ctx;

  if (!c->progress_listed)
    return;
  if (c->progress_prev != NULL)
    c->progress_prev->progress_next = c->progress_next;
  else
    ctx->progress_head = c->progress_next;
  if (c->progress_next != NULL)
    c->progress_next->progress_prev = c->progress_prev;
  else
    ctx->progress_tail = c->progress_prev;
  c->progress_next = c->progress_prev = NULL;
  c->progress_listed = 0;
  if (ctx->progress_head == NULL)
    uv_timer_stop(&ctx->progress_timer);
}

static void progress_cb(uv_timer_t *t)
{
  struct proxy_ctx *ctx = t->data;
  uint64_t now = uv_now(ctx->loop);
  struct proxy_conn *c;
  unsigned n = 0;

  while ((c = ctx->progress_head) != NULL && c->progress_due_ms <= now) {
    if (n++ == PROGRESS_BATCH) {
      uv_timer_start(t, progress_cb, 0, 0);
      return;
    }
    progress_remove(c);
    proxy_audit_conn_open(c);
    progress_append(c, now);
  }
  if (c != NULL)
    uv_timer_start(t, progress_cb, c->progress_due_ms - now, 0);
}

static void conn_maybe_free(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;

  drop_lookup(c);
  if (c->handles > 0 || c->ops > 0)
    return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    sb->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  sb->nconns--;
  sb->ctx->counters.conns_active--;
  proxy_tls_free(c->down.tls);
  proxy_tls_free(c->up.tls);
  proxy_http_free(c->http);
  if (c->ai != NULL)
    uv_freeaddrinfo(c->ai);
  free(c->pending);
  rules_config_unref(c->cfg);
  free(c);
  proxy_ctx_trim_later(sb->ctx);
  proxy_sandbox_conn_gone(sb);
}

void proxy_conn_sandbox_closing(struct proxy_conn *c)
{
  if (c->state == CONN_CLOSING)
    conn_maybe_free(c);
}

static void handle_closed(uv_handle_t *h)
{
  struct proxy_conn *c = h->data;

  c->handles--;
  conn_maybe_free(c);
}

void proxy_conn_close(struct proxy_conn *c, int reset, const char *reason)
{
  int reset_up;

  if (c->state == CONN_CLOSING)
    return;
  if (c->state == CONN_POOLED) {
    /* A pool entry, not a sandbox connection: nothing to audit or count. */
    pool_remove(c);
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (c->up.open) {
      uv_close((uv_handle_t *)&c->up.tcp, handle_closed);
      c->up.open = 0;
    }
    return;
  }
  /* Relayed bytes have no framing of their own: a FIN would tell the upstream that
   * what it received is the whole stream. A relay cut short (the sandbox reset it, a
   * write failed, the config no longer lets it through) is reset on both sides, as
   * an upstream's reset already reaches the sandbox. */
  reset_up = reset && c->state == CONN_RELAY;
  if (c->synth_unknown && !c->decided && c->reason == NULL) {
    /* Closed before it named a host: nothing could have been decided for it. */
    c->reason = "unknown_synthetic_address";
    proxy_conn_mark_denied(c);
  }
  if (c->reason == NULL && reason != NULL)
    c->reason = reason;
  /* Ended before either side spoke: relayed, as its record says. */
  proxy_conn_probe_settled(c);
  resolve_unqueue(c);
  progress_remove(c);
  proxy_setup_unpark(c);
  c->state = CONN_CLOSING;
  c->sb->ctx->counters.bytes_up += c->bytes_up;
  c->sb->ctx->counters.bytes_down += c->bytes_down;
  proxy_labels_add(&c->sb->ctx->closed_by_reason, c->reason ? c->reason : "done", 1);
  if (c->http != NULL)
    proxy_http_on_close(c);
  proxy_audit_conn(c);
  attempts_close(c);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, handle_closed);
  if (c->down.open) {
    if (!reset || uv_tcp_close_reset(&c->down.tcp, handle_closed) != 0)
      uv_close((uv_handle_t *)&c->down.tcp, handle_closed);
    c->down.open = 0;
  }
  if (c->up.open) {
    if (!reset_up || uv_tcp_close_reset(&c->up.tcp, handle_closed) != 0)
      uv_close((uv_handle_t *)&c->up.tcp, handle_closed);
    c->up.open = 0;
  }
}

/* ---- timer ---- */

/*
 * What c's connect attempts answered in time, their callbacks waiting behind a late
 * loop: 1 if one connected, -1 if none did but one failed, 0 if all are silent.
 */
static int attempts_answered(struct proxy_conn *c)
{
  const struct proxy_dial_attempt *a;
  int r = 0;

  for (a = c->attempts; a != NULL && r <= 0; a = a->next) {
    int got = proxy_socket_answered((const uv_handle_t *)&a->tcp, 1);

    if (got != 0)
      r = got;
  }
  if (r != 0)
    c->sb->ctx->counters.timers_late++;
  return r;
}

/*
 * The dial's timeout fell due, but the upstream answered in time (what): its answer
 * waits behind a late loop. The rest of the dial gets a whole connect timeout from
 * now, so that the loop's lateness is not counted against the upstream; at most
 * DIAL_LATE_MAX times a dial, so that an upstream whose answers, trickled, are found
 * waiting whenever the loop happens to be late cannot stretch it without end.
 */
static void dial_late_grant(struct proxy_conn *c, uint64_t now, const char *what)
{
  c->dial_late++;
  log_debug("conn %llu: %s %s:%u: %s past the connect timeout (the event loop ran "
            "late): a connect timeout anew (%u of %d)", (unsigned long long)c->id,
            c->state == CONN_CONNECT ? "connect to" : "TLS handshake with", c->dial_host,
            c->dial_port, what, c->dial_late, DIAL_LATE_MAX);
  c->dial_deadline_ms = now + c->sb->limits.connect_ms;
  proxy_conn_arm_timer(c, c->sb->limits.connect_ms);
}

static void timer_cb(uv_timer_t *t)
{
  struct proxy_conn *c = container_of(t, struct proxy_conn, timer);
  uint64_t now = uv_now(c->sb->ctx->loop), idle;

  switch (c->state) {
  case CONN_SNIFF:
    if (proxy_end_unread(&c->down)) {
      /* The loop is late, not the sandbox: read what arrived in time first. */
      proxy_conn_arm_timer(c, c->timer_ms);
      break;
    }
    if (c->pending_len == 0 && client_speaks_first(c)) {
      /* Silent as long as an idle connection may be. */
      proxy_conn_close(c, 0, "idle_timeout");
    } else if (c->pending_len == 0) {
      /* Nothing sent: a protocol where the server speaks first (SMTP, FTP). It is
       * judged by the name from DNS, or by address. */
      c->kind = KIND_OTHER;
      c->probing = probe_kind(c);
      conn_decide(c);
    } else {
      proxy_conn_close(c, 1, "sniff_timeout");
    }
    break;
  case CONN_CONNECT:
    /* The attempt delay is over, none of the attempts in flight answered: the next
     * address joins them (or the timer waits out the rest of the dial). */
    if (now < c->dial_deadline_ms) {
      if (c->ai_next != NULL)
        log_debug("conn %llu: connect to %s:%u: no answer in %llu ms, trying its next "
                  "address beside it", (unsigned long long)c->id, c->dial_host,
                  c->dial_port, (unsigned long long)c->timer_ms);
      race_next(c);
      break;
    }
    /* A connect that succeeded in time is not taken for silence: its callback runs
     * once the loop polls. One that failed in time gets no more time for the others,
     * still silent, but its error, not a timeout, is the dial's outcome once the loop
     * has read it (a turn later: a timer of 0 would run again at once). */
    if (c->dial_late < DIAL_LATE_MAX) {
      int answered = attempts_answered(c);

      if (answered > 0) {
        dial_late_grant(c, now, "connected in time, but waited");
        break;
      }
      if (answered < 0) {
        c->dial_late++;
        proxy_conn_arm_timer(c, 1);
        break;
      }
    }
    attempts_close(c);
    /* fall through */
  case CONN_TLS_UP:
    /* The loop is late, or the sandbox's setup reads (stream.c, SETUP_READS) kept
     * the upstream's handshake waiting its turn: what the upstream sent in time is
     * read first, or its ServerHello is taken for silence (a 504 upstream_timeout,
     * blaming a destination that answered at once). */
    if (c->state == CONN_TLS_UP && c->dial_late < DIAL_LATE_MAX &&
        proxy_end_unread(&c->up)) {
      dial_late_grant(c, now, "its bytes waited unread");
      break;
    }
    /* fall through */
  case CONN_RESOLVE:
    if (c->ready_cb != NULL) {
      conn_ready_cb cb = c->ready_cb;

      c->ready_cb = NULL;
      cb(c, UV_ETIMEDOUT, "upstream_timeout");
    } else {
      proxy_conn_close(c, 1, "upstream_timeout");
    }
    break;
  case CONN_TLS_DOWN:
    /* The loop is late, or the sandbox's setup reads waited their turn: the bytes
     * that arrived in time are read first. Within a bound on the whole set-up (a
     * sandbox that keeps its own setup reads waiting, to stretch a handshake that
     * trickles, gets no more). */
    if (proxy_end_unread(&c->down) &&
        now - c->start_ms < c->sb->limits.sniff_ms + 2 * c->sb->limits.handshake_ms) {
      proxy_conn_arm_timer(c, c->timer_ms);
      break;
    }
    proxy_conn_close(c, 1, "handshake_timeout");
    break;
  case CONN_HTTP:
    proxy_http_on_timeout(c);
    break;
  case CONN_RELAY:
    idle = now - c->last_active_ms;
    if (idle >= c->sb->limits.idle_ms && proxy_conn_passing(c)) {
      proxy_conn_touch(c); /* still handing on what was read */
      idle = 0;
    }
    if (idle >= c->sb->limits.idle_ms && !proxy_end_unread(&c->down) &&
        !proxy_end_unread(&c->up))
      proxy_conn_close(c, 0, "idle_timeout");
    else
      uv_timer_start(&c->timer, timer_cb,
                     idle < c->sb->limits.idle_ms ? c->sb->limits.idle_ms - idle
                                                  : c->sb->limits.idle_ms,
                     0);
    break;
  case CONN_LINGER:
    /* Still writing the answer: wait as long as the sandbox keeps taking it. */
    if (c->down.queued > 0 && c->down.queued < c->linger_queued) {
      c->linger_queued = c->down.queued;
      uv_timer_start(&c->timer, timer_cb, c->sb->limits.idle_ms, 0);
      break;
    }
    proxy_conn_close(c, 0, NULL);
    break;
  case CONN_POOLED:
    proxy_conn_close(c, 0, NULL); /* unused for pool_idle_ms */
    break;
  case CONN_CLOSING:
    break;
  }
}

void proxy_conn_arm_timer(struct proxy_conn *c, uint64_t ms)
{
  if (c->state == CONN_CLOSING)
    return;
  c->timer_ms = ms;
  uv_timer_start(&c->timer, timer_cb, ms, 0);
}

/* ---- pending bytes ---- */

int proxy_conn_pending_append(struct proxy_conn *c, const char *data, size_t len)
{
  if (c->pending_len + len > c->pending_cap) {
    size_t cap = c->pending_cap ? c->pending_cap : 1024;
    char *p;

    while (cap < c->pending_len + len)
      cap *= 2;
    p = realloc(c->pending, cap);
    if (p == NULL)
      return -ENOMEM;
    c->pending = p;
    c->pending_cap = cap;
  }
  memcpy(c->pending + c->pending_len, data, len);
  c->pending_len += len;
  return 0;
}

void proxy_conn_pending_consume(struct proxy_conn *c, size_t n)
{
  if (n >= c->pending_len) {
    c->pending_len = 0;
    /* Give the memory back: an idle keep-alive connection should hold nothing. */
    if (c->pending_cap > 4096) {
      free(c->pending);
      c->pending = NULL;
      c->pending_cap = 0;
    }
    return;
  }
  memmove(c->pending, c->pending + n, c->pending_len - n);
  c->pending_len -= n;
}

/* ---- lingering close ---- */

/* How long a lingering connection discards what the sandbox sends once the answer
 * has been written, after the last bytes it sent; and at most, however steadily they
 * come (nginx's lingering_time). */
#define LINGER_MS 2000
#define LINGER_MAX_MS 30000

/*
 * The answer is written: what the sandbox still sends is discarded until it has sent
 * nothing for LINGER_MS. A client that writes a whole upload before it reads (Python's
 * http.client and requests) is still sending the body an early answer (a 401, a 413,
 * a 403 of the proxy's) refused; closing under it would reset the connection, and
 * take the answer, which it has not read yet, with it.
 */
static void linger_discard(struct proxy_conn *c)
{
  c->linger_end_ms = uv_now(c->sb->ctx->loop) + LINGER_MAX_MS;
  uv_timer_start(&c->timer, timer_cb, LINGER_MS, 0);
}

void proxy_conn_linger(struct proxy_conn *c)
{
  if (c->state == CONN_CLOSING || c->state == CONN_LINGER)
    return;
  /* Closing a socket with unread input makes the kernel send RST, which can destroy
   * the answer before the sandbox reads it. Send FIN after the answer, discard what
   * the sandbox still sends for a moment, then close. Closing also cancels writes
   * still queued, so while part of the answer waits for a slow reader the moment
   * starts only when it is written (proxy_conn_on_drain); a reader that takes
   * nothing for the idle timeout is given up (timer_cb). */
  c->state = CONN_LINGER;
  attempts_close(c);
  if (c->up.open) {
    uv_close((uv_handle_t *)&c->up.tcp, handle_closed);
    c->up.open = 0;
  }
  proxy_end_shutdown(&c->down);
  proxy_end_want_read(&c->down, 1);
  c->linger_queued = c->down.queued;
  if (c->down.queued > 0)
    uv_timer_start(&c->timer, timer_cb, c->sb->limits.idle_ms, 0);
  else
    linger_discard(c);
}

/* ---- data dispatch ---- */

static int looks_like_http(const char *p, size_t len, int *need_more)
{
  size_t i;

  /* A method of at most 24 characters, then a space. Methods are case-sensitive
   * (RFC 9110 9.1) and the HTTP engine (llhttp) knows only its registered ones, all
   * capitals, '-' and '_' (M-SEARCH, GET_PARAMETER). Any other token and a space is
   * another protocol that a client opens with text: an SSH identification string
   * ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6"), git's daemon protocol ("0032git-
   * upload-pack /repo.git..."), memcached's commands ("get key"). Taken for HTTP, it
   * was answered 400 where it is to be relayed; as opaque bytes it is relayed, or
   * refused where request-level policy applies, as before. */
  for (i = 0; i < len && i < 25; i++) {
    unsigned char ch = (unsigned char)p[i];

    if (ch == ' ')
      return i > 0;
    if (!((ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_'))
      return 0;
  }
  *need_more = i < 25;
  return 0;
}

/* The first bytes are not enough to tell the protocol: the rest must come within
 * sniff_ms of the first, however steadily it trickles. */
static void sniff_more(struct proxy_conn *c)
{
  if (c->timer_ms != c->sb->limits.sniff_ms)
    proxy_conn_arm_timer(c, c->sb->limits.sniff_ms);
}

/* The HTTP/2 connection preface (RFC 9113 3.4) of a client with prior knowledge of
 * h2c, as plaintext gRPC and `curl --http2-prior-knowledge` speak. */
static const char h2c_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* 1 if c, opening with the h2c preface, goes where its bytes are relayed as they are
 * (a tunnel, a no_proxy bypass): h2c is then opaque bytes like any protocol but
 * HTTP/1.x. Where requests are changed or inspected, the HTTP engine refuses it. */
static int h2c_relayed(struct proxy_conn *c)
{
  struct rules_decision d;

  return decide_undenied(c, &d) && (d.action == RULES_TUNNEL || d.action == RULES_BYPASS);
}

static void sniff(struct proxy_conn *c)
{
  struct proxy_hello hello;
  int need_more = 0;
  size_t n;

  if ((unsigned char)c->pending[0] == 0x16) {
    switch (proxy_hello_parse((const uint8_t *)c->pending, c->pending_len, &hello)) {
    case PROXY_HELLO_NEED_MORE:
      sniff_more(c);
      return;
    case PROXY_HELLO_OK:
      c->kind = KIND_TLS;
      proxy_conn_on_hello(c, &hello);
      return;
    case PROXY_HELLO_NOT_TLS:
      break;
    case PROXY_HELLO_INVALID:
      c->kind = KIND_TLS;
      proxy_conn_close(c, 1, "invalid_client_hello");
      return;
    }
  }
  n = c->pending_len < sizeof(h2c_preface) - 1 ? c->pending_len : sizeof(h2c_preface) - 1;
  if (n > 3 && memcmp(c->pending, h2c_preface, n) == 0) {
    if (n < sizeof(h2c_preface) - 1) {
      sniff_more(c);
      return;
    }
    if (h2c_relayed(c)) {
      c->kind = KIND_OTHER;
      c->h2c = 1;
      conn_decide(c);
      return;
    }
  }
  if (looks_like_http(c->pending, c->pending_len, &need_more)) {
    c->kind = KIND_HTTP;
    conn_decide(c);
    return;
  }
  if (need_more) {
    sniff_more(c);
    return;
  }
  c->kind = KIND_OTHER;
  conn_decide(c);
}

void proxy_conn_on_data(struct proxy_conn *c, struct proxy_end *e, const char *data,
                        size_t len)
{
  switch (c->state) {
  case CONN_SNIFF:
    if (c->pending_len + len > PROXY_HELLO_MAX_BYTES) {
      proxy_conn_close(c, 1, "sniff_too_large");
      return;
    }
    if (proxy_conn_pending_append(c, data, len) != 0) {
      proxy_conn_close(c, 1, "out_of_memory");
      return;
    }
    sniff(c);
    break;
  case CONN_HTTP:
    proxy_http_on_data(c, e, data, len);
    break;
  case CONN_RELAY:
    proxy_relay_on_data(c, e, data, len);
    break;
  case CONN_LINGER:
    /* Discarded; while the sandbox keeps sending, the close waits (linger_discard). */
    if (e == &c->down && c->down.queued == 0) {
      uint64_t now = uv_now(c->sb->ctx->loop);

      if (now < c->linger_end_ms)
        uv_timer_start(&c->timer, timer_cb,
                       c->linger_end_ms - now < LINGER_MS ? c->linger_end_ms - now
                                                          : LINGER_MS, 0);
    }
    break;
  case CONN_POOLED:
    /* An idle upstream has nothing to say; whatever it sent makes it unusable. */
    proxy_conn_close(c, 0, NULL);
    break;
  default:
    /* Resolving or connecting: the sandbox side is not being read, but TLS may
     * deliver a record's worth of plaintext; keep it for later. */
    if (e == &c->down) {
      if (c->pending_len + len > c->sb->limits.max_header_bytes + 65536 ||
          proxy_conn_pending_append(c, data, len) != 0)
        proxy_conn_close(c, 1, "buffer_limit");
    }
    break;
  }
}

void proxy_conn_on_eof(struct proxy_conn *c, struct proxy_end *e, int status)
{
  if (status != UV_EOF) {
    log_debug("conn %llu: %s: %s", (unsigned long long)c->id,
              e == &c->down ? "sandbox" : "upstream", uv_strerror(status));
    if (c->state == CONN_HTTP) {
      if (e == &c->up && proxy_http_on_up_error(c) == 0)
        return;
      if (e == &c->down)
        proxy_http_park(c); /* the sandbox went away between requests */
    }
    proxy_conn_close(c, 1, e == &c->down ? "sandbox_error" : "upstream_error");
    return;
  }
  switch (c->state) {
  case CONN_HTTP:
    proxy_http_on_eof(c, e);
    break;
  case CONN_RELAY:
    proxy_relay_on_eof(c, e);
    break;
  case CONN_LINGER:
    /* A sandbox that half-closed may still read the rest of its answer. */
    if (e == &c->down && c->down.queued > 0)
      break;
    proxy_conn_close(c, 0, NULL);
    break;
  case CONN_POOLED:
    proxy_conn_close(c, 0, NULL);
    break;
  case CONN_RESOLVE:
  case CONN_CONNECT:
  case CONN_TLS_UP:
    /* The sandbox may send its request and half-close before the upstream is
     * ready; e->eof is remembered and passed on once it is. */
    if (e == &c->down)
      break;
    proxy_conn_close(c, 0, "upstream_closed");
    break;
  default:
    proxy_conn_close(c, 0, e == &c->down ? "sandbox_closed" : "upstream_closed");
    break;
  }
}

void proxy_conn_on_drain(struct proxy_conn *c, struct proxy_end *e)
{
  if (c->state == CONN_HTTP) {
    proxy_http_on_drain(c, e);
  } else if (c->state == CONN_RELAY) {
    proxy_relay_on_drain(c, e);
  } else if (c->state == CONN_LINGER && e == &c->down) {
    /* The answer is written: the sandbox's FIN, if it came, ends it now. */
    if (c->down.eof)
      proxy_conn_close(c, 0, NULL);
    else
      linger_discard(c);
  }
}

/* ---- names and decisions ---- */

/*
 * Whether the DNS name dns is name with a suffix, as a resolver's search domains make
 * it. A resolver that tries its search list first (Kubernetes pods: the cluster's
 * domains and ndots:5) asks the responder, which answers every name, for
 * api.example.com.NS.svc.cluster.local before api.example.com: the connection then
 * has the expanded name, and the SNI or Host the client sends, its own name, has not.
 * The client's own name, the first it sends, is the destination: the sandbox gains
 * nothing by it, since resolving that name directly gives the same. Only a name not
 * agreed on yet, and not decided for yet, is replaced, so a request never goes down an
 * upstream dialed for the other.
 */
static int search_expansion(const char *dns, const char *name, int n)
{
  return strlen(dns) > (size_t)n + 1 && dns[n] == '.' && memcmp(dns, name, (size_t)n) == 0;
}

/* An address literal is no name to take (SNI must not carry one: ip_literal_sni). */
static int name_is_ip(const char *name)
{
  unsigned char buf[sizeof(struct in6_addr)];

  return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The original destination of a connection with synth_unknown set (IPv4). */
static uint32_t synthetic_addr(const struct proxy_conn *c)
{
  return ntohl(((const struct sockaddr_in *)&c->dst)->sin_addr.s_addr);
}

int proxy_conn_set_name(struct proxy_conn *c, const char *raw, size_t len,
                        enum name_source src, const char **reason)
{
  char name[RULES_MAX_NAME_LEN + 1];
  int n = rules_normalize_host(raw, len, name, sizeof(name));

  if (n < 0) {
    *reason = src == NAME_SNI ? "invalid_sni" : "invalid_host";
    return -EINVAL;
  }
  if (c->synth_unknown) {
    /* The address may have got its name since the accept (a query, or another
     * connection's name below): then this name must agree with it, as with any. */
    const char *known = proxy_dns_table_lookup(c->sb->dns_table, synthetic_addr(c),
                                               uv_now(c->sb->ctx->loop));

    if (known != NULL) {
      c->synth_unknown = 0;
      memcpy(c->name, known, strlen(known) + 1);
      c->name_src = NAME_DNS;
    }
  }
  if (c->name_src != NAME_NONE) {
    /* Every name the proxy learns must agree with the one it already has: a
     * connection to the synthetic address of one name cannot claim another. */
    if (strcmp(name, c->name) != 0) {
      /* Not once a decision was made for the DNS name (a request without Host, a TLS
       * handshake without SNI): an upstream may be open for it. */
      if (c->name_src == NAME_DNS && !c->name_agreed && !c->decided &&
          search_expansion(c->name, name, n) && !name_is_ip(name)) {
        memcpy(c->name, name, (size_t)n + 1);
        c->name_agreed = 1;
        return 0;
      }
      *reason = src == NAME_SNI ? "sni_mismatch" : "host_mismatch";
      return -EPERM;
    }
    c->name_agreed = 1;
    return 0;
  }
  memcpy(c->name, name, (size_t)n + 1);
  c->name_src = src;
  c->name_agreed = 1;
  if (c->synth_unknown) {
    c->synth_unknown = 0;
    /* A client that kept an answer from before a daemon restart: the address is the
     * name's if a query for it now would give it. Otherwise the name is kept for the
     * denial's answer (a 403 inside TLS names it). */
    if (!name_is_ip(name) &&
        proxy_dns_table_claim(c->sb->dns_table, name, synthetic_addr(c),
                              uv_now(c->sb->ctx->loop)) == 0) {
      c->name_src = NAME_DNS;
    } else {
      c->reason = "unknown_synthetic_address";
      proxy_conn_mark_denied(c);
    }
  }
  return 0;
}

int proxy_conn_name_is_ip(const struct proxy_conn *c)
{
  return name_is_ip(c->name);
}

void proxy_conn_dest(const struct proxy_conn *c, struct rules_dest *d)
{
  d->name = c->name_src != NAME_NONE ? c->name : NULL;
  d->addr = c->name_src == NAME_DNS ? NULL : (const struct sockaddr *)&c->dst;
  d->port = c->port;
}

static void relay_ready(struct proxy_conn *c, int status, const char *reason)
{
  if (status != 0) {
    proxy_conn_close(c, 1, reason);
    return;
  }
  if (c->probing == PROBE_INJECT && probe_address_inspected(c))
    c->probing = PROBE_INSPECT;
  proxy_relay_start(c);
}

void proxy_conn_on_hello(struct proxy_conn *c, const struct proxy_hello *hello)
{
  const char *reason = NULL;

  if (hello->has_alpn && !hello->alpn_http11)
    c->alpn_not_http11 = hello->alpn_h2 ? 2 : 1;
  if (!hello->tls12_offered)
    c->no_tls12 = hello->tls13_offered ? 2 : 1;
  if (hello->sni_len > 0) {
    if (proxy_conn_set_name(c, hello->sni, hello->sni_len, NAME_SNI, &reason) != 0) {
      proxy_conn_deny_tls(c, reason);
      return;
    }
    /* RFC 6066 forbids address literals in SNI; a client sending one is not a
     * browser-like client we can name a destination for. */
    if (c->name_src == NAME_SNI && proxy_conn_name_is_ip(c)) {
      c->name_src = NAME_NONE;
      c->name[0] = '\0';
      proxy_conn_deny_tls(c, "ip_literal_sni");
      return;
    }
  }
  conn_decide(c);
}

static void conn_decide(struct proxy_conn *c)
{
  struct rules_decision d;
  struct rules_dest dest;

  proxy_end_want_read(&c->down, 0);
  uv_timer_stop(&c->timer);
  if (c->synth_unknown && c->kind != KIND_HTTP) {
    /* An unknown synthetic address and no name for it (no SNI; not TLS or HTTP). */
    c->reason = "unknown_synthetic_address";
    proxy_conn_mark_denied(c);
  }
  if (c->reason != NULL) {
    /* Denied before a decision: an unknown synthetic address. */
    c->probing = 0;
    proxy_conn_mark_denied(c);
    if (c->kind == KIND_HTTP)
      proxy_http_start(c);
    else if (c->kind == KIND_TLS)
      proxy_conn_deny_tls(c, c->reason);
    else
      proxy_conn_close(c, 1, c->reason);
    return;
  }
  if (c->kind == KIND_HTTP) {
    /* The HTTP engine learns the name from Host if DNS did not give one, and decides
     * each request. */
    proxy_http_start(c);
    return;
  }
  proxy_conn_dest(c, &dest);
  rules_decide_conn(c->cfg, &dest, &d);
  c->action = d.action;
  /* Not TLS and not HTTP: nothing to inject into, so relaying it like a tunnel
   * loses nothing, unless request-level egress policy applies. Opaque bytes would
   * carry a denied path or method past it: a client only has to stay silent past
   * server_first_ms, or send a blank line before its request line, to get here. */
  if (d.action == RULES_INTERCEPT && c->kind != KIND_TLS)
    c->action = d.inspect && !c->probing ? RULES_DENY : RULES_TUNNEL;
  c->decided = 1;
  memcpy(c->entry, d.entry, sizeof(c->entry));
  /* Counted as what is done with it, which its audit record says: a relayed
   * connection to a host with rules used to count as intercepted. A probe is
   * counted once it is settled (proxy_conn_probe_settled, or decided anew). */
  if (!c->probing)
    c->sb->ctx->counters.actions[c->action]++;
  switch (c->action) {
  case RULES_DENY:
    if (d.action == RULES_INTERCEPT)
      proxy_conn_close(c, 1, "uninspectable_protocol");
    else if (c->kind == KIND_TLS)
      proxy_conn_deny_tls(c, d.reason);
    else
      proxy_conn_close(c, 1, d.reason);
    return;
  case RULES_INTERCEPT:
    proxy_tls_intercept(c);
    return;
  case RULES_TUNNEL:
  case RULES_BYPASS:
    break;
  }
  proxy_conn_dial(c, relay_ready);
}

void proxy_conn_mark_denied(struct proxy_conn *c)
{
  if (!c->decided)
    c->sb->ctx->counters.actions[RULES_DENY]++;
  c->action = RULES_DENY;
  c->decided = 1;
}

void proxy_conn_deny_tls(struct proxy_conn *c, const char *reason)
{
  proxy_conn_mark_denied(c);
  c->reason = reason;
  /* With a CA the sandbox trusts, answer a readable 403 inside TLS; else reset. */
  if (c->sb->ca != NULL && c->name_src != NAME_NONE) {
    proxy_tls_intercept(c);
    return;
  }
  proxy_conn_close(c, 1, reason);
}

/*
 * RULES_RESOLVED_HOST_LOCAL if sa is an address of the host's own, as its kernel
 * routes it (an uplink's, a bridge's: often the gateway a sandbox sees in its routes).
 * The proxy dials from the host, so such a connection reaches the host's services as
 * loopback does, past any firewall that keeps the sandboxes' addresses out. Also when
 * the kernel cannot be asked, so that none is dialed by mistake. For a NAT64 address
 * the flag covers the IPv4 address it embeds as well.
 */
static unsigned host_local(struct proxy_ctx *ctx, const struct sockaddr *sa)
{
  struct sockaddr_in s4;
  int r = 0;

  if (ctx->host_local == NULL)
    r = netns_local_open(&ctx->host_local);
  if (r == 0) {
    r = netns_addr_is_local(ctx->host_local, sa);
    /* A NAT64 address (64:ff9b::/96) is the IPv4 address it embeds too, as
     * rules_check_resolved takes it: a translator on the host or its network
     * takes 64:ff9b::<an address of the host's> to the host. */
    if (r == 0 && rules_nat64_ipv4(sa, &s4))
      r = netns_addr_is_local(ctx->host_local, (const struct sockaddr *)&s4);
    if (r >= 0)
      return r ? RULES_RESOLVED_HOST_LOCAL : 0;
  }
  /* The 1st, 2nd, 4th, 8th... time: the cause (descriptors) may last. */
  ctx->host_local_failures++;
  if ((ctx->host_local_failures & (ctx->host_local_failures - 1)) == 0)
    log_warn("cannot ask the kernel whether an address is the host's own: %s (%llu times); "
             "the address is taken for one, refused unless dns.remap or egress.allow "
             "names it",
             strerror(-r), (unsigned long long)ctx->host_local_failures);
  return RULES_RESOLVED_HOST_LOCAL;
}

/*
 * Why cfg would not let c's opaque relay through as it is, or NULL. Mirrors what
 * conn_decide and the dial would do with c under cfg.
 */
static const char *relay_disallowed(struct proxy_conn *c, const struct rules_config *cfg)
{
  struct sockaddr_storage ss;
  struct rules_decision d;
  struct rules_dest dest;
  char host[sizeof(c->dial_host)];
  enum rules_action action;
  unsigned flags;
  uint16_t port = 0;
  int len = sizeof(ss), remapped;

  proxy_conn_dest(c, &dest);
  rules_decide_conn(cfg, &dest, &d);
  action = d.action;
  /* conn_decide relays what is neither TLS nor HTTP instead of intercepting it; the
   * HTTP engine refuses h2c. */
  if (action == RULES_INTERCEPT && c->kind != KIND_TLS && c->http == NULL)
    action = (d.inspect && !c->probing) || c->h2c ? RULES_DENY : RULES_TUNNEL;
  if (action == RULES_DENY)
    return "config_changed";
  /* A tunnel cfg would intercept: headers to inject, or requests to inspect, that the
   * opaque bytes cannot get. (An upgraded connection is intercepted already.) */
  if (action == RULES_INTERCEPT && c->action != RULES_INTERCEPT)
    return "config_changed";
  /* An upgraded connection (a WebSocket) goes on as the request that opened it: one
   * cfg refuses by method, path or its address's entries is cut, as a stream of
   * events in flight is (request_disallowed). */
  if (c->http != NULL && c->state == CONN_RELAY && proxy_http_refuses(c, cfg))
    return "config_changed";
  /* The target it was dialed at: dns.remap may send the name elsewhere now. */
  if (c->name_src != NAME_NONE && c->name_src != NAME_ADDR) {
    remapped = rules_remap(cfg, c->name, c->port, host, sizeof(host), &port);
    if (remapped != c->remapped ||
        (remapped && (port != c->dial_port || strcmp(host, c->dial_host) != 0)))
      return "config_changed";
  }
  /* A callback cfg introduces or moves to where the relay goes, by name
   * (proxy_sandbox_set_config lists cfg's callback first). */
  if (dials_callback_name(c))
    return "config_changed";
  /* The address it was dialed at (egress IP/CIDR entries), as allowed_address. */
  if (c->up.connected &&
      uv_tcp_getpeername(&c->up.tcp, (struct sockaddr *)&ss, &len) == 0) {
    flags = target_flags(c, (const struct sockaddr *)&ss);
    /* A probe's upstream has carried nothing (probe_address_inspected). */
    if ((c->http != NULL && c->action != RULES_BYPASS) || c->probing)
      flags |= RULES_RESOLVED_INSPECTED;
    if (!rules_check_resolved(cfg, (const struct sockaddr *)&ss, c->dial_port, flags, &d))
      return "config_changed";
  }
  return NULL;
}

/*
 * Why cfg refuses the request c's HTTP engine has in flight, or NULL. Each request is
 * decided under the config current when it arrives, but one still going (a stream of
 * events, an upload, a long poll, a request waiting for its credentials) would
 * otherwise go on under a config that refuses it for as long as it lasts.
 */
static const char *request_disallowed(struct proxy_conn *c, const struct rules_config *cfg)
{
  struct sockaddr_storage ss;
  struct rules_decision d;
  int len = sizeof(ss);

  if (!proxy_http_in_flight(c))
    return NULL;
  if (proxy_http_refuses(c, cfg))
    return "config_changed";
  /* The address its upstream was dialed at (egress IP/CIDR entries), as
   * relay_disallowed; request-level entries on addresses were its request's. */
  if (c->up.connected &&
      uv_tcp_getpeername(&c->up.tcp, (struct sockaddr *)&ss, &len) == 0 &&
      !rules_check_resolved(cfg, (const struct sockaddr *)&ss, c->dial_port,
                            target_flags(c, (const struct sockaddr *)&ss) |
                              RULES_RESOLVED_INSPECTED,
                            &d))
    return "config_changed";
  return NULL;
}

void proxy_conn_config_swapped(struct proxy_conn *c, struct rules_config *cfg)
{
  const char *reason;

  if (c->cfg == cfg)
    return;
  /* The HTTP engine takes the config per request (handle_request): only a request in
   * flight is judged here. */
  if (c->http != NULL && c->action != RULES_BYPASS &&
      (c->state == CONN_RESOLVE || c->state == CONN_CONNECT || c->state == CONN_TLS_UP ||
       c->state == CONN_HTTP)) {
    reason = request_disallowed(c, cfg);
    if (reason != NULL)
      proxy_conn_close(c, 1, reason);
    else if (c->state == CONN_RESOLVE || c->state == CONN_CONNECT)
      /* Its upstream still being dialed: the addresses it has yet to connect to are
       * checked against cfg too (swapped_address_allowed, still_allowed). */
      c->cfg_changes++;
    return;
  }
  switch (c->state) {
  case CONN_SNIFF:
    /* Not decided yet (conn_decide reads c->cfg): decided under the new config. */
    break;
  case CONN_RESOLVE:
  case CONN_CONNECT:
    /* Dialing for a relay; an HTTP engine's dial is for a request in flight. */
    if (c->http != NULL && c->action != RULES_BYPASS)
      return;
    if (c->action != RULES_TUNNEL && c->action != RULES_BYPASS)
      return;
    reason = relay_disallowed(c, cfg);
    if (reason != NULL) {
      proxy_conn_close(c, 1, reason);
      return;
    }
    break;
  case CONN_RELAY:
    reason = relay_disallowed(c, cfg);
    if (reason != NULL) {
      proxy_conn_close(c, 1, reason);
      return;
    }
    break;
  default:
    /* The HTTP engine (and TLS set-up for it) takes the config per request; a local
     * answer, a pooled upstream or a close is under way. */
    return;
  }
  rules_config_unref(c->cfg);
  c->cfg = rules_config_ref(cfg);
  c->cfg_changes++;
  /* A probe goes on under cfg: a server that speaks first is refused where request-level
   * policy applies now, relayed where it does not (a probe stays one, to be counted). */
  if (c->probing)
    c->probing = probe_kind(c) == PROBE_INSPECT ||
                         (c->up.connected && probe_address_inspected(c))
                     ? PROBE_INSPECT
                     : PROBE_INJECT;
}

/* ---- dialing ---- */

static void dial_fail(struct proxy_conn *c, int status, const char *reason)
{
  conn_ready_cb cb = c->ready_cb;

  attempts_close(c);
  c->sb->ctx->counters.upstream_errors++;
  c->ready_cb = NULL;
  if (cb != NULL)
    cb(c, status, reason);
}

static void dial_done(struct proxy_conn *c)
{
  conn_ready_cb cb = c->ready_cb;

  uv_timer_stop(&c->timer);
  c->ready_cb = NULL;
  if (cb != NULL)
    cb(c, 0, NULL);
}

static void up_ready(struct proxy_conn *c, int status, const char *reason)
{
  if (status != 0) {
    dial_fail(c, status, reason);
    return;
  }
  dial_done(c);
}

static uint64_t dial_time_left(const struct proxy_conn *c)
{
  uint64_t now = uv_now(c->sb->ctx->loop);

  return c->dial_deadline_ms > now ? c->dial_deadline_ms - now : 0;
}

/*
 * Racing an upstream's addresses (RFC 8305 section 5, as curl, Go and Chrome do): the
 * first address is dialed; each ATTEMPT_DELAY_MS in which no attempt in flight
 * connected or failed, and at once when one fails, the next address is dialed
 * beside them, until one connects (the others are closed: nothing was sent on them)
 * or the dial's connect timeout ends them all. An address that never answers (a
 * black-holed IPv6 path in front of a working IPv4 one) costs the dial one delay.
 *
 * Each attempt is its own handle, counted in c->handles and closed with the
 * connection: libuv cannot move a handle, so the winner's socket becomes c->up.tcp
 * as a duplicate descriptor (closing the attempt's handle then closes only its own).
 * The attempts beyond a connection's first hold descriptors its two do not cover:
 * they count in the descriptor shares (over_fd_share), and one starts only where
 * both shares have room; else the attempts in flight go on alone until one ends.
 */

static int attempt_fd_room(const struct proxy_conn *c)
{
  const struct proxy_sandbox *sb = c->sb;
  const struct proxy_ctx *ctx = sb->ctx;

  return (uint64_t)sb->nconns * 2 + sb->dial_fds < ctx->fd_share &&
         ctx->counters.conns_active * 2 + ctx->sandbox_fds + ctx->dial_fds <
           ctx->fd_conns_share;
}

static void attempt_closed(uv_handle_t *h)
{
  struct proxy_dial_attempt *a = container_of(h, struct proxy_dial_attempt, tcp);
  struct proxy_conn *c = a->c;

  free(a);
  c->handles--;
  if (c->state == CONN_CLOSING)
    conn_maybe_free(c);
}

/* Ends attempt a of c (its socket is closed now; its memory in the close callback). */
static void attempt_close(struct proxy_conn *c, struct proxy_dial_attempt *a)
{
  struct proxy_dial_attempt **pp;

  for (pp = &c->attempts; *pp != a; pp = &(*pp)->next)
    ;
  *pp = a->next;
  a->next = NULL;
  if (a->extra) {
    c->sb->dial_fds--;
    c->sb->ctx->dial_fds--;
  }
  uv_close((uv_handle_t *)&a->tcp, attempt_closed);
}

static void attempts_close(struct proxy_conn *c)
{
  while (c->attempts != NULL)
    attempt_close(c, c->attempts);
}

static void connect_cb(uv_connect_t *req, int status);
static int allowed_address(struct proxy_conn *c, const struct sockaddr *sa,
                           const char **reason);
static int still_allowed(struct proxy_conn *c, const struct sockaddr *sa,
                         const char **reason);

/* Dials ai. 0: the attempt is in flight; 1: it failed at once (logged; try the next
 * address); else a negative error of the proxy's own (memory, descriptors). */
static int attempt_start(struct proxy_conn *c, const struct addrinfo *ai)
{
  struct proxy_dial_attempt *a;
  struct sockaddr_storage ss;
  const char *reason;
  int r;

  memset(&ss, 0, sizeof(ss));
  memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
  if (ss.ss_family == AF_INET)
    ((struct sockaddr_in *)&ss)->sin_port = htons(c->dial_port);
  else
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons(c->dial_port);
  /* filter_addresses kept it, but a config swapped since may deny it. */
  if (!still_allowed(c, ai->ai_addr, &reason)) {
    log_debug("conn %llu: %s:%u: an address the config no longer allows is skipped",
              (unsigned long long)c->id, c->dial_host, c->dial_port);
    return 1;
  }
  a = calloc(1, sizeof(*a));
  if (a == NULL)
    return UV_ENOMEM;
  a->ss = ss;
  r = uv_tcp_init(c->sb->ctx->loop, &a->tcp);
  if (r != 0) {
    free(a);
    return r;
  }
  a->c = c;
  a->tcp.data = c;
  a->req.data = a;
  uv_ip_name((const struct sockaddr *)&ss, a->addr, sizeof(a->addr));
  c->handles++;
  if (c->attempts != NULL) {
    a->extra = 1;
    c->sb->dial_fds++;
    c->sb->ctx->dial_fds++;
  }
  a->next = c->attempts;
  c->attempts = a;
  r = uv_tcp_connect(&a->req, &a->tcp, (const struct sockaddr *)&ss, connect_cb);
  if (r != 0) {
    log_debug("conn %llu: connect to %s:%u at %s failed: %s", (unsigned long long)c->id,
              c->dial_host, c->dial_port, a->addr, uv_strerror(r));
    attempt_close(c, a);
    return 1;
  }
  return 0;
}

/*
 * Dials the next address beside the attempts in flight (the first, when there are
 * none), if the descriptor shares have room, and arms the timer: for the attempt
 * delay while addresses are left, else for the rest of the dial. With no attempt in
 * flight and none started, the dial fails.
 */
static void race_next(struct proxy_conn *c)
{
  uint64_t left;
  int r = 1;

  c->state = CONN_CONNECT;
  while (c->ai_next != NULL && (c->attempts == NULL || attempt_fd_room(c))) {
    const struct addrinfo *ai = c->ai_next;

    c->ai_next = ai->ai_next;
    r = attempt_start(c, ai);
    if (r <= 0)
      break;
  }
  if (c->attempts == NULL) {
    dial_fail(c, r < 0 ? r : UV_ECONNREFUSED, "upstream_unreachable");
    return;
  }
  left = dial_time_left(c);
  proxy_conn_arm_timer(c, c->ai_next != NULL && left > ATTEMPT_DELAY_MS ? ATTEMPT_DELAY_MS
                                                                         : left);
}

/* Opens the connected socket of attempt a as c->up.tcp. 0 or a negative error. */
static int attempt_adopt(struct proxy_conn *c, struct proxy_dial_attempt *a)
{
  if (c->up.open || c->up.closing)
    return UV_EBUSY; /* cannot happen: a dial starts once the upstream has closed */
  return up_open_dup(c, (uv_handle_t *)&a->tcp);
}

static void connect_cb(uv_connect_t *req, int status)
{
  struct proxy_dial_attempt *a = req->data;
  struct proxy_conn *c = a->c;
  const char *reason;
  int r;

  /* Closed: the race was won by another, or the dial ended. */
  if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)&a->tcp))
    return;
  if (c->state != CONN_CONNECT) {
    attempt_close(c, a);
    return;
  }
  if (status < 0) {
    log_debug("conn %llu: connect to %s:%u at %s failed: %s", (unsigned long long)c->id,
              c->dial_host, c->dial_port, a->addr, uv_strerror(status));
    attempt_close(c, a);
    race_next(c);
    return;
  }
  /* Allowed when it was dialed, but a config swapped while it connected (a relay's
   * swap checks only a connected upstream's address) may deny it now. */
  if (!still_allowed(c, (const struct sockaddr *)&a->ss, &reason)) {
    log_debug("conn %llu: connected to %s:%u at %s, which the config no longer allows",
              (unsigned long long)c->id, c->dial_host, c->dial_port, a->addr);
    dial_fail(c, UV_EACCES, "config_changed");
    return;
  }
  r = attempt_adopt(c, a);
  attempts_close(c);
  if (r != 0) {
    log_warn("conn %llu: connected to %s:%u at %s, but cannot keep the socket: %s",
             (unsigned long long)c->id, c->dial_host, c->dial_port, a->addr,
             uv_strerror(r));
    dial_fail(c, r, "upstream_unreachable");
    return;
  }
  uv_tcp_nodelay(&c->up.tcp, 1);
  if (c->intercept_tls) {
    /* The handshake has what is left of the dial's time. */
    proxy_conn_arm_timer(c, dial_time_left(c));
    c->state = CONN_TLS_UP;
    proxy_tls_client_start(c, up_ready);
    return;
  }
  dial_done(c);
}

/* An upstream handle's close completed: its connection, or NULL when that was
 * closing too (and may now be freed). */
static struct proxy_conn *up_handle_gone(uv_handle_t *h)
{
  struct proxy_conn *c = h->data;

  c->handles--;
  c->up.closing = 0;
  if (c->state == CONN_CLOSING) {
    conn_maybe_free(c);
    return NULL;
  }
  return c;
}

/*
 * 1 if c would dial a sandbox's credential callback by its name: its host as the
 * callback URL names it (the sandbox's own name, or a dns.remap target) and its port,
 * whichever sandbox's config has it (callbacks.c lists them all, the config being
 * swapped in included), or 1 when they cannot be listed. A callback answers with any
 * sandbox's credentials; rules_check_resolved and other_callback refuse its address
 * when the URL gives one (or localhost), this its name whatever that resolves to.
 * Both names are normalized (rules_normalize_host: lowercase, no trailing dot).
 */
static int dials_callback_name(const struct proxy_conn *c)
{
  return proxy_callbacks_named(c->sb->ctx, c->dial_host, c->dial_port) != 0;
}

/* 0 if c may dial sa for its callbacks' sake, else -1 with *reason: sa is a sandbox's
 * callback (rules_check_resolved has refused c's own already). */
static int other_callback(struct proxy_conn *c, const struct sockaddr *sa, unsigned flags,
                          const char **reason)
{
  int r = proxy_callbacks_reached(c->sb->ctx, sa, c->dial_port, flags);

  if (r == 0)
    return 0;
  *reason = r > 0 ? "callback_endpoint" : "out_of_memory";
  c->entry[0] = '\0';
  return -1;
}

void proxy_conn_recheck_callbacks(struct proxy_conn *c, uint16_t port)
{
  struct sockaddr_storage ss;
  const char *reason = NULL;
  int len = sizeof(ss);
  unsigned flags = 0;

  /* An endpoint at another port than c dials cannot be what it reaches. A daemon has
   * every sandbox's connections: an attach must not cost a look at each of them. */
  if (c->state == CONN_CLOSING || (port != 0 && c->dial_port != port))
    return;
  /* A dial under way checks the addresses it has yet to connect to again
   * (still_allowed); one not begun checks them all (filter_addresses). */
  c->cfg_changes++;
  if (!c->up.connected || c->up.closing)
    return;
  if (dials_callback_name(c))
    reason = "callback_endpoint";
  else if (uv_tcp_getpeername(&c->up.tcp, (struct sockaddr *)&ss, &len) == 0) {
    /* The kernel is asked whether the address is the host's own (a netlink round trip)
     * only where the answer matters: a callback on loopback at this port. */
    if (proxy_callbacks_reached(c->sb->ctx, (const struct sockaddr *)&ss, c->dial_port,
                                RULES_RESOLVED_HOST_LOCAL) > 0)
      flags = host_local(c->sb->ctx, (const struct sockaddr *)&ss);
    (void)other_callback(c, (const struct sockaddr *)&ss, flags, &reason);
  }
  if (reason == NULL)
    return;
  if (c->state == CONN_POOLED) {
    proxy_conn_close(c, 0, NULL);
    return;
  }
  log_info("sandbox %s conn %llu: its upstream %s:%u is a credential callback's now; closed",
           c->sb->name, (unsigned long long)c->id, c->dial_host, c->dial_port);
  proxy_conn_close(c, 1, reason);
}

/*
 * An HTTP engine's dial is for the request in flight, under the config it was decided
 * by (c->cfg, which its next request replaces); a config swapped since refuses the
 * request where it refuses the address (proxy_conn_config_swapped), the address it is
 * about to be sent to as well as one it is at.
 */
static int swapped_address_allowed(struct proxy_conn *c, const struct sockaddr *sa,
                                   unsigned flags, struct rules_decision *d)
{
  if (c->http == NULL || c->action == RULES_BYPASS || c->sb->config == c->cfg)
    return 1;
  return rules_check_resolved(c->sb->config, sa, c->dial_port, flags, d);
}

static int allowed_address(struct proxy_conn *c, const struct sockaddr *sa,
                           const char **reason)
{
  unsigned flags;
  struct rules_decision d;

  if (dials_callback_name(c)) {
    *reason = "callback_endpoint";
    c->entry[0] = '\0';
    return 0;
  }
  flags = target_flags(c, sa);

  /* Requests read one by one are held to request-level entries on addresses
   * (check_address in http.c); bytes relayed opaquely cannot be. A probe carries
   * nothing until one side speaks: its client's bytes are judged anew, and a server
   * that speaks first at such an address is refused (probe_address_inspected). */
  if ((c->http != NULL && c->action != RULES_BYPASS) || c->probing)
    flags |= RULES_RESOLVED_INSPECTED;
  /* Then the request waiting for this dial, if the address is its to be sent to. */
  if (rules_check_resolved(c->cfg, sa, c->dial_port, flags, &d) &&
      proxy_http_address_allowed(c, sa, c->dial_port, &d) &&
      swapped_address_allowed(c, sa, flags, &d))
    return other_callback(c, sa, flags, reason) == 0;
  *reason = d.reason;
  memcpy(c->entry, d.entry, sizeof(c->entry));
  return 0;
}

/*
 * An address filter_addresses kept, checked again before it is dialed and once it has
 * connected only if c's config was replaced since (a swap, a request's): the check
 * asks the kernel, and nothing else it reads changes during a dial.
 */
static int still_allowed(struct proxy_conn *c, const struct sockaddr *sa,
                         const char **reason)
{
  return c->cfg_changes == c->cfg_changes_filtered || allowed_address(c, sa, reason);
}

/*
 * Keeps the addresses the policy allows to be dialed, at most MAX_DIAL_ATTEMPTS, the
 * two families taken in turn from the first one's (RFC 8305 section 4): getaddrinfo
 * sorts every IPv6 address before every IPv4 one, so a name with four AAAA records
 * would otherwise never have its IPv4 addresses tried, however broken the host's
 * IPv6 path.
 */
static const char *filter_addresses(struct proxy_conn *c)
{
  struct addrinfo *fam[2][MAX_DIAL_ATTEMPTS], **pp, *ai, *next;
  const char *reason = "upstream_unresolvable";
  size_t n[2] = { 0, 0 }, taken[2] = { 0, 0 }, kept = 0;
  int first = -1, f;

  c->cfg_changes_filtered = c->cfg_changes;
  for (ai = c->ai; ai != NULL; ai = next) {
    next = ai->ai_next;
    ai->ai_next = NULL;
    f = ai->ai_family == AF_INET6;
    if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
        n[f] < MAX_DIAL_ATTEMPTS && allowed_address(c, ai->ai_addr, &reason)) {
      if (first < 0)
        first = f;
      fam[f][n[f]++] = ai;
      continue;
    }
    uv_freeaddrinfo(ai);
  }
  pp = &c->ai;
  *pp = NULL;
  for (f = first; f >= 0 && taken[0] + taken[1] < n[0] + n[1]; f = !f) {
    if (taken[f] == n[f])
      continue;
    ai = fam[f][taken[f]++];
    if (kept == MAX_DIAL_ATTEMPTS) {
      uv_freeaddrinfo(ai);
      continue;
    }
    kept++;
    *pp = ai;
    pp = &ai->ai_next;
  }
  c->ai_next = c->ai;
  return kept > 0 ? NULL : reason;
}

/*
 * Resolution runs getaddrinfo on libuv's thread pool, which runs at most half of its
 * threads' worth at once for the whole process (2 of the default 4; `serve` sizes the
 * pool at 32), and a name whose servers never answer holds its slot for the
 * resolver's whole timeout. A sandbox has at most limits.resolve_max resolutions in
 * the pool (one in a daemon); its other connections wait in its queue, in order,
 * under their connect timeout, so that one sandbox cannot leave the others' names
 * unresolved, and it takes as many sandboxes as the pool has slots to do so.
 */

static int resolve_room(const struct proxy_sandbox *sb)
{
  return sb->resolving == 0 || sb->resolving < sb->limits.resolve_max;
}

static void resolve_enqueue(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;

  c->resolve_next = NULL;
  c->resolve_prev = sb->resolve_tail;
  if (sb->resolve_tail != NULL)
    sb->resolve_tail->resolve_next = c;
  else
    sb->resolve_head = c;
  sb->resolve_tail = c;
  c->resolve_queued = 1;
}

static void resolve_unqueue(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;

  if (!c->resolve_queued)
    return;
  if (c->resolve_prev != NULL)
    c->resolve_prev->resolve_next = c->resolve_next;
  else
    sb->resolve_head = c->resolve_next;
  if (c->resolve_next != NULL)
    c->resolve_next->resolve_prev = c->resolve_prev;
  else
    sb->resolve_tail = c->resolve_prev;
  c->resolve_next = c->resolve_prev = NULL;
  c->resolve_queued = 0;
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

/* Starts resolving c->dial_host in the pool; on failure the dial fails. */
static void resolve_start(struct proxy_conn *c)
{
  struct addrinfo hints;
  uv_getaddrinfo_t *req;
  char abs[RULES_MAX_NAME_LEN + 2];
  int r;

  req = malloc(sizeof(*req));
  if (req == NULL) {
    dial_fail(c, UV_ENOMEM, "out_of_memory");
    return;
  }
  req->data = c;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  /* A name from the sandbox is resolved as absolute: a single label must not pick
   * up the host's search domains. A remap target is the operator's, used as is. */
  if (!c->remapped && snprintf(abs, sizeof(abs), "%s.", c->dial_host) < (int)sizeof(abs))
    r = uv_getaddrinfo(c->sb->ctx->loop, req, gai_cb, abs, NULL, &hints);
  else
    r = uv_getaddrinfo(c->sb->ctx->loop, req, gai_cb, c->dial_host, NULL, &hints);
  if (r != 0) {
    free(req);
    dial_fail(c, r, "upstream_unresolvable");
    return;
  }
  c->gai = req;
  c->ops++;
  c->sb->resolving++;
}

/* Starts the queued resolutions of sb that its share of the pool has room for. */
static void resolve_next(struct proxy_sandbox *sb)
{
  struct proxy_conn *c;

  while (sb->resolve_head != NULL && resolve_room(sb)) {
    c = sb->resolve_head;
    resolve_unqueue(c);
    /* Unless its dial timed out while it waited (it answered, or lingers). */
    if (c->state == CONN_RESOLVE && c->ready_cb != NULL)
      resolve_start(c);
  }
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
  struct proxy_conn *c = req->data;
  const char *reason;

  free(req);
  if (c == NULL) { /* let go by a stop (drop_lookup) */
    if (res != NULL)
      uv_freeaddrinfo(res);
    proxy_lookup_orphan_done();
    return;
  }
  c->gai = NULL;
  c->ops--;
  c->sb->resolving--;
  resolve_next(c->sb);
  /* Closing, or the dial timed out while the resolver worked (glibc retrying a
   * silent server, a busy thread pool) and the connection moved on: the answer is
   * too late to use. */
  if (c->state != CONN_RESOLVE) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    if (c->state == CONN_CLOSING)
      conn_maybe_free(c);
    return;
  }
  if (status < 0) {
    log_debug("conn %llu: resolving %s: %s", (unsigned long long)c->id, c->dial_host,
              uv_strerror(status));
    dial_fail(c, status, "upstream_unresolvable");
    return;
  }
  c->ai = res;
  reason = filter_addresses(c);
  if (reason != NULL) {
    dial_fail(c, UV_EACCES, reason);
    return;
  }
  race_next(c);
}

static int is_localhost_name(const char *name)
{
  size_t len = strlen(name);

  return strcmp(name, "localhost") == 0 ||
         (len > 10 && strcmp(name + len - 10, ".localhost") == 0);
}

/* Builds a one-entry addrinfo list for a literal address (no resolution). */
static int literal_addrinfo(struct proxy_conn *c, const struct sockaddr *sa)
{
  struct addrinfo hints, *res = NULL;
  char host[INET6_ADDRSTRLEN];
  int r;

  if (sa->sa_family == AF_INET)
    uv_ip4_name((const struct sockaddr_in *)sa, host, sizeof(host));
  else
    uv_ip6_name((const struct sockaddr_in6 *)sa, host, sizeof(host));
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = sa->sa_family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  r = getaddrinfo(host, NULL, &hints, &res);
  if (r != 0)
    return -EINVAL;
  c->ai = res;
  return 0;
}

/* What c dials: the original destination of an address-only flow, else its name or
 * the name's dns.remap target (never the address the sandbox used: invariant I2). */
static void set_dial_target(struct proxy_conn *c)
{
  if (c->name_src == NAME_NONE || c->name_src == NAME_ADDR) {
    c->remapped = 0;
    c->dial_port = c->port;
    uv_ip_name((const struct sockaddr *)&c->dst, c->dial_host, sizeof(c->dial_host));
    return;
  }
  c->remapped = rules_remap(c->cfg, c->name, c->port, c->dial_host, sizeof(c->dial_host),
                            &c->dial_port);
  if (!c->remapped) {
    memcpy(c->dial_host, c->name, strlen(c->name) + 1);
    c->dial_port = c->port;
  }
}

void proxy_conn_dial(struct proxy_conn *c, conn_ready_cb cb)
{
  struct sockaddr_storage lit;
  const char *reason;

  /* Still queued from a dial that timed out: this one takes its own turn. */
  resolve_unqueue(c);
  c->ready_cb = cb;
  c->state = CONN_RESOLVE;
  proxy_end_want_read(&c->down, 0);
  proxy_conn_arm_timer(c, c->sb->limits.connect_ms);
  c->dial_deadline_ms = uv_now(c->sb->ctx->loop) + c->sb->limits.connect_ms;
  c->dial_late = 0;
  if (c->up.closing) {
    /* The previous upstream's handle is still closing; its callback dials. */
    c->dial_deferred = 1;
    return;
  }
  if (c->ai != NULL) {
    /* A connection dials again after its upstream went away between requests. */
    uv_freeaddrinfo(c->ai);
    c->ai = NULL;
    c->ai_next = NULL;
  }

  set_dial_target(c);
  if (c->name_src == NAME_NONE || c->name_src == NAME_ADDR) {
    /* An address-only flow: dial the original destination, if policy allows. */
    if (literal_addrinfo(c, (const struct sockaddr *)&c->dst) != 0) {
      dial_fail(c, UV_EINVAL, "upstream_unresolvable");
      return;
    }
  } else {
    /* RFC 6761: localhost names are the host's own loopback, which the proxy never
     * dials for a sandbox; refuse before asking any resolver about them. */
    if (!c->remapped && is_localhost_name(c->dial_host)) {
      dial_fail(c, UV_EACCES, "blocked_address");
      return;
    }
    memset(&lit, 0, sizeof(lit));
    if (uv_ip4_addr(c->dial_host, 0, (struct sockaddr_in *)&lit) == 0 ||
        uv_ip6_addr(c->dial_host, 0, (struct sockaddr_in6 *)&lit) == 0) {
      if (literal_addrinfo(c, (const struct sockaddr *)&lit) != 0) {
        dial_fail(c, UV_EINVAL, "upstream_unresolvable");
        return;
      }
    } else {
      if (resolve_room(c->sb))
        resolve_start(c);
      else
        resolve_enqueue(c);
      return;
    }
  }
  reason = filter_addresses(c);
  if (reason != NULL) {
    dial_fail(c, UV_EACCES, reason);
    return;
  }
  race_next(c);
}

/* ---- accept ---- */

/* Recovers where the sandbox meant to connect. Returns 0 or a negative errno. */
static int original_destination(struct proxy_conn *c, int transparent)
{
  struct sockaddr_storage local;
  socklen_t len = sizeof(c->dst);
  int namelen = sizeof(local);
  uv_os_fd_t fd;
  int r;

  r = uv_fileno((uv_handle_t *)&c->down.tcp, &fd);
  if (r != 0)
    return -EBADF;
  if (uv_tcp_getsockname(&c->down.tcp, (struct sockaddr *)&local, &namelen) != 0)
    return -EBADF;
  memset(&c->dst, 0, sizeof(c->dst));
  if (transparent) {
    /* TPROXY keeps the original destination as the local address. */
    memcpy(&c->dst, &local, sizeof(local));
  } else if (local.ss_family == AF_INET) {
    /* Conntrack lives in the sandbox's namespace: ask the accepted socket. */
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &c->dst, &len) != 0)
      return -errno;
  } else {
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &c->dst, &len) != 0)
      return -errno;
  }
  /* A connection that was not redirected (someone connecting to the listener
   * itself) has the listener as its "original" destination: refuse it, or the proxy
   * would dial itself. (Under TPROXY the local address is the destination.) */
  if (!transparent && c->dst.ss_family == local.ss_family) {
    if (local.ss_family == AF_INET) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)&c->dst;
      const struct sockaddr_in *b = (const struct sockaddr_in *)&local;

      if (a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr)
        return -ELOOP;
    } else {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&c->dst;
      const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)&local;

      if (a->sin6_port == b->sin6_port &&
          memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0)
        return -ELOOP;
    }
  }
  /* Present v4-mapped IPv6 destinations as IPv4, as the rules compare them. */
  if (c->dst.ss_family == AF_INET6) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&c->dst;

    if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
      struct sockaddr_in a4;

      memset(&a4, 0, sizeof(a4));
      a4.sin_family = AF_INET;
      a4.sin_port = a6->sin6_port;
      memcpy(&a4.sin_addr, &a6->sin6_addr.s6_addr[12], 4);
      memset(&c->dst, 0, sizeof(c->dst));
      memcpy(&c->dst, &a4, sizeof(a4));
    }
  }
  if (c->dst.ss_family == AF_INET) {
    c->port = ntohs(((const struct sockaddr_in *)&c->dst)->sin_port);
  } else if (c->dst.ss_family == AF_INET6) {
    c->port = ntohs(((const struct sockaddr_in6 *)&c->dst)->sin6_port);
  } else {
    return -EAFNOSUPPORT;
  }
  if (c->port == c->sb->port &&
      ((c->dst.ss_family == AF_INET &&
        (ntohl(((const struct sockaddr_in *)&c->dst)->sin_addr.s_addr) >> 24) == 127) ||
       (c->dst.ss_family == AF_INET6 &&
        IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&c->dst)->sin6_addr))))
    return -ELOOP;
  return 0;
}

static void free_handle(uv_handle_t *h)
{
  free(h);
}

/* A connection object of sb in state, in its list and counted, with its timer. */
static struct proxy_conn *conn_new(struct proxy_sandbox *sb, enum conn_state state)
{
  struct proxy_ctx *ctx = sb->ctx;
  struct proxy_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return NULL;
  c->sb = sb;
  c->id = ++ctx->next_conn_id;
  c->down.conn = c;
  c->up.conn = c;
  c->state = state;
  c->start_ms = uv_now(ctx->loop);
  c->last_active_ms = c->start_ms;
  c->next = sb->conns;
  if (sb->conns != NULL)
    sb->conns->prev = c;
  sb->conns = c;
  sb->nconns++;
  ctx->counters.conns_active++;
  if (ctx->counters.conns_active > ctx->conns_peak)
    ctx->conns_peak = ctx->counters.conns_active;
  uv_timer_init(ctx->loop, &c->timer);
  c->timer.data = c;
  c->handles++;
  return c;
}

/* Out of memory: accept and close at once. libuv stops watching a listener until its
 * pending connection is accepted, so a connection left unaccepted would stall every
 * later one. */
static void reject_unaccepted(struct proxy_listener *l)
{
  uv_tcp_t *tmp = malloc(sizeof(*tmp));

  log_warn("sandbox %s: out of memory, connection dropped", l->sb->name);
  l->sb->ctx->counters.conns_refused++;
  if (tmp == NULL || uv_tcp_init(l->sb->ctx->loop, tmp) != 0) {
    free(tmp);
    return;
  }
  if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)tmp) != 0 ||
      uv_tcp_close_reset(tmp, free_handle) != 0)
    uv_close((uv_handle_t *)tmp, free_handle);
}

/*
 * 1 if sb's connections hold their share of the descriptors the process may open
 * (two each: the sandbox's side and the upstream's, and one for each connect attempt
 * racing beside a connection's first; half of them in a daemon).
 * --max-conns is per sandbox and sandboxes are many; without this, one sandbox could
 * take every descriptor, and accept would fail for every other sandbox and for the
 * control socket.
 */
static int over_fd_share(const struct proxy_sandbox *sb)
{
  return (uint64_t)sb->nconns * 2 + sb->dial_fds > sb->ctx->fd_share;
}

/*
 * 1 if all sandboxes' connections together hold their share (three quarters in a
 * daemon): two sandboxes at half each would otherwise leave the control socket,
 * callbacks and DNS over TCP without a descriptor, failing without a log line
 * (libuv closes what it cannot accept). The sandboxes' own listeners and responder
 * sockets count against the share too: thousands of sandboxes would otherwise eat
 * into the daemon's quarter.
 */
static int over_fd_conns_share(const struct proxy_ctx *ctx)
{
  return ctx->counters.conns_active * 2 + ctx->sandbox_fds + ctx->dial_fds >
         ctx->fd_conns_share;
}

/* Logs a refusal at a descriptor share: once per sandbox for its own share; for the
 * daemon's, at most every PROXY_FD_BUDGET_LOG_MS while refusals go on (a count of
 * refusals or runs would stay silent through a second flood, or speak at every turn
 * of a flood at the boundary). */
static void log_fd_refusal(struct proxy_sandbox *sb, int daemon_wide)
{
  struct proxy_ctx *ctx = sb->ctx;

  if (daemon_wide) {
    uint64_t now = uv_now(ctx->loop);

    ctx->fd_conns_refused++;
    if (!proxy_log_due(&ctx->fd_conns_logged_ms, now, PROXY_FD_BUDGET_LOG_MS))
      return;
    log_warn("sandbox %s: connection refused: all sandboxes' %llu connections and "
             "%llu listening sockets hold the share (%llu) of the %llu file descriptors "
             "the process may open that they may use (%llu refused so far); the rest is "
             "kept for the control socket, callbacks and DNS: raise RLIMIT_NOFILE "
             "(LimitNOFILE=, ulimit -Hn) or lower --max-conns",
             sb->name, (unsigned long long)ctx->counters.conns_active,
             (unsigned long long)ctx->sandbox_fds, (unsigned long long)ctx->fd_conns_share,
             (unsigned long long)ctx->fd_limit,
             (unsigned long long)ctx->fd_conns_refused);
    return;
  }
  if (sb->fd_share_warned)
    return;
  sb->fd_share_warned = 1;
  log_warn("sandbox %s: %u connections hold its share (%llu) of the %llu file "
           "descriptors the process may open; its further connections are refused: "
           "raise RLIMIT_NOFILE (LimitNOFILE=, ulimit -Hn) or lower --max-conns",
           sb->name, sb->nconns, (unsigned long long)ctx->fd_share,
           (unsigned long long)ctx->fd_limit);
}

void proxy_conn_accept(struct proxy_listener *l)
{
  struct proxy_sandbox *sb = l->sb;
  struct proxy_ctx *ctx = sb->ctx;
  struct proxy_conn *c;
  int over_own, over_all, r;

  c = conn_new(sb, CONN_SNIFF);
  if (c == NULL) {
    reject_unaccepted(l);
    return;
  }
  uv_tcp_init(ctx->loop, &c->down.tcp);
  c->down.tcp.data = c;
  c->down.open = 1;
  c->handles++;
  c->cfg = rules_config_ref(sb->config);

  r = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->down.tcp);
  if (r != 0) {
    proxy_conn_close(c, 0, "accept_failed");
    return;
  }
  c->down.connected = 1;
  ctx->counters.conns_accepted++;
  /* Pooled upstreams count as connections, but give way to live ones: past the
   * sandbox's own caps one of its own is closed below to make room; past the
   * daemon's share, the oldest of any sandbox's (an idle upstream costs its sandbox
   * a new handshake at most). Without one to close, the connection is refused. */
  over_own = over_fd_share(sb);
  over_all = over_fd_conns_share(ctx);
  if (sb->closing || sb->nconns - sb->npool > sb->limits.max_conns ||
      (over_own && sb->npool == 0) || (over_all && ctx->npool == 0)) {
    ctx->counters.conns_refused++;
    if (!sb->closing && sb->nconns - sb->npool <= sb->limits.max_conns)
      log_fd_refusal(sb, !over_own);
    proxy_conn_close(c, 1, sb->closing ? "sandbox_detaching" : "too_many_connections");
    return;
  }
  if (sb->nconns > sb->limits.max_conns || over_own) {
    pool_evict_oldest(sb);
    ctx->counters.upstream_evicted++;
  } else if (over_all) {
    proxy_conn_close(ctx->pool_oldest, 0, NULL);
    ctx->counters.upstream_evicted++;
  }
  r = original_destination(c, l->transparent);
  if (r != 0) {
    ctx->counters.conns_refused++;
    proxy_conn_close(c, 1, r == -ELOOP ? "loop" : "no_original_destination");
    return;
  }
  uv_tcp_nodelay(&c->down.tcp, 1);
  if (c->dst.ss_family == AF_INET) {
    uint32_t a = ntohl(((const struct sockaddr_in *)&c->dst)->sin_addr.s_addr);

    if (proxy_dns_is_synthetic(a)) {
      const char *name = proxy_dns_table_lookup(sb->dns_table, a, c->start_ms);

      if (name == NULL) {
        /* Never handed out, recycled, or handed out before the daemon restarted
         * (the table is not kept, but placement is stable): the name behind it is
         * unknown until the client names one (SNI, Host), which must be the name
         * this address is for (proxy_conn_set_name). Denied if none is named. */
        c->synth_unknown = 1;
      } else {
        memcpy(c->name, name, strlen(name) + 1);
        c->name_src = NAME_DNS;
      }
    }
  }
  proxy_end_want_read(&c->down, 1);
  proxy_conn_arm_timer(c, client_speaks_first(c) ? sb->limits.idle_ms
                                                 : sb->limits.server_first_ms);
  if (ctx->audit != NULL && ctx->limits.audit_interval_ms > 0)
    progress_append(c, c->start_ms);
}

/* ---- the upstream pool ---- */

/*
 * An upstream socket cannot move between connection objects as a libuv handle (the
 * loop holds pointers into it), so it moves as a file descriptor: a duplicate is
 * opened as the other object's handle, the old handle is closed (closing one of two
 * descriptors of a socket leaves the socket open), and the TLS session follows.
 * Parked connections are connection objects in state CONN_POOLED: they are in the
 * sandbox's list of connections, so detaching a sandbox closes them with the rest.
 */

static void up_closed(uv_handle_t *h)
{
  struct proxy_conn *c = up_handle_gone(h);

  if (c != NULL && c->dial_deferred) {
    c->dial_deferred = 0;
    /* Unless the connect timeout answered meanwhile. */
    if (c->state == CONN_RESOLVE && c->ready_cb != NULL)
      proxy_conn_dial(c, c->ready_cb);
  }
}

void proxy_conn_close_upstream(struct proxy_conn *c)
{
  if (!c->up.open)
    return;
  /* Waiting for its handshake's read: the connection leaves the queue with it. */
  if (c->park_end == &c->up)
    proxy_setup_unpark(c);
  c->up.granted = 0;
  proxy_tls_free(c->up.tls);
  c->up.tls = NULL;
  c->up.open = 0;
  c->up.connected = 0;
  c->up.reading = 0;
  c->up.want_read = 0;
  c->up.eof = 0;
  c->up.shut = 0;
  c->up.closing = 1;
  uv_close((uv_handle_t *)&c->up.tcp, up_closed);
}

/*
 * Opens a duplicate of the connected socket of handle `from` as c->up.tcp: libuv
 * cannot move a handle to another connection (the pool) or turn an attempt's into
 * the connection's own (racing). 0 or a negative error; on error c->up is closing if
 * it was opened.
 */
static int up_open_dup(struct proxy_conn *c, uv_handle_t *from)
{
  uv_os_fd_t fd;
  int nfd, r;

  if (uv_fileno(from, &fd) != 0)
    return UV_EBADF;
  nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0)
    return -errno;
  r = uv_tcp_init(c->sb->ctx->loop, &c->up.tcp);
  if (r != 0) {
    close(nfd);
    return r;
  }
  c->up.tcp.data = c;
  c->handles++;
  r = uv_tcp_open(&c->up.tcp, nfd);
  if (r != 0) {
    close(nfd);
    c->up.closing = 1;
    uv_close((uv_handle_t *)&c->up.tcp, up_closed);
    return r;
  }
  c->up.open = 1;
  c->up.connected = 1;
  return 0;
}

/* Moves from's upstream socket and TLS session to to->up. 0 or a negative error;
 * on error from is unchanged. */
static int move_upstream(struct proxy_conn *from, struct proxy_conn *to)
{
  int r = up_open_dup(to, (uv_handle_t *)&from->up.tcp);

  if (r != 0)
    return r;
  to->up.eof = 0;
  to->up.shut = 0;
  to->up.reading = 0;
  to->up.want_read = 0;
  to->up.tls = from->up.tls;
  if (to->up.tls != NULL)
    proxy_tls_move(to->up.tls, &to->up);
  from->up.tls = NULL;
  proxy_conn_close_upstream(from);
  return 0;
}

static void pool_remove(struct proxy_conn *p)
{
  struct proxy_sandbox *sb = p->sb;
  struct proxy_ctx *ctx = sb->ctx;

  if (p->pool_prev != NULL)
    p->pool_prev->pool_next = p->pool_next;
  else if (sb->pool == p)
    sb->pool = p->pool_next;
  else
    return; /* not in the pool */
  if (p->pool_next != NULL)
    p->pool_next->pool_prev = p->pool_prev;
  p->pool_next = p->pool_prev = NULL;
  sb->npool--;
  if (p->all_prev != NULL)
    p->all_prev->all_next = p->all_next;
  else
    ctx->pool_newest = p->all_next;
  if (p->all_next != NULL)
    p->all_next->all_prev = p->all_prev;
  else
    ctx->pool_oldest = p->all_prev;
  p->all_next = p->all_prev = NULL;
  ctx->npool--;
}

/* 1 if pooled p can carry c's next request: same sandbox (the pool is per sandbox),
 * name (its TLS was verified for it), port, dial target and config. */
static int pool_match(const struct proxy_conn *p, const struct proxy_conn *c)
{
  return p->intercept_tls == c->intercept_tls && p->port == c->port &&
         p->dial_port == c->dial_port && p->cfg == c->cfg &&
         strcmp(p->name, c->name) == 0 && strcmp(p->dial_host, c->dial_host) == 0;
}

int proxy_conn_upstream_fresh(struct proxy_end *e)
{
  uv_os_fd_t fd;
  ssize_t n;
  char b;

  if (!e->open || !e->connected || e->closing || e->eof || e->shut)
    return 0;
  if (e->tls != NULL && !proxy_tls_idle(e->tls))
    return 0;
  if (uv_fileno((uv_handle_t *)&e->tcp, &fd) != 0)
    return 0;
  /* Only "nothing to read yet" is fresh: 0 is a FIN, an error a reset, a byte
   * something the upstream should not have sent. */
  n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int proxy_conn_down_unread(const struct proxy_conn *c)
{
  uv_os_fd_t fd;
  ssize_t n;
  char b;

  if (!c->down.open || c->down.eof)
    return 0;
  /* Read already, not yet decrypted: a TLS read that ended a resumed handshake
   * often carries the first request right behind the client's Finished (t->rx), and
   * a record may have come in part. */
  if (c->down.tls != NULL && proxy_tls_buffered(c->down.tls))
    return 1;
  if (uv_fileno((const uv_handle_t *)&c->down.tcp, &fd) != 0)
    return 1;
  n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

int proxy_conn_unused(const struct proxy_conn *c)
{
  return c->state == CONN_SNIFF && c->pending_len == 0 && !c->down.eof &&
         !proxy_conn_down_unread(c);
}

int proxy_conn_park_upstream(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;
  struct proxy_ctx *ctx = sb->ctx;
  struct proxy_conn *p, *q, *oldest = NULL, *last = NULL;
  uint64_t quiet = uv_now(ctx->loop) - c->last_active_ms;
  unsigned same = 0;

  if (sb->closing || sb->limits.pool_max == 0 || sb->limits.pool_max_per_dest == 0 ||
      c->name_src == NAME_NONE || !c->up.open || !c->up.connected || c->up.closing ||
      c->up.eof || c->up.shut || c->up.queued > 0 ||
      (c->up.tls != NULL && !proxy_tls_idle(c->up.tls)) || quiet >= sb->limits.pool_idle_ms)
    return -EAGAIN;
  p = conn_new(sb, CONN_POOLED);
  if (p == NULL)
    return -EAGAIN;
  p->kind = c->kind;
  p->action = c->action;
  p->intercept_tls = c->intercept_tls;
  p->port = c->port;
  p->dial_port = c->dial_port;
  p->remapped = c->remapped;
  p->name_src = c->name_src;
  memcpy(p->name, c->name, sizeof(p->name));
  memcpy(p->dial_host, c->dial_host, sizeof(p->dial_host));
  p->cfg = rules_config_ref(c->cfg);
  p->audited = 1;
  if (move_upstream(c, p) != 0) {
    proxy_conn_close(p, 0, NULL);
    return -EAGAIN;
  }

  /* Bounds: the oldest entry for this destination, then the oldest of all, make room. */
  for (q = sb->pool; q != NULL; q = q->pool_next) {
    if (pool_match(q, p)) {
      same++;
      oldest = q;
    }
    last = q;
  }
  if (same >= sb->limits.pool_max_per_dest && oldest != NULL) {
    if (oldest == last)
      last = oldest->pool_prev;
    proxy_conn_close(oldest, 0, NULL);
  }
  if (sb->npool >= sb->limits.pool_max && last != NULL)
    proxy_conn_close(last, 0, NULL);

  p->pool_next = sb->pool;
  if (sb->pool != NULL)
    sb->pool->pool_prev = p;
  sb->pool = p;
  sb->npool++;
  p->all_next = ctx->pool_newest;
  if (ctx->pool_newest != NULL)
    ctx->pool_newest->all_prev = p;
  else
    ctx->pool_oldest = p;
  ctx->pool_newest = p;
  ctx->npool++;
  ctx->counters.upstream_parked++;
  /* Its idle time counts from the last byte, not from parking: servers time out
   * keep-alive connections from their last request. */
  proxy_conn_arm_timer(p, sb->limits.pool_idle_ms - quiet);
  /* Watch it: a close, an alert or any byte from the upstream ends the entry. */
  proxy_end_want_read(&p->up, 1);
  return 0;
}

void proxy_conn_release_upstream(struct proxy_conn *c)
{
  if (proxy_conn_park_upstream(c) != 0)
    proxy_conn_close_upstream(c);
}

int proxy_conn_reuse_upstream(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;
  struct proxy_conn *p, *next;

  if (sb->pool == NULL || c->name_src == NAME_NONE || c->up.open || c->up.closing)
    return -ENOENT;
  set_dial_target(c);
  for (p = next = sb->pool; p != NULL; p = next) {
    next = p->pool_next;
    if (!pool_match(p, c))
      continue;
    if (!proxy_conn_upstream_fresh(&p->up)) {
      /* Ended or spoke up in this loop turn, before the pool read it. */
      proxy_conn_close(p, 0, NULL);
      continue;
    }
    if (move_upstream(p, c) != 0)
      return -ENOENT;
    proxy_conn_close(p, 0, NULL);
    sb->ctx->counters.upstream_reused++;
    return 0;
  }
  return -ENOENT;
}

static void pool_evict_oldest(struct proxy_sandbox *sb)
{
  struct proxy_conn *p = sb->pool;

  if (p == NULL)
    return;
  while (p->pool_next != NULL)
    p = p->pool_next;
  proxy_conn_close(p, 0, NULL);
}

void proxy_conn_pool_flush(struct proxy_sandbox *sb)
{
  while (sb->pool != NULL)
    proxy_conn_close(sb->pool, 0, NULL);
}
