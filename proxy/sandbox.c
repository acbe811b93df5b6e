/*
 * A sandbox on the proxy's loop: its listeners (sockets living in its namespace), its
 * DNS responder and synthetic table, its config, its CA, its connections. Closing
 * stops accepting at once and gives open connections a deadline to finish.
 */
#include <errno.h>
#include <malloc.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/callback.h"
#include "proxy/ca.h"
#include "proxy/dns.h"
#include "proxy/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/tls.h"

#define LISTEN_BACKLOG 4096
/* A synthetic name unused this long may be recycled when the table is full. */
#define DNS_MIN_IDLE_MS (10 * 60 * 1000)
#define DNS_ANSWER_TTL 60

/* The last serial given to a sandbox. Process-wide rather than per context: serials
 * label sessions in the upstream TLS state, of which there is one per process (and
 * one loop thread, so no atomics). */
static uint64_t last_serial;

void proxy_limits_default(struct proxy_limits *l)
{
  memset(l, 0, sizeof(*l));
  l->max_header_bytes = 64 * 1024;
  l->max_conns = 4096;
  l->idle_ms = 300 * 1000;
  l->connect_ms = 10 * 1000;
  l->sniff_ms = 10 * 1000;
  l->server_first_ms = 500;
  l->head_ms = 30 * 1000;
  l->handshake_ms = 10 * 1000;
  l->drain_ms = 5 * 1000;
  l->write_queue_max = 256 * 1024;
  /* Without it a sandbox's memory is bounded only by max_conns times the queues of
   * a connection: 2 GiB at the defaults, for a sandbox that reads nothing. */
  l->sandbox_queue_max = 64u << 20;
  /* Without it the daemon's memory is bounded only by the sandboxes' budgets: 100
   * sandboxes that read nothing hold 6.4 GiB, and the kernel kills the daemon that
   * serves every one of them. 16 sandboxes' budgets: one sandbox, or a few, that
   * read slowly never reach it, and a host that runs a daemon for thousands of
   * sandboxes spares 1 GiB for it. */
  l->total_queue_max = 1u << 30;
  l->dns_max_names = 16384;
  l->pool_max = 16;
  l->pool_max_per_dest = 8;
  l->pool_idle_ms = 4 * 1000;
  l->up_release_ms = 2 * 1000;
  /* A name whose servers never answer holds its resolution for the whole resolver
   * timeout (up to 30 s), and libuv runs half its pool's threads' worth at once (16
   * of the 32 `serve` asks for; 2 of the default 4): one sandbox may hold one. */
  l->resolve_max = 1;
  /* A minute: a tunnel or a stream that stays open is in the log within a minute of
   * its start and of each minute after, and a daemon killed outright loses at most a
   * minute of what its open connections did. 10,000 open connections add 170
   * records a second. */
  l->audit_interval_ms = 60 * 1000;
}

int proxy_nofile_raise(struct rlimit *old)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -errno;
  if (old != NULL)
    *old = rl;
  if (rl.rlim_cur == rl.rlim_max)
    return 0;
  rl.rlim_cur = rl.rlim_max;
  return setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : -errno;
}

/* The descriptors the process may open (its soft limit; serve and the jail raise it
 * to the hard limit first, proxy_nofile_raise). */
static uint64_t fd_limit(void)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return UINT64_MAX;
  return (uint64_t)rl.rlim_cur;
}

/* Before each poll for I/O: the reads of the poll to come are one turn (stream.c). */
static void turn_cb(uv_prepare_t *p)
{
  struct proxy_ctx *ctx = p->data;

  ctx->turn++;
  if (ctx->parked != NULL)
    proxy_setup_grant(ctx);
}

/*
 * glibc keeps the heap a burst grew after its chunks are freed: 1,000 intercepted
 * connections left a jail at 46 MB of RSS, which malloc_trim brought back to 5 MB;
 * 300 sandboxes detached left a daemon at 11.7 MB, 7.3 MB trimmed. Once the open
 * connections or the sandboxes fall to a quarter of the most since the last trim
 * (TRIM_MIN_PEAK at least), the free memory goes back to the kernel TRIM_DELAY_MS
 * later: one trim per burst that ends, its cost (a walk of the free chunks) small
 * against the burst's.
 */
#define TRIM_MIN_PEAK 64
#define TRIM_DELAY_MS 1000

