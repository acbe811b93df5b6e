/*
 * The HTTP engine: plain HTTP, and the plaintext inside intercepted TLS.
 *
 * One request at a time per connection: its head is checked byte by byte
 * (httphead.c) and by llhttp, decided (rules_decide_*), rewritten (sandbox copies of
 * injected headers stripped, injected ones added) and forwarded; its body is streamed
 * through llhttp, which finds where it ends; the response is streamed back through a
 * second llhttp parser, which finds where it ends. Only then is the next request read.
 * Bytes a client pipelines meanwhile wait in c->pending. Nothing is buffered whole: a
 * body or a Server-Sent Events stream flows as it arrives, under backpressure.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "proxy/audit.h"
#include "proxy/callback.h"
#include "proxy/httphead.h"
#include "proxy/log.h"
#include "proxy/proxy_internal.h"
#include "proxy/scrub.h"
#include "proxy/tls.h"

/* Rewritten heads up to this size are written upstream from the stack. */
#define HEAD_STACK_BYTES 8192

enum phase {
  PH_HEAD,       /* reading a request head */
  PH_CREDENTIALS, /* head decided; waiting for the credential callback */
  PH_CONNECTING, /* head decided; upstream being dialed */
  PH_BODY,       /* streaming the request body */
  PH_RESPONSE,   /* request done; streaming the response */
};

struct proxy_http {
  llhttp_t req;
  llhttp_t resp;
  enum phase phase;
  int req_done;              /* the current request has been forwarded entirely */
  int resp_done;             /* its final response has been relayed entirely */
  int resp_started;          /* some bytes of the final response (or of an interim
                                one cut short) reached the sandbox */
  int resp_in_msg;           /* the response parser is inside a message */
  int resp_head_done;        /* ... past its head: how its body ends is known */
  int head_sent;             /* the request's head (with what was injected) went to an
                                upstream, maybe one since closed: it was forwarded */
  int keep_alive;            /* the request allows another one after it */
  int up_keep_alive;         /* ... on its upstream connection (see httphead.h) */
  int upgrade;               /* the request asks for a WebSocket upgrade */
  int is_head;               /* HEAD: the response has no body */
  int from_pool;             /* the upstream was taken from the pool for this request */
  int msg_complete;          /* set by llhttp callbacks */
  int status;                /* final response status */
  int decided;               /* the connection-level decision was made */
  int in_body;               /* llhttp is past the request head: fields are trailers */
  int bad_trailer;           /* a trailer field repeats an injected header */
  int body_cut;              /* a write of the body to the upstream failed: the rest of
                                it goes nowhere, what the upstream sent is read */
  int awaiting_continue;     /* the request asked the upstream for a 100 Continue before
                                its body: no answer has begun, no body byte has gone */
  char trailer[64];          /* the name of the trailer field being parsed */
  size_t trailer_len;        /* may exceed sizeof(trailer): only the length is kept */
  size_t scanned;            /* pending bytes already searched for a line feed */
  unsigned requests;
  struct rules_request_decision *rd; /* decision waiting for the callback */
  struct proxy_cred_wait *cred_wait; /* the callback call being waited on */
  struct proxy_creds *creds; /* callback headers of the current request */
  struct proxy_scrub scrub;  /* masks injected values echoed in the response */
  char *out;                 /* rewritten head waiting for the upstream */
  size_t out_len;
  char *retry;               /* the head, while a reused upstream may need it sent again
                                (retry_request) */
  size_t retry_len;
  char *addr_path;           /* the current request's path, kept while the config has
                                request-level denies on addresses (check_address) */
  size_t addr_path_len;
  struct rules_config *cfg;  /* config of the current request */
  uint64_t start_ms;
  uint64_t up_bytes, down_bytes;
  char method[32];              /* NUL-terminated */
  size_t method_len;
  char override[32];            /* the method an override field names, uppercase, or "" */
  char preflight[32];           /* the method a CORS preflight let through was decided as,
                                   uppercase, or "" */
  char path[512];
  int path_truncated;           /* the request's path was longer than path */
  size_t path_len;
  char rule[64];
  const char *injected[RULES_MAX_INJECT];
  const char *injected_rule[RULES_MAX_INJECT]; /* the rule each came from */
  size_t ninjected;
};

static void process_down(struct proxy_conn *c);

/*
 * The sandbox half-closed and nothing it sent is left to answer: its connection ends
 * (reason: static, may be NULL). The last answer may still wait in the write queue
 * toward a sandbox that reads it slowly: closing would cancel it, and the sandbox
 * would take the truncated answer for a whole one, so the close lingers until it is
 * written.
 */
static void end_after_sandbox_eof(struct proxy_conn *c, const char *reason)
{
  proxy_http_park(c);
  if (c->down.queued > 0) {
    if (c->reason == NULL)
      c->reason = reason;
    proxy_conn_linger(c);
    return;
  }
  proxy_conn_close(c, 0, reason);
}

/* ---- llhttp glue ---- */

static int on_req_headers(llhttp_t *p)
{
  struct proxy_conn *c = p->data;

  c->http->in_body = 1;
  return 0;
}

/* Collects a trailer field's name; llhttp may deliver it in pieces. */
static int on_req_field(llhttp_t *p, const char *at, size_t len)
{
  struct proxy_http *h = ((struct proxy_conn *)p->data)->http;

  if (!h->in_body)
    return 0;
  if (h->trailer_len + len <= sizeof(h->trailer))
    memcpy(h->trailer + h->trailer_len, at, len);
  h->trailer_len += len;
  return 0;
}

/* Header names compared as httphead.c does when it strips the sandbox's copies:
 * case-insensitive, '_' and '-' alike (CGI-style gateways fold them). */
static int same_name_folded(const char *a, size_t alen, const char *b)
{
  size_t i;

  if (alen != strlen(b))
    return 0;
  for (i = 0; i < alen; i++) {
    char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];

    if (x >= 'A' && x <= 'Z')
      x = (char)(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z')
      y = (char)(y - 'A' + 'a');
    if (x != y)
      return 0;
  }
  return 1;
}

/*
 * Fields that servers read, on a POST, as the method the request really has: Rails
 * (Rack::MethodOverride, on by default), Symfony and Laravel, Express's
 * method-override and Google's APIs the first, OData services the second, others the
 * third. Method-level egress policy is decided for that method too.
 */
static const char *const override_fields[] = { "x-http-method-override", "x-http-method",
                                               "x-method-override" };

/* Stores method m (len bytes, uppercased here) as the override in out (size bytes):
 * 0, or -EINVAL when it is no method token that fits or another one was named. */
static int set_override(char *out, size_t size, const char *m, size_t len)
{
  char up[32];
  size_t k;

  if (len == 0 || len >= sizeof(up) || len >= size || !rules_is_token(m, len))
    return -EINVAL;
  for (k = 0; k < len; k++)
    up[k] = (char)(m[k] >= 'a' && m[k] <= 'z' ? m[k] - 'a' + 'A' : m[k]);
  up[k] = '\0';
  if (out[0] != '\0' && strcmp(out, up) != 0)
    return -EINVAL;
  memcpy(out, up, k + 1);
  return 0;
}

/*
 * The next byte of a query component as a form decoder reads it ('+' is a space,
 * %XX its byte; a malformed escape stays as it is) from s[*i..len), advancing *i.
 */
static char query_byte(const char *s, size_t len, size_t *i)
{
  char c = s[(*i)++];

  if (c == '+')
    return ' ';
  if (c == '%' && *i + 1 < len) {
    int hi = rules_hex_value((unsigned char)s[*i]), lo = rules_hex_value((unsigned char)s[*i + 1]);

    if (hi < 0 || lo < 0)
      return c;
    c = (char)(hi * 16 + lo);
    *i += 2;
  }
  return c;
}

/*
 * Whether a query parameter's name s[0..len) is "_method" as PHP reads it (escapes
 * decoded, leading spaces dropped, '.' and ' ' taken for '_', the name ending at a
 * NUL); *array is set for "_method[...]", which PHP reads as an array of that name.
 */
static int is_method_param(const char *s, size_t len, int *array)
{
  static const char name[] = "_method";
  size_t i = 0, n = 0;
  char c = ' ';

  *array = 0;
  while (i < len && c == ' ')
    c = query_byte(s, len, &i);
  while (c != ' ' || n > 0) {
    if (c == '.' || c == ' ')
      c = '_';
    if (n == sizeof(name) - 1) {
      *array = c == '[';
      return *array || c == '\0';
    }
    if ((c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) != name[n])
      return 0;
    n++;
    if (i == len)
      return n == sizeof(name) - 1;
    c = query_byte(s, len, &i);
  }
  return 0;
}

/*
 * The method a `_method` query parameter names, stored as set_override does: Symfony
 * reads it on a POST when parameter overrides are on (Laravel turns them on for every
 * request), Express's method-override with the key its README shows
 * (methodOverride('_method')) and Scalatra too. Parameters are split at '&' and ';'.
 * 0, or -EINVAL for a value that is no method, an array, or a disagreement.
 */
