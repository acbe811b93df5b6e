/*
 * The per-sandbox DNS responder: UDP and TCP (RFC 7766) on sockets created inside
 * the sandbox's namespace and served by the daemon's loop.
 *
 * What it answers (nothing is ever forwarded):
 *   - class IN, type A: an address from the synthetic table (TTL opts->answer_ttl);
 *     REFUSED when the table is full and no entry is idle long enough to recycle.
 *   - "localhost" and names under ".localhost" (RFC 6761 6.3): A 127.0.0.1, since
 *     loopback is never redirected and stays inside the sandbox.
 *   - any other type (AAAA included), or the root name: NODATA (NOERROR, no answer);
 *     IPv6 destinations are not synthesized, so clients fall back to IPv4.
 *   - names that must not resolve: NXDOMAIN. These are names under "invalid"
 *     (RFC 6761 6.4) and "onion" (RFC 7686), names whose last label is a number
 *     in inet_aton's sense (decimal, or 0x and hex digits): "10.1", "0x7f000001"
 *     and the like would turn into IP addresses when the proxy later dials the
 *     name, and no top-level domain is numeric; and names with a byte outside the
 *     host name syntax ("*.example", "a b", raw UTF-8), which no host has.
 *   - class other than IN: REFUSED.
 *   - opcode other than QUERY: NOTIMP; a query we do not support (several questions,
 *     answer or authority records, an additional record other than one OPT): FORMERR.
 *   - anything malformed (see proxy_dns_parse_query): no answer, counted as dropped.
 *     Over TCP the connection is closed as well, since a client that frames garbage
 *     cannot be resynchronized.
 *
 * UDP answers go out of the socket the query came in on, which is bound to the
 * address the client queried, so the source address matches. They are sent with
 * uv_udp_try_send; if the socket buffer is full the answer is dropped and the
 * client retries, as after any UDP loss.
 *
 * TCP: each connection may carry any number of length-prefixed queries, pipelined;
 * answers are written in order. A query longer than DNS_MAX_QUERY closes the
 * connection. At most opts->tcp_max_conns connections are served; a new one evicts
 * the one idle the longest, since DNS clients keep connections open long after their
 * last query and a new client is more likely to be active. A connection idle for
 * opts->tcp_idle_ms is closed (one timer for all of them, armed for the connection
 * idle the longest). Answers the socket does not take at once wait in write requests;
 * while a client has PROXY_DNS_TCP_WRITES_MAX of them, or more than DNS_TCP_WRITE_MAX
 * bytes in them, the responder stops reading from it, and resumes once they have all
 * been written. A client that pipelines queries and never reads is thus held to a
 * few requests, and then closed when it has been idle for opts->tcp_idle_ms.
 *
 * Defaults (a zero field in opts, or opts == NULL): answer_ttl 60 s, tcp_max_conns
 * 16, tcp_idle_ms 10 s. A short TTL keeps clients asking, which keeps table entries
 * fresh; the table's min_idle_ms should be much longer than the TTL (minutes) since
 * many runtimes cache addresses beyond it.
 *
 * Stats: queries counts every message answered (error answers included), dropped
 * every message left unanswered, refused the answers that policy turned down
 * (REFUSED for a full table or a class other than IN, NXDOMAIN for a rejected name).
 *
 * Memory (x86-64, libuv 1.44): the responder holds its handles (about 1.2 KiB); UDP
 * datagrams are read into one buffer per thread. Each TCP client costs 1.3 KiB while
 * connected (struct dns_client: its uv_tcp_t and query buffer), plus its answers
 * waiting for the socket, one allocation each: struct dns_write (216 bytes, 192 of
 * them the uv_write_t) and the unsent part of the answer (at most 300 bytes with
 * its length). With at most 16 requests holding at most 4096 + 300 answer bytes,
 * that is about 8 KiB with malloc's overhead, 9.3 KiB per client at worst. Capping
 * bytes alone was not enough: 14-byte answers (a header-only error and its length)
 * filled 293 requests, 69 KiB, before the responder stopped reading.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/dns.h"
#include "proxy/dns_internal.h"
#include "proxy/dnsmsg.h"
#include "proxy/fdbudget.h"
#include "proxy/log.h"

#define DNS_DEFAULT_TTL 60
#define DNS_DEFAULT_TCP_MAX_CONNS 16
#define DNS_DEFAULT_TCP_IDLE_MS 10000
/* A query has one question (at most 12 + 255 + 4 bytes) and an OPT record whose
 * options (cookies, padding to a multiple of 128 per RFC 8467) stay well under this. */
