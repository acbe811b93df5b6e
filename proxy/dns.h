/*
 * The per-sandbox DNS responder and its synthetic address table.
 *
 * Every A query is answered with an address from 198.18.0.0/15 that stands for the
 * name inside this sandbox; the proxy later maps a connection's original destination
 * back to the name. Nothing is ever forwarded, so DNS carries no data out.
 */
#ifndef AUTHPROXY_DNS_H
#define AUTHPROXY_DNS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proxy/fdbudget.h"

#define PROXY_DNS_SYNTH_BASE 0xC6120000u /* 198.18.0.0 */
#define PROXY_DNS_SYNTH_BITS 15          /* 198.18.0.0/15: 131072 addresses */

/* ---- synthetic address table (pure) ---- */

struct proxy_dns_table;

/*
 * Creates a table of at most max_entries names (at most 2^(32 - PROXY_DNS_SYNTH_BITS)
 * - 2 = 131070: every address of the /15 but the first and the last).
 * key seeds the name->address hash so that addresses are stable for a sandbox across
 * daemon restarts (pass the sandbox name) but differ between sandboxes. An entry not
 * used for min_idle_ms may be recycled for a new name once the table is full.
 * Returns NULL with errno set (EINVAL: max_entries out of range or no key).
 */
struct proxy_dns_table *proxy_dns_table_new(size_t max_entries, const char *key,
                                            uint64_t min_idle_ms);

void proxy_dns_table_free(struct proxy_dns_table *t);

/*
 * Returns the address (host byte order) for a normalized name, assigning one if the
 * name is new, and refreshes its last use to now_ms. -ENOSPC when the table is full
 * and no entry is old enough to recycle.
 */
int proxy_dns_table_assign(struct proxy_dns_table *t, const char *name, uint64_t now_ms,
                           uint32_t *addr);

/* Returns the name for an address (host byte order) and refreshes it, or NULL. The
 * string is owned by the table and valid until the next assign. */
const char *proxy_dns_table_lookup(struct proxy_dns_table *t, uint32_t addr,
                                   uint64_t now_ms);

/*
 * For a connection to addr, a synthetic address the table does not hold (a daemon
 * restart emptied it; a client kept the answer it got before), that names a host:
 * assigns name to addr if addr is the address the name gets when free, as a query for
 * it would have (placement is stable for a key), and returns 0. -ESRCH when addr is
 * not that (it is taken, the name has another, or it is not the name's home), the
 * table unchanged; -ENOSPC as assign.
 */
int proxy_dns_table_claim(struct proxy_dns_table *t, const char *name, uint32_t addr,
                          uint64_t now_ms);

/* 1 if addr (host byte order) is inside the synthetic range. */
int proxy_dns_is_synthetic(uint32_t addr);

size_t proxy_dns_table_count(const struct proxy_dns_table *t);

/* ---- responder (libuv) ---- */

struct proxy_dns_stats {
  uint64_t queries;   /* answered */
  uint64_t dropped;   /* malformed, dropped without an answer */
  uint64_t refused;   /* table full or name rejected */
};

/* A zero field (or opts == NULL) takes the default: 60 s, 16 clients, 10 s. */
struct proxy_dns_opts {
  uint32_t answer_ttl;      /* TTL of synthetic answers, seconds */
  unsigned tcp_max_conns;   /* concurrent TCP clients */
  uint64_t tcp_idle_ms;     /* a TCP client idle this long is closed */
  uint64_t *activity;       /* if set, counts datagrams, TCP clients accepted and
                               their reads (the loop's busy polling, proxy_loop_run) */
  struct proxy_dns_shared *shared; /* borrowed; NULL: only tcp_max_conns bounds
                                      the TCP clients */
  const char *sandbox;      /* borrowed, for log lines; may be NULL */
};

struct dns_client;

/*
 * What every sandbox's responder in a process shares: a budget of descriptors for TCP
 * clients (zero it, then set fds.max) and the clients that hold it, idle the longest
 * first. At the budget, a new client takes the place of the client idle the longest,
 * whichever sandbox's it is: DNS clients reconnect when the server closes (RFC 7766),
 * and a sandbox that holds many cannot keep the others out. Outlives every responder
 * that uses it.
 */
struct proxy_dns_shared {
  struct proxy_fd_budget fds;   /* .refused: clients closed to make room */
  struct dns_client *oldest, *newest;
};

struct proxy_dns;

/*
 * Starts serving the given sockets (taken over: closed by proxy_dns_close; any may
 * be -1) on loop with the table (borrowed; must outlive the responder). On failure
 * the sockets are closed as well and *out is NULL; -EINVAL when all are -1 or one is
 * not of its type.
 */
int proxy_dns_start(uv_loop_t *loop, struct proxy_dns_table *table,
                    const struct proxy_dns_opts *opts, int udp4, int tcp4, int udp6,
                    int tcp6, struct proxy_dns **out);

/* Stops and frees; cb(arg) runs once every handle is closed (at once if d is NULL). */
void proxy_dns_close(struct proxy_dns *d, void (*cb)(void *arg), void *arg);

const struct proxy_dns_stats *proxy_dns_stats(const struct proxy_dns *d);

#endif