static void trim_cb(uv_timer_t *t)
{
  struct proxy_ctx *ctx = t->data;

  (void)malloc_trim(0);
  ctx->conns_peak = ctx->counters.conns_active;
  ctx->sandboxes_peak = ctx->nsandboxes;
}

static int fallen(uint64_t now, uint64_t peak)
{
  return peak >= TRIM_MIN_PEAK && now <= peak / 4;
}

void proxy_ctx_trim_later(struct proxy_ctx *ctx)
{
  if ((fallen(ctx->counters.conns_active, ctx->conns_peak) ||
       fallen(ctx->nsandboxes, ctx->sandboxes_peak)) &&
      ctx->trim_timer.loop != NULL && !uv_is_active((uv_handle_t *)&ctx->trim_timer) &&
      !uv_is_closing((uv_handle_t *)&ctx->trim_timer))
    uv_timer_start(&ctx->trim_timer, trim_cb, TRIM_DELAY_MS, 0);
}

int proxy_ctx_init(struct proxy_ctx *ctx, uv_loop_t *loop)
{
  memset(ctx, 0, sizeof(*ctx));
  ctx->loop = loop;
  ctx->fd_limit = fd_limit();
  ctx->fd_share = ctx->fd_limit / 2;
  ctx->fd_conns_share = ctx->fd_limit - ctx->fd_limit / 4;
  ctx->dns_shared.fds.max = ctx->fd_limit / 16 > 0 ? ctx->fd_limit / 16 : 1;
  ctx->callback_fds.max = ctx->dns_shared.fds.max;
  proxy_limits_default(&ctx->limits);
  /* One buffer for every read on the loop: large reads drain a fast sender in few
   * system calls and wakeups (stream.c caps each read by its peer's queue room). */
  ctx->read_buf_size = 256 * 1024;
  ctx->read_buf = malloc(ctx->read_buf_size);
  ctx->plain_buf = malloc(16384);
  if (ctx->read_buf == NULL || ctx->plain_buf == NULL) {
    proxy_ctx_cleanup(ctx);
    return -ENOMEM;
  }
  /* Running before every poll, it must not keep the loop alive on its own. */
  uv_prepare_init(loop, &ctx->turn_prepare);
  ctx->turn_prepare.data = ctx;
  uv_prepare_start(&ctx->turn_prepare, turn_cb);
  uv_unref((uv_handle_t *)&ctx->turn_prepare);
  /* Only open connections' records fall due on it: they keep the loop alive. */
  uv_timer_init(loop, &ctx->progress_timer);
  ctx->progress_timer.data = ctx;
  uv_unref((uv_handle_t *)&ctx->progress_timer);
  uv_timer_init(loop, &ctx->trim_timer);
  ctx->trim_timer.data = ctx;
  uv_unref((uv_handle_t *)&ctx->trim_timer);
  return 0;
}

void proxy_ctx_close(struct proxy_ctx *ctx)
{
  if (ctx->turn_prepare.loop != NULL && !uv_is_closing((uv_handle_t *)&ctx->turn_prepare))
    uv_close((uv_handle_t *)&ctx->turn_prepare, NULL);
  if (ctx->progress_timer.loop != NULL &&
      !uv_is_closing((uv_handle_t *)&ctx->progress_timer))
    uv_close((uv_handle_t *)&ctx->progress_timer, NULL);
  if (ctx->trim_timer.loop != NULL && !uv_is_closing((uv_handle_t *)&ctx->trim_timer))
    uv_close((uv_handle_t *)&ctx->trim_timer, NULL);
}

void proxy_ctx_cleanup(struct proxy_ctx *ctx)
{
  proxy_callbacks_free(ctx);
  netns_local_close(ctx->host_local);
  ctx->host_local = NULL;
  free(ctx->read_buf);
  free(ctx->plain_buf);
  ctx->read_buf = NULL;
  ctx->plain_buf = NULL;
}

static void handle_closed(uv_handle_t *h);