#define DNS_MAX_QUERY 1024
/* Our largest answer: header, question, one A record, OPT: 12 + 259 + 16 + 11. */
#define DNS_MAX_ANSWER 512
/* Answer bytes queued in a client's write requests above which it is not read. The
 * count cap, PROXY_DNS_TCP_WRITES_MAX, binds first unless the queued answers average
 * over 256 bytes (names of 200 bytes and more). */
#define DNS_TCP_WRITE_MAX 4096
#define DNS_TCP_BACKLOG 16
#define DNS_ACCEPT_RETRY_MS 1000
#define DNS_LOCALHOST 0x7f000001u

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct dns_client {
  uv_tcp_t tcp;
  struct proxy_dns *d;
  struct dns_client *older; /* in d's list, least recently active first */
  struct dns_client *newer;
  struct dns_client *all_older; /* ... and in every responder's (d->opts.shared) */
  struct dns_client *all_newer;
  uint64_t last_active;
  size_t used;              /* bytes in buf */
  unsigned pending_writes;  /* uv_write requests not yet called back */
  uint8_t eof;              /* the client shut down its side */
  uint8_t stalled;          /* reading stopped until the write queue drains */
  uint8_t closing;
  uint8_t buf[2 + DNS_MAX_QUERY];
};

/* The part of an answer uv_try_write could not send at once, queued with uv_write. */
struct dns_write {
  uv_write_t req;
  struct dns_client *c;
  uv_buf_t buf;
  uint8_t data[];
};

struct proxy_dns {
  uv_loop_t *loop;
  struct proxy_dns_table *table;
  struct proxy_dns_opts opts;
  struct proxy_dns_stats stats;
  uv_udp_t udp[2];           /* IPv4, IPv6 */
  uv_tcp_t listener[2];
  uv_timer_t timer;          /* idle clients and accept retries */
  uint8_t udp_init[2];       /* the handle was initialized (and must be closed) */
  uint8_t listener_init[2];
  uint8_t accept_pending[2]; /* a connection waits for memory to accept it */
  unsigned handles;          /* initialized handles whose close callback has not run */
  unsigned nclients;         /* clients not closing */
  struct dns_client *oldest;
  struct dns_client *newest;
  int closing;
  void (*close_cb)(void *arg);
  void *close_arg;
};

/* ---- answering ---- */

static int has_suffix(const char *name, size_t len, const char *suffix)
{
  size_t n = strlen(suffix);

  if (len == n)
    return memcmp(name, suffix, n) == 0;
  return len > n && name[len - n - 1] == '.' && memcmp(name + len - n, suffix, n) == 0;
}

/* 1 if the label at the end of name is a number to inet_aton: decimal digits (octal
 * included), or "0x" followed by hex digits (possibly none). */
static int last_label_is_number(const char *name, size_t len)
{
  const char *dot = memrchr(name, '.', len);
  const char *p = dot ? dot + 1 : name;
  const char *end = name + len;

  if (p == end)
    return 0;
  if (end - p >= 2 && p[0] == '0' && p[1] == 'x') {
    for (p += 2; p < end; p++)
      if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
        return 0;
    return 1;
  }
  for (; p < end; p++)
    if (*p < '0' || *p > '9')
      return 0;
  return 1;
}

