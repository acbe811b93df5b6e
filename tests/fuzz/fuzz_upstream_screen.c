/*
 * Fuzz target for the screen of an upstream's plaintext handshake records
 * (proxy_tls_screen_feed, proxy/tls.c): the bytes any server a sandbox reaches sends
 * before its ChangeCipherSpec, parsed in the daemon all sandboxes share.
 *
 * Input: one byte whose low 3 bits are a number of cuts k, k big-endian 16-bit cut
 * points, a big-endian 16-bit length and that many bytes of trusted CAs (each a
 * 3-byte length and a DER certificate, as in a Certificate message), then the server's
 * bytes. Beyond memory safety it checks:
 *   - split invariance: the stream fed whole, in the pieces the cuts make, and one
 *     byte at a time gets the same verdict (refusal, its reason and count, or the
 *     ChangeCipherSpec);
 *   - a verdict depends on nothing after it: the stream cut right after the byte that
 *     decided gets the same verdict, and bytes fed after a ChangeCipherSpec change
 *     nothing;
 *   - what the screen lets through is cheap for mbedTLS: every Certificate message of
 *     a record it accepted that mbedTLS would parse (as ssl_parse_certificate_chain
 *     does) has no RSA exponent over RSA_EXPONENT_MAX_BITS, and mbedtls_x509_crt_verify
 *     checks at most CHAIN_CHECKS_MAX signatures for it. The checks are counted by
 *     taking the place of mbedtls_pk_verify_ext (libmbedx509 calls it through the
 *     PLT), which fails each one: the most the parent search can check, at no cost.
 * Seeds: tests/tools/upstream_screen_seeds.py (real OpenSSL flights, hostile chains).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "proxy/tls_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int mbedtls_pk_verify_ext(mbedtls_pk_type_t type, const void *options, mbedtls_pk_context *ctx,
                          mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len,
                          const unsigned char *sig, size_t sig_len);

static unsigned signature_checks;

int mbedtls_pk_verify_ext(mbedtls_pk_type_t type, const void *options, mbedtls_pk_context *ctx,
                          mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len,
                          const unsigned char *sig, size_t sig_len)
{
  (void)type, (void)options, (void)ctx, (void)md_alg, (void)hash, (void)hash_len;
  (void)sig, (void)sig_len;
  signature_checks++;
  return MBEDTLS_ERR_PK_BAD_INPUT_DATA;
}

struct verdict {
  int ret;
  int screen;
  int screened;
  unsigned checks;
};

static size_t get3(const uint8_t *p)
{
  return (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
}

static int decided(const struct proxy_tls_screen *s, int ret)
{
  return ret != 0 || s->screened;
}

static struct verdict verdict_of(const struct proxy_tls_screen *s, int ret)
{
  struct verdict v;

  memset(&v, 0, sizeof(v));
  v.ret = ret;
  v.screened = s->screened;
  if (ret != 0) {
    v.screen = s->screen;
    v.checks = s->screen == SCREEN_CHECKS ? s->checks : 0;
  }
  return v;
}

/* Feeds stream in the pieces that the sorted cuts make, as bio_recv does: until a
 * refusal. After a ChangeCipherSpec the rest must change nothing. */
static struct verdict feed(const mbedtls_x509_crt *trust, const uint8_t *stream, size_t len,
                           const size_t *cuts, size_t ncuts)
{
  struct proxy_tls_screen s;
  struct verdict v;
  size_t at = 0, i;
  int ret = 0;

  memset(&s, 0, sizeof(s));
  for (i = 0; i <= ncuts && ret == 0; i++) {
    size_t end = i < ncuts ? cuts[i] : len;

    if (end < at)
      abort();
    ret = proxy_tls_screen_feed(&s, trust, stream + at, end - at);
    at = end;
  }
  v = verdict_of(&s, ret);
  if (ret == 0 && s.screened && len > 0) {
    if (proxy_tls_screen_feed(&s, trust, stream, len) != 0 || !s.screened ||
        s.rec_body != NULL)
      abort();
  }
  proxy_tls_screen_free(&s);
  return v;
}

/* How many bytes of stream decide it (refusal or ChangeCipherSpec), fed one by one:
 * len if none do. *v is the verdict. */
static size_t deciding_prefix(const mbedtls_x509_crt *trust, const uint8_t *stream,
                              size_t len, struct verdict *v)
{
  struct proxy_tls_screen s;
  size_t i;
  int ret = 0;

  memset(&s, 0, sizeof(s));
  for (i = 0; i < len; i++) {
    ret = proxy_tls_screen_feed(&s, trust, stream + i, 1);
    if (decided(&s, ret)) {
      i++;
      break;
    }
  }
  *v = verdict_of(&s, ret);
  proxy_tls_screen_free(&s);
  return i;
}

static int same(const struct verdict *a, const struct verdict *b)
{
  return a->ret == b->ret && a->screen == b->screen && a->screened == b->screened &&
         a->checks == b->checks;
}

static int cmp_size(const void *a, const void *b)
{
  size_t x = *(const size_t *)a, y = *(const size_t *)b;

  return x < y ? -1 : x > y;
}

/*
 * A Certificate message's body (len bytes) as mbedTLS 2.28's
 * ssl_parse_certificate_chain takes it: 0 with the chain in *chain (certificates of
 * an unknown signature algorithm left out), or -1 where it refuses the message.
 */
