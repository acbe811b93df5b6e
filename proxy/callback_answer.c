/*
 * The callback's answer, parsed as its bytes arrive: llhttp (strict, HTTP_RESPONSE)
 * with a bounded head and body, then the JSON body checked into a struct proxy_creds.
 * No I/O here, so tests/fuzz/fuzz_callback_answer.c drives exactly this code.
 *
 * llhttp callbacks only record a refusal and stop the parser; the caller learns of it
 * from the return value once llhttp has returned.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "proxy/callback_internal.h"

static void wipe_free(char *p, size_t len)
{
  if (p == NULL)
    return;
  explicit_bzero(p, len);
  free(p);
}

static int refuse(struct proxy_cred_answer *a, enum proxy_cred_outcome o, int err,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Records the first reason the answer is unusable; returns PROXY_CRED_ANSWER_FAILED. */
static int refuse(struct proxy_cred_answer *a, enum proxy_cred_outcome o, int err,
                  const char *fmt, ...)
{
  va_list ap;

  if (a->failed)
    return PROXY_CRED_ANSWER_FAILED;
  a->failed = 1;
  a->outcome = o;
  a->err = err;
  va_start(ap, fmt);
  vsnprintf(a->detail, sizeof(a->detail), fmt, ap);
  va_end(ap);
  return PROXY_CRED_ANSWER_FAILED;
}

/* A name from the answer, made safe for a log line: printable ASCII only, at most 64
 * bytes, so a hostile answer cannot forge log lines. */
