/*
 * Dynamic credentials: the client of a sandbox's credential callback
 * (proxy_config.callback; DESIGN.md section 4, invariant I4).
 *
 * For a request to a host the callback covers, the HTTP path asks the sandbox's
 * credential cache for the headers to inject. A fresh cached answer comes back at
 * once. Otherwise the cache POSTs {"sandbox": NAME, "host": HOST, "port": PORT} to the
 * callback (http://, verified https://, or a unix socket), and every request waiting on
 * the same (host, port) shares that one call (single flight). The answer must be a 2xx
 * response whose body is a JSON object with a "headers" object of strings; the headers
 * are checked as strictly as a pushed config's. Anything else fails every waiter with
 * "callback_failed" ("callback_timeout" when timeout_ms passed), and a failure is never
 * cached: the next request calls again. The proxy answers such a request 502 / 503 and
 * forwards nothing.
 *
 * Everything runs on one libuv loop and nothing blocks it: resolution, connect, TLS,
 * request and response are asynchronous, bounded by one timer per call. Nothing of the
 * callback's answer is logged or audited except header names; header values are wiped
 * from memory when the last reference to them goes, and every buffer that held them
 * (request with the callback's own secret headers, response, parsed JSON) is wiped too.
 */
#ifndef AUTHPROXY_CALLBACK_H
#define AUTHPROXY_CALLBACK_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proxy/fdbudget.h"
#include "rules/rules.h"

struct mbedtls_ssl_config;
struct proxy_audit;
struct strbuf;

/* Bounds on one callback answer (invariant I8). */
#define PROXY_CRED_MAX_BODY (64u << 10)  /* response body; larger fails "too_large" */
#define PROXY_CRED_MAX_HEAD (16u << 10)  /* status line and header fields together */

/* Defaults for struct proxy_cred_opts fields left 0. */
#define PROXY_CRED_DEFAULT_ENTRIES 1024
#define PROXY_CRED_DEFAULT_CALLS 64

/* ---- credentials ------------------------------------------------------------- */

struct proxy_cred_header {
  const char *name;  /* an RFC 9110 token, never hop-by-hop or framing */
  const char *value; /* NUL-terminated; no CR, LF, NUL nor control byte but HTAB */
  size_t value_len;  /* at most RULES_MAX_VALUE_LEN */
};

/*
 * One credential set fetched from the callback: the headers to inject, in the order
 * the callback sent them, at most RULES_MAX_INJECT, names unique (case-insensitive).
 * nheaders may be 0: the callback answered {"headers": {}}, nothing to inject.
 * Reference-counted (not atomically: one loop owns it); the last reference wipes the
 * values and frees. The fields after `headers` are private.
 */
struct proxy_creds {
  size_t nheaders;
  const struct proxy_cred_header *headers;
  unsigned refs;
  size_t alloc_size;
};

/* Takes a reference. Returns cr. */
struct proxy_creds *proxy_creds_ref(struct proxy_creds *cr);

/* Drops a reference; the last one wipes and frees. NULL is a no-op. */
void proxy_creds_unref(struct proxy_creds *cr);

/* ---- outcomes and counters ----------------------------------------------------- */

/* What became of one lookup that needed the callback (audit "outcome", metrics). */
enum proxy_cred_outcome {
  PROXY_CRED_OK,            /* 2xx with valid headers */
  PROXY_CRED_TIMEOUT,       /* timeout_ms passed (reason "callback_timeout") */
  PROXY_CRED_RESOLVE,       /* the callback's host name did not resolve */
  PROXY_CRED_CONNECT,       /* connect, read or write failed */
  PROXY_CRED_TLS,           /* handshake or certificate verification failed */
  PROXY_CRED_BAD_RESPONSE,  /* malformed HTTP, or the connection ended early */
  PROXY_CRED_BAD_STATUS,    /* a status other than 2xx */
  PROXY_CRED_TOO_LARGE,     /* body over PROXY_CRED_MAX_BODY, head over ..._MAX_HEAD */
  PROXY_CRED_NOT_JSON,      /* body is not a JSON object */
  PROXY_CRED_BAD_HEADERS,   /* "headers" missing, not an object of valid headers */
  PROXY_CRED_BUSY,          /* too many calls in flight; nothing was sent */
  PROXY_CRED_CANCELLED,     /* the cache was freed, or every waiter left (ttl 0) */
  PROXY_CRED_INTERNAL,      /* out of memory or an unexpected local error */
  PROXY_CRED__COUNT
};

/* "ok", "timeout", "resolve_failed", ... (a static string; "unknown" if out of range). */
const char *proxy_cred_outcome_name(enum proxy_cred_outcome o);

/* The reason code a request gets for an outcome: NULL for PROXY_CRED_OK,
 * "callback_timeout" for PROXY_CRED_TIMEOUT, else "callback_failed". */
const char *proxy_cred_outcome_reason(enum proxy_cred_outcome o);

/*
 * Counters, plain integers on the loop's thread. One struct may be shared by every
 * cache of a daemon (pass the same pointer to each), so that replacing a sandbox's
 * cache does not reset them. Outcomes count calls (a call answers every lookup that
 * waited on it), plus lookups refused as busy, which make no call.
 */