static void maybe_finish(struct proxy_sandbox *sb)
{
  void (*cb)(void *arg) = sb->close_cb;
  void *arg = sb->close_arg;
  unsigned n;

  if (!sb->closing || sb->nconns > 0)
    return;
  if (!sb->drain_timer_closed) {
    /* Connections are gone: the drain deadline is moot. Its close comes last. */
    sb->drain_timer_closed = 1;
    uv_close((uv_handle_t *)&sb->drain_timer, handle_closed);
    return;
  }
  if (sb->handles > 0)
    return;
  /* No connection is left to store another: the sandbox's sessions go with it. */
  n = proxy_upstream_tls_drop_sessions(sb->ctx->upstream_tls, sb->serial);
  if (n > 0)
    log_debug("sandbox %s: %u upstream TLS session(s) dropped", sb->name, n);
  sb->ctx->sandbox_fds -= sb->own_fds;
  proxy_queue_stopped_remove(sb);
  proxy_cred_cache_free(sb->creds);
  proxy_dns_table_free(sb->dns_table);
  proxy_tls_server_free(sb->tls_server);
  if (sb->all_prev != NULL)
    sb->all_prev->all_next = sb->all_next;
  else
    sb->ctx->sandboxes = sb->all_next;
  if (sb->all_next != NULL)
    sb->all_next->all_prev = sb->all_prev;
  sb->ctx->nsandboxes--;
  proxy_ctx_trim_later(sb->ctx);
  proxy_callbacks_update(sb->ctx, NULL, sb->config);
  rules_config_unref(sb->config);
  log_info("sandbox %s: detached", sb->name);
  free(sb->name);
  free(sb);
  if (cb != NULL)
    cb(arg);
}

static void handle_closed(uv_handle_t *h)
{
  struct proxy_sandbox *sb = h->data;

  sb->handles--;
  maybe_finish(sb);
}

static void dns_closed(void *arg)
{
  struct proxy_sandbox *sb = arg;

  sb->handles--;
  maybe_finish(sb);
}

static void on_connection(uv_stream_t *server, int status)
{
  struct proxy_listener *l = container_of(server, struct proxy_listener, tcp);

  if (status < 0) {
    char who[160];

    snprintf(who, sizeof(who), "sandbox %.128s", l->sb->name);
    proxy_log_accept_failed(who, -status);
    return;
  }
  l->sb->ctx->io_events++;
  proxy_conn_accept(l);
}

/*
 * The sandbox side of a connection never crosses a network: it is the sandbox's own
 * loopback (or a local link), with an RTT of microseconds that jumps to hundreds when
 * an ACK waits for another CPU. A host whose default congestion control is BBR
 * (common on fleet hosts, and the benchmark machine's) gives the proxy's sockets
 * toward the sandbox a model that mistakes those jumps for a slow path and paces
 * downloads far below the link (measured: 64 KiB every 40 ms). A loss-based control
 * has no model to mislead; the upstream side keeps the host's choice, since it
 * crosses real networks. Set on the listener, it is inherited by every connection
 * accepted from it (unless a route names its own). cubic first (the kernel's
 * default), reno (always built in, always allowed) if cubic is not available; when
 * neither can be set, the host's default stays.
 */
static void listener_cc(struct proxy_sandbox *sb, int fd)
{
  static const char *const ccs[] = { "cubic", "reno" };
  size_t i;

  for (i = 0; i < sizeof(ccs) / sizeof(ccs[0]); i++) {
    if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, ccs[i], (socklen_t)strlen(ccs[i])) == 0)
      return;
    log_debug("sandbox %s: congestion control %s for sandbox connections: %s", sb->name,
              ccs[i], strerror(errno));
  }
}

static int add_listener(struct proxy_sandbox *sb, int *fd, int transparent)
{
  struct proxy_listener *l;
  int r;

  if (*fd < 0)
    return 0;
  l = &sb->listeners[sb->nlisteners];
  l->sb = sb;
  l->transparent = transparent;
  r = uv_tcp_init(sb->ctx->loop, &l->tcp);
  if (r != 0)
    return r;
  l->tcp.data = sb;
  sb->nlisteners++;
  sb->handles++;
  r = uv_tcp_open(&l->tcp, *fd);
  if (r != 0)
    return r;
  listener_cc(sb, *fd);
  *fd = -1;
  return uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection);
}

