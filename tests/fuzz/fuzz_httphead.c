/*
 * Fuzz target for proxy/httphead.c.
 *
 * The input is the bytes a sandbox sends. Whatever proxy_http_parse_request accepts
 * must also be accepted by llhttp 8.1.0 (strict settings, no lenient flags), and the
 * two must agree on the method and on body framing (Content-Length, chunked): the
 * proxy relies on llhttp for the body, so a disagreement is a smuggling bug. The
 * rewritten head must parse again, frame the body identically (for us and for
 * llhttp), carry each injected header exactly once, and be a fixed point of the
 * rewrite. Verdicts must not depend on how the bytes were split across reads.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "proxy/httphead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEAD 2048

#define CHECK(expr)                                                               \
  do {                                                                            \
    if (!(expr)) {                                                                \
      fprintf(stderr, "fuzz_httphead: check failed at line %d: %s\n", __LINE__,  \
              #expr);                                                             \
      abort();                                                                    \
    }                                                                             \
  } while (0)

struct ll_result {
  int headers_complete;
  uint64_t content_length;
  uint16_t flags;
  int upgrade;
  uint8_t method;
};

static int on_headers_complete(llhttp_t *p)
{
  struct ll_result *r = p->data;

  r->headers_complete = 1;
  r->content_length = p->content_length;
  r->flags = p->flags;
  r->upgrade = p->upgrade;
  r->method = p->method;
  return 0;
}

/* Runs llhttp over a complete head; the head must be accepted. */
static void run_llhttp(const char *head, size_t len, struct ll_result *r)
{
  llhttp_settings_t settings;
  llhttp_t parser;
  llhttp_errno_t err;

  memset(r, 0, sizeof(*r));
  llhttp_settings_init(&settings);
  settings.on_headers_complete = on_headers_complete;
  llhttp_init(&parser, HTTP_REQUEST, &settings);
  parser.data = r;
  err = llhttp_execute(&parser, head, len);
  if (err != HPE_OK && err != HPE_PAUSED_UPGRADE) {
    fprintf(stderr, "llhttp refused an accepted head: %s (%s)\n", llhttp_errno_name(err),
            llhttp_get_error_reason(&parser));
    abort();
  }
  CHECK(r->headers_complete);
}

/* llhttp and our parser agree on the method and the framing of the body. */
static void check_agreement(const struct proxy_http_request *req,
                            const struct ll_result *r)
{
  const char *name = llhttp_method_name((llhttp_method_t)r->method);

  CHECK(strlen(name) == req->method_len && memcmp(name, req->method, req->method_len) == 0);
  if (req->content_length >= 0) {
    CHECK(r->flags & F_CONTENT_LENGTH);
    CHECK(r->content_length == (uint64_t)req->content_length);
  } else {
    CHECK(!(r->flags & F_CONTENT_LENGTH));
  }
  CHECK(!!(r->flags & F_CHUNKED) == !!req->chunked);
  CHECK(!!(r->flags & F_TRANSFER_ENCODING) == !!req->chunked);
}

static int count_fields(const struct proxy_http_request *req, const char *name)
{
  size_t i;
  int n = 0;

  for (i = 0; i < req->nfields; i++)
    if (strlen(name) == req->fields[i].name_len &&
        strncasecmp(req->fields[i].name, name, req->fields[i].name_len) == 0)
      n++;
  return n;
}

