/*
 * Masking injected secrets in responses (invariant I3, defense in depth): an upstream
 * that echoes request headers back (a debug endpoint, an error page quoting the
 * request) would otherwise hand the sandbox the credential it was never to see.
 *
 * Every occurrence of a value injected into the request is overwritten with '*' of
 * the same length in the response bytes, so framing (Content-Length, chunk sizes) is
 * unchanged. Matches across reads are found by holding back a tail that could start
 * a secret; a tail that cannot is forwarded at once, so streams (SSE) are not delayed.
 * With several values, every match of every value is found in the bytes as received,
 * so one value masked first cannot hide the rest of another that overlaps it
 * ("{USER}:{PASS}" and "{USER}"). A value of the form "<scheme> <credential>"
 * (RFC 9110 11.4: "Bearer sk-...", "Basic dXNl...", "token ghp_...") has its
 * credential masked alone too: an error page quotes the token it refuses without
 * the scheme. A credential (or value) ending in base64 padding is masked without it
 * too, since the rest decodes to the same secret and a percent-encoded echo writes
 * "=" as "%3D". Not covered: values split by chunked framing, compressed or
 * otherwise re-encoded bodies, and bytes after a WebSocket upgrade. Values shorter than PROXY_SCRUB_MIN are not masked
 * (they would mask ordinary text).
 */
#ifndef AUTHPROXY_SCRUB_H
#define AUTHPROXY_SCRUB_H

#include <stddef.h>

#include "rules/rules.h"

#define PROXY_SCRUB_MIN 8
/* Each injected value, the credential of each "<scheme> <credential>" one, and that
 * credential (or the value) without its base64 padding. */
#define PROXY_SCRUB_MAX (3 * RULES_MAX_INJECT)

struct proxy_scrub {
  /* Borrowed; valid while the request's config and callback answer are held. */
  const char *val[PROXY_SCRUB_MAX];
  size_t len[PROXY_SCRUB_MAX];
  size_t n;
  size_t nvalues;                    /* values added (each a credential may follow),
                                        and credentials without their padding */
  size_t maxlen;
  char *held;                        /* tail held back (< maxlen bytes), as received */
  size_t held_len;
  unsigned char *held_mask;          /* with several values: held[i] belongs to a
                                        match found already, and is masked when sent */
  size_t masked;                     /* occurrences masked so far */
  size_t tail_compared;              /* places compared looking for a tail to hold:
                                        work, counted for tests */
};

/* Empties the value set and drops what is held (the caller flushed it first). */
void proxy_scrub_reset(struct proxy_scrub *s);

/* Adds a value to mask (borrowed), and its credential alone when it has the form
 * "<scheme> <credential>" (a token, spaces, then a credential without spaces), and
 * that credential (or the value) without the "=" or "==" it ends in. */
void proxy_scrub_add(struct proxy_scrub *s, const char *v, size_t len);

/*
 * Passes data through: *out and *out_len give what may be forwarded now (data itself,
 * modified in place, or an internal buffer valid until the next call). Returns 0 or
 * -ENOMEM. data must be writable.
 */
int proxy_scrub_feed(struct proxy_scrub *s, char *data, size_t len, const char **out,
                     size_t *out_len);

/* What is still held, to forward when the response ends; then empty. */
void proxy_scrub_flush(struct proxy_scrub *s, const char **out, size_t *out_len);

void proxy_scrub_free(struct proxy_scrub *s);

#endif