/* Decides the rcode and address (host order, or 0 for none) for a parsed query. */
static int decide(struct proxy_dns *d, const struct proxy_dns_query *q, uint32_t *addr)
{
  int rc;

  *addr = 0;
  if (q->qclass != PROXY_DNS_CLASS_IN) {
    d->stats.refused++;
    return PROXY_DNS_RCODE_REFUSED;
  }
  /* A stub that sends such a name (c-ares, dig, musl with UTF-8) waits for an
   * answer: without one it retries for its whole timeout, then reports a temporary
   * failure that invites more retries. No host has the name. */
  if (q->name_unusable) {
    d->stats.refused++;
    return PROXY_DNS_RCODE_NXDOMAIN;
  }
  if (q->name_len == 0)
    return PROXY_DNS_RCODE_NOERROR; /* the root has no A record */
  if (has_suffix(q->name, q->name_len, "invalid") ||
      has_suffix(q->name, q->name_len, "onion") ||
      last_label_is_number(q->name, q->name_len)) {
    d->stats.refused++;
    return PROXY_DNS_RCODE_NXDOMAIN;
  }
  if (q->qtype != PROXY_DNS_TYPE_A)
    return PROXY_DNS_RCODE_NOERROR;
  if (has_suffix(q->name, q->name_len, "localhost")) {
    *addr = DNS_LOCALHOST;
    return PROXY_DNS_RCODE_NOERROR;
  }
  rc = proxy_dns_table_assign(d->table, q->name, uv_now(d->loop), addr);
  if (rc == 0)
    return PROXY_DNS_RCODE_NOERROR;
  *addr = 0;
  if (rc == -ENOSPC) {
    d->stats.refused++;
    return PROXY_DNS_RCODE_REFUSED;
  }
  log_warn("dns: cannot assign an address to %s: %s", q->name, strerror(-rc));
  return PROXY_DNS_RCODE_SERVFAIL;
}

/* Builds the answer to msg into out; returns its length, or 0 when the message is
 * dropped (counted). */
static size_t answer(struct proxy_dns *d, const uint8_t *msg, size_t len, uint8_t *out,
                     size_t size)
{
  struct proxy_dns_query q;
  uint32_t addr, addr_be;
  int rc, rcode, n;

  rc = proxy_dns_parse_query(msg, len, &q);
  if (rc == -ENOTSUP) {
    rcode = q.opcode != 0 ? PROXY_DNS_RCODE_NOTIMP : PROXY_DNS_RCODE_FORMERR;
    n = proxy_dns_build_error(&q, rcode, out, size);
  } else if (rc == 0) {
    rcode = decide(d, &q, &addr);
    addr_be = htonl(addr);
    n = proxy_dns_build_answer(&q, rcode, addr != 0 ? &addr_be : NULL,
                               d->opts.answer_ttl, out, size);
  } else {
    n = rc;
  }
  if (n <= 0) {
    d->stats.dropped++;
    return 0;
  }
  d->stats.queries++;
  return (size_t)n;
}

/* ---- handles and closing ---- */

static void maybe_finish(struct proxy_dns *d)
{
  void (*cb)(void *);
  void *arg;

  if (!d->closing || d->handles > 0)
    return;
  cb = d->close_cb;
  arg = d->close_arg;
  free(d);
  if (cb != NULL)
    cb(arg);
}

static void handle_closed(uv_handle_t *h)
{
  struct proxy_dns *d = h->data;

  d->handles--;
  maybe_finish(d);
}

static void close_handle(struct proxy_dns *d, uv_handle_t *h)
{
  h->data = d;
  uv_close(h, handle_closed);
}

/* ---- UDP ---- */

/* One receive buffer per thread. It is safe to share between responders: libuv
 * calls alloc_cb right before recvmsg and recv_cb right after, on the loop's thread,
 * and the answer is built and sent before recv_cb returns. */
