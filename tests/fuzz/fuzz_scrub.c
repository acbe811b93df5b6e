/*
 * Fuzz target for response masking (proxy/scrub.c): the upstream's response bytes,
 * which the proxy passes through proxy_scrub_feed in whatever pieces the socket or
 * TLS hands it, with the values injected into the request to mask.
 *
 * Input: one control byte, then for each value a length byte and that many bytes, then
 * the response. The control byte's low 2 bits + 1 give the number of values; its upper
 * 6 bits seed the sizes of the pieces the response is fed in (1 up to 4 * seed + 1).
 *
 * tests/unit/test_scrub.c checks several values from small alphabets against masking
 * computed naively; this target covers what that does not: one value alone (the common
 * case, with its own code path: a "<scheme> <credential>" value masked through its
 * credential), padded credentials, values of any bytes and any length, and up to four.
 *
 * Invariants checked (abort on violation): fed in pieces, the output is the same as fed
 * at once (and what is held after each piece is shorter than the longest value, and
 * all but it was forwarded); it has the response's length; every byte is the
 * response's or '*'; a '*' that was not one lies inside an occurrence of a value to
 * mask (nothing else is changed); and no value to mask (that has no '*' itself, which
 * masking writes) occurs in it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/scrub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_VALUES 4

static void add_values(struct proxy_scrub *s, char *const *vals, const size_t *lens, size_t n)
{
  size_t i;

  memset(s, 0, sizeof(*s));
  for (i = 0; i < n; i++)
    proxy_scrub_add(s, vals[i], lens[i]);
}

static uint32_t next_rand(uint32_t *st)
{
  *st ^= *st << 13;
  *st ^= *st >> 17;
  *st ^= *st << 5;
  return *st;
}

/* Feeds body (copied: masking is in place) in pieces of 1 to maxpiece bytes (all at
 * once if maxpiece is 0) and returns the output, len bytes, malloc'ed. */
static char *run(char *const *vals, const size_t *lens, size_t n, const char *body, size_t len,
                 size_t maxpiece, uint32_t seed)
{
  struct proxy_scrub s;
  char *copy = malloc(len + 1), *out = malloc(len + 1);
  size_t fed = 0, olen = 0, piece, olen_piece;
  const char *o;
  uint32_t st = seed * 2654435761u + 1;

  if (copy == NULL || out == NULL)
    abort();
  memcpy(copy, body, len);
  add_values(&s, vals, lens, n);
  while (fed < len) {
    piece = maxpiece == 0 ? len - fed : 1 + next_rand(&st) % maxpiece;
    if (piece > len - fed)
      piece = len - fed;
    if (proxy_scrub_feed(&s, copy + fed, piece, &o, &olen_piece) != 0)
      abort();
    fed += piece;
    if (olen + olen_piece > len)
      abort();
    if (olen_piece > 0)
      memcpy(out + olen, o, olen_piece);
    olen += olen_piece;
    if (olen + s.held_len != fed || (s.held_len > 0 && s.held_len >= s.maxlen))
      abort();
  }
  proxy_scrub_flush(&s, &o, &olen_piece);
  if (olen + olen_piece != len || s.held_len != 0)
    abort();
  if (olen_piece > 0)
    memcpy(out + olen, o, olen_piece);
  proxy_scrub_free(&s);
  free(copy);
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *vals[MAX_VALUES];
  size_t lens[MAX_VALUES], n, i, k, off = 1, len, maxpiece;
  const char *body;
  char *whole, *pieces, *covered;
  struct proxy_scrub s;
  uint32_t seed;

  if (size < 1)
    return 0;
  n = (size_t)(data[0] & 3) + 1;
  maxpiece = 4 * (size_t)(data[0] >> 2) + 1;
  seed = data[0];
  for (i = 0; i < n; i++) {
    size_t l = off < size ? data[off++] : 0;

    if (l > size - off)
      l = size - off;
    /* Copies of their own, so that ASan sees a read past a value's end. */
    vals[i] = malloc(l + 1);
    if (vals[i] == NULL)
      abort();
    memcpy(vals[i], data + off, l);
    lens[i] = l;
    off += l;
  }
  body = (const char *)data + off;
  len = size - off;

  whole = run(vals, lens, n, body, len, 0, seed);
  pieces = run(vals, lens, n, body, len, maxpiece, seed);
  if (memcmp(whole, pieces, len) != 0)
    abort();

  /* What is masked: every occurrence of every value (and credential) the scrubber
   * holds, as add_values sets them up. */
  add_values(&s, vals, lens, n);
  covered = calloc(1, len + 1);
  if (covered == NULL)
    abort();
  for (i = 0; i < s.n; i++)
    for (k = 0; k + s.len[i] <= len; k++)
      if (memcmp(body + k, s.val[i], s.len[i]) == 0)
        memset(covered + k, 1, s.len[i]);
  for (k = 0; k < len; k++) {
    if (whole[k] == body[k])
      continue;
    if (whole[k] != '*' || !covered[k])
      abort();
  }
  for (i = 0; i < s.n; i++)
    if (memchr(s.val[i], '*', s.len[i]) == NULL && memmem(whole, len, s.val[i], s.len[i]) != NULL)
      abort();
  proxy_scrub_free(&s);
  free(covered);
  free(whole);
  free(pieces);
  for (i = 0; i < n; i++)
    free(vals[i]);
  return 0;
}