static const char *log_name(const char *s, char *buf, size_t size)
{
  size_t i, o = 0;

  for (i = 0; s[i] != '\0' && o + 4 < size && i < 64; i++) {
    unsigned char ch = (unsigned char)s[i];

    buf[o++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
  }
  if (s[i] != '\0' && o + 4 <= size) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = '\0';
  return buf;
}

/* ---- HTTP ---- */

static struct proxy_cred_answer *from_parser(llhttp_t *p)
{
  return p->data;
}

static int count_head(llhttp_t *p, const char *at, size_t len)
{
  struct proxy_cred_answer *a = from_parser(p);

  (void)at;
  a->head_bytes += len;
  if (a->head_bytes > PROXY_CRED_MAX_HEAD) {
    refuse(a, PROXY_CRED_TOO_LARGE, -EMSGSIZE, "the answer's head is over %u bytes",
           PROXY_CRED_MAX_HEAD);
    return -1;
  }
  return 0;
}

static int on_message_begin(llhttp_t *p)
{
  from_parser(p)->started = 1;
  return 0;
}

static int on_headers_complete(llhttp_t *p)
{
  struct proxy_cred_answer *a = from_parser(p);
  int st = p->status_code;

  /* Interim answers (100 Continue, 102, 103) precede the final one. */
  if (st >= 100 && st < 200 && st != 101)
    return 0;
  a->status = st;
  if (st < 200 || st > 299) {
    refuse(a, PROXY_CRED_BAD_STATUS, -EPROTO, "HTTP status %d", st);
    return -1;
  }
  if ((p->flags & F_CONTENT_LENGTH) != 0 && p->content_length > PROXY_CRED_MAX_BODY) {
    refuse(a, PROXY_CRED_TOO_LARGE, -EMSGSIZE,
           "Content-Length %" PRIu64 " is over the %u-byte limit", p->content_length,
           PROXY_CRED_MAX_BODY);
    return -1;
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
  struct proxy_cred_answer *a = from_parser(p);
  size_t cap;
  char *nb;

  if (len > PROXY_CRED_MAX_BODY - a->body_len) {
    refuse(a, PROXY_CRED_TOO_LARGE, -EMSGSIZE, "the body is over %u bytes",
           PROXY_CRED_MAX_BODY);
    return -1;
  }
  if (a->body_len + len > a->body_cap) {
    /* Grown by hand, not realloc: the old buffer holds secrets and is wiped. */
    cap = a->body_cap ? a->body_cap : 1024;
    while (cap < a->body_len + len)
      cap *= 2;
    if (cap > PROXY_CRED_MAX_BODY)
      cap = PROXY_CRED_MAX_BODY;
    nb = malloc(cap);
    if (nb == NULL) {
      refuse(a, PROXY_CRED_INTERNAL, -ENOMEM, "out of memory");
      return -1;
    }
    if (a->body_len > 0)
      memcpy(nb, a->body, a->body_len);
    wipe_free(a->body, a->body_cap);
    a->body = nb;
    a->body_cap = cap;
  }
  memcpy(a->body + a->body_len, at, len);
  a->body_len += len;
  return 0;
}

static int on_message_complete(llhttp_t *p)
{
  struct proxy_cred_answer *a = from_parser(p);

  if (p->status_code < 200)
    return 0;
  a->complete = 1;
  /* Whatever follows the answer (a second response) is ignored. */
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
  .on_message_begin = on_message_begin,
  .on_status = count_head,
  .on_header_field = count_head,
  .on_header_value = count_head,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

void proxy_cred_answer_init(struct proxy_cred_answer *a)
{
  memset(a, 0, sizeof(*a));
  llhttp_init(&a->parser, HTTP_RESPONSE, &parser_settings);
  a->parser.data = a;
}

void proxy_cred_answer_free(struct proxy_cred_answer *a)
{
  wipe_free(a->body, a->body_cap);
  a->body = NULL;
  a->body_len = a->body_cap = 0;
}

int proxy_cred_answer_feed(struct proxy_cred_answer *a, const char *data, size_t len)
{
  enum llhttp_errno e;

  if (a->failed)
    return PROXY_CRED_ANSWER_FAILED;
  if (a->complete)
    return PROXY_CRED_ANSWER_DONE;
  e = llhttp_execute(&a->parser, data, len);
  if (e == HPE_OK)
    return PROXY_CRED_ANSWER_MORE;
  if (e == HPE_PAUSED && a->complete)
    return PROXY_CRED_ANSWER_DONE;
  if (a->failed)
    return PROXY_CRED_ANSWER_FAILED;
  return refuse(a, PROXY_CRED_BAD_RESPONSE, -EPROTO, "malformed HTTP answer: %s (%s)",
                llhttp_errno_name(e), llhttp_get_error_reason(&a->parser));
}

int proxy_cred_answer_eof(struct proxy_cred_answer *a, int tls, int clean)
{
  if (a->failed)
    return PROXY_CRED_ANSWER_FAILED;
  if (a->complete)
    return PROXY_CRED_ANSWER_DONE;
  /* An answer delimited by the end of the connection must end with close_notify over
   * TLS; a bare TCP FIN could be a truncation. */
  if (tls && !clean && a->started && llhttp_message_needs_eof(&a->parser))
    return refuse(a, PROXY_CRED_BAD_RESPONSE, -EPROTO,
                  "the TLS connection ended without close_notify before the answer's end");
  llhttp_finish(&a->parser);
  if (a->failed)
    return PROXY_CRED_ANSWER_FAILED;
  if (a->complete)
    return PROXY_CRED_ANSWER_DONE;
  if (!a->started)
    return refuse(a, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                  "the callback closed the connection without answering");
  return refuse(a, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                "the connection ended before the answer was complete");
}

/* ---- JSON ---- */

/* Checks the "headers" object and copies it into one wiped-on-free allocation. */
static int creds_from_headers(struct proxy_cred_answer *a, const cJSON *hdrs,
                              struct proxy_creds **out)
{
  const cJSON *it, *prev;
  struct proxy_cred_header *h;
  struct proxy_creds *cr;
  size_t n = 0, strings = 0, size, nlen, vlen;
  char *p, q[80];

  for (it = hdrs->child; it != NULL; it = it->next) {
    const char *name = it->string;

    if (++n > RULES_MAX_INJECT)
      return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO, "the answer has more than %d headers",
                    RULES_MAX_INJECT);
    nlen = strlen(name);
    if (!rules_is_token(name, nlen))
      return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO,
                    "header name \"%s\" is not a token (RFC 9110)", log_name(name, q, sizeof(q)));
    if (rules_is_reserved_header(name, nlen))
      return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO,
                    "header %s is hop-by-hop or framing and may not be injected", name);
    for (prev = hdrs->child; prev != it; prev = prev->next)
      if (strcasecmp(prev->string, name) == 0)
        return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO, "header %s appears twice", name);
    if (!cJSON_IsString(it) || it->valuestring == NULL)
      return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO, "header %s: the value is not a string",
                    name);
    vlen = strlen(it->valuestring);
    if (vlen > RULES_MAX_VALUE_LEN)
      return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO,
                    "header %s: the value is longer than %d bytes", name, RULES_MAX_VALUE_LEN);
    if (!rules_is_valid_value(it->valuestring, vlen))
      return refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO,
                    "header %s: the value has CR, LF, NUL or another control byte", name);
    strings += nlen + 1 + vlen + 1;
  }
  /* Bounded by the checks above: 64 values of 8 KiB and names from a 64 KiB body. */
  size = sizeof(*cr) + n * sizeof(*h) + strings;
  cr = calloc(1, size);
  if (cr == NULL)
    return refuse(a, PROXY_CRED_INTERNAL, -ENOMEM, "out of memory");
  h = (struct proxy_cred_header *)(cr + 1);
  p = (char *)(h + n);
  cr->refs = 1;
  cr->alloc_size = size;
  cr->nheaders = n;
  cr->headers = h;
  for (it = hdrs->child; it != NULL; it = it->next, h++) {
    nlen = strlen(it->string);
    vlen = strlen(it->valuestring);
    memcpy(p, it->string, nlen + 1);
    h->name = p;
    p += nlen + 1;
    memcpy(p, it->valuestring, vlen + 1);
    h->value = p;
    h->value_len = vlen;
    p += vlen + 1;
  }
  *out = cr;
  return PROXY_CRED_ANSWER_DONE;
}