static _Thread_local uint8_t udp_buf[DNS_MAX_QUERY];

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  (void)h;
  (void)suggested;
  *buf = uv_buf_init((char *)udp_buf, sizeof(udp_buf));
}

static void udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                     const struct sockaddr *from, unsigned flags)
{
  struct proxy_dns *d = h->data;
  uint8_t out[DNS_MAX_ANSWER];
  uv_buf_t ob;
  size_t n;
  int rc;

  if (nread < 0) {
    if (nread != UV_ECANCELED)
      log_warn("dns: udp receive: %s", uv_strerror((int)nread));
    return;
  }
  if (from == NULL)
    return; /* nothing more to read */
  if (d->opts.activity != NULL)
    (*d->opts.activity)++;
  /* A datagram longer than any query we accept (MSG_TRUNC) or empty is dropped. */
  if (nread == 0 || (flags & UV_UDP_PARTIAL)) {
    d->stats.dropped++;
    return;
  }
  n = answer(d, (const uint8_t *)buf->base, (size_t)nread, out, sizeof(out));
  if (n == 0)
    return;
  ob = uv_buf_init((char *)out, (unsigned)n);
  rc = uv_udp_try_send(h, &ob, 1, from);
  if (rc < 0)
    log_debug("dns: udp answer dropped: %s", uv_strerror(rc));
}

/* ---- TCP clients ---- */

static void client_closed(uv_handle_t *h)
{
  struct dns_client *c = container_of(h, struct dns_client, tcp);
  struct proxy_dns *d = c->d;

  free(c);
  d->handles--;
  maybe_finish(d);
}

static void client_unlink(struct proxy_dns *d, struct dns_client *c)
{
  struct proxy_dns_shared *sh = d->opts.shared;

  if (c->older != NULL)
    c->older->newer = c->newer;
  else
    d->oldest = c->newer;
  if (c->newer != NULL)
    c->newer->older = c->older;
  else
    d->newest = c->older;
  c->older = c->newer = NULL;
  if (sh == NULL)
    return;
  if (c->all_older != NULL)
    c->all_older->all_newer = c->all_newer;
  else
    sh->oldest = c->all_newer;
  if (c->all_newer != NULL)
    c->all_newer->all_older = c->all_older;
  else
    sh->newest = c->all_older;
  c->all_older = c->all_newer = NULL;
}

static void client_append(struct proxy_dns *d, struct dns_client *c)
{
  struct proxy_dns_shared *sh = d->opts.shared;

  c->older = d->newest;
  c->newer = NULL;
  if (d->newest != NULL)
    d->newest->newer = c;
  else
    d->oldest = c;
  d->newest = c;
  if (sh == NULL)
    return;
  c->all_older = sh->newest;
  c->all_newer = NULL;
  if (sh->newest != NULL)
    sh->newest->all_newer = c;
  else
    sh->oldest = c;
  sh->newest = c;
}

/* Closes a client; pending writes are called back with UV_ECANCELED before the close
 * callback frees it. listed says whether it is in d's list (a client whose accept
 * failed is not). */
static void client_close(struct dns_client *c, int listed)
{
  struct proxy_dns *d = c->d;

  if (c->closing)
    return;
  c->closing = 1;
  if (listed) {
    client_unlink(d, c);
    d->nclients--;
    if (d->opts.shared != NULL)
      proxy_fd_budget_put(&d->opts.shared->fds);
  }
  uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_touch(struct dns_client *c)
{
  struct proxy_dns *d = c->d;

  c->last_active = uv_now(d->loop);
  if (d->newest != c || (d->opts.shared != NULL && d->opts.shared->newest != c)) {
    client_unlink(d, c);
    client_append(d, c);
  }
}

static void timer_arm(struct proxy_dns *d);
static void client_process(struct dns_client *c);
static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct dns_client *c = container_of(h, struct dns_client, tcp);

  (void)suggested;
  /* client_process consumes every complete message unless stalled, and reading
   * stops while stalled, so there is always room for the rest of a message. A
   * zero-length buffer would make libuv report UV_ENOBUFS, which closes. */
  *buf = uv_buf_init((char *)c->buf + c->used, (unsigned)(sizeof(c->buf) - c->used));
}