static int query_override(const struct proxy_http_request *req, char *out, size_t size)
{
  const char *q = memchr(req->path, '?', req->path_len), *end = req->path + req->path_len;
  const char *p, *sep, *eq;
  char m[32];
  size_t i, n;
  int array;

  if (q == NULL)
    return 0;
  for (p = q + 1; p < end; p = sep + 1) {
    for (sep = p; sep < end && *sep != '&' && *sep != ';'; sep++)
      ;
    eq = memchr(p, '=', (size_t)(sep - p));
    if (!is_method_param(p, (size_t)((eq != NULL ? eq : sep) - p), &array))
      continue;
    if (array || eq == NULL)
      return -EINVAL;
    for (i = 0, n = 0; i < (size_t)(sep - eq - 1) && n < sizeof(m); n++)
      m[n] = query_byte(eq + 1, (size_t)(sep - eq - 1), &i);
    if (i < (size_t)(sep - eq - 1) || set_override(out, size, m, n) != 0)
      return -EINVAL;
  }
  return 0;
}

/*
 * The method a CORS preflight asks leave for, as set_override stores it, into out
 * (size bytes): a browser sends `OPTIONS` with `Origin` and
 * `Access-Control-Request-Method` before a cross-origin request that is not a simple
 * one (a PUT, a DELETE, a JSON POST, a custom header). Returns 1 for a preflight,
 * else 0 with out "".
 */
static int preflight_method(const struct proxy_http_request *req, char *out, size_t size)
{
  int origin = 0;
  size_t i;

  out[0] = '\0';
  if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7) != 0)
    return 0;
  for (i = 0; i < req->nfields; i++) {
    const struct proxy_http_field *f = &req->fields[i];

    if (same_name_folded(f->name, f->name_len, "origin"))
      origin = 1;
    else if (same_name_folded(f->name, f->name_len, "access-control-request-method") &&
             set_override(out, size, f->value, f->value_len) != 0) {
      out[0] = '\0';
      return 0;
    }
  }
  if (!origin)
    out[0] = '\0';
  return out[0] != '\0';
}

/*
 * Copies the method the request's override fields or `_method` query parameter name,
 * uppercased (as those servers read it), into out (size bytes), or "" when it has
 * none. Returns 0, or -EINVAL for a value that is not a method token that fits, or
 * for overrides naming different methods: which one a server obeys is not known. (A
 * `_method` in a body, which Rails and Laravel also read, is not seen: the head
 * is decided before the body arrives.)
 */
static int override_method(const struct proxy_http_request *req, char *out, size_t size)
{
  size_t i, j;

  out[0] = '\0';
  for (i = 0; i < req->nfields; i++) {
    const struct proxy_http_field *f = &req->fields[i];

    for (j = 0; j < sizeof(override_fields) / sizeof(override_fields[0]); j++)
      if (same_name_folded(f->name, f->name_len, override_fields[j]))
        break;
    if (j == sizeof(override_fields) / sizeof(override_fields[0]))
      continue;
    if (set_override(out, size, f->value, f->value_len) != 0)
      return -EINVAL;
  }
  return query_override(req, out, size);
}

int proxy_http_override_method(const struct proxy_http_request *req, char *out, size_t size)
{
  return override_method(req, out, size);
}

int proxy_http_preflight_method(const struct proxy_http_request *req, char *out, size_t size)
{
  return preflight_method(req, out, size);
}

/*
 * A trailer field that repeats an injected header is refused (invariant I6): a
 * server that merges trailers into the header section would see the sandbox's copy
 * next to the injected one. The error stops llhttp inside the trailer section, so
 * the request never completes upstream.
 */
static int on_req_field_complete(llhttp_t *p)
{
  struct proxy_http *h = ((struct proxy_conn *)p->data)->http;
  size_t i, len = h->trailer_len;

  if (!h->in_body)
    return 0;
  h->trailer_len = 0;
  for (i = 0; i < h->ninjected; i++) {
    /* A name too long to have been kept is refused if an injected name has its
     * length: it cannot be told apart. */
    if (len > sizeof(h->trailer) ? strlen(h->injected[i]) == len
                                 : same_name_folded(h->trailer, len, h->injected[i])) {
      h->bad_trailer = 1;
      return -1;
    }
  }
  return 0;
}

static int on_req_complete(llhttp_t *p)
{
  struct proxy_conn *c = p->data;

  c->http->msg_complete = 1;
  return HPE_PAUSED;
}

static int on_resp_begin(llhttp_t *p)
{
  struct proxy_http *h = ((struct proxy_conn *)p->data)->http;

  h->resp_in_msg = 1;
  h->resp_head_done = 0;
  h->awaiting_continue = 0;
  return 0;
}

static int on_resp_headers(llhttp_t *p)
{
  struct proxy_conn *c = p->data;
  struct proxy_http *h = c->http;

  h->resp_head_done = 1;
  if (p->status_code >= 200 || p->status_code == 101)
    h->status = p->status_code;
  /* A response to HEAD, a 204 and a 304 have no body whatever their headers say
   * (RFC 9112 6.3: a 304 may carry the Content-Length of the representation); llhttp
   * would wait for one. A 101 is handled by llhttp as an upgrade. */
  if ((h->is_head && p->status_code >= 200) || p->status_code == 204 ||
      p->status_code == 304 || (p->status_code >= 100 && p->status_code < 200 &&
                                p->status_code != 101))
    return 1;
  return 0;
}

static int on_resp_complete(llhttp_t *p)
{
  struct proxy_conn *c = p->data;

  /* 1xx interim responses (100 Continue) precede the real one. */
  c->http->resp_in_msg = 0;
  if (p->status_code >= 200) {
    c->http->msg_complete = 1;
    return HPE_PAUSED;
  }
  return 0;
}

static const llhttp_settings_t req_settings = {
  .on_headers_complete = on_req_headers,
  .on_header_field = on_req_field,
  .on_header_field_complete = on_req_field_complete,
  .on_message_complete = on_req_complete,
};

static const llhttp_settings_t resp_settings = {
  .on_message_begin = on_resp_begin,
  .on_headers_complete = on_resp_headers,
  .on_message_complete = on_resp_complete,
};

/* ---- bookkeeping ---- */

void proxy_http_free(struct proxy_http *h)
{
  if (h == NULL)
    return;
  if (h->cred_wait != NULL)
    proxy_cred_cancel(h->cred_wait);
  proxy_creds_unref(h->creds);
  proxy_scrub_free(&h->scrub);
  free(h->rd);
  free(h->out);
  free(h->retry);
  free(h->addr_path);
  rules_config_unref(h->cfg);
  free(h);
}

static void drop_retry(struct proxy_http *h)
{
  free(h->retry);
  h->retry = NULL;
  h->retry_len = 0;
}

static void audit_request(struct proxy_conn *c, const char *action, const char *reason)
{
  struct proxy_http *h = c->http;
  struct proxy_audit_request r;

  if (h->method_len == 0)
    return;
  memset(&r, 0, sizeof(r));
  r.method = h->method;
  r.method_len = h->method_len;
  r.path = h->path;
  r.path_len = h->path_len;
  r.path_truncated = h->path_truncated;
  r.action = action;
  r.reason = reason;
  r.rule = h->rule;
  r.status = h->status;
  r.injected = h->injected;
  /* Headers are injected into a head that goes out: a request answered before (the
   * upstream unreachable, a failed address check) had none. */
  r.ninjected = h->head_sent ? h->ninjected : 0;
  r.bytes_up = h->up_bytes;
  r.bytes_down = h->down_bytes;
  r.duration_ms = uv_now(c->sb->ctx->loop) - h->start_ms;
  proxy_audit_request(c, &r);
  h->method_len = 0;
}

/* Answers the current request locally and ends the connection. */
static void fail_request(struct proxy_conn *c, int status, const char *reason,
                         const char *entry)
{
  struct proxy_http *h = c->http;
  struct proxy_ctx *ctx = c->sb->ctx;
  struct strbuf answer;

  if (status == 403) {
    ctx->counters.requests_denied++;
    /* Refused before the connection was decided (Host disagrees with the name the
     * sandbox connected to): the connection is denied, as in TLS. */
    if (!c->decided)
      proxy_conn_mark_denied(c);
  } else if (status < 500) {
    ctx->counters.requests_bad++;
  }
  h->status = status;
  proxy_labels_add(&ctx->denied_by_reason, reason, 1);
  if (entry != NULL && entry != h->rule)
    snprintf(h->rule, sizeof(h->rule), "%s", entry);
  strbuf_init(&answer);
  /* Part of a response already went out: a second one would corrupt it. */
  if (!h->resp_started)
    proxy_error_response(c, status, reason, entry, &answer);
  if (!answer.oom)
    h->down_bytes += answer.len;
  /* A request the upstream may have acted on, credentials and all, was forwarded,
   * whatever answer the proxy gives now (502 upstream_reset, 504, a retry that
   * failed to connect). */
  audit_request(c, status == 403 ? "deny" : h->head_sent ? "forward" : "reject", reason);
  if (h->resp_started)
    proxy_conn_close(c, 1, reason);
  else
    proxy_respond(c, &answer);
  strbuf_free(&answer);
}

static void finish_response(struct proxy_conn *c);

/* ---- requests ---- */

