/*
 * Fuzz target for the credential callback's answer parser (proxy/callback_answer.c):
 * the bytes a callback sends back, HTTP response and JSON body.
 *
 * Input: one control byte, then the answer. The control byte's low 6 bits + 1 give
 * the size of the pieces the answer is fed in; bit 6 says the connection was TLS and
 * bit 7 that it ended with close_notify.
 *
 * Invariants checked (abort on violation): feeding the answer in pieces succeeds
 * exactly when feeding it at once does, with the same headers (which error is found
 * first may differ: a head over the limit is seen before a bad byte when the spans
 * arrive in pieces); a success holds at most
 * RULES_MAX_INJECT headers whose names are tokens, not hop-by-hop, unique ignoring
 * case, and whose values are valid, NUL-terminated, of the stated length and within
 * RULES_MAX_VALUE_LEN; a failure has an outcome other than ok, a negative errno and
 * a non-empty detail of printable ASCII only (it goes into the daemon's log: a byte
 * of the answer copied there could forge or split log lines); the body never exceeds
 * PROXY_CRED_MAX_BODY.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/callback_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
  int result;
  int status;
  struct proxy_creds *creds; /* on success */
};

static void check_creds(const struct proxy_creds *cr)
{
  size_t i, j;

  if (cr == NULL || cr->nheaders > RULES_MAX_INJECT)
    abort();
  for (i = 0; i < cr->nheaders; i++) {
    const struct proxy_cred_header *h = &cr->headers[i];
    size_t nlen = strlen(h->name);

    if (!rules_is_token(h->name, nlen) || rules_is_reserved_header(h->name, nlen))
      abort();
    if (strlen(h->value) != h->value_len || h->value_len > RULES_MAX_VALUE_LEN ||
        !rules_is_valid_value(h->value, h->value_len))
      abort();
    for (j = 0; j < i; j++)
      if (strcasecmp(cr->headers[j].name, h->name) == 0)
        abort();
  }
}

/* 1 if s (NUL-terminated) is printable ASCII only. */
static int printable(const char *s)
{
  for (; *s != '\0'; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
      return 0;
  return 1;
}

static struct run run_once(const char *p, size_t len, size_t piece, int tls, int clean)
{
  struct proxy_cred_answer a;
  struct proxy_creds *cr = NULL;
  struct run out;
  size_t off = 0, n;
  int r = PROXY_CRED_ANSWER_MORE;

  proxy_cred_answer_init(&a);
  while (off < len && r == PROXY_CRED_ANSWER_MORE) {
    n = len - off < piece ? len - off : piece;
    r = proxy_cred_answer_feed(&a, p + off, n);
    off += n;
    if (a.body_len > PROXY_CRED_MAX_BODY || a.head_bytes > PROXY_CRED_MAX_HEAD + piece)
      abort();
  }
  if (r == PROXY_CRED_ANSWER_MORE)
    r = proxy_cred_answer_eof(&a, tls, clean);
  if (r == PROXY_CRED_ANSWER_DONE)
    r = proxy_cred_answer_creds(&a, &cr);
  if (r == PROXY_CRED_ANSWER_DONE) {
    check_creds(cr);
    if (a.status < 200 || a.status > 299)
      abort();
  } else if (r == PROXY_CRED_ANSWER_FAILED) {
    if (!a.failed || a.outcome == PROXY_CRED_OK || a.outcome >= PROXY_CRED__COUNT ||
        a.err >= 0 || a.detail[0] == '\0' || memchr(a.detail, '\0', sizeof(a.detail)) == NULL ||
        !printable(a.detail) || cr != NULL)
      abort();
  } else {
    abort();
  }
  out.result = r;
  out.status = a.status;
  out.creds = cr;
  proxy_cred_answer_free(&a);
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct run whole, pieces;
  size_t piece;
  int tls, clean;

  if (size < 1)
    return 0;
  piece = (size_t)(data[0] & 0x3f) + 1;
  tls = (data[0] >> 6) & 1;
  clean = (data[0] >> 7) & 1;
  whole = run_once((const char *)data + 1, size - 1, size, tls, clean);
  pieces = run_once((const char *)data + 1, size - 1, piece, tls, clean);
  if (whole.result != pieces.result)
    abort();
  if (whole.result == PROXY_CRED_ANSWER_DONE) {
    size_t i;

    if (whole.status != pieces.status || whole.creds->nheaders != pieces.creds->nheaders)
      abort();
    for (i = 0; i < whole.creds->nheaders; i++)
      if (strcmp(whole.creds->headers[i].name, pieces.creds->headers[i].name) != 0 ||
          strcmp(whole.creds->headers[i].value, pieces.creds->headers[i].value) != 0)
        abort();
  }
  proxy_creds_unref(whole.creds);
  proxy_creds_unref(pieces.creds);
  return 0;
}
