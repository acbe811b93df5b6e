/*
 * The data plane: a proxy context on one libuv loop serving any number of sandboxes,
 * each with its listeners inside its own network namespace, its DNS responder, its
 * config and (for interception) its CA.
 *
 * Everything here runs on the loop's thread.
 */
#ifndef AUTHPROXY_PROXY_H
#define AUTHPROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <sys/resource.h>

#include <uv.h>

#include "netns/netns.h"
#include "proxy/callback.h"
#include "proxy/dns.h"
#include "proxy/fdbudget.h"
#include "proxy/metrics.h"
#include "rules/rules.h"

struct proxy_audit;
struct proxy_ca;
struct proxy_conn;
struct proxy_sandbox;
struct proxy_upstream_tls;

/* Bounds on what one sandbox and one connection may consume (invariant I8). */
struct proxy_limits {
  size_t max_header_bytes;   /* request head; over it: 431 (default 64 KiB) */
  unsigned max_conns;        /* concurrent connections per sandbox (default 4096) */
  uint64_t idle_ms;          /* no byte either way for this long: close (300 s) */
  uint64_t connect_ms;       /* upstream connect incl. resolution (10 s) */
  uint64_t sniff_ms;         /* first bytes of a client that sent some (10 s) */
  uint64_t server_first_ms;  /* no byte at all for this long: a server-first
                                protocol, decided by name or address (500 ms) */
  uint64_t head_ms;          /* a whole request head (slowloris) (30 s) */
  uint64_t handshake_ms;     /* TLS handshake with the sandbox (10 s) */
  uint64_t drain_ms;         /* detach: connections get this long to finish (5 s) */
  size_t write_queue_max;    /* bytes queued toward one side before the other side
                                stops being read (256 KiB) */
  size_t sandbox_queue_max;  /* bytes queued on all of a sandbox's connections
                                before none of them is read (64 MiB) */
  size_t total_queue_max;    /* ... on all sandboxes' connections together: the
                                context's, a sandbox's copy is not used (1 GiB) */
  size_t dns_max_names;      /* synthetic names per sandbox (16384) */
  unsigned pool_max;         /* idle upstream connections kept for reuse per sandbox;
                                0 disables the pool (16) */
  unsigned pool_max_per_dest; /* ... per destination name and port (8) */
  uint64_t pool_idle_ms;     /* a pooled connection unused this long is closed; below
                                the 5 s keep-alive of common servers (4 s) */
  uint64_t up_release_ms;    /* a sandbox connection idle between requests this long
                                gives its upstream back to the pool (2 s) */
  unsigned resolve_max;      /* upstream name resolutions (getaddrinfo) in flight per
                                sandbox; more wait their turn. libuv runs half its
                                pool's threads' worth at once for the whole process:
                                16 in `serve`, 2 in the jail (1) */
  uint64_t audit_interval_ms; /* an open connection gets an audit record this often,
                                 so a long tunnel is seen before it ends; 0: only
                                 when it ends. The context's (60 s) */
};

/* Fills l with the defaults above. */
void proxy_limits_default(struct proxy_limits *l);

/* Counters for metrics; plain integers, the loop is single-threaded. */
struct proxy_counters {
  uint64_t conns_accepted;
  uint64_t conns_refused;       /* over the per-sandbox cap, loops, no destination */
  uint64_t conns_active;
  uint64_t actions[4];          /* per enum rules_action, connections */
  uint64_t requests;
  uint64_t requests_denied;
  uint64_t requests_bad;        /* 400/431/501 */
  uint64_t headers_injected;
  uint64_t upstream_errors;     /* resolution, connect, TLS verification */
  uint64_t bytes_up;            /* read from sandboxes (closed connections) */
  uint64_t bytes_down;          /* written to sandboxes (closed connections) */
  uint64_t upstream_parked;     /* idle upstream connections put in a pool */
  uint64_t upstream_reused;     /* requests sent on a pooled connection */
  uint64_t upstream_evicted;    /* pooled ones closed to make room for a connection */
  uint64_t timers_late;         /* timeouts deferred: bytes waited unread (loop late) */
  uint64_t reads_yielded;       /* reads put off to the next loop turn (fairness) */
  uint64_t setup_reads_yielded; /* ... of them, of connections being set up */
  uint64_t queue_full;          /* times all queues reached limits.total_queue_max */
};