/* Copies method and path (query dropped) for the audit record. */
static void remember_request(struct proxy_http *h, const struct proxy_http_request *req)
{
  size_t n;

  n = req->method_len < sizeof(h->method) - 1 ? req->method_len : sizeof(h->method) - 1;
  memcpy(h->method, req->method, n);
  h->method[n] = '\0';
  h->method_len = n;
  h->override[0] = '\0';
  h->preflight[0] = '\0';
  for (n = 0; n < req->path_len && req->path[n] != '?' && n < sizeof(h->path); n++)
    ;
  memcpy(h->path, req->path, n);
  h->path_len = n;
  /* The record says so, or a path that hides its end past the buffer would pass for
   * a shorter one. */
  h->path_truncated = n == sizeof(h->path) && n < req->path_len && req->path[n] != '?';
  h->rule[0] = '\0';
  h->ninjected = 0;
  h->status = 0;
  h->up_bytes = 0;
  h->down_bytes = 0;
  h->head_sent = 0;
}

/* Splits an authority into host and port; 0 or -EINVAL. */
static int split_authority(const char *a, size_t len, const char **host, size_t *hlen)
{
  const char *colon;

  if (len > 0 && a[0] == '[') {
    const char *end = memchr(a, ']', len);

    if (end == NULL)
      return -EINVAL;
    *host = a;
    *hlen = (size_t)(end - a) + 1;
    return 0;
  }
  colon = memchr(a, ':', len);
  *host = a;
  *hlen = colon ? (size_t)(colon - a) : len;
  return 0;
}

static int retry_request(struct proxy_conn *c);

/* Sends a rewritten head (copied as needed) to the connected upstream and resumes. */
static void send_head(struct proxy_conn *c, const char *head, size_t len, int reused)
{
  struct proxy_http *h = c->http;
  uv_buf_t buf = proxy_buf(head, len);
  size_t i;
  int r;

  r = proxy_end_write(&c->up, &buf, 1);
  if (r != 0) {
    /* A kept-alive upstream (pooled, or this connection's) the upstream reset after
     * the check that it was still fresh (proxy_conn_upstream_fresh), before this
     * write: nothing of the request went out, so it goes out on a new connection
     * whatever its method. (It used to be sent again only when safe to repeat; a
     * POST got a bare reset.) */
    if (reused && h->retry == NULL && r != UV_ENOMEM) {
      h->retry = malloc(len);
      if (h->retry != NULL) {
        memcpy(h->retry, head, len);
        h->retry_len = len;
      }
    }
    if (h->retry == NULL || retry_request(c) != 0)
      proxy_conn_close(c, 1, "upstream_error");
    return;
  }
  if (!h->head_sent) {
    /* Counted once the head is out (a retried one is the same request), as the
     * audit record lists them. */
    for (i = 0; i < h->ninjected; i++)
      proxy_labels_add(&c->sb->ctx->injected_by_rule, h->injected_rule[i], 1);
    c->sb->ctx->counters.headers_injected += h->ninjected;
  }
  h->head_sent = 1;
  h->phase = h->req_done ? PH_RESPONSE : PH_BODY;
  proxy_end_want_read(&c->up, 1);
  proxy_conn_touch(c);
  proxy_conn_arm_timer(c, c->sb->limits.idle_ms);
  process_down(c);
}

/* rules_check_request_address for the request's method, its override's and, for a
 * preflight, the method it asks for (as which it was let through). */
static int request_address_allowed(const struct rules_config *cfg, const struct proxy_http *h,
                                   const struct sockaddr *sa, const char *path,
                                   size_t path_len, struct rules_decision *d)
{
  if (!rules_check_request_address(cfg, sa, h->method, path, path_len, d))
    return 0;
  if (h->override[0] != '\0' &&
      !rules_check_request_address(cfg, sa, h->override, path, path_len, d))
    return 0;
  return h->preflight[0] == '\0' ||
         rules_check_request_address(cfg, sa, h->preflight, path, path_len, d);
}

/*
 * A named request is decided by its name, where an egress.deny entry with paths or
 * methods on an IP or CIDR never matches; such an entry applies to the address the
 * request is about to be sent to (rules_check_request_address). A new upstream's
 * addresses are checked before the dial (proxy_http_address_allowed); this checks
 * one kept alive or taken from the pool. Returns 0 to send, or -1 after answering
 * 403 (the upstream, which has seen nothing of the request, is closed).
 */
static int check_address(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;
  struct sockaddr_storage ss;
  struct rules_decision d;
  int len = (int)sizeof(ss);

  if (h->addr_path == NULL)
    return 0;
  memset(&ss, 0, sizeof(ss));
  if (uv_tcp_getpeername(&c->up.tcp, (struct sockaddr *)&ss, &len) != 0)
    ss.ss_family = AF_UNSPEC; /* denied as an unknown address */
  if (request_address_allowed(h->cfg, h, (const struct sockaddr *)&ss, h->addr_path,
                              h->addr_path_len, &d))
    return 0;
  proxy_conn_close_upstream(c);
  fail_request(c, 403, d.reason, d.entry);
  return -1;
}

int proxy_http_address_allowed(const struct proxy_conn *c, const struct sockaddr *addr,
                               uint16_t port, struct rules_decision *d)
{
  const struct proxy_http *h = c->http;
  struct sockaddr_storage ss;

  if (h == NULL || h->addr_path == NULL)
    return 1;
  /* The entries may name a port: the address as it will be dialed. */
  memset(&ss, 0, sizeof(ss));
  if (addr->sa_family == AF_INET) {
    memcpy(&ss, addr, sizeof(struct sockaddr_in));
    ((struct sockaddr_in *)&ss)->sin_port = htons(port);
  } else {
    memcpy(&ss, addr, sizeof(struct sockaddr_in6));
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
  }
  return request_address_allowed(h->cfg, h, (const struct sockaddr *)&ss, h->addr_path,
                                 h->addr_path_len, d);
}

static void up_ready(struct proxy_conn *c, int status, const char *reason)
{
  struct proxy_http *h = c->http;
  char *out = h->out;

  c->state = CONN_HTTP;
  if (status != 0) {
    fail_request(c, status == UV_ETIMEDOUT ? 504 : (status == UV_EACCES ? 403 : 502),
                 reason, c->entry);
    return;
  }
  h->out = NULL;
  send_head(c, out, h->out_len, 0);
  free(out);
}

static void bypass_ready(struct proxy_conn *c, int status, const char *reason)
{
  if (status != 0) {
    proxy_conn_close(c, 1, reason);
    return;
  }
  proxy_relay_start(c);
}

static int forward_request(struct proxy_conn *c, const struct proxy_http_request *req,
                           const struct rules_request_decision *rd);

/* The callback answered (or failed); the request continues or is refused. */
static void creds_cb(void *arg, int status, const char *reason, struct proxy_creds *creds)
{
  struct proxy_conn *c = arg;
  struct proxy_http *h = c->http;
  struct rules_request_decision *rd = h->rd;
  struct proxy_http_request *req;
  const char *why = NULL;
  size_t i;

  h->cred_wait = NULL;
  h->rd = NULL;
  /* The connection closed, or answered on its own, in the loop turn that brought the
   * answer (proxy_http_free cancels the wait only once its handles are closed). */
  if (c->state != CONN_HTTP || h->phase != PH_CREDENTIALS) {
    free(rd);
    return;
  }
  if (status != 0) {
    free(rd);
    /* Fail closed (invariant I4): the request is answered here, never forwarded. */
    fail_request(c, status == -ETIMEDOUT ? 503 : 502,
                 reason ? reason : "callback_failed", "callback");
    return;
  }
  /* Static rule headers win over the callback's for the same name. */
  proxy_creds_unref(h->creds);
  h->creds = proxy_creds_ref(creds);
  for (i = 0; i < creds->nheaders; i++) {
    const struct proxy_cred_header *ch = &creds->headers[i];

    if (rules_request_injects(rd, ch->name, strlen(ch->name)))
      continue;
    if (rd->nheaders == RULES_MAX_INJECT) {
      /* Forwarding without this credential would also let the sandbox's own copy of
       * it through (only injected names are removed): fail closed (invariant I4). */
      free(rd);
      if (proxy_log_nth(++c->sb->cred_overflow))
        log_warn("sandbox %s conn %llu: the callback's headers for %s do not fit beside "
                 "the rules' (%d injected headers at most); the request fails with "
                 "callback_failed: inject fewer (%llu such requests in this sandbox)",
                 c->sb->name, (unsigned long long)c->id, c->name, RULES_MAX_INJECT,
                 (unsigned long long)c->sb->cred_overflow);
      fail_request(c, 502, "callback_failed", "callback");
      return;
    }
    rd->headers[rd->nheaders].name = ch->name;
    rd->headers[rd->nheaders].value = ch->value;
    rd->headers[rd->nheaders].value_len = ch->value_len;
    rd->headers[rd->nheaders].rule = "callback";
    rd->headers[rd->nheaders].secret = 1;
    rd->nheaders++;
  }
  /* The head is still at the front of c->pending (nothing was read meanwhile);
   * parse it again rather than keep pointers into a buffer that may move. */
  req = malloc(sizeof(*req));
  if (req == NULL ||
      proxy_http_parse_request(c->pending, c->pending_len, c->sb->limits.max_header_bytes,
                               req, &why) != PROXY_HTTP_OK) {
    free(req);
    free(rd);
    proxy_conn_close(c, 1, "internal_error");
    return;
  }
  forward_request(c, req, rd);
  free(req);
  free(rd);
}

