/*
 * Strict HTTP/1.x request head parsing and rewriting.
 *
 * The byte-level gate that runs before llhttp (Debian's llhttp 8.1.0 predates several
 * smuggling fixes): anything ambiguous is refused here, so the proxy and any upstream
 * can only ever agree on where a request ends. Then the rewrite that strips the
 * sandbox's copies of injected and hop-by-hop headers and appends the injected ones.
 * Pure; no I/O.
 */
#ifndef AUTHPROXY_HTTPHEAD_H
#define AUTHPROXY_HTTPHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "rules/rules.h"

#define PROXY_HTTP_MAX_FIELDS 128

struct proxy_http_field {
  const char *name;   /* points into the head */
  size_t name_len;
  const char *value;  /* leading and trailing OWS trimmed */
  size_t value_len;
};

enum proxy_http_target_form {
  PROXY_TARGET_ORIGIN,    /* /path?query */
  PROXY_TARGET_ABSOLUTE,  /* http://authority/path?query */
  PROXY_TARGET_AUTHORITY, /* host:port (CONNECT) */
  PROXY_TARGET_ASTERISK,  /* * (OPTIONS) */
};

struct proxy_http_request {
  const char *head;       /* the whole head, through the empty line */
  size_t head_len;
  const char *method;
  size_t method_len;
  const char *target;     /* as sent */
  size_t target_len;
  enum proxy_http_target_form form;
  const char *path;       /* origin-form path with query; for absolute-form the part
                             after the authority ("/" when empty); "*" for asterisk */
  size_t path_len;
  const char *authority;  /* absolute-form and authority-form only, else NULL */
  size_t authority_len;
  int version_minor;      /* HTTP/1.0 or HTTP/1.1 */
  int host_field;         /* index of the Host field, -1 when absent */
  int64_t content_length; /* -1 when absent */
  int chunked;            /* Transfer-Encoding: chunked */
  int keep_alive;         /* after the version default and Connection tokens */
  int upgrade;            /* Connection: upgrade with Upgrade: websocket */
  int expect_continue;
  size_t nfields;
  struct proxy_http_field fields[PROXY_HTTP_MAX_FIELDS];
};

enum proxy_http_status {
  PROXY_HTTP_OK = 0,
  PROXY_HTTP_NEED_MORE,  /* no complete head yet (and under the size limit) */
  PROXY_HTTP_BAD,        /* 400: malformed or ambiguous */
  PROXY_HTTP_TOO_LARGE,  /* 431: head over max_head bytes or too many fields */
  PROXY_HTTP_NOT_IMPL,   /* 501: a Transfer-Encoding other than chunked, HTTP/2 preface,
                            a method llhttp does not know */
};

/*
 * Parses a request head from buf[0..len). Only the head is examined; bytes after it
 * (body, pipelined requests) are left alone. On anything but OK and NEED_MORE,
 * *reason (may be NULL) receives a static code naming the fault ("bare_lf",
 * "obs_fold", "cl_and_te", ...), used in the 400 body and the audit log.
 */
enum proxy_http_status proxy_http_parse_request(const char *buf, size_t len,
                                                size_t max_head,
                                                struct proxy_http_request *req,
                                                const char **reason);

/* Finds the first field named name (case-insensitive); -1 when absent. */
int proxy_http_find(const struct proxy_http_request *req, const char *name);

/*
 * Writes the head to forward upstream into out[0..size): the request line in origin
 * form, every field in order except the sandbox's copies of injected headers (any
 * case, every copy), hop-by-hop fields (Proxy-Connection, Proxy-Authorization,
 * Keep-Alive, those named by Connection), an Upgrade other than websocket with its
 * HTTP2-Settings, and a Connection field reduced to close/keep-alive/upgrade (see
 * proxy_http_upstream_keep_alive for when close is left out); then the
 * injected headers of d (may be NULL: nothing injected), once each. Returns the length,
 * -ENOSPC, or -EINVAL for a decision whose headers cannot be sent safely (a name that
 * is not a token or is reserved, a value with CR/LF/NUL, a name given twice).
 */
int proxy_http_rewrite(const struct proxy_http_request *req,
                       const struct rules_request_decision *d, char *out, size_t size);

/* Whether the rewritten request leaves its upstream connection open after the
 * response: HTTP/1.1 requests other than upgrades always do (a sandbox's "close" ends
 * only its own connection), HTTP/1.0 ones when they ask for keep-alive. */
int proxy_http_upstream_keep_alive(const struct proxy_http_request *req);

/* An upper bound of the rewritten head's length, to size the buffer. */
size_t proxy_http_rewrite_bound(const struct proxy_http_request *req,
                                const struct rules_request_decision *d);

#endif