int proxy_cred_answer_creds(struct proxy_cred_answer *a, struct proxy_creds **out)
{
  const cJSON *hdrs;
  struct rules_diag diag;
  cJSON *root = NULL;
  int r;

  *out = NULL;
  if (a->failed)
    return PROXY_CRED_ANSWER_FAILED;
  if (!a->complete)
    return refuse(a, PROXY_CRED_BAD_RESPONSE, -EPROTO, "the answer is not complete");
  rules_diag_init(&diag);
  /* Strict parsing: cJSON alone would cut a string at \u0000, accept trailing text,
   * and keep both of two members with one name ({"headers": ..., "headers": ...}),
   * reading the first where another reader of the answer reads the last. The
   * diagnostic may quote a byte of the body, so it is never logged. */
  r = rules_json_parse(a->body != NULL ? a->body : "", a->body_len, &root, &diag);
  rules_diag_free(&diag);
  if (r == -ENOMEM) {
    r = refuse(a, PROXY_CRED_INTERNAL, -ENOMEM, "out of memory");
    goto out;
  }
  if (r != 0) {
    r = refuse(a, PROXY_CRED_NOT_JSON, -EPROTO,
               "the body (%zu bytes) is not strict JSON: a syntax error, a control byte or "
               "invalid UTF-8 in a string, text after the value, or a member name given "
               "twice in one object", a->body_len);
    goto out;
  }
  if (!cJSON_IsObject(root)) {
    r = refuse(a, PROXY_CRED_NOT_JSON, -EPROTO, "the body (%zu bytes) is not a JSON object",
               a->body_len);
    goto out;
  }
  hdrs = cJSON_GetObjectItemCaseSensitive(root, "headers");
  if (hdrs == NULL)
    r = refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO, "the answer has no \"headers\" member");
  else if (!cJSON_IsObject(hdrs))
    r = refuse(a, PROXY_CRED_BAD_HEADERS, -EPROTO, "\"headers\" is not an object");
  else
    r = creds_from_headers(a, hdrs, out);
out:
  /* The tree holds the values: wiped, not just freed. */
  rules_json_free(root);
  /* The body is no longer needed; wipe it now rather than when the call ends. */
  proxy_cred_answer_free(a);
  return r;
}