/* Waits for the callback's headers; rd (borrowed) is copied for the wait. */
static int await_credentials(struct proxy_conn *c, const struct rules_request_decision *rd)
{
  struct proxy_http *h = c->http;
  struct proxy_sandbox *sb = c->sb;
  int r;

  if (sb->creds == NULL) {
    fail_request(c, 502, "callback_failed", "callback");
    return -1;
  }
  h->rd = malloc(sizeof(*h->rd));
  if (h->rd == NULL) {
    proxy_conn_close(c, 1, "out_of_memory");
    return -1;
  }
  memcpy(h->rd, rd, sizeof(*rd));
  h->phase = PH_CREDENTIALS;
  /* The head stays at the front of c->pending until the answer: nothing more is read. */
  proxy_end_want_read(&c->down, 0);
  proxy_conn_arm_timer(c, c->sb->limits.idle_ms);
  r = proxy_cred_get(sb->creds, rules_config_callback(h->cfg), c->name, c->port, creds_cb,
                     c, &h->cred_wait);
  if (r < 0) {
    free(h->rd);
    h->rd = NULL;
    fail_request(c, 502, "callback_failed", "callback");
  }
  return -1;
}

/*
 * A connection not yet decided that is refused whatever its requests say: one to an
 * unknown synthetic address with no host named for it (a request without Host, an
 * HTTP/2 preface), or one denied before a decision. Answers 403 and returns 1.
 */
static int denied_undecided(struct proxy_conn *c)
{
  if (c->synth_unknown && c->name_src == NAME_NONE && c->reason == NULL) {
    c->reason = "unknown_synthetic_address";
    proxy_conn_mark_denied(c);
  }
  if (c->reason == NULL)
    return 0;
  fail_request(c, 403, c->reason, NULL);
  return 1;
}

/*
 * HTTP/2 with prior knowledge (its preface, which names no host) on a connection whose
 * destination is denied: refused with its denial, as an HTTP/1.1 request or a TLS
 * client offering only h2 there is, so the audit says the host is denied, not that h2c
 * is unsupported (which would send an operator to no_proxy, which does not override a
 * deny). Returns 1 if it answered.
 */
static int preface_denied(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;
  struct rules_decision d;
  struct rules_dest dest;

  if (h->decided)
    return 0;
  /* At an unknown synthetic address the preface names no host: refused so, not by
   * what egress says of the address, which is no destination. */
  if (denied_undecided(c))
    return 1;
  /* Under the config current now, as a request arriving now would be decided. */
  proxy_conn_dest(c, &dest);
  rules_decide_conn(c->sb->config, &dest, &d);
  if (d.action != RULES_DENY)
    return 0;
  memcpy(c->entry, d.entry, sizeof(c->entry));
  fail_request(c, 403, d.reason, d.entry);
  return 1;
}

/*
 * Decides and forwards one parsed request head. Returns 0 when the engine may keep
 * processing, -1 when it must stop (answered, waiting for the upstream).
 */
static int handle_request(struct proxy_conn *c, const struct proxy_http_request *req)
{
  struct proxy_http *h = c->http;
  struct proxy_sandbox *sb = c->sb;
  struct rules_request_decision rd; /* ~2 KiB: on the stack, not a malloc per request */
  struct rules_decision d;
  struct rules_dest dest;
  const char *reason = NULL, *host;
  enum name_source had_name = c->name_src;
  size_t hlen;

  sb->ctx->counters.requests++;
  h->requests++;
  h->start_ms = uv_now(sb->ctx->loop);
  remember_request(h, req);
  /* A request's bytes are the sandbox's: its head as sent (not as rewritten, with
   * the injected headers), its body, and the answer it got, the proxy's own too. */
  h->up_bytes = req->head_len;
  if (req->method_len >= sizeof(h->method)) {
    fail_request(c, 501, "method_too_long", NULL);
    return -1;
  }

  /* The destination name: DNS gave one, or Host names it; they must agree, and an
   * absolute-form target must agree too. */
  if (req->form == PROXY_TARGET_ABSOLUTE) {
    if (split_authority(req->authority, req->authority_len, &host, &hlen) != 0 ||
        proxy_conn_set_name(c, host, hlen, NAME_HOST, &reason) != 0) {
      fail_request(c, reason && strcmp(reason, "host_mismatch") == 0 ? 403 : 400,
                   reason ? reason : "invalid_host", NULL);
      return -1;
    }
  }
  if (req->host_field >= 0) {
    const struct proxy_http_field *f = &req->fields[req->host_field];

    if (split_authority(f->value, f->value_len, &host, &hlen) != 0 ||
        proxy_conn_set_name(c, host, hlen, NAME_HOST, &reason) != 0) {
      fail_request(c, reason && strcmp(reason, "host_mismatch") == 0 ? 403 : 400,
                   reason ? reason : "invalid_host", NULL);
      return -1;
    }
  }
  if (had_name == NAME_NONE && c->name_src != NAME_NONE) {
    /* A connection without a name (an address that is not a synthetic one, HTTP/1.0
     * without Host) had its upstream dialed at the address the sandbox chose. This
     * request names a host, is decided for it and may carry its credentials: it goes
     * to an upstream dialed for the name (invariant I2), never down that one. */
    proxy_conn_close_upstream(c);
  }
  if (!h->decided && denied_undecided(c))
    return -1;

  /* Each request is decided under the config current when it arrives, so a swapped
   * config applies from the next request on. */
  rules_config_unref(h->cfg);
  h->cfg = rules_config_ref(sb->config);
  if (h->cfg != c->cfg) {
    /* The new config also says where requests go (dns.remap), which addresses may be
     * dialed (egress) and which pooled upstreams match: an upstream dialed under the
     * old one carries no further request. */
    proxy_conn_close_upstream(c);
    rules_config_unref(c->cfg);
    c->cfg = rules_config_ref(h->cfg);
    c->cfg_changes++;
  }
  proxy_conn_dest(c, &dest);
  rules_decide_conn(h->cfg, &dest, &d);
  if (!h->decided) {
    h->decided = 1;
    c->action = d.action;
    /* An intercepted TLS connection was counted when its ClientHello decided it. */
    if (!c->decided)
      sb->ctx->counters.actions[d.action]++;
    c->decided = 1;
    memcpy(c->entry, d.entry, sizeof(c->entry));
    if (d.action == RULES_BYPASS) {
      /* no_proxy: relay the connection untouched, this request included. Its bytes
       * are the connection's, not requests the proxy saw: neither this one nor
       * those after it has a record, so none counts in authproxy_requests_total. */
      h->method_len = 0;
      sb->ctx->counters.requests--;
      proxy_conn_dial(c, bypass_ready);
      return -1;
    }
  }
  if (d.action == RULES_DENY) {
    fail_request(c, 403, d.reason, d.entry);
    return -1;
  }

  if (override_method(req, h->override, sizeof(h->override)) != 0) {
    fail_request(c, 400, "invalid_method_override", NULL);
    return -1;
  }
  if (h->override[0] != '\0' && strcmp(h->override, h->method) != 0) {
    /* Decided first as the method the server will act on; the injected headers are
     * those of the decision for the request as sent, made next. */
    rules_decide_request(h->cfg, &dest, h->override, req->path, req->path_len, &rd);
    if (rd.deny) {
      fail_request(c, 403, rd.reason, rd.entry);
      return -1;
    }
  }
  rules_decide_request(h->cfg, &dest, h->method, req->path, req->path_len, &rd);
  if (rd.deny && strcmp(rd.reason, "egress_not_allowed") == 0 &&
      preflight_method(req, h->preflight, sizeof(h->preflight))) {
    /* A preflight is part of the request it asks about: refused where that request
     * is allowed (an allow entry's methods without OPTIONS), it failed the request
     * too, as a CORS error that names no policy. An explicit deny still holds, on
     * the address it is sent to too (request_address_allowed). */
    rules_decide_request(h->cfg, &dest, h->preflight, req->path, req->path_len, &rd);
  }
  if (rd.deny) {
    fail_request(c, 403, rd.reason, rd.entry);
    return -1;
  }
  if (d.action == RULES_BYPASS)
    rd.nheaders = 0; /* a config swap made the host no_proxy: inject nothing */
  /* A secret goes in cleartext only where its rule says so (allow_plain_http): on
   * plain HTTP neither the upstream nor the path to it is verified (I2). */
  if (!c->intercept_tls && d.action != RULES_BYPASS &&
      (reason = rules_request_needs_tls(h->cfg, &rd)) != NULL) {
    fail_request(c, 403, "tls_required", reason);
    return -1;
  }
  if (rd.callback && d.action != RULES_BYPASS && rules_config_callback(h->cfg) != NULL)
    return await_credentials(c, &rd);
  return forward_request(c, req, &rd);
}