static int parse_as_mbedtls(const uint8_t *body, size_t len, mbedtls_x509_crt *chain)
{
  size_t i = 3, n;
  int r;

  if (len < 6 || body[0] != 0 || get3(body) != len - 3)
    return -1;
  while (i < len) {
    if (i + 3 > len || body[i] != 0)
      return -1;
    n = get3(body + i);
    i += 3;
    if (n < 128 || n > len - i)
      return -1;
    r = mbedtls_x509_crt_parse_der(chain, body + i, n);
    if (r != 0 && r != MBEDTLS_ERR_X509_UNKNOWN_SIG_ALG + MBEDTLS_ERR_OID_NOT_FOUND)
      return -1;
    i += n;
  }
  return 0;
}

/* What mbedTLS would do with a Certificate message the screen let through: abort()
 * if it would take a long RSA exponent or check more than CHAIN_CHECKS_MAX
 * signatures. */
static void check_cheap(const uint8_t *body, size_t len, mbedtls_x509_crt *trust)
{
  mbedtls_x509_crt chain;
  const mbedtls_x509_crt *crt;
  uint32_t flags = 0;

  mbedtls_x509_crt_init(&chain);
  if (parse_as_mbedtls(body, len, &chain) == 0 && chain.raw.p != NULL) {
    for (crt = &chain; crt != NULL && crt->raw.p != NULL; crt = crt->next)
      if (mbedtls_pk_get_type(&crt->pk) == MBEDTLS_PK_RSA &&
          mbedtls_mpi_bitlen(&mbedtls_pk_rsa(crt->pk)->E) > RSA_EXPONENT_MAX_BITS)
        abort();
    signature_checks = 0;
    (void)mbedtls_x509_crt_verify(&chain, trust, NULL, NULL, &flags,
                                  NULL, NULL);
    if (signature_checks > CHAIN_CHECKS_MAX)
      abort();
  }
  mbedtls_x509_crt_free(&chain);
}

/* Walks the records of stream[0..len) that the screen accepted (all that are whole,
 * up to a ChangeCipherSpec) as mbedTLS reads them, checking each Certificate message. */
static void check_accepted(const uint8_t *stream, size_t len, mbedtls_x509_crt *trust)
{
  size_t at = 0, n, off, m;

  while (len - at >= 5 && stream[at] != MBEDTLS_SSL_MSG_CHANGE_CIPHER_SPEC) {
    const uint8_t *body = stream + at + 5;

    n = (size_t)stream[at + 3] << 8 | stream[at + 4];
    if (n > len - at - 5)
      return;
    if (stream[at] == MBEDTLS_SSL_MSG_HANDSHAKE && n <= MBEDTLS_SSL_IN_CONTENT_LEN) {
      for (off = 0; n - off >= 4; off += 4 + m) {
        m = get3(body + off + 1);
        if (m > n - off - 4)
          return; /* a message across records: mbedTLS refuses it */
        if (body[off] == MBEDTLS_SSL_HS_CERTIFICATE)
          check_cheap(body + off + 4, m, trust);
      }
    }
    at += 5 + n;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  mbedtls_x509_crt trust_list;
  mbedtls_x509_crt *trust;
  struct verdict whole, pieces, bytes, prefix;
  size_t cuts[7], ncuts, i, at, tlen, n, len, p;
  const uint8_t *stream;

  if (size < 1)
    return 0;
  ncuts = data[0] & 7;
  at = 1;
  if (size < at + 2 * ncuts + 2)
    return 0;
  stream = data + at + 2 * ncuts + 2;
  tlen = (size_t)data[at + 2 * ncuts] << 8 | data[at + 2 * ncuts + 1];
  len = size - (size_t)(stream - data);
  if (tlen > len)
    return 0;
  mbedtls_x509_crt_init(&trust_list);
  for (i = 0; i + 3 <= tlen; i += n) {
    n = get3(stream + i);
    i += 3;
    if (n > tlen - i)
      break;
    (void)mbedtls_x509_crt_parse_der(&trust_list, stream + i, n);
  }
  trust = trust_list.raw.p != NULL ? &trust_list : NULL;
  stream += tlen;
  len -= tlen;
  for (i = 0; i < ncuts; i++)
    cuts[i] = ((size_t)data[at + 2 * i] << 8 | data[at + 2 * i + 1]) % (len + 1);
  qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

  whole = feed(trust, stream, len, NULL, 0);
  pieces = feed(trust, stream, len, cuts, ncuts);
  p = deciding_prefix(trust, stream, len, &bytes);
  if (!same(&whole, &pieces) || !same(&whole, &bytes))
    abort();
  if (whole.ret != 0 &&
      (whole.ret != MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE ||
       (whole.screen != SCREEN_EXPONENT && whole.screen != SCREEN_CHECKS) ||
       (whole.screen == SCREEN_CHECKS && whole.checks <= CHAIN_CHECKS_MAX)))
    abort();
  if (whole.ret != 0 || whole.screened) {
    /* Decided by the first p bytes: those alone say the same, one fewer nothing. */
    prefix = feed(trust, stream, p, NULL, 0);
    if (!same(&whole, &prefix) || p == 0)
      abort();
    prefix = feed(trust, stream, p - 1, NULL, 0);
    if (prefix.ret != 0 || prefix.screened)
      abort();
  }
  /* The records the screen accepted: all whole ones before the refused record (the
   * one that ends at p), or up to the ChangeCipherSpec. */
  if (whole.ret != 0) {
    size_t r = 0, end = 0;

    while (len - r >= 5) {
      n = (size_t)stream[r + 3] << 8 | stream[r + 4];
      if (5 + n > len - r || r + 5 + n >= p)
        break;
      r += 5 + n;
      end = r;
    }
    check_accepted(stream, end, trust);
  } else {
    check_accepted(stream, len, trust);
  }
  mbedtls_x509_crt_free(&trust_list);
  return 0;
}