struct proxy_cred_stats {
  uint64_t calls;          /* callback requests started */
  uint64_t successes;      /* calls that returned usable headers */
  uint64_t failures;       /* calls that failed, and lookups refused as busy */
  uint64_t timeouts;       /* of the failures, those with "callback_timeout" */
  uint64_t outcomes[PROXY_CRED__COUNT];
  uint64_t cache_hits;     /* lookups answered from the cache */
  uint64_t joined;         /* lookups that waited on a call already in flight */
  uint64_t evictions;      /* fresh entries dropped because the cache was full */
  uint64_t latency_ms_sum; /* over every finished call */
};

/* Writes the counters in the Prometheus text format (authproxy_callback_*). */
void proxy_cred_stats_write(struct strbuf *b, const struct proxy_cred_stats *s);

/* ---- the cache ------------------------------------------------------------------ */

struct proxy_cred_cache;

struct proxy_cred_opts {
  size_t max_entries;   /* credential sets kept (LRU); 0: PROXY_CRED_DEFAULT_ENTRIES */
  unsigned max_calls;   /* calls in flight; a lookup beyond fails "callback_failed"
                           (outcome busy) without a call; 0: PROXY_CRED_DEFAULT_CALLS */
  /* Verified TLS client configuration for https:// callbacks (proxy_upstream_tls_conf);
   * borrowed; NULL: https callbacks fail. It must verify peers (VERIFY_REQUIRED);
   * the callback's host is set for SNI and verification. */
  const struct mbedtls_ssl_config *tls_conf;
  struct proxy_audit *audit;       /* borrowed; NULL: no audit records */
  struct proxy_cred_stats *stats;  /* borrowed; NULL: counted privately */
  /* Descriptors for calls, shared by every sandbox's cache (borrowed; NULL: only
   * max_calls bounds them): a lookup that would start a call past it fails as busy,
   * like one past max_calls. */
  struct proxy_fd_budget *fds;
};

/*
 * Creates the credential cache of one sandbox (sandbox is copied; it is the "sandbox"
 * of every callback request). opts may be NULL for the defaults. The borrowed pointers
 * in opts must stay valid until proxy_cred_cache_free returns. Returns 0, -EINVAL or
 * -ENOMEM.
 */
int proxy_cred_cache_new(uv_loop_t *loop, const char *sandbox,
                         const struct proxy_cred_opts *opts, struct proxy_cred_cache **out);

/*
 * Frees the cache. Every pending waiter's callback runs before this returns, with
 * status -ECANCELED and reason "callback_failed" (a callback may not use the cache
 * then: proxy_cred_get answers -ECANCELED). Calls in flight are aborted and audited
 * as "cancelled"; cached credentials are dropped (wiped unless a holder still has a
 * reference). After it returns, the cache never touches tls_conf, audit or stats
 * again, but its handles are still closing: the loop must run once more before
 * uv_loop_close (the memory is freed in the last close callback). NULL is a no-op.
 */
void proxy_cred_cache_free(struct proxy_cred_cache *c);

/* Number of credential sets cached now (fresh or not yet swept). */
size_t proxy_cred_cache_size(const struct proxy_cred_cache *c);

/*
 * The answer to one lookup. status is 0 with creds (borrowed for the duration of the
 * call: take a reference to keep them), or a negative errno with creds NULL and reason
 * "callback_failed" or "callback_timeout" (-ETIMEDOUT): -ECANCELED when the cache was
 * freed, -EBUSY when too many calls were in flight, -EPROTO for an unusable answer,
 * or the error of resolution, connect or I/O.
 */
typedef void (*proxy_cred_cb)(void *arg, int status, const char *reason,
                              struct proxy_creds *creds);

/* A lookup waiting on a call. */
struct proxy_cred_wait;

/*
 * Looks up the credentials for (host, port) under the callback config cfg (borrowed
 * for this call only; what the call needs is copied, so cfg may be freed while it
 * runs). host is the normalized destination name (at most RULES_MAX_NAME_LEN bytes).
 *
 * When a fresh entry is cached, cb runs before this returns and *wait is NULL. When
 * the lookup fails at once (too many calls in flight), cb also runs before this
 * returns with *wait NULL. Otherwise the lookup joins the call in flight for the key,
 * or starts one, *wait is set, and cb runs later from the loop, exactly once, unless
 * proxy_cred_cancel is called first.
 *
 * The cache holds one callback config: when cfg's URL, headers or TTL differ from the
 * previous lookup's, every cached entry is dropped first, and calls made under the old
 * config are no longer joined nor cached.
 *
 * Returns 0 (cb has run or will run), or -EINVAL (bad host), -ENOMEM or -ECANCELED
 * (the cache is being freed): then cb never runs and *wait is NULL.
 */
int proxy_cred_get(struct proxy_cred_cache *c, const struct rules_callback *cfg,
                   const char *host, uint16_t port, proxy_cred_cb cb, void *arg,
                   struct proxy_cred_wait **wait);

/*
 * Cancels a pending lookup (the sandbox connection closed first): its callback never
 * runs and w is freed. The call goes on for its other waiters, and its answer is still
 * cached; when no waiter is left and the answer would not be cached (ttl 0, or the
 * config changed), the call is aborted. w must be a lookup whose callback has not
 * started; NULL is a no-op.
 */
void proxy_cred_cancel(struct proxy_cred_wait *w);

#endif