/* Methods a proxy may send again after a connection failed (RFC 9110 9.2.2). */
static int is_retryable(const struct proxy_http_request *req)
{
  static const char *const methods[] = { "GET", "HEAD", "OPTIONS" };
  size_t i;

  for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
    if (req->method_len == strlen(methods[i]) &&
        memcmp(req->method, methods[i], req->method_len) == 0)
      return 1;
  return 0;
}

/*
 * A reused upstream connection ended before any byte of the response: the request
 * goes out again on a connection dialed for it (never a pooled one). Returns 0, or -1
 * when the request cannot be repeated.
 */
static int retry_request(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;

  if (h->retry == NULL || h->resp_started)
    return -1;
  log_debug("conn %llu: reused connection to %s ended before answering; sending the "
            "request again on a new one", (unsigned long long)c->id, c->name);
  proxy_conn_close_upstream(c);
  free(h->out);
  h->out = h->retry;
  h->out_len = h->retry_len;
  h->retry = NULL;
  h->retry_len = 0;
  llhttp_reset(&h->resp);
  h->resp_in_msg = 0;
  h->resp_head_done = 0;
  h->phase = PH_CONNECTING;
  proxy_conn_dial(c, up_ready);
  return 0;
}

/* 1 if the upstream only idles: kept alive after a response, or connected while the
 * next request's head waits for the credential callback. */
static int between_requests(const struct proxy_http *h)
{
  return (h->phase == PH_HEAD && h->requests > 0) || h->phase == PH_CREDENTIALS;
}

/*
 * The upstream ended an answer after it began, before its framing did (no last chunk,
 * less than its Content-Length: a stream whose server died, or a load balancer in
 * front of it that gave up), by a FIN, a reset or a TLS failure. What it sent before
 * still reaches the sandbox, as it would directly (a reset does not take back what the
 * client's kernel holds): closing at once would cancel what waits in the write queue toward a
 * client slower than the upstream (the last events of a stream, often the one saying
 * why it ended). The sandbox's connection then ends without a close_notify; the held
 * tail, which could start a secret, is not sent.
 */
static void end_cut_short(struct proxy_conn *c, const char *reason)
{
  c->down.unproven = 1;
  audit_request(c, "forward", reason);
  if (c->reason == NULL)
    c->reason = reason;
  proxy_conn_linger(c);
}

int proxy_http_on_up_cut(struct proxy_conn *c, const char *reason)
{
  struct proxy_http *h = c->http;

  /* A body delimited by the connection's end would look whole after a FIN: that
   * one is ended as the upstream's was. Not a head cut short, whose framing is not
   * known yet (llhttp_message_needs_eof says "by the end" of one it has not parsed):
   * no client takes part of a head for a whole answer, and a reset would cancel
   * what is still queued toward the sandbox, whole answers to requests it pipelined
   * before this one included. */
  if (h == NULL || c->state != CONN_HTTP ||
      (h->phase != PH_BODY && h->phase != PH_RESPONSE) || !h->resp_started ||
      (h->resp_head_done && llhttp_message_needs_eof(&h->resp)))
    return -1;
  end_cut_short(c, reason);
  return 0;
}

int proxy_http_on_up_error(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;

  if (h == NULL)
    return -1;
  if (c->state == CONN_HTTP && between_requests(h)) {
    proxy_conn_close_upstream(c);
    return 0;
  }
  if (retry_request(c) == 0)
    return 0;
  if (c->state == CONN_HTTP && h->phase == PH_RESPONSE && !h->resp_started && c->up.shut) {
    proxy_conn_close(c, 1, "sandbox_closed"); /* as in proxy_http_on_eof */
    return 0;
  }
  /* Reset in the middle of an answer whose framing shows the cut. */
  if (proxy_http_on_up_cut(c, "upstream_error") == 0)
    return 0;
  if (c->state == CONN_HTTP && (h->phase == PH_BODY || h->phase == PH_RESPONSE) &&
      !h->resp_started) {
    /* Reset before any byte of the answer: a 502 that says so, as for a close. A
     * reset passed on cannot be told from a request that was never sent. */
    fail_request(c, 502, "upstream_reset", NULL);
    return 0;
  }
  return -1;
}

int proxy_http_idle(const struct proxy_conn *c)
{
  const struct proxy_http *h = c->http;

  /* Not c->down.queued == 0: nothing else ends a connection whose last answer is
   * still being written when the sandbox closes, and proxy_conn_linger writes it. */
  return h != NULL && c->state == CONN_HTTP && h->phase == PH_HEAD && c->pending_len == 0 &&
         !proxy_conn_down_unread(c);
}

void proxy_http_on_close(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;

  /* A request's record is written when its answer ends (audit_request clears
   * method_len); one still pending here was cut short: by the sandbox, the upstream,
   * a timeout, a detach. Once its head went upstream, with the credentials injected,
   * it was forwarded, and the log must say so. */
  if (h == NULL || h->method_len == 0)
    return;
  audit_request(c, h->head_sent ? "forward" : "reject",
                c->reason != NULL ? c->reason : "closed");
}

int proxy_http_in_flight(const struct proxy_conn *c)
{
  const struct proxy_http *h = c->http;

  /* method_len: its record is not written yet (an answer of the proxy's own writes
   * it); past PH_HEAD: decided to go upstream. */
  return h != NULL && h->method_len != 0 && h->phase != PH_HEAD;
}

/* 1 unless cfg's request-level entries on addresses refuse the request in flight at
 * the address its upstream is at, as request_address_allowed would under cfg. */
static int address_still_allowed(const struct proxy_conn *c, const struct rules_config *cfg)
{
  const struct proxy_http *h = c->http;
  struct sockaddr_storage ss;
  struct rules_decision d;
  const char *path = h->addr_path != NULL ? h->addr_path : h->path;
  size_t path_len = h->addr_path != NULL ? h->addr_path_len : h->path_len;
  int len = (int)sizeof(ss);

  /* Without its whole path (the old config kept none), a path cut short is not judged
   * by its start: a deny entry's path glob could match it and cut a request allowed. */
  if (h->addr_path == NULL && h->path_truncated)
    return 1;
  memset(&ss, 0, sizeof(ss));
  if (uv_tcp_getpeername(&c->up.tcp, (struct sockaddr *)&ss, &len) != 0)
    return 1; /* the upstream is going: nothing more passes to it */
  return request_address_allowed(cfg, h, (const struct sockaddr *)&ss, path, path_len, &d);
}

int proxy_http_refuses(const struct proxy_conn *c, const struct rules_config *cfg)
{
  const struct proxy_http *h = c->http;
  struct rules_request_decision rd;
  struct rules_decision d;
  struct rules_dest dest;

  proxy_conn_dest(c, &dest);
  rules_decide_conn(cfg, &dest, &d);
  if (d.action == RULES_DENY)
    return 1;
  /* A path longer than the record keeps is not judged by its start alone: an allow
   * entry's path glob could miss it, and cut a request that is allowed. A host cfg
   * makes no_proxy is judged on: the engine still reads its requests and holds the
   * next one to what follows (handle_request, check_address), so this one too. */
  if (h->path_truncated)
    return 0;
  /* As handle_request decides it: as the method an override names, then as sent (a
   * preflight let through as the method it asks for). */
  if (h->override[0] != '\0') {
    rules_decide_request(cfg, &dest, h->override, h->path, h->path_len, &rd);
    if (rd.deny)
      return 1;
  }
  rules_decide_request(cfg, &dest, h->method, h->path, h->path_len, &rd);
  if (rd.deny && strcmp(rd.reason, "egress_not_allowed") == 0 && h->preflight[0] != '\0')
    rules_decide_request(cfg, &dest, h->preflight, h->path, h->path_len, &rd);
  if (rd.deny)
    return 1;
  /* And as check_address holds it to request-level entries on the address its
   * upstream is at (an IP or CIDR with paths or methods, which a name never matches). */
  return c->up.connected && rules_has_address_requests(cfg) && !address_still_allowed(c, cfg);
}

void proxy_http_park(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;
  int idle;

  if (h == NULL || c->state != CONN_HTTP || !c->up.open)
    return;
  /* Between requests, or right after a response both sides let the connection
   * outlive; never with a request or a response in flight. */
  if (h->phase == PH_HEAD)
    idle = h->requests > 0;
  else
    idle = h->req_done && h->resp_done && h->up_keep_alive && !h->upgrade &&
           llhttp_should_keep_alive(&h->resp);
  if (idle)
    proxy_conn_park_upstream(c);
}

/*
 * Rewrites and forwards a decided request (rd: borrowed). Returns -1: the engine
 * resumes from up_ready, or the request was answered.
 */
