/*
 * Shared by proxy/callback.c (the cache, single flight, accounting) and
 * proxy/callback_client.c (one HTTP request to the callback and the checks on its
 * answer), with the answer's parser in proxy/callback_answer.c. Nothing else includes
 * it but that parser's tests (tests/fuzz/fuzz_callback_answer.c,
 * tests/unit/test_callback_answer.c).
 */
#ifndef AUTHPROXY_CALLBACK_INTERNAL_H
#define AUTHPROXY_CALLBACK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "proxy/callback.h"
#include "rules/rules.h"

struct mbedtls_ssl_config;

/* ---- callback_answer.c: the answer, parsed as it arrives (no I/O) ---- */

enum {
  PROXY_CRED_ANSWER_MORE,   /* feed more bytes */
  PROXY_CRED_ANSWER_DONE,   /* a complete final 2xx answer (or credentials built) */
  PROXY_CRED_ANSWER_FAILED, /* unusable: outcome, err and detail say why */
};

struct proxy_cred_answer {
  llhttp_t parser;
  int started;                      /* a response began */
  int complete;                     /* the final response is complete */
  int status;                       /* its status code (0 until known) */
  size_t head_bytes;
  char *body;                       /* secret: wiped when freed */
  size_t body_len, body_cap;
  int failed;
  enum proxy_cred_outcome outcome;  /* when failed */
  int err;                          /* when failed: a negative errno */
  char detail[256];                 /* when failed: for the log, never a value */
};

/* Prepares a to parse one answer. */
void proxy_cred_answer_init(struct proxy_cred_answer *a);

/*
 * Parses the next bytes of the answer (borrowed). Returns PROXY_CRED_ANSWER_MORE,
 * _DONE once a final 2xx answer is complete (later bytes are ignored), or _FAILED: a
 * status other than 2xx, malformed HTTP, a head over PROXY_CRED_MAX_HEAD or a body
 * over PROXY_CRED_MAX_BODY.
 */
int proxy_cred_answer_feed(struct proxy_cred_answer *a, const char *data, size_t len);

/*
 * The connection ended. tls: it was TLS; clean: close_notify was received (an answer
 * delimited by the end of the connection needs it over TLS). Returns _DONE or _FAILED.
 */
int proxy_cred_answer_eof(struct proxy_cred_answer *a, int tls, int clean);

/*
 * After _DONE: parses the body as strict JSON and checks its "headers" object. On
 * _DONE *out holds new credentials (one reference); else _FAILED and *out is NULL.
 * Either way the body is wiped and freed.
 */
int proxy_cred_answer_creds(struct proxy_cred_answer *a, struct proxy_creds **out);

/* Wipes and frees what a holds (a may be reused after proxy_cred_answer_init). */
void proxy_cred_answer_free(struct proxy_cred_answer *a);

/* ---- callback_client.c: one call ---- */

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
  struct proxy_cred_lookup *lookup;          /* borrowed until done or abort */
};

struct proxy_cred_client;

/*
 * The lookups of a callback's host name for the calls of one cache (one sandbox): at
 * most one uv_getaddrinfo of a name (and port) in flight, whose answer every call
 * waiting for it shares. Another name has its own (a config changed the URL).
 * Each lookup holds a thread of libuv's pool until the resolver answers (its whole
 * timeout when the name's server is silent), and the pool is shared by every sandbox
 * of the daemon: a call per host the callback covers, each with a lookup of its own,
 * would let one sandbox take all of it (invariant I8).
 */
struct proxy_cred_lookup;

/* Returns 0, or -ENOMEM. */
int proxy_cred_lookup_new(uv_loop_t *loop, struct proxy_cred_lookup **out);

/* Frees a lookup no client waits on any more (abort them first). A getaddrinfo still
 * in flight completes unused. NULL is a no-op. */
void proxy_cred_lookup_free(struct proxy_cred_lookup *lk);

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
