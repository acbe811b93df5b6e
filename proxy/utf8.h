/*
 * UTF-8 as RFC 3629 defines it, for the places that read or write text a peer chose
 * (the JSON writer in strbuf.c, nameConstraints strings in nameconstr.c).
 */
#ifndef AUTHPROXY_UTF8_H
#define AUTHPROXY_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * The length of the well-formed UTF-8 sequence (no overlong form, no surrogate,
 * nothing past U+10FFFF) at p[0..n), n > 0, and its code point in *cp: 1 for ASCII,
 * 2 to 4 otherwise; 0 when p does not begin one.
 */
static inline size_t proxy_utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
  unsigned char lo = 0x80, hi = 0xbf;
  size_t len, i;
  uint32_t v;

  if (p[0] < 0x80) {
    *cp = p[0];
    return 1;
  }
  if (p[0] >= 0xc2 && p[0] <= 0xdf) {
    len = 2;
    v = p[0] & 0x1fu;
  } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
    len = 3;
    v = p[0] & 0x0fu;
    if (p[0] == 0xe0)
      lo = 0xa0; /* overlong below */
    else if (p[0] == 0xed)
      hi = 0x9f; /* surrogates above */
  } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    len = 4;
    v = p[0] & 0x07u;
    if (p[0] == 0xf0)
      lo = 0x90; /* overlong below */
    else if (p[0] == 0xf4)
      hi = 0x8f; /* past U+10FFFF above */
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi)
    return 0;
  for (i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    v = v << 6 | (p[i] & 0x3fu);
  }
  *cp = v;
  return len;
}

#endif
