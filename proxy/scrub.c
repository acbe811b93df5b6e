/*
 * Response masking of injected values; see scrub.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "proxy/scrub.h"

void proxy_scrub_reset(struct proxy_scrub *s)
{
  s->n = 0;
  s->nvalues = 0;
  s->maxlen = 0;
  s->held_len = 0;
  /* Sized by maxlen, which the next values set. */
  free(s->held_mask);
  s->held_mask = NULL;
}

static void add_one(struct proxy_scrub *s, const char *v, size_t len)
{
  if (len < PROXY_SCRUB_MIN || s->n == PROXY_SCRUB_MAX)
    return;
  s->val[s->n] = v;
  s->len[s->n] = len;
  s->n++;
  if (len > s->maxlen)
    s->maxlen = len;
}

/* 1 for the characters of an auth-scheme (a token; RFC 9110 5.6.2). */
static int scheme_char(char ch)
{
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/*
 * A credential that ends in base64 padding ("dXNlcjpwYXNzd29yZA==", as a Basic
 * credential does two times in three) is also masked without it: the padding adds
 * nothing, the rest decodes to the whole secret, and an echo that percent-encodes the
 * value (a redirect's Location, a link on an error page) writes it as "%3D%3D", which
 * would leave the rest unmasked. Added as a value of its own (found wherever it is,
 * as with several values), since it is not the end of the value.
 */
static void add_unpadded(struct proxy_scrub *s, const char *cred, size_t len)
{
  size_t n = s->n, unpadded = len;

  while (unpadded > 0 && len - unpadded < 2 && cred[unpadded - 1] == '=')
    unpadded--;
  if (unpadded == len)
    return;
  add_one(s, cred, unpadded);
  if (s->n != n)
    s->nvalues++;
}

void proxy_scrub_add(struct proxy_scrub *s, const char *v, size_t len)
{
  size_t i = 0, start, n = s->n;

  add_one(s, v, len);
  if (s->n == n)
    return; /* too short to mask, and so is any part of it */
  s->nvalues++;
  /* "<scheme> <credential>": the credential alone is what an error page quotes. Only
   * this shape: masking every long word of a value would mask ordinary text. */
  while (i < len && scheme_char(v[i]))
    i++;
  if (i == 0 || i == len || v[i] != ' ') {
    add_unpadded(s, v, len);
    return;
  }
  while (i < len && v[i] == ' ')
    i++;
  start = i;
  while (i < len && v[i] != ' ' && v[i] != '\t')
    i++;
  if (i == len && start < len) {
    add_one(s, v + start, len - start);
    add_unpadded(s, v + start, len - start);
  } else {
    add_unpadded(s, v, len);
  }
}

/*
 * One value: masks its matches in place. A masked match cannot start another. With its
 * credential (val[1], the value's last bytes) only the credential is searched for,
 * which finds both: a match preceded by the rest of the value (its scheme) is masked
 * with it, so that an echo of the whole value is masked whole, at the cost of one
 * search. The scheme is there when the value began in the previous read: a proper
 * prefix of the value was held back and is at the front of buf.
 */
static void mask(struct proxy_scrub *s, char *buf, size_t len)
{
  const char *v = s->val[s->n - 1];
  size_t vlen = s->len[s->n - 1], pre = s->n == 2 ? s->len[0] - vlen : 0;
  char *p = buf, *end = buf + len, *hit;

  while ((size_t)(end - p) >= vlen) {
    hit = memmem(p, (size_t)(end - p), v, vlen);
    if (hit == NULL)
      break;
    memset(hit, '*', vlen);
    if (pre > 0 && (size_t)(hit - buf) >= pre && memcmp(hit - pre, s->val[0], pre) == 0)
      memset(hit - pre, '*', pre);
    s->masked++;
    p = hit + vlen;
  }
}

/*
 * Length of the longest suffix of buf that is a proper prefix of some value. For each
 * value, the leftmost place in buf's last len - 1 bytes (and before the longest tail
 * found so far) where the rest of buf begins the value; places are found by memchr
 * on the value's first byte. Comparing every length with every value cost
 * n * min(len, maxlen) calls of memcmp for each read whatever the bytes: 34.6 ms per
 * MiB of response read in 1400-byte records with four 2 KiB credentials.
 */
static size_t partial_tail(struct proxy_scrub *s, const char *buf, size_t len)
{
  size_t best = 0, i, w;

  for (i = 0; i < s->n; i++) {
    const char *p, *end = buf + len - best, *hit;

    w = s->len[i] - 1 < len ? s->len[i] - 1 : len;
    for (p = buf + len - w; p < end; p = hit + 1) {
      hit = memchr(p, (unsigned char)s->val[i][0], (size_t)(end - p));
      if (hit == NULL)
        break;
      s->tail_compared++;
      if (memcmp(hit, s->val[i], (size_t)(buf + len - hit)) == 0) {
        best = (size_t)(buf + len - hit);
        break;
      }
    }
  }
  return best;
}

/*
 * Several values: every match of every value is looked for in a copy of the bytes as
 * received, and masked in buf, so that masking one (a user name) cannot hide another
 * that overlaps it (the same name followed by a password). The first prev bytes of
 * buf were held last time: those held_mask marks belong to matches found then. The
 * hold is chosen on the bytes as received, and the held tail goes back to them (a
 * value may still complete there), with held_mask marking what must be masked
 * whenever it is sent. Returns the hold, or -ENOMEM.
 */
static ssize_t mask_all(struct proxy_scrub *s, char *buf, size_t len, size_t prev)
{
  size_t i, hold, tail;
  char *orig;

  orig = malloc(len);
  if (orig == NULL)
    return -ENOMEM;
  memcpy(orig, buf, len);
  hold = partial_tail(s, orig, len);
  tail = len - hold;
  for (i = 0; i < prev; i++)
    if (s->held_mask[i])
      buf[i] = '*';
  for (i = 0; i < s->n; i++) {
    const char *p = orig, *end = orig + len, *hit;

    while ((size_t)(end - p) >= s->len[i]) {
      hit = memmem(p, (size_t)(end - p), s->val[i], s->len[i]);
      if (hit == NULL)
        break;
      memset(buf + (hit - orig), '*', s->len[i]);
      /* Counted once: a match that starts inside the hold is found again next time
       * (or counted by the flush); one that starts before it, never again. */
      if ((size_t)(hit - orig) < tail)
        s->masked++;
      p = hit + 1;
    }
  }
  for (i = 0; i < hold; i++) {
    s->held_mask[i] = buf[tail + i] != orig[tail + i];
    buf[tail + i] = orig[tail + i];
  }
  free(orig);
  return (ssize_t)hold;
}

int proxy_scrub_feed(struct proxy_scrub *s, char *data, size_t len, const char **out,
                     size_t *out_len)
{
  char *buf = data, *p;
  size_t total = len, hold, prev = s->held_len;
  ssize_t h;

  if (s->n == 0) {
    *out = data;
    *out_len = len;
    return 0;
  }
  if (s->held_len > 0) {
    /* The held tail and the new bytes are searched as one. */
    p = malloc(s->held_len + len);
    if (p == NULL)
      return -ENOMEM;
    memcpy(p, s->held, s->held_len);
    memcpy(p + s->held_len, data, len);
    total = s->held_len + len;
    free(s->held);
    s->held = p;
    s->held_len = 0;
    buf = p;
  }
  if (s->nvalues == 1) {
    mask(s, buf, total);
    hold = partial_tail(s, buf, total);
  } else {
    if (s->held_mask == NULL) {
      s->held_mask = calloc(1, s->maxlen);
      if (s->held_mask == NULL)
        return -ENOMEM;
    }
    h = mask_all(s, buf, total, prev);
    if (h < 0)
      return (int)h;
    hold = (size_t)h;
  }
  if (hold > 0 && buf == data) {
    p = malloc(s->maxlen);
    if (p == NULL)
      return -ENOMEM;
    free(s->held);
    s->held = p;
    memcpy(s->held, buf + total - hold, hold);
  } else if (hold > 0) {
    /* buf is s->held: keep its tail at the front for next time, forward the rest
     * from a copy (the forwarded part must stay valid until the next call). */
    p = malloc(s->maxlen + total);
    if (p == NULL)
      return -ENOMEM;
    memcpy(p + s->maxlen, buf, total - hold);
    memcpy(p, buf + total - hold, hold);
    free(s->held);
    s->held = p;
    s->held_len = hold;
    *out = p + s->maxlen;
    *out_len = total - hold;
    return 0;
  }
  s->held_len = hold;
  *out = buf;
  *out_len = total - hold;
  return 0;
}

void proxy_scrub_flush(struct proxy_scrub *s, const char **out, size_t *out_len)
{
  size_t i;
  int masked = 0;

  if (s->held_mask != NULL)
    for (i = 0; i < s->held_len; i++)
      if (s->held_mask[i]) {
        s->held[i] = '*';
        masked = 1;
      }
  /* A value completed in the held tail: no next read finds it again. */
  if (masked)
    s->masked++;
  *out = s->held;
  *out_len = s->held_len;
  s->held_len = 0;
}

void proxy_scrub_free(struct proxy_scrub *s)
{
  free(s->held);
  s->held = NULL;
  s->held_len = 0;
  free(s->held_mask);
  s->held_mask = NULL;
}
