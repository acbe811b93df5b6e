/*
 * Growable buffer; an allocation failure is sticky (b->oom) so callers check once.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/strbuf.h"

/* explicit_bzero: the compiler may not drop it as a dead store. */
static void give_back(struct strbuf *b, char *p)
{
  if (p != NULL && b->secret)
    explicit_bzero(p, b->cap);
  free(p);
}

void strbuf_init(struct strbuf *b)
{
  memset(b, 0, sizeof(*b));
}

void strbuf_free(struct strbuf *b)
{
  int secret = b->secret;

  give_back(b, b->data);
  memset(b, 0, sizeof(*b));
  b->secret = secret;
}

void strbuf_reset(struct strbuf *b)
{
  b->len = 0;
  b->oom = 0;
}

static int grow(struct strbuf *b, size_t extra)
{
  size_t cap;
  char *p;

  if (b->oom)
    return -1;
  if (b->len + extra + 1 <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1)
    cap *= 2;
  if (b->secret) {
    /* realloc would leave the old copy in the heap unwiped. */
    p = malloc(cap);
    if (p != NULL && b->len > 0)
      memcpy(p, b->data, b->len + 1);
  } else {
    p = realloc(b->data, cap);
  }
  if (p == NULL) {
    b->oom = 1;
    return -1;
  }
  if (b->secret)
    give_back(b, b->data);
  b->data = p;
  b->cap = cap;
  return 0;
}

void strbuf_add(struct strbuf *b, const void *data, size_t len)
{
  if (grow(b, len) != 0)
    return;
  memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void strbuf_adds(struct strbuf *b, const char *s)
{
  strbuf_add(b, s, strlen(s));
}

void strbuf_addf(struct strbuf *b, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || grow(b, (size_t)n) != 0)
    return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void strbuf_add_json_str(struct strbuf *b, const char *s, size_t len)
{
  static const char hex[] = "0123456789abcdef";
  size_t i;

  if (grow(b, len + 2) != 0)
    return;
  b->data[b->len++] = '"';
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[6];

    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      strbuf_add(b, esc, 2);
    } else if (c < 0x20 || c >= 0x7f) {
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      strbuf_add(b, esc, 6);
    } else {
      strbuf_add(b, &s[i], 1);
    }
  }
  strbuf_add(b, "\"", 1);
}

char *strbuf_take(struct strbuf *b)
{
  char *p;

  if (b->oom) {
    strbuf_free(b);
    return NULL;
  }
  if (b->data == NULL && grow(b, 0) != 0)
    return NULL;
  if (b->data != NULL)
    b->data[b->len] = '\0';
  p = b->data;
  memset(b, 0, sizeof(*b));
  return p;
}