static int forward_request(struct proxy_conn *c, const struct proxy_http_request *req,
                           const struct rules_request_decision *rd)
{
  struct proxy_http *h = c->http;
  /* A head for a connected upstream is written at once (the stream layer copies what
   * the kernel does not take): it needs no allocation of its own unless it is large. */
  char head_buf[HEAD_STACK_BYTES];
  char *out = head_buf;
  llhttp_errno_t err;
  size_t bound, i;
  int n, retryable, reused;

  free(h->addr_path);
  h->addr_path = NULL;
  if (rules_has_address_requests(h->cfg)) {
    h->addr_path = malloc(req->path_len + 1);
    if (h->addr_path == NULL) {
      proxy_conn_close(c, 1, "out_of_memory");
      return -1;
    }
    memcpy(h->addr_path, req->path, req->path_len);
    h->addr_path[req->path_len] = '\0';
    h->addr_path_len = req->path_len;
  }
  proxy_scrub_reset(&h->scrub);
  for (i = 0; i < rd->nheaders; i++) {
    if (rd->headers[i].secret)
      proxy_scrub_add(&h->scrub, rd->headers[i].value, rd->headers[i].value_len);
    h->injected[i] = rd->headers[i].name;
    h->injected_rule[i] = rd->headers[i].rule;
  }
  h->ninjected = rd->nheaders;
  if (rd->nheaders > 0)
    snprintf(h->rule, sizeof(h->rule), "%s", rd->headers[0].rule);

  if (c->up.open && !proxy_conn_upstream_fresh(&c->up)) {
    /* Kept alive from the previous request, and since ended (or out of step) in
     * this loop turn, before its end was read: the request takes another. */
    log_debug("conn %llu: the upstream kept alive for %s ended before the next "
              "request; dialing anew", (unsigned long long)c->id, c->name);
    proxy_conn_close_upstream(c);
  }
  bound = proxy_http_rewrite_bound(req, rd);
  /* Without an open upstream the head waits for one in h->out: on the heap. */
  if (!c->up.open || bound > sizeof(head_buf)) {
    out = malloc(bound);
    if (out == NULL) {
      proxy_conn_close(c, 1, "out_of_memory");
      return -1;
    }
  }
  n = proxy_http_rewrite(req, rd, out, bound);
  if (n < 0) {
    if (out != head_buf)
      free(out);
    fail_request(c, n == -ENOSPC ? 431 : 500, n == -ENOSPC ? "headers_too_large"
                                                          : "injection_refused", NULL);
    return -1;
  }

  /* llhttp frames the body, so it must agree with the head being forwarded: the
   * rewritten one, where an upgrade is a WebSocket upgrade and nothing else. */
  llhttp_reset(&h->req);
  h->msg_complete = 0;
  h->in_body = 0;
  h->bad_trailer = 0;
  h->body_cut = 0;
  h->awaiting_continue = req->expect_continue;
  h->trailer_len = 0;
  err = llhttp_execute(&h->req, out, (size_t)n);
  if ((err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) ||
      (err == HPE_OK && h->msg_complete) ||
      req->chunked != !!(h->req.flags & F_CHUNKED) ||
      (req->content_length >= 0 && !h->msg_complete &&
       (uint64_t)req->content_length != h->req.content_length)) {
    log_debug("conn %llu: llhttp disagrees on a head: %s", (unsigned long long)c->id,
              llhttp_errno_name(err));
    if (out != head_buf)
      free(out);
    fail_request(c, 400, "malformed_request", NULL);
    return -1;
  }
  if (err == HPE_PAUSED)
    llhttp_resume(&h->req);
  h->req_done = h->msg_complete || err == HPE_PAUSED_UPGRADE;
  h->keep_alive = req->keep_alive;
  h->up_keep_alive = proxy_http_upstream_keep_alive(req);
  h->upgrade = req->upgrade;
  h->is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  /* req points into c->pending, which consuming the head may free or move. */
  retryable = h->req_done && !req->chunked && req->content_length <= 0 && is_retryable(req);
  h->resp_done = 0;
  h->resp_started = 0;
  proxy_conn_pending_consume(c, req->head_len);
  h->scanned = 0;

  llhttp_reset(&h->resp);
  h->resp_in_msg = 0;
  h->resp_head_done = 0;
  drop_retry(h);
  /* An open upstream here was kept alive from the previous request. */
  h->from_pool = !c->up.open && proxy_conn_reuse_upstream(c) == 0;
  reused = c->up.open || h->from_pool;
  if (reused && retryable) {
    /* A connection kept alive, in the pool or on this one, may be closed by the
     * server a moment after the request went out. A request that is safe to repeat
     * (RFC 9110 9.2.2: idempotent, and nothing after the head) is then sent again on
     * a new connection; its head is kept until answered. */
    h->retry = malloc((size_t)n);
    if (h->retry != NULL) {
      memcpy(h->retry, out, (size_t)n);
      h->retry_len = (size_t)n;
    }
  }
  if (!c->up.open) {
    /* The head waits for the connection in h->out (always on the heap here). */
    free(h->out);
    h->out = out;
    h->out_len = (size_t)n;
    h->phase = PH_CONNECTING;
    proxy_conn_dial(c, up_ready);
    return -1;
  }
  if (check_address(c) != 0) {
    if (out != head_buf)
      free(out);
    return -1;
  }
  send_head(c, out, (size_t)n, 1); /* resumes processing */
  if (out != head_buf)
    free(out);
  return -1;
}

/*
 * Streams request body bytes: returns how many of data[0..len) belong to the body.
 * On an error, *error is the reason for the 400 and what is left is never forwarded.
 */
static size_t feed_body(struct proxy_conn *c, const char *data, size_t len,
                        const char **error)
{
  struct proxy_http *h = c->http;
  llhttp_errno_t err;
  size_t used = len;

  *error = NULL;
  h->msg_complete = 0;
  err = llhttp_execute(&h->req, data, len);
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    used = (size_t)(llhttp_get_error_pos(&h->req) - data);
    if (err == HPE_PAUSED)
      llhttp_resume(&h->req);
  } else if (err != HPE_OK) {
    /* An invalid chunk size or extension: what is left is never forwarded. */
    used = (size_t)(llhttp_get_error_pos(&h->req) - data);
    *error = h->bad_trailer ? "injected_header_in_trailer" : "invalid_chunked_body";
    return used > len ? 0 : used;
  }
  if (h->msg_complete)
    h->req_done = 1;
  return used;
}

/*
 * A write of the request body to the upstream failed: it reset or closed the
 * connection while the body was coming. It may have answered first: a server that
 * refuses an upload at once (413, 401) and closes with the body unread makes its
 * kernel send a reset right behind the answer, which the proxy's next write meets
 * before its read. What arrived before the reset can still be read: the sandbox
 * gets that answer, or the 502 upstream_reset (upstream_closed) that a reset (an
 * end) read without one gives (proxy_http_on_up_error, proxy_http_on_eof), not a
 * reset of its own connection. The rest of the body is not read meanwhile.
 * Returns 0 when the engine took the failure over, -1 when the caller closes.
 */
static int body_write_failed(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;

  if (h == NULL || c->state != CONN_HTTP || h->phase != PH_BODY || h->resp_done ||
      !c->up.open)
    return -1;
  if (!h->body_cut) {
    h->body_cut = 1;
    proxy_end_want_read(&c->down, 0);
    proxy_end_want_read(&c->up, 1);
  }
  return 0;
}

int proxy_http_on_up_write_error(struct proxy_conn *c)
{
  return body_write_failed(c);
}

static int forward_up(struct proxy_conn *c, const char *data, size_t len)
{
  uv_buf_t buf = proxy_buf(data, len);
  int r;

  if (c->http->body_cut)
    return -1;
  if (len == 0)
    return 0;
  c->http->awaiting_continue = 0;
  c->http->up_bytes += len;
  r = proxy_end_write(&c->up, &buf, 1);
  if (r != 0) {
    /* Out of memory is the proxy's failure, not the upstream's end. */
    if (r == UV_ENOMEM || body_write_failed(c) != 0)
      proxy_conn_close(c, 1, "upstream_error");
    return -1;
  }
  return 0;
}

/*
 * The sandbox ended its side after its last request was forwarded whole, before the
 * answer ended: the upstream is told, as it would be told directly, by the end of
 * the proxy's side (a close_notify and a FIN). A client that gave up (an SDK's
 * timeout, an aborted fetch) closes its connection; a server that notices (Go's
 * net/http, an ASGI server) then stops working for it, where it used to go on
 * until it answered into a closed connection, up to --idle-timeout later. A client
 * that only half-closed still gets whatever answer the upstream gives. The
 * upstream connection is then never pooled (proxy_conn_park_upstream).
 *
 * Not while a request on an upstream taken from the pool may still have to go out
 * again (retry_request): the upstream may have closed that connection idle as the
 * request went out, and a FIN does not tell a client that gave up from one that
 * only half-closed (`nc -N`, shutdown(SHUT_WR)). Ended then, the dead connection
 * took the request with it and the half-closed client got nothing, where directly
 * it would have dialed anew. The end is passed on once the answer begins
 * (on_up_data), or right after the request goes out again on its new connection.
 * On the sandbox connection's own kept-alive upstream a client that talked directly
 * would have met the same close: the end goes at once, and nothing is repeated.
 */
static void pass_sandbox_eof(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;

  if (!c->down.eof || c->pending_len > 0 || h->phase != PH_RESPONSE || !h->req_done ||
      h->resp_done || h->upgrade || (h->retry != NULL && h->from_pool) || !c->up.open ||
      !c->up.connected || c->up.shut)
    return;
  drop_retry(h);
  proxy_end_shutdown(&c->up);
}