struct proxy_ctx {
  uv_loop_t *loop;
  struct proxy_limits limits;
  struct proxy_audit *audit;               /* may be NULL */
  struct proxy_upstream_tls *upstream_tls; /* trust store for upstream TLS */
  struct proxy_counters counters;
  struct proxy_labels closed_by_reason;   /* connections ended for a reason */
  struct proxy_labels denied_by_reason;   /* requests denied or rejected */
  struct proxy_labels injected_by_rule;   /* headers injected */
  struct proxy_cred_stats cred_stats;     /* credential callback calls */
  uint64_t next_conn_id;
  char *read_buf;                          /* shared by all reads on the loop */
  size_t read_buf_size;
  char *plain_buf;                         /* TLS plaintext, shared likewise */
  uint64_t io_events;                      /* reads, accepts, DNS queries */
  int loop_stop;                           /* proxy_loop_stop was called */
  uint64_t fd_limit;                       /* RLIMIT_NOFILE (soft): descriptors it may open */
  uint64_t fd_share;                       /* descriptors one sandbox's connections may
                                              hold (half of fd_limit) */
  uint64_t fd_conns_share;                 /* descriptors all sandboxes' connections
                                              together may hold (three quarters) */
  uint64_t fd_conns_refused;               /* refused at fd_conns_share, for the log */
  uint64_t sandbox_fds;                    /* the sandboxes' listeners and responder
                                              sockets (up to 8 each) */
  uint64_t fd_conns_logged_ms;             /* loop time of the last such log line */
  uint64_t dial_fds;                       /* every sandbox's dial_fds */
  struct proxy_dns_shared dns_shared;      /* all sandboxes' DNS over TCP clients */
  struct proxy_fd_budget callback_fds;     /* ... and credential callback calls: a
                                              sixteenth of fd_limit each */
  struct proxy_conn *pool_newest;          /* every sandbox's pooled upstreams, */
  struct proxy_conn *pool_oldest;          /* parked last first: the oldest gives way
                                              at fd_conns_share (conn.c) */
  uint64_t npool;
  size_t queued;                           /* bytes in every sandbox's write queues */
  int queue_full;                          /* queued reached limits.total_queue_max:
                                              every sandbox's ends are read as in a
                                              sandbox's full state until half drains */
  struct proxy_sandbox *queue_stopped;     /* sandboxes with ends stopped while it
                                              was full, to read again (stream.c) */
  struct proxy_sandbox *parked;            /* sandboxes with connections waiting for
                                              a setup read (stream.c) */
  uv_prepare_t turn_prepare;               /* counts the loop's turns (stream.c) */
  uint32_t turn;
  struct proxy_conn *progress_head;        /* open connections in the order their */
  struct proxy_conn *progress_tail;        /* next audit record falls due (conn.c) */
  uv_timer_t progress_timer;               /* ... at the head's time */
  uint64_t conns_peak;                     /* most connections open, and most */
  uint64_t nsandboxes, sandboxes_peak;     /* sandboxes, since the heap was last trimmed */
  uv_timer_t trim_timer;                   /* ... trims it once most have gone */
  struct netns_local *host_local;          /* asks the kernel whether an address is the
                                              host's own (conn.c), opened at first use */
  uint64_t host_local_failures;            /* ... times it could not, for the log */
  struct proxy_sandbox *sandboxes;         /* every sandbox until it is freed */
  struct proxy_callback_ep *callbacks;     /* their credential callbacks, each distinct
                                              endpoint once (callbacks.c) */
  size_t ncallbacks, callbacks_cap;
  int callbacks_stale;                     /* ... could not be listed: dial nothing */
};

/*
 * Initializes ctx on loop with default limits, ctx->fd_limit with the process's soft
 * limit of open files (RLIMIT_NOFILE), ctx->fd_share with half of it (what one
 * sandbox's connections may hold while others share the process) and
 * ctx->fd_conns_share with three quarters (what all sandboxes' connections and
 * listeners may hold together). Of the quarter left, all sandboxes' DNS over TCP
 * clients and credential callback calls may hold a sixteenth each (ctx->dns_shared,
 * ctx->callback_fds); the rest stays for the control socket, name resolution and the
 * daemon's files. A process with one sandbox (the jail) may raise the shares.
 * Returns 0 or -ENOMEM.
 */
int proxy_ctx_init(struct proxy_ctx *ctx, uv_loop_t *loop);

/* Closes ctx's own handle on the loop, as the last sandbox closes: the loop must run
 * once more before uv_loop_close (a walk that closes every handle does it too). */
void proxy_ctx_close(struct proxy_ctx *ctx);

/* Frees what proxy_ctx_init allocated (after every sandbox is closed and the loop
 * closed). */
void proxy_ctx_cleanup(struct proxy_ctx *ctx);