/* Closes a half-closed client once everything it asked for has been written. */
static void client_maybe_done(struct dns_client *c)
{
  if (c->closing || !c->eof || c->stalled || c->pending_writes > 0)
    return;
  if (c->used > 0)
    c->d->stats.dropped++; /* a message cut short by the client's shutdown */
  client_close(c, 1);
}

static void client_written(uv_write_t *req, int status)
{
  struct dns_write *w = container_of(req, struct dns_write, req);
  struct dns_client *c = w->c;

  free(w);
  c->pending_writes--;
  if (c->closing)
    return; /* UV_ECANCELED: the client is being closed */
  if (status < 0) {
    log_debug("dns: tcp write: %s", uv_strerror(status));
    client_close(c, 1);
    return;
  }
  client_touch(c);
  /* Resume once every queued answer is out: stalling leaves at least one request
   * pending, and each is called back (written, failed or cancelled), so the last
   * callback always comes and finds pending_writes at 0. Waiting for the queue to
   * drain, not just to drop below the caps, avoids stopping and starting the reads
   * for every answer. */
  if (c->stalled && c->pending_writes == 0) {
    c->stalled = 0;
    client_process(c);
    if (!c->closing && !c->stalled && !c->eof) {
      status = uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
      if (status < 0) {
        log_debug("dns: tcp read start: %s", uv_strerror(status));
        client_close(c, 1);
        return;
      }
    }
  }
  client_maybe_done(c);
}

/* Writes a 2-byte length and the answer in out[2..2+n). */
static void client_send(struct dns_client *c, uint8_t *out, size_t n)
{
  struct dns_write *w;
  uv_buf_t b;
  int rc;

  out[0] = (uint8_t)(n >> 8);
  out[1] = (uint8_t)n;
  n += 2;
  b = uv_buf_init((char *)out, (unsigned)n);
  /* Most answers go out at once; only a remainder needs a request and a copy. */
  rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (rc == UV_EAGAIN)
    rc = 0;
  if (rc < 0) {
    log_debug("dns: tcp write: %s", uv_strerror(rc));
    client_close(c, 1);
    return;
  }
  if ((size_t)rc == n)
    return;
  w = malloc(sizeof(*w) + n - (size_t)rc);
  if (w == NULL) {
    log_warn("dns: out of memory writing a TCP answer; closing the connection");
    client_close(c, 1);
    return;
  }
  w->c = c;
  memcpy(w->data, out + rc, n - (size_t)rc);
  w->buf = uv_buf_init((char *)w->data, (unsigned)(n - (size_t)rc));
  rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, client_written);
  if (rc < 0) {
    free(w);
    log_debug("dns: tcp write: %s", uv_strerror(rc));
    client_close(c, 1);
    return;
  }
  c->pending_writes++;
}