static uint16_t listener_port(struct proxy_listener *l)
{
  struct sockaddr_storage ss;
  int len = sizeof(ss);

  if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

int proxy_sandbox_start(struct proxy_ctx *ctx, const char *name, struct rules_config *cfg,
                        struct proxy_ca *ca, struct netns_fds *fds,
                        const struct proxy_limits *limits, struct proxy_sandbox **out)
{
  struct proxy_cred_opts copts;
  struct proxy_dns_opts dopts;
  struct proxy_sandbox *sb;
  int i, r;

  *out = NULL;
  sb = calloc(1, sizeof(*sb));
  if (sb == NULL) {
    netns_fds_close(fds);
    return -ENOMEM;
  }
  sb->ctx = ctx;
  sb->serial = ++last_serial;
  sb->all_next = ctx->sandboxes;
  if (ctx->sandboxes != NULL)
    ctx->sandboxes->all_prev = sb;
  ctx->sandboxes = sb;
  if (++ctx->nsandboxes > ctx->sandboxes_peak)
    ctx->sandboxes_peak = ctx->nsandboxes;
  /* Its listeners and responder sockets come out of the connections' share
   * (over_fd_conns_share, conn.c), not out of the daemon's quarter. */
  sb->own_fds = (fds->tcp4 >= 0) + (fds->tcp6 >= 0) + (fds->tproxy4 >= 0) +
                (fds->tproxy6 >= 0) + (fds->dns_udp4 >= 0) + (fds->dns_tcp4 >= 0) +
                (fds->dns_udp6 >= 0) + (fds->dns_tcp6 >= 0);
  ctx->sandbox_fds += sb->own_fds;
  sb->limits = limits ? *limits : ctx->limits;
  sb->name = strdup(name);
  sb->config = rules_config_ref(cfg);
  proxy_callbacks_update(ctx, cfg, NULL);
  sb->ca = ca;
  uv_timer_init(ctx->loop, &sb->drain_timer);
  sb->drain_timer.data = sb;
  sb->handles++;
  sb->dns_table = proxy_dns_table_new(sb->limits.dns_max_names, name, DNS_MIN_IDLE_MS);
  if (sb->name == NULL || sb->dns_table == NULL) {
    r = -ENOMEM;
    goto fail;
  }
  if (ca != NULL) {
    r = proxy_tls_server_new(&sb->tls_server);
    if (r != 0)
      goto fail;
  }
  memset(&copts, 0, sizeof(copts));
  copts.tls_conf = ctx->upstream_tls ? proxy_upstream_tls_conf(ctx->upstream_tls) : NULL;
  copts.audit = ctx->audit;
  copts.stats = &ctx->cred_stats;
  copts.fds = &ctx->callback_fds;
  r = proxy_cred_cache_new(ctx->loop, name, &copts, &sb->creds);
  if (r != 0)
    goto fail;
  memset(&dopts, 0, sizeof(dopts));
  dopts.answer_ttl = DNS_ANSWER_TTL;
  dopts.tcp_max_conns = 64;
  dopts.tcp_idle_ms = 10 * 1000;
  dopts.activity = &ctx->io_events;
  dopts.shared = &ctx->dns_shared;
  dopts.sandbox = sb->name;
  r = proxy_dns_start(ctx->loop, sb->dns_table, &dopts, fds->dns_udp4, fds->dns_tcp4,
                      fds->dns_udp6, fds->dns_tcp6, &sb->dns);
  fds->dns_udp4 = fds->dns_tcp4 = fds->dns_udp6 = fds->dns_tcp6 = -1;
  if (r != 0)
    goto fail;
  sb->handles++;
  if ((r = add_listener(sb, &fds->tcp4, 0)) != 0 ||
      (r = add_listener(sb, &fds->tcp6, 0)) != 0 ||
      (r = add_listener(sb, &fds->tproxy4, 1)) != 0 ||
      (r = add_listener(sb, &fds->tproxy6, 1)) != 0)
    goto fail;
  for (i = 0; i < sb->nlisteners; i++) {
    if (sb->listeners[i].transparent)
      sb->tproxy_port = listener_port(&sb->listeners[i]);
    else
      sb->port = listener_port(&sb->listeners[i]);
  }
  *out = sb;
  return 0;
fail:
  netns_fds_close(fds);
  log_error("sandbox %s: cannot start serving: %s", name,
            r < 0 && r > -4096 ? uv_strerror(r) : "error");
  proxy_sandbox_close(sb, 0, NULL, NULL);
  return r;
}

void proxy_sandbox_set_config(struct proxy_sandbox *sb, struct rules_config *cfg)
{
  struct rules_config *old = sb->config;
  struct proxy_conn *c, *next;

  sb->config = rules_config_ref(cfg);
  /* The daemon's callbacks first: what the swap checks below (a callback cfg moves to
   * where a relay goes) is that list. */
  proxy_callbacks_update(sb->ctx, cfg, old);
  /* A config swapped to take egress away takes it from open connections too: a tunnel
   * decided under the old one would otherwise relay on for as long as it is active. */
  for (c = sb->conns; c != NULL; c = next) {
    next = c->next;
    proxy_conn_config_swapped(c, sb->config);
  }
  rules_config_unref(old);
}

struct rules_config *proxy_sandbox_config(const struct proxy_sandbox *sb)
{
  return sb->config;
}

const char *proxy_sandbox_name(const struct proxy_sandbox *sb)
{
  return sb->name;
}

int proxy_sandbox_netns_open(const struct proxy_sandbox *sb)
{
  uv_os_fd_t fd;
  int i, nsfd, r = -ENOENT;

  for (i = 0; i < sb->nlisteners; i++) {
    if (uv_fileno((const uv_handle_t *)&sb->listeners[i].tcp, &fd) != 0)
      continue;
    /* The kernel opens it close-on-exec. */
    nsfd = ioctl(fd, SIOCGSKNS);
    if (nsfd >= 0)
      return nsfd;
    r = -errno;
  }
  return r;
}

unsigned proxy_sandbox_conns(const struct proxy_sandbox *sb)
{
  return sb->nconns;
}

void proxy_sandbox_stats(const struct proxy_sandbox *sb, struct proxy_sandbox_stats *out)
{
  const struct proxy_dns_stats *ds;
  struct proxy_ca_stats cs;

  memset(out, 0, sizeof(*out));
  out->conns = sb->nconns;
  out->queued = sb->queued;
  out->dns_names = proxy_dns_table_count(sb->dns_table);
  if (sb->dns != NULL) {
    ds = proxy_dns_stats(sb->dns);
    out->dns_queries = ds->queries;
    out->dns_dropped = ds->dropped;
    out->dns_refused = ds->refused;
  }
  if (sb->ca != NULL) {
    proxy_ca_stats(sb->ca, &cs);
    out->certs_cached = cs.entries;
    out->cert_hits = cs.hits;
    out->cert_misses = cs.misses;
    out->cert_evictions = cs.evictions;
    out->cert_limited = cs.limited;
    out->cert_minted = cs.minted;
  }
}

static void close_all_conns(struct proxy_sandbox *sb)
{
  struct proxy_conn *c, *next;

  for (c = sb->conns; c != NULL; c = next) {
    next = c->next;
    proxy_conn_close(c, 1, "sandbox_detached");
  }
}

static void drain_timer_cb(uv_timer_t *t)
{
  close_all_conns(t->data);
}

void proxy_sandbox_conn_gone(struct proxy_sandbox *sb)
{
  maybe_finish(sb);
}

void proxy_sandbox_close(struct proxy_sandbox *sb, uint64_t drain_ms,
                         void (*cb)(void *arg), void *arg)
{
  struct proxy_conn *c, *next;
  int i;

  if (sb->closing)
    return;
  sb->closing = 1;
  sb->close_cb = cb;
  sb->close_arg = arg;
  for (i = 0; i < sb->nlisteners; i++)
    uv_close((uv_handle_t *)&sb->listeners[i].tcp, handle_closed);
  if (sb->dns != NULL)
    proxy_dns_close(sb->dns, dns_closed, sb);
  proxy_conn_pool_flush(sb); /* idle upstreams have nothing to drain */
  /* Closed connections that only wait for a name lookup wait no more. */
  for (c = sb->conns; c != NULL; c = next) {
    next = c->next;
    proxy_conn_sandbox_closing(c);
  }
  /* Nor have kept-alive connections between requests, or before their first: they
   * end now, as after an answer (FIN, close_notify, once the answer still queued is
   * written), rather than hold the close for drain_ms. One that is answering ends
   * after its answer (finish_response), any request pipelined behind it unanswered.
   * A request sent on one after the detach would go out with this sandbox's
   * credentials, though the namespace may serve another sandbox by then (a runtime
   * that pools namespaces). So would one on a connection that has sent nothing at
   * all yet: it ends too. */
  for (c = sb->conns; c != NULL; c = next) {
    next = c->next;
    c->sent_at_detach = c->state == CONN_TLS_DOWN && proxy_conn_down_unread(c);
    if (proxy_conn_unused(c))
      proxy_conn_close(c, 0, "sandbox_detached");
    else if (proxy_http_idle(c))
      proxy_conn_linger(c);
  }
  if (sb->nconns > 0 && drain_ms > 0)
    uv_timer_start(&sb->drain_timer, drain_timer_cb, drain_ms, 0);
  else
    close_all_conns(sb);
  maybe_finish(sb);
}