/*
 * Raises the process's soft limit of open files (RLIMIT_NOFILE) to its hard limit,
 * as daemons that hold many connections do: the default soft limit (1024) would let
 * a sandbox hold barely 256 connections (proxy_ctx_init). *old_soft (may be NULL)
 * receives the soft limit before, for a child that should run with it (programs
 * that use select() rely on 1024). Call before proxy_ctx_init. Returns 0 or -errno.
 */
int proxy_nofile_raise(struct rlimit *old);

/*
 * Runs ctx's loop until no handle is left or proxy_loop_stop is called. With
 * busy_poll_us > 0 the loop does not sleep for that long after a connection's read
 * or accept or a DNS query: it keeps polling without blocking, so that the next
 * request of a busy connection finds the thread running instead of waking it (a
 * wakeup is an interrupt between CPUs, and in a VM an exit to the hypervisor on
 * both). It costs the CPU it spins on: up to a full core while traffic keeps coming,
 * nothing once the loop has been quiet for busy_poll_us.
 */
void proxy_loop_run(struct proxy_ctx *ctx, unsigned busy_poll_us);

/* Makes proxy_loop_run return after the current iteration (like uv_stop). */
void proxy_loop_stop(struct proxy_ctx *ctx);

/*
 * Name lookups (uv_getaddrinfo) whose answer nobody waits for any more, left running
 * on libuv's thread pool, which cannot cancel them: a lookup's owner counts it with
 * proxy_lookup_orphaned when it lets go, and its callback with
 * proxy_lookup_orphan_done. A connection lets go once both it and its sandbox are
 * closing; a credential callback client whenever it is freed.
 */
void proxy_lookup_orphaned(void);
void proxy_lookup_orphan_done(void);
unsigned proxy_lookups_orphaned(void);

/*
 * Runs loop, as the last uv_run before uv_loop_close, until nothing but orphaned
 * lookups keeps it alive. Returns 0 when nothing is left; 1 when orphaned lookups
 * are, which a silent resolver would hold for its whole timeout: the loop can then
 * be neither closed nor freed (a thread will still post to it), and the process
 * must end with _exit, since exit() joins libuv's threads (main does it).
 */
int proxy_loop_finish(uv_loop_t *loop);

struct proxy_sandbox;

/*
 * Starts serving a sandbox: takes ownership of the sockets in fds (created inside its
 * namespace by netns_attach; any may be -1), takes a reference to cfg, borrows ca
 * (may be NULL: then TLS destinations that need interception are denied). The name
 * is copied. limits may be NULL for the context's.
 */
int proxy_sandbox_start(struct proxy_ctx *ctx, const char *name, struct rules_config *cfg,
                        struct proxy_ca *ca, struct netns_fds *fds,
                        const struct proxy_limits *limits, struct proxy_sandbox **out);

/*
 * Replaces the sandbox's config (takes a reference to cfg, drops the old one when the
 * last connection holding it is done). Requests already in flight finish under the
 * old config; requests and connections starting afterwards use the new one, and so do
 * connections not decided yet. Open connections relayed opaquely (tunnels, no_proxy,
 * upgraded) are closed if the new config would deny them, intercept them or send them
 * elsewhere (proxy_conn_config_swapped).
 */
void proxy_sandbox_set_config(struct proxy_sandbox *sb, struct rules_config *cfg);

/* The current config (borrowed). */
struct rules_config *proxy_sandbox_config(const struct proxy_sandbox *sb);

const char *proxy_sandbox_name(const struct proxy_sandbox *sb);

/* Number of open connections. */
unsigned proxy_sandbox_conns(const struct proxy_sandbox *sb);

/*
 * Opens the network namespace sb's listeners live in (ioctl SIOCGSKNS): the namespace
 * it serves, whatever has become of the path it was attached by. Returns a
 * close-on-exec descriptor, or -errno (-ENOENT without a listener).
 */
int proxy_sandbox_netns_open(const struct proxy_sandbox *sb);

/* What a sandbox holds, for metrics. */
struct proxy_sandbox_stats {
  unsigned conns;
  size_t queued;       /* bytes in its connections' write queues */
  size_t dns_names;
  uint64_t dns_queries, dns_dropped, dns_refused;
  size_t certs_cached;
  uint64_t cert_hits, cert_misses, cert_evictions;
  uint64_t cert_limited;    /* new names refused: the CA's signing budget was spent */
  uint64_t cert_minted;
};

void proxy_sandbox_stats(const struct proxy_sandbox *sb, struct proxy_sandbox_stats *out);

/*
 * Stops accepting, lets open connections finish for up to drain_ms, then closes them
 * all, and frees the sandbox; cb(arg) runs when everything is closed.
 */
void proxy_sandbox_close(struct proxy_sandbox *sb, uint64_t drain_ms,
                         void (*cb)(void *arg), void *arg);

#endif
