/*
 * The control API transport: HTTP/1.1 over a Unix socket created 0600, parsed with
 * llhttp (strict, bounded: 16 KiB heads, 1 MiB bodies, 30 s for each request to arrive
 * whole, 64 clients at once: more wait for a slot, and once none has freed for 2 s they
 * are answered 503 too_many_clients). The daemon supplies one handler; requests on a
 * connection are served in order.
 */
#ifndef AUTHPROXY_CONTROL_H
#define AUTHPROXY_CONTROL_H

#include <stddef.h>

#include <uv.h>

#include "proxy/strbuf.h"

#define PROXY_CONTROL_MAX_BODY (1u << 20)

struct proxy_control_request {
  const char *method;    /* "GET", "PUT", ... */
  const char *path;      /* request target without the query, NUL-terminated */
  const char *body;      /* NUL-terminated (may be empty) */
  size_t body_len;
};

struct proxy_control_response {
  int status;
  const char *content_type; /* default application/json */
  struct strbuf body;
};

typedef void (*proxy_control_cb)(void *arg, const struct proxy_control_request *req,
                                 struct proxy_control_response *resp);

struct proxy_control;

/*
 * Listens on the Unix socket at path (a stale socket file is replaced; a live one is
 * an error), mode 0600. Returns 0 or a negative error with a message in err.
 */
int proxy_control_start(uv_loop_t *loop, const char *path, proxy_control_cb cb, void *arg,
                        struct proxy_control **out, char *err, size_t errsz);

/* Stops listening, closes every client, removes the socket file; cb(arg) at the end. */
void proxy_control_close(struct proxy_control *c, void (*cb)(void *arg), void *arg);

/* Fills resp with a JSON error: {"error":{"code":CODE,"message":MESSAGE}}. */
void proxy_control_error(struct proxy_control_response *resp, int status, const char *code,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
