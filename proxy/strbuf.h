/*
 * A growable byte buffer with the few formatting helpers the proxy needs for the
 * JSON it writes itself (audit records, error bodies, metrics).
 */
#ifndef AUTHPROXY_STRBUF_H
#define AUTHPROXY_STRBUF_H

#include <stddef.h>

struct strbuf {
  char *data;
  size_t len;
  size_t cap;
  int oom;    /* an append failed: the content is incomplete */
  int secret; /* may hold a secret: memory it gives back (growing, freeing) is wiped
                 first, so no copy is left in the heap; set after strbuf_init */
};

void strbuf_init(struct strbuf *b);
void strbuf_free(struct strbuf *b);
void strbuf_reset(struct strbuf *b);

void strbuf_add(struct strbuf *b, const void *data, size_t len);
void strbuf_adds(struct strbuf *b, const char *s);
void strbuf_addf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends s[0..len) as a JSON string literal, quotes included, in printable ASCII:
 * control bytes and UTF-8 sequences are \u escapes (surrogate pairs past U+FFFF), so a
 * reader gets the same text back; a byte that begins no well-formed UTF-8 sequence
 * becomes U+FFFD. */
void strbuf_add_json_str(struct strbuf *b, const char *s, size_t len);

/* Takes the data (NUL-terminated, caller frees) and leaves b empty; NULL on oom. */
char *strbuf_take(struct strbuf *b);

#endif