static void process_down(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;
  struct proxy_http_request req; /* ~4 KiB: on the stack, not a malloc per request */
  enum proxy_http_status st;
  const char *why = NULL;
  const char *error;
  size_t used;

  while (c->state == CONN_HTTP) {
    switch (h->phase) {
    case PH_HEAD:
      /* A head can only complete with a line feed: re-parse only when one arrived,
       * so a client sending one byte at a time costs O(n), not O(n^2). */
      if (c->pending_len > 0 && c->pending_len < c->sb->limits.max_header_bytes &&
          h->scanned < c->pending_len &&
          memchr(c->pending + h->scanned, '\n', c->pending_len - h->scanned) == NULL) {
        h->scanned = c->pending_len;
        if (c->timer_ms != c->sb->limits.head_ms)
          proxy_conn_arm_timer(c, c->sb->limits.head_ms);
        proxy_end_want_read(&c->down, 1);
        return;
      }
      h->scanned = c->pending_len;
      if (c->pending_len == 0) {
        if (c->sb->closing && !(c->sent_at_detach && proxy_conn_down_unread(c))) {
          /* A detach or stop waits for requests in flight, not for new ones: one
           * whose TLS handshake ended after it has none yet (proxy_http_idle).
           * Unless the client's last flight had come before the detach, and its
           * request with it (a resumed handshake's Finished and the first request
           * arrive together): the same read holds it, or the socket does. */
          proxy_http_park(c);
          proxy_conn_linger(c);
          return;
        }
        proxy_end_want_read(&c->down, 1);
        if (c->down.eof)
          end_after_sandbox_eof(c, NULL);
        return;
      }
      st = proxy_http_parse_request(c->pending, c->pending_len,
                                    c->sb->limits.max_header_bytes, &req, &why);
      if (st == PROXY_HTTP_NEED_MORE) {
        if (c->down.eof) {
          end_after_sandbox_eof(c, "sandbox_closed");
          return;
        }
        /* A head has started: it must complete within head_ms (slowloris). */
        if (c->timer_ms != c->sb->limits.head_ms)
          proxy_conn_arm_timer(c, c->sb->limits.head_ms);
        proxy_end_want_read(&c->down, 1);
        return;
      }
      if (st != PROXY_HTTP_OK) {
        h->method_len = 0;
        if (st == PROXY_HTTP_NOT_IMPL && why != NULL && strcmp(why, "http2_preface") == 0 &&
            preface_denied(c))
          return;
        fail_request(c, st == PROXY_HTTP_TOO_LARGE ? 431 : st == PROXY_HTTP_NOT_IMPL ? 501 : 400,
                     why ? why : "malformed_request", NULL);
        return;
      }
      handle_request(c, &req);
      return;
    case PH_CREDENTIALS:
    case PH_CONNECTING:
      proxy_end_want_read(&c->down, 0);
      return;
    case PH_BODY:
      if (h->req_done) {
        h->phase = PH_RESPONSE;
        break;
      }
      if (c->pending_len == 0) {
        proxy_end_want_read(&c->down, 1);
        if (c->down.eof)
          proxy_conn_close(c, 1, "sandbox_closed");
        return;
      }
      used = feed_body(c, c->pending, c->pending_len, &error);
      if (forward_up(c, c->pending, used) != 0)
        return;
      proxy_conn_pending_consume(c, used);
      if (error != NULL) {
        fail_request(c, 400, error, NULL);
        return;
      }
      break;
    case PH_RESPONSE:
      /* Later bytes wait in c->pending until the response is done. Reading goes on
       * while none wait: stopping and restarting it for every request would cost
       * two epoll_ctl calls each time, and a client that pipelines gets one read's
       * worth buffered (under the pending limit) before reading stops. */
      proxy_end_want_read(&c->down, c->pending_len == 0);
      if (h->resp_done)
        finish_response(c);
      else
        pass_sandbox_eof(c);
      return;
    }
  }
}

/* ---- responses ---- */

static void next_request(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;
  const struct proxy_limits *l = &c->sb->limits;

  h->phase = PH_HEAD;
  h->req_done = 0;
  h->resp_done = 0;
  h->resp_started = 0;
  drop_retry(h);
  /* An upstream idle under a quiet sandbox connection goes back to the pool after
   * up_release_ms (proxy_http_on_timeout): memory follows activity, not sockets. */
  proxy_conn_arm_timer(c, c->up.open && l->up_release_ms < l->idle_ms ? l->up_release_ms
                                                                       : l->idle_ms);
  process_down(c);
}

static void finish_response(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;

  /* An upstream a write failed on carries nothing more (and is never pooled). */
  if (h->body_cut)
    proxy_conn_close_upstream(c);
  if (!h->req_done) {
    /* The upstream answered before the request body ended (413, 401): the rest of
     * the body cannot be told apart from a next request, so the connection ends. */
    proxy_conn_linger(c);
    return;
  }
  /* A sandbox that half-closed after pipelining requests still has them answered: a
   * TLS read decrypts every record it holds, so the close_notify behind them may
   * have been read already. A detached (or stopping) sandbox's are not: reading went
   * on while this answer was awaited, so a request pipelined behind it may have been
   * sent after the detach, by a process of the sandbox the namespace serves next
   * (proxy_sandbox_close), and would go out with this one's credentials. Its client
   * sees the connection end with the request unanswered, which it may retry. */
  if (!h->keep_alive || !llhttp_should_keep_alive(&h->resp) ||
      (c->down.eof && c->pending_len == 0) || c->up.eof || c->sb->closing) {
    /* The sandbox's connection ends here; its upstream may serve another one. A
     * sandbox that asked for the close gets the response as the upstream sent it,
     * without a "Connection: close" added (RFC 9112 9.6 says SHOULD): it does not
     * wait for one. */
    proxy_http_park(c);
    proxy_conn_linger(c);
    return;
  }
  next_request(c);
}

/* Writes what the scrubber let through to the sandbox. 0, or -1: the connection is
 * being closed. */
static int write_down(struct proxy_conn *c, const char *out, size_t olen)
{
  uv_buf_t buf;

  if (olen == 0)
    return 0;
  c->http->down_bytes += olen;
  buf = proxy_buf(out, olen);
  if (proxy_end_write(&c->down, &buf, 1) != 0) {
    proxy_conn_close(c, 1, "sandbox_error");
    return -1;
  }
  return 0;
}

/* Writes response bytes to the sandbox, masking echoed secrets. Returns 0 or -1 (the
 * connection is being closed). */
static int forward_down(struct proxy_conn *c, const char *data, size_t len)
{
  struct proxy_http *h = c->http;
  const char *out;
  size_t olen, before = h->scrub.masked;

  /* The bytes are in the loop's read buffer (or its TLS plaintext buffer), which the
   * proxy owns: masking in place is allowed. */
  if (proxy_scrub_feed(&h->scrub, (char *)(uintptr_t)data, len, &out, &olen) != 0) {
    proxy_conn_close(c, 1, "out_of_memory");
    return -1;
  }
  /* An upstream that echoes requests (httpbin and the like) does so for every one the
   * sandbox sends: the 1st, 10th, 100th and every 1000th is logged, with the count. */
  if (h->scrub.masked != before && proxy_log_nth(++c->sb->echo_masked))
    log_warn("sandbox %s conn %llu: %s echoed an injected credential in its response; "
             "masked (%llu masked echoes in this sandbox)", c->sb->name,
             (unsigned long long)c->id, c->name, (unsigned long long)c->sb->echo_masked);
  return write_down(c, out, olen);
}

/* Forwards what the scrubber held back once the response has ended. */
static int flush_down(struct proxy_conn *c)
{
  const char *out;
  size_t olen;

  proxy_scrub_flush(&c->http->scrub, &out, &olen);
  return write_down(c, out, olen);
}

static void on_up_data(struct proxy_conn *c, const char *data, size_t len)
{
  struct proxy_http *h = c->http;
  llhttp_errno_t err;
  size_t used = len;

  if (h->resp_done) {
    /* More bytes after a complete response, before the next request: the upstream
     * is out of step. Do not pass them on. */
    proxy_conn_close(c, 1, "upstream_protocol_error");
    return;
  }
  if (h->phase == PH_HEAD || h->phase == PH_CREDENTIALS) {
    /* The same between requests (a body after a HEAD response, bytes past a
     * Content-Length): the upstream goes, and the next request dials anew. */
    log_debug("conn %llu: %zu bytes from the upstream between responses; closing it",
              (unsigned long long)c->id, len);
    proxy_conn_close_upstream(c);
    return;
  }
  h->msg_complete = 0;
  err = llhttp_execute(&h->resp, data, len);
  if (err == HPE_PAUSED_UPGRADE && h->upgrade && h->status == 101) {
    /* WebSocket accepted: from here on both directions are opaque. */
    if (forward_down(c, data, len) != 0 || flush_down(c) != 0)
      return;
    h->resp_done = 1;
    audit_request(c, "forward", NULL);
    proxy_relay_start(c);
    return;
  }
  if (err == HPE_PAUSED) {
    used = (size_t)(llhttp_get_error_pos(&h->resp) - data);
    llhttp_resume(&h->resp);
  } else if (err != HPE_OK) {
    log_debug("conn %llu: malformed response from %s: %s", (unsigned long long)c->id,
              c->name, llhttp_errno_name(err));
    if (!h->resp_started) {
      fail_request(c, 502, "upstream_protocol_error", NULL);
      return;
    }
    proxy_conn_close(c, 1, "upstream_protocol_error");
    return;
  }
  if (used > 0) {
    /* Whole interim responses (100 Continue) leave room for a local answer: a 504
     * or 502 after them is still a well-formed final response. Also when one came
     * in pieces: its first left the answer begun, its last ends that. */
    h->resp_started = h->resp_in_msg || h->msg_complete;
    drop_retry(h);
    if (forward_down(c, data, used) != 0)
      return;
    if (!h->msg_complete)
      pass_sandbox_eof(c); /* held back while the request could go out again */
  }
  if (h->msg_complete) {
    if (flush_down(c) != 0)
      return;
    h->resp_done = 1;
    audit_request(c, "forward", NULL);
    if (used < len) {
      /* Bytes past the end of the answer, in the same read: the answer is whole
       * and goes out; the upstream, out of step, carries nothing more. */
      log_debug("conn %llu: %zu bytes from the upstream past its answer; closing it",
                (unsigned long long)c->id, len - used);
      proxy_conn_close_upstream(c);
    }
    /* Also while the request body still streams (an answer before it ends). */
    if (h->phase == PH_RESPONSE || h->phase == PH_BODY)
      finish_response(c);
  }
}

