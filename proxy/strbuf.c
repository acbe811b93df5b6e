/*
 * Growable buffer; an allocation failure is sticky (b->oom) so callers check once.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/strbuf.h"
#include "proxy/utf8.h"

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

static void add_u_escape(struct strbuf *b, uint32_t unit)
{
  static const char hex[] = "0123456789abcdef";
  char esc[6] = { '\\', 'u', hex[unit >> 12 & 15], hex[unit >> 8 & 15], hex[unit >> 4 & 15],
                  hex[unit & 15] };

  strbuf_add(b, esc, sizeof(esc));
}

void strbuf_add_json_str(struct strbuf *b, const char *s, size_t len)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, n;
  uint32_t cp;

  if (grow(b, len + 2) != 0)
    return;
  b->data[b->len++] = '"';
  while (i < len) {
    unsigned char c = p[i];

    if (c == '"' || c == '\\') {
      char esc[2] = { '\\', (char)c };

      strbuf_add(b, esc, 2);
      i++;
    } else if (c >= 0x20 && c < 0x7f) {
      strbuf_add(b, &s[i], 1);
      i++;
    } else if (c < 0x80) {
      add_u_escape(b, c); /* control bytes and DEL */
      i++;
    } else {
      /* Escaped, not copied, so that the record stays ASCII; a reader decodes the text
       * that went in. A byte that begins no well-formed sequence cannot be written
       * in JSON at all: it becomes U+FFFD. */
      n = proxy_utf8_seq(p + i, len - i, &cp);
      if (n == 0) {
        add_u_escape(b, 0xfffd);
        i++;
      } else if (cp >= 0x10000) {
        add_u_escape(b, 0xd800 + ((cp - 0x10000) >> 10));
        add_u_escape(b, 0xdc00 + ((cp - 0x10000) & 0x3ff));
        i += n;
      } else {
        add_u_escape(b, cp);
        i += n;
      }
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