static void check_rewrite(const struct proxy_http_request *req)
{
  static const char bearer[] = "Bearer fuzz";
  struct rules_request_decision d;
  struct proxy_http_request again;
  struct ll_result r;
  const char *why;
  char *out = NULL, *out2 = NULL;
  size_t bound;
  int n, n2, i;

  memset(&d, 0, sizeof(d));
  d.nheaders = 2;
  d.headers[0].name = "Authorization";
  d.headers[0].value = bearer;
  d.headers[0].value_len = sizeof(bearer) - 1;
  d.headers[1].name = "X-Api-Key";
  d.headers[1].value = "k";
  d.headers[1].value_len = 1;

  bound = proxy_http_rewrite_bound(req, &d);
  out = malloc(bound);
  CHECK(out != NULL);
  n = proxy_http_rewrite(req, &d, out, bound);
  CHECK(n > 0 && (size_t)n <= bound);
  CHECK(proxy_http_rewrite(req, &d, out, (size_t)n - 1) == -ENOSPC);

  if (proxy_http_parse_request(out, (size_t)n, (size_t)n, &again, &why) != PROXY_HTTP_OK) {
    /* Only the two injected fields can push a head over the field limit. */
    CHECK(req->nfields + 2 > PROXY_HTTP_MAX_FIELDS);
    goto out;
  }
  CHECK(again.head_len == (size_t)n);
  CHECK(again.form == PROXY_TARGET_ORIGIN || again.form == PROXY_TARGET_ASTERISK);
  CHECK(again.method_len == req->method_len &&
        memcmp(again.method, req->method, req->method_len) == 0);
  CHECK(again.target_len == req->path_len &&
        memcmp(again.target, req->path, req->path_len) == 0);
  CHECK(again.version_minor == req->version_minor);
  CHECK(again.content_length == req->content_length);
  CHECK(again.chunked == req->chunked);
  CHECK(again.upgrade == req->upgrade);
  /* Upstream, a close ends only the sandbox's connection (see httphead.h). */
  CHECK(again.keep_alive == proxy_http_upstream_keep_alive(req));
  CHECK(proxy_http_upstream_keep_alive(&again) == again.keep_alive);
  CHECK(again.expect_continue == req->expect_continue);
  CHECK((again.host_field >= 0) == (req->host_field >= 0));
  CHECK(count_fields(&again, "Authorization") == 1);
  CHECK(count_fields(&again, "X-Api-Key") == 1);
  i = proxy_http_find(&again, "Authorization");
  CHECK(again.fields[i].value_len == sizeof(bearer) - 1 &&
        memcmp(again.fields[i].value, bearer, sizeof(bearer) - 1) == 0);
  CHECK(count_fields(&again, "Proxy-Authorization") == 0);
  CHECK(count_fields(&again, "Proxy-Connection") == 0);
  CHECK(count_fields(&again, "Keep-Alive") == 0);
  CHECK(count_fields(&again, "HTTP2-Settings") == 0);
  CHECK(count_fields(&again, "Connection") <= 1);
  CHECK(count_fields(&again, "Upgrade") == (req->upgrade ? 1 : 0));

  /* What upstream sees frames the body as the sandbox's head did, for llhttp too. */
  run_llhttp(out, (size_t)n, &r);
  check_agreement(&again, &r);
  CHECK(r.upgrade == again.upgrade);

  /* Rewriting is idempotent: nothing left to strip, injected headers replaced. */
  out2 = malloc(bound);
  CHECK(out2 != NULL);
  n2 = proxy_http_rewrite(&again, &d, out2, bound);
  CHECK(n2 == n && memcmp(out, out2, (size_t)n) == 0);
out:
  free(out2);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct proxy_http_request *req, *part;
  struct ll_result r;
  enum proxy_http_status st, st2;
  const char *buf = (const char *)data;
  const char *why = NULL, *why2 = NULL;
  size_t cuts[2];
  int i;

  /* The struct holds 128 fields: keep it off the fuzzer's stack. */
  req = malloc(sizeof(*req));
  part = malloc(sizeof(*part));
  CHECK(req != NULL && part != NULL);

  st = proxy_http_parse_request(buf, size, MAX_HEAD, req, &why);
  CHECK((why == NULL) == (st == PROXY_HTTP_OK || st == PROXY_HTTP_NEED_MORE));

  /* A prefix may only be incomplete or get the same verdict (bytes arrive in any
   * split); for an accepted head, every shorter prefix is incomplete. */
  cuts[0] = size / 2;
  cuts[1] = size > 0 ? size - 1 : 0;
  if (st == PROXY_HTTP_OK) {
    cuts[0] = req->head_len / 2;
    cuts[1] = req->head_len - 1;
  }
  for (i = 0; i < 2 && cuts[i] < size; i++) {
    st2 = proxy_http_parse_request(buf, cuts[i], MAX_HEAD, part, &why2);
    if (st == PROXY_HTTP_OK || st == PROXY_HTTP_NEED_MORE)
      CHECK(st2 == PROXY_HTTP_NEED_MORE);
    else
      CHECK(st2 == PROXY_HTTP_NEED_MORE ||
            (st2 == st && why2 != NULL && strcmp(why, why2) == 0));
  }
  if (st != PROXY_HTTP_OK)
    goto out;

  CHECK(req->head == buf && req->head_len >= 4 && req->head_len <= size &&
        req->head_len <= MAX_HEAD);
  CHECK(memcmp(buf + req->head_len - 4, "\r\n\r\n", 4) == 0);
  CHECK(req->version_minor == 0 || req->version_minor == 1);
  CHECK(req->path_len > 0 && (req->path[0] == '/' || req->path[0] == '*'));
  CHECK(!(req->chunked && req->content_length >= 0));

  /* Bytes after the head (body, pipelined requests) do not change the verdict. */
  st2 = proxy_http_parse_request(buf, req->head_len, MAX_HEAD, part, &why2);
  CHECK(st2 == PROXY_HTTP_OK && part->head_len == req->head_len &&
        part->nfields == req->nfields && part->content_length == req->content_length);

  run_llhttp(buf, req->head_len, &r);
  check_agreement(req, &r);
  /* llhttp also calls an h2c or HTTP/1.0 upgrade an upgrade; the rewrite strips
   * those, and check_rewrite requires exact agreement on the rewritten head. */
  if (req->upgrade)
    CHECK(r.upgrade);

  check_rewrite(req);
out:
  free(part);
  free(req);
  return 0;
}