void proxy_http_on_data(struct proxy_conn *c, struct proxy_end *e, const char *data,
                        size_t len)
{
  struct proxy_http *h = c->http;
  const char *error;
  size_t used;

  if (e == &c->up) {
    on_up_data(c, data, len);
    return;
  }
  /* The common case of a body arriving while nothing waits: forward from the read
   * buffer directly, without a copy. */
  if (h->phase == PH_BODY && c->pending_len == 0 && !h->req_done) {
    used = feed_body(c, data, len, &error);
    if (forward_up(c, data, used) != 0)
      return;
    if (error != NULL) {
      fail_request(c, 400, error, NULL);
      return;
    }
    data += used;
    len -= used;
    if (len == 0) {
      if (h->req_done)
        process_down(c);
      return;
    }
  }
  if (c->pending_len + len > c->sb->limits.max_header_bytes + 65536) {
    if (h->phase == PH_HEAD) {
      fail_request(c, 431, "headers_too_large", NULL);
      return;
    }
    proxy_conn_close(c, 1, "buffer_limit");
    return;
  }
  if (proxy_conn_pending_append(c, data, len) != 0) {
    proxy_conn_close(c, 1, "out_of_memory");
    return;
  }
  process_down(c);
}

void proxy_http_on_eof(struct proxy_conn *c, struct proxy_end *e)
{
  struct proxy_http *h = c->http;

  if (e == &c->up) {
    if (h->retry != NULL && retry_request(c) == 0)
      return;
    if (h->phase == PH_BODY || h->phase == PH_RESPONSE) {
      llhttp_errno_t err;

      /* on_resp_complete pauses the parser, so a body that the end completes makes
       * llhttp_finish return HPE_PAUSED; msg_complete says a final (not 1xx)
       * response ended there. */
      h->msg_complete = 0;
      err = llhttp_finish(&h->resp);
      if ((err == HPE_OK || err == HPE_PAUSED) && h->msg_complete && h->resp_started) {
        /* A body delimited by the connection's end. Over TLS only a close_notify
         * proves that end; a bare FIN, which anyone on the path can send, does not.
         * The sandbox's TLS then ends the same way, without a close_notify, so that
         * its client judges the end as it would talk to the upstream directly
         * (OpenSSL 3 clients such as curl call it an unexpected EOF). */
        if (c->up.tls != NULL && !proxy_tls_close_notified(c->up.tls))
          c->down.unproven = 1;
        if (flush_down(c) != 0)
          return;
        h->resp_done = 1;
        audit_request(c, "forward", NULL);
        proxy_conn_linger(c);
        return;
      }
      if (!h->resp_started) {
        /* After the sandbox's own end (pass_sandbox_eof): the upstream stopped for
         * a client that left, and the log says who ended it. */
        if (c->up.shut) {
          proxy_conn_close(c, 0, "sandbox_closed");
          return;
        }
        /* After a write of the body failed, the end is that of a connection the
         * upstream reset (the write took the reset's error). */
        fail_request(c, 502, h->body_cut ? "upstream_reset" : "upstream_closed", NULL);
        return;
      }
      end_cut_short(c, "upstream_closed");
      return;
    }
    if (between_requests(h)) {
      /* The upstream ended its idle keep-alive: the sandbox's connection stays, and
       * its next request (or the one awaiting the callback) dials anew. */
      proxy_conn_close_upstream(c);
      return;
    }
    proxy_conn_close(c, 0, "upstream_closed");
    return;
  }
  /* The sandbox half-closed: finish what is in progress, then end. */
  switch (h->phase) {
  case PH_HEAD:
    process_down(c);
    break;
  case PH_BODY:
    if (!h->req_done)
      proxy_conn_close(c, 1, "sandbox_closed");
    break;
  case PH_RESPONSE:
    pass_sandbox_eof(c);
    break;
  default:
    break;
  }
}

void proxy_http_on_drain(struct proxy_conn *c, struct proxy_end *e)
{
  (void)c;
  (void)e;
}

void proxy_http_on_timeout(struct proxy_conn *c)
{
  struct proxy_http *h = c->http;
  uint64_t now = uv_now(c->sb->ctx->loop), idle = now - c->last_active_ms;

  if (h->phase == PH_HEAD) {
    const struct proxy_limits *l = &c->sb->limits;

    if (c->pending_len > 0 || h->requests == 0) {
      /* A head that trickles in, or never comes (slowloris). */
      fail_request(c, 408, "head_timeout", NULL);
      return;
    }
    if (idle >= l->idle_ms && proxy_end_unread(&c->down)) {
      /* The next request arrived in time; the loop is late to read it. */
      proxy_conn_arm_timer(c, l->idle_ms);
      return;
    }
    if (idle >= l->idle_ms) {
      proxy_http_park(c);
      proxy_conn_close(c, 0, "idle_timeout");
      return;
    }
    if (c->up.open && idle >= l->up_release_ms)
      proxy_conn_release_upstream(c);
    if (c->up.open && l->up_release_ms - idle < l->idle_ms - idle)
      proxy_conn_arm_timer(c, l->up_release_ms - idle);
    else
      proxy_conn_arm_timer(c, l->idle_ms - idle);
    return;
  }
  if (h->phase == PH_CREDENTIALS && idle >= c->sb->limits.idle_ms) {
    /* The callback has not answered within --idle-timeout (its own timeout_ms may be
     * longer). The request is answered as a callback timeout, never closed bare; the
     * call goes on for the others waiting and the cache. (Bytes left unread now are
     * the request's own, held until the answer, not a late loop.) */
    proxy_cred_cancel(h->cred_wait);
    h->cred_wait = NULL;
    free(h->rd);
    h->rd = NULL;
    fail_request(c, 503, "callback_timeout", "callback");
    return;
  }
  if (idle >= c->sb->limits.idle_ms &&
      (proxy_end_unread(&c->down) || proxy_end_unread(&c->up))) {
    proxy_conn_arm_timer(c, c->sb->limits.idle_ms); /* late, not idle */
    return;
  }
  if (idle >= c->sb->limits.idle_ms && proxy_conn_passing(c)) {
    /* Still handing on what was read: an upload the upstream reads slowly. */
    proxy_conn_touch(c);
    proxy_conn_arm_timer(c, c->sb->limits.idle_ms);
    return;
  }
  if (idle >= c->sb->limits.idle_ms) {
    if (h->phase == PH_RESPONSE && !h->resp_started) {
      fail_request(c, 504, "upstream_timeout", NULL);
      return;
    }
    if (h->phase == PH_BODY && !h->resp_started && h->awaiting_continue) {
      /* Nothing stopped arriving: the sandbox waits, as it asked to, for the
       * upstream's 100 Continue (or its answer), which has said nothing. */
      fail_request(c, 504, "upstream_timeout", NULL);
      return;
    }
    if (h->phase == PH_BODY && !h->resp_started && c->down.reading) {
      /* The sandbox stopped sending its body while the proxy was reading it (not
       * held back by an upstream that stopped taking it): a bare reset said nothing
       * of who gave up, or why. */
      fail_request(c, 408, "idle_timeout", NULL);
      return;
    }
    proxy_conn_close(c, 1, "idle_timeout");
    return;
  }
  proxy_conn_arm_timer(c, c->sb->limits.idle_ms - idle);
}

void proxy_http_start(struct proxy_conn *c)
{
  struct proxy_http *h = calloc(1, sizeof(*h));

  if (h == NULL) {
    proxy_conn_close(c, 1, "out_of_memory");
    return;
  }
  c->http = h;
  llhttp_init(&h->req, HTTP_REQUEST, &req_settings);
  llhttp_init(&h->resp, HTTP_RESPONSE, &resp_settings);
  h->req.data = c;
  h->resp.data = c;
  h->phase = PH_HEAD;
  c->state = CONN_HTTP;
  proxy_conn_arm_timer(c, c->sb->limits.head_ms);
  process_down(c);
}