/* Answers every complete message in the buffer, in order. */
static void client_process(struct dns_client *c)
{
  struct proxy_dns *d = c->d;
  uint8_t out[2 + DNS_MAX_ANSWER];
  size_t off = 0;

  while (!c->closing) {
    size_t avail = c->used - off, mlen, n;

    if (avail < 2)
      break;
    mlen = (size_t)c->buf[off] << 8 | c->buf[off + 1];
    if (mlen > DNS_MAX_QUERY) {
      log_debug("dns: tcp query of %zu bytes; closing the connection", mlen);
      d->stats.dropped++;
      client_close(c, 1);
      return;
    }
    if (avail < 2 + mlen)
      break;
    /* Checked before each answer, and each adds at most one request, so a client
     * never has more than PROXY_DNS_TCP_WRITES_MAX. Every request is a heap
     * allocation of its own (uv_try_write refuses while one is queued), so the count
     * matters as much as the bytes. */
    if (c->pending_writes >= PROXY_DNS_TCP_WRITES_MAX ||
        c->tcp.write_queue_size > DNS_TCP_WRITE_MAX) {
      if (!c->stalled) {
        c->stalled = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
      }
      break;
    }
    n = answer(d, c->buf + off + 2, mlen, out + 2, sizeof(out) - 2);
    off += 2 + mlen;
    if (n == 0) {
      client_close(c, 1);
      return;
    }
    client_send(c, out, n);
  }
  if (c->closing)
    return;
  memmove(c->buf, c->buf + off, c->used - off);
  c->used -= off;
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct dns_client *c = container_of(s, struct dns_client, tcp);

  (void)buf;
  if (c->closing || nread == 0)
    return;
  if (nread == UV_EOF) {
    c->eof = 1;
    uv_read_stop(s);
    client_maybe_done(c);
    return;
  }
  if (nread < 0) {
    if (nread != UV_ECANCELED)
      log_debug("dns: tcp read: %s", uv_strerror((int)nread));
    client_close(c, 1);
    return;
  }
  if (c->d->opts.activity != NULL)
    (*c->d->opts.activity)++;
  c->used += (size_t)nread;
  client_touch(c);
  client_process(c);
}

/* All sandboxes' TCP clients hold the budget of descriptors for them: the one idle
 * the longest, whoever's it is, is closed and its descriptor taken for a new one. */
static void make_room(struct proxy_dns *d)
{
  struct proxy_dns_shared *sh = d->opts.shared;
  struct dns_client *victim = sh->oldest;

  if (proxy_log_due(&sh->fds.logged_ms, uv_now(d->loop), PROXY_FD_BUDGET_LOG_MS))
    log_warn("sandbox %s: DNS over TCP: all sandboxes' TCP clients hold the %llu file "
             "descriptors kept for them; the client idle the longest (sandbox %s) is "
             "closed for a new one (%llu so far): raise RLIMIT_NOFILE (LimitNOFILE=, "
             "ulimit -Hn) if this is not a flood",
             d->opts.sandbox ? d->opts.sandbox : "?", (unsigned long long)sh->fds.max,
             victim != NULL && victim->d->opts.sandbox ? victim->d->opts.sandbox : "?",
             (unsigned long long)sh->fds.refused);
  /* The budget counts listed clients only, so a full one has a client to close. */
  if (victim != NULL)
    client_close(victim, 1);
  (void)proxy_fd_budget_take(&sh->fds); /* cannot fail: one was just given back */
}

/* Accepts the pending connection on listener i. Returns 0, or -ENOMEM when the
 * connection was left pending for a retry. */
static int client_accept(struct proxy_dns *d, int i)
{
  struct dns_client *c;
  int rc;

  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->d = d;
  rc = uv_tcp_init(d->loop, &c->tcp);
  if (rc < 0) {
    free(c);
    return -ENOMEM;
  }
  d->handles++;
  rc = uv_accept((uv_stream_t *)&d->listener[i], (uv_stream_t *)&c->tcp);
  if (rc < 0) {
    log_debug("dns: tcp accept: %s", uv_strerror(rc));
    client_close(c, 0);
    return 0;
  }
  if (d->nclients >= d->opts.tcp_max_conns && d->oldest != NULL) {
    log_debug("dns: %u TCP clients; closing the one idle the longest", d->nclients);
    client_close(d->oldest, 1);
  }
  if (d->opts.shared != NULL && proxy_fd_budget_take(&d->opts.shared->fds) != 0)
    make_room(d);
  /* Each answer is a complete message the client waits for: do not let Nagle hold
   * it back behind the previous one's ACK. */
  rc = uv_tcp_nodelay(&c->tcp, 1);
  if (rc < 0)
    log_debug("dns: tcp nodelay: %s", uv_strerror(rc));
  c->last_active = uv_now(d->loop);
  client_append(d, c);
  d->nclients++;
  rc = uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  if (rc < 0) {
    log_debug("dns: tcp read start: %s", uv_strerror(rc));
    client_close(c, 1);
  }
  return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
  struct proxy_dns *d = server->data;
  int i = server == (uv_stream_t *)&d->listener[0] ? 0 : 1;

  if (status < 0) {
    if (status != UV_ECANCELED)
      proxy_log_accept_failed("dns: tcp listen", -status);
    return;
  }
  if (d->opts.activity != NULL)
    (*d->opts.activity)++;
  if (client_accept(d, i) == -ENOMEM) {
    /* libuv stops polling the listener until the connection is accepted: retry
     * from the timer instead of leaving TCP dead for this sandbox. */
    log_error("dns: out of memory accepting a TCP client; retrying in %d ms",
              DNS_ACCEPT_RETRY_MS);
    d->accept_pending[i] = 1;
  }
  timer_arm(d);
}

