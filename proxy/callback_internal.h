/*
 * Shared by proxy/callback.c (the cache, single flight, accounting) and
 * proxy/callback_client.c (one HTTP request to the callback and the checks on its
 * answer). Nothing outside these two files includes it.
 */
#ifndef AUTHPROXY_CALLBACK_INTERNAL_H
#define AUTHPROXY_CALLBACK_INTERNAL_H

#include <stdint.h>

#include <uv.h>

#include "proxy/callback.h"
#include "rules/rules.h"

struct mbedtls_ssl_config;

/* What one call came to; everything borrowed for the duration of the done callback. */
struct proxy_cred_result {
  enum proxy_cred_outcome outcome;
  int err;                    /* 0, or the negative errno the waiters get */
  int http_status;            /* the callback's final status, 0 if none was read */
  struct proxy_creds *creds;  /* PROXY_CRED_OK only; take a reference to keep */
  const char *detail;         /* for the log: what failed; never a header value */
};

typedef void (*proxy_cred_client_done_cb)(void *arg, const struct proxy_cred_result *res);

struct proxy_cred_client_params {
  const struct rules_callback *cfg;          /* borrowed during start only */
  const struct mbedtls_ssl_config *tls_conf; /* borrowed until done or abort */
  const char *sandbox;                       /* borrowed during start only */
  const char *host;                          /* borrowed during start only */
  uint16_t port;
  proxy_cred_client_done_cb done;
  void *arg;
};

struct proxy_cred_client;

/*
 * Starts one POST to the callback. done(arg, res) runs exactly once, always from the
 * loop (never before this returns), unless proxy_cred_client_abort comes first. After
 * done or abort the client closes its handles and frees itself; it keeps no pointer
 * to the caller. Returns 0, or -ENOMEM (nothing started, done never runs).
 */
int proxy_cred_client_start(uv_loop_t *loop, const struct proxy_cred_client_params *p,
                            struct proxy_cred_client **out);

/* Aborts a client whose done callback has not run: done never runs, the connection
 * is closed, every buffer wiped. NULL is a no-op. */
void proxy_cred_client_abort(struct proxy_cred_client *cl);

#endif