/* ---- timer: idle clients and accept retries ---- */

static void on_timer(uv_timer_t *t)
{
  struct proxy_dns *d = t->data;
  uint64_t now = uv_now(d->loop);
  int i;

  while (d->oldest != NULL && now - d->oldest->last_active >= d->opts.tcp_idle_ms)
    client_close(d->oldest, 1);
  for (i = 0; i < 2; i++) {
    if (d->accept_pending[i] && client_accept(d, i) == 0)
      d->accept_pending[i] = 0;
  }
  timer_arm(d);
}

static void timer_arm(struct proxy_dns *d)
{
  uint64_t now = uv_now(d->loop), delay = UINT64_MAX;

  if (d->closing)
    return;
  if (d->oldest != NULL) {
    uint64_t idle = now - d->oldest->last_active;

    delay = idle >= d->opts.tcp_idle_ms ? 0 : d->opts.tcp_idle_ms - idle;
  }
  if ((d->accept_pending[0] || d->accept_pending[1]) && delay > DNS_ACCEPT_RETRY_MS)
    delay = DNS_ACCEPT_RETRY_MS;
  if (delay == UINT64_MAX)
    uv_timer_stop(&d->timer);
  else
    uv_timer_start(&d->timer, on_timer, delay, 0);
}

/* ---- start and close ---- */

static int check_type(int fd, int want, const char *what)
{
  int type = 0;
  socklen_t len = sizeof(type);

  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    int err = errno;

    log_error("dns: %s socket (fd %d) is unusable: %s", what, fd, strerror(err));
    return -err;
  }
  if (type != want) {
    log_error("dns: fd %d is not a %s socket; pass the %s socket made for the responder",
              fd, what, what);
    return -EINVAL;
  }
  return 0;
}

static int start_udp(struct proxy_dns *d, int i, int *fd)
{
  int rc;

  rc = check_type(*fd, SOCK_DGRAM, "UDP");
  if (rc != 0)
    return rc;
  rc = uv_udp_init(d->loop, &d->udp[i]);
  if (rc < 0)
    return rc;
  d->udp[i].data = d;
  d->udp_init[i] = 1;
  d->handles++;
  rc = uv_udp_open(&d->udp[i], *fd);
  if (rc < 0)
    return rc;
  *fd = -1; /* owned by the handle now */
  return uv_udp_recv_start(&d->udp[i], udp_alloc, udp_recv);
}

static int start_tcp(struct proxy_dns *d, int i, int *fd)
{
  int rc;

  rc = check_type(*fd, SOCK_STREAM, "TCP");
  if (rc != 0)
    return rc;
  rc = uv_tcp_init(d->loop, &d->listener[i]);
  if (rc < 0)
    return rc;
  d->listener[i].data = d;
  d->listener_init[i] = 1;
  d->handles++;
  rc = uv_tcp_open(&d->listener[i], *fd);
  if (rc < 0)
    return rc;
  *fd = -1;
  return uv_listen((uv_stream_t *)&d->listener[i], DNS_TCP_BACKLOG, on_connection);
}

/* Closes every handle; d is freed by the last close callback. */
static void close_all(struct proxy_dns *d)
{
  int i;

  d->closing = 1;
  while (d->oldest != NULL)
    client_close(d->oldest, 1);
  for (i = 0; i < 2; i++) {
    if (d->udp_init[i])
      close_handle(d, (uv_handle_t *)&d->udp[i]);
    if (d->listener_init[i])
      close_handle(d, (uv_handle_t *)&d->listener[i]);
  }
  close_handle(d, (uv_handle_t *)&d->timer);
}

/*
 * On failure every socket is closed (they are taken over in all cases), the handles
 * opened so far are closed, and the partial responder is freed by their close
 * callbacks when the loop runs next.
 */
int proxy_dns_start(uv_loop_t *loop, struct proxy_dns_table *table,
                    const struct proxy_dns_opts *opts, int udp4, int tcp4, int udp6,
                    int tcp6, struct proxy_dns **out)
{
  int udp_fd[2] = { udp4, udp6 }, tcp_fd[2] = { tcp4, tcp6 };
  struct proxy_dns *d = NULL;
  int i, rc;

  *out = NULL;
  if (loop == NULL || table == NULL || (udp4 < 0 && tcp4 < 0 && udp6 < 0 && tcp6 < 0)) {
    rc = -EINVAL;
    goto out;
  }
  d = calloc(1, sizeof(*d));
  if (d == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  d->loop = loop;
  d->table = table;
  if (opts != NULL)
    d->opts = *opts;
  if (d->opts.answer_ttl == 0)
    d->opts.answer_ttl = DNS_DEFAULT_TTL;
  if (d->opts.tcp_max_conns == 0)
    d->opts.tcp_max_conns = DNS_DEFAULT_TCP_MAX_CONNS;
  if (d->opts.tcp_idle_ms == 0)
    d->opts.tcp_idle_ms = DNS_DEFAULT_TCP_IDLE_MS;
  rc = uv_timer_init(loop, &d->timer);
  if (rc < 0)
    goto out;
  d->timer.data = d;
  d->handles++;

  for (i = 0; i < 2; i++) {
    if (udp_fd[i] >= 0) {
      rc = start_udp(d, i, &udp_fd[i]);
      if (rc < 0) {
        log_error("dns: cannot serve UDP %s socket: %s", i ? "IPv6" : "IPv4",
                  uv_strerror(rc));
        goto out;
      }
    }
    if (tcp_fd[i] >= 0) {
      rc = start_tcp(d, i, &tcp_fd[i]);
      if (rc < 0) {
        log_error("dns: cannot serve TCP %s socket: %s", i ? "IPv6" : "IPv4",
                  uv_strerror(rc));
        goto out;
      }
    }
  }
  *out = d;
  d = NULL;
  rc = 0;
out:
  for (i = 0; i < 2; i++) {
    if (udp_fd[i] >= 0)
      close(udp_fd[i]);
    if (tcp_fd[i] >= 0)
      close(tcp_fd[i]);
  }
  if (d != NULL) {
    if (d->handles > 0)
      close_all(d);
    else
      free(d);
  }
  return rc;
}

void proxy_dns_close(struct proxy_dns *d, void (*cb)(void *arg), void *arg)
{
  if (d == NULL) {
    if (cb != NULL)
      cb(arg);
    return;
  }
  if (d->closing)
    return;
  d->close_cb = cb;
  d->close_arg = arg;
  close_all(d);
}

const struct proxy_dns_stats *proxy_dns_stats(const struct proxy_dns *d)
{
  return &d->stats;
}

size_t proxy_dns_tcp_queued(const struct proxy_dns *d)
{
  const struct dns_client *c;
  size_t n = 0;

  for (c = d->oldest; c != NULL; c = c->newer)
    n += c->pending_writes;
  return n;
}
