/*
 * The per-sandbox certificate authority and its cache of minted leaves.
 *
 * Keys. A generated CA is ECDSA P-256. A loaded CA may be ECDSA on P-256, P-384 or
 * P-521 or RSA of at least 2048 bits: whatever the operator already trusts, as long
 * as every client we care about (OpenSSL 3, Go, Node, Python) accepts its
 * signatures. The leaf key is always a P-256 key generated when the CA is created
 * or loaded, shared by every leaf of that CA and never written anywhere: leaves
 * only protect connections to this process, and one key per CA makes a miss cost
 * one signature instead of a key generation plus a signature.
 *
 * Leaves. One certificate per destination name, valid from an hour ago (clock skew
 * between host and sandbox) for leaf_days, never past the CA's own notAfter, with
 * exactly the fields strict verifiers require: a 16-byte positive random serial,
 * CN and subjectAltName dNSName for a name, an empty subject and a critical
 * subjectAltName iPAddress for an address, critical basicConstraints CA:FALSE,
 * critical keyUsage digitalSignature, extendedKeyUsage serverAuth, subject and
 * authority key identifiers. The authority key identifier copies the CA's own
 * subjectKeyIdentifier and the issuer copies the CA's subject attribute by
 * attribute (string types included), so a loaded CA made by another tool chains
 * byte for byte.
 *
 * Name constraints. A loaded CA may carry nameConstraints (an interception CA should:
 * it then can only sign the names it is meant for). mbedTLS 2.28 ignores them, but
 * the clients verifying our leaves apply them, so proxy/nameconstr.c parses them
 * when the CA is loaded (refusing a CA whose constraints are malformed) and a name
 * outside them is refused with -EPERM before anything is signed: the caller can say
 * why instead of the sandbox's client failing with an opaque certificate error.
 *
 * Cache. Leaves live in a hash table keyed by SipHash-2-4 of the canonical name
 * (random key per CA, so a sandbox cannot aim names at one bucket). Leaves nobody
 * references sit on an LRU list as well; when there are more than cache_size of
 * them the least recently used one is freed. A referenced leaf is never freed: it
 * joins the LRU list when its last reference is dropped. A cached leaf whose
 * remaining validity falls under a quarter of leaf_days is replaced at its next
 * lookup (the old one lives on until its holders release it). A leaf's chain is the
 * leaf followed by the CA's own parsed certificate, linked rather than copied, which
 * is why a CA outlives its leaves.
 *
 * Cost. A miss costs one signature: 0.4 ms with the generated P-256 CA, 3 ms with an
 * imported RSA-2048 one, 20 ms with RSA-4096, on the event loop every sandbox shares.
 * A sandbox names whatever it likes in SNI (a denied name gets a leaf too, for its 403
 * page), so each CA has a signing budget, a token bucket of signing time: refilled at
 * MINT_BUDGET_US_PER_S (a tenth of a core) and held up to MINT_BUDGET_BURST_US. A miss
 * with the budget spent is refused with -EAGAIN; cached leaves are served regardless.
 *
 * A CA is used from one thread (its event loop); only the random source is shared.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/platform.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha1.h>
#include <mbedtls/x509_crt.h>

#include "proxy/ca.h"
#include "proxy/ca_internal.h"
#include "proxy/log.h"
#include "proxy/nameconstr.h"
#include "proxy/rng.h"
#include "proxy/siphash.h"

#define DEFAULT_CACHE_SIZE 1024
#define MAX_CACHE_SIZE (1u << 20)
#define DEFAULT_LEAF_DAYS 7
/* The CA/Browser Forum ceiling for server certificates; some clients enforce it. */
#define MAX_LEAF_DAYS 397
#define CA_DAYS 3652
#define DEFAULT_CN "authproxy sandbox CA"
#define BACKDATE_SECONDS 3600
/* A generated CA is backdated much further than its leaves. A leaf is minted again
 * when the clock goes back before its notBefore (leaf_stale), but the CA was handed to
 * the sandbox once, when it was attached (or made ahead of time, for the daemon's
 * pool), and is used for as long as the sandbox lives: made while the host's clock ran
 * ahead (a VM booted with its clock hours or days off, a date set by hand) and then
 * stepped back by NTP, a CA valid from only an hour before would be "not yet valid"
 * for every client of the sandbox, and refused when the daemon restarts, until the
 * clock caught up. Its key did not exist before it was made, so an earlier notBefore
 * vouches for nothing that was not there. */
#define CA_BACKDATE_SECONDS (30 * 86400)
#define SERIAL_BYTES 16
#define NAME_MAX_LEN 253
#define LABEL_MAX_LEN 63
/* ub-common-name (RFC 5280); the subjectAltName carries the full name. */
#define CN_MAX_LEN 64
#define KEYID_MAX_LEN 64
/* A TBSCertificate of ours stays under 1 KiB (a 253-byte name twice, a CA subject of
 * a few attributes); the whole certificate adds at most an RSA-4096 signature. */
#define TBS_MAX 2048
#define DER_MAX (TBS_MAX + MBEDTLS_PK_SIGNATURE_MAX_SIZE + 64)
#define FILE_MAX (64 * 1024)
#define KEY_PEM_MAX PROXY_CA_KEY_PEM_MAX
#define INITIAL_BUCKETS 64
#define PROBE_NAME "authproxy-probe.invalid"
/* Signing budget of one CA (see "Cost" above): refilled at this many microseconds of
 * signing per second, held up to the burst. */
#define MINT_BUDGET_US_PER_S 100000
#define MINT_BUDGET_BURST_US 5000000

/* DER tags used by the writers below. */
#define TAG_SEQUENCE (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)
#define TAG_CONTEXT(n) (MBEDTLS_ASN1_CONTEXT_SPECIFIC | (n))
#define TAG_EXPLICIT(n) (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | (n))

#define PEM_BEGIN_CRT "-----BEGIN CERTIFICATE-----\n"
#define PEM_END_CRT "-----END CERTIFICATE-----\n"

struct proxy_ca {
  /* Lent to every leaf as proxy_leaf.key. Of type ECDSA, not ECKEY: mbedTLS signs
   * with an ECKEY context through a copy of it, whose freshly loaded group builds the
   * base point table again for every handshake's signature (0.8 ms here); an ECDSA
   * context signs in its own group, which keeps the table after the first. */
  mbedtls_pk_context leaf_key;
  /* The same key seen as ECKEY, as certificate writing needs it (no OID names a
   * public key of type ECDSA); borrows leaf_key's context and owns nothing. */
  mbedtls_pk_context leaf_pub;
  int leaf_key_ready; /* generated on first use: attaching stays cheap */
  mbedtls_pk_context key;
  mbedtls_x509_crt cert;
  mbedtls_md_type_t md;
  /* The CA's subject as an mbedTLS writer list: the issuer of every leaf. */
  mbedtls_asn1_named_data *issuer;
  unsigned char keyid[KEYID_MAX_LEN];
  size_t keyid_len;
  time_t not_after;
  struct proxy_nc *nc; /* the CA's nameConstraints, or NULL */
  char *cert_pem;
  size_t cache_size;
  uint32_t leaf_days;
  time_t (*now)(void);
  /* The random source of the leaf key (proxy_rng; proxy_ca_set_key_rng). */
  int (*key_rng)(void *ctx, unsigned char *out, size_t len);
  uint64_t sip_key[2];
  struct proxy_leaf **buckets;
  size_t nbuckets; /* a power of two */
  size_t count;    /* leaves in the table, referenced or not */
  size_t idle;     /* leaves nobody references: exactly those on the LRU list */
  struct proxy_leaf *lru_head, *lru_tail; /* head: most recently released */
  uint64_t hits, misses, evictions, limited, minted, expired;
  /* The signing budget: microseconds left, refilled from budget_at (ca->now). */
  int64_t budget_us, budget_rate_us, budget_burst_us;
  time_t budget_at;
  int closing; /* proxy_ca_free ran while leaves were still referenced */
};

/* Every leaf borrows the CA's leaf_key, which is how a leaf finds its CA. */
static struct proxy_ca *ca_of(const struct proxy_leaf *leaf)
{
  return (struct proxy_ca *)(void *)((char *)leaf->key -
                                     offsetof(struct proxy_ca, leaf_key));
}

static time_t clock_now(void)
{
  return time(NULL);
}

/* mbedTLS error codes add a high-level and a low-level part; either may be ENOMEM. */
static int mbed_errno(int ret)
{
  int high = -(-ret & 0xFF80), low = -(-ret & 0x007F);
  static const int alloc[] = {
    MBEDTLS_ERR_X509_ALLOC_FAILED, MBEDTLS_ERR_PK_ALLOC_FAILED,
    MBEDTLS_ERR_MPI_ALLOC_FAILED,  MBEDTLS_ERR_ASN1_ALLOC_FAILED,
    MBEDTLS_ERR_ECP_ALLOC_FAILED,  MBEDTLS_ERR_PEM_ALLOC_FAILED,
  };
  size_t i;

  if (ret >= 0)
    return 0;
  for (i = 0; i < sizeof(alloc) / sizeof(alloc[0]); i++)
    if (ret == alloc[i] || high == alloc[i] || low == alloc[i])
      return -ENOMEM;
  return -EIO;
}

static const char *mbed_str(int ret, char *buf, size_t size)
{
  mbedtls_strerror(ret, buf, size);
  return buf;
}

/* ---- time ---------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
  int64_t era, yoe, doy, doe;

  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static time_t x509_time_epoch(const mbedtls_x509_time *t)
{
  return (time_t)(days_from_civil(t->year, t->mon, t->day) * 86400 + t->hour * 3600 +
                  t->min * 60 + t->sec);
}

/* Formats t as mbedTLS's writer wants it: "YYYYMMDDhhmmss", UTC. */
static int format_time(time_t t, char out[MBEDTLS_X509_RFC5280_UTC_TIME_LEN])
{
  struct tm tm;
  int n;

  if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 1950 || tm.tm_year + 1900 > 9999)
    return -ERANGE;
  n = snprintf(out, MBEDTLS_X509_RFC5280_UTC_TIME_LEN, "%04d%02d%02d%02d%02d%02d",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
               tm.tm_sec);
  return n == MBEDTLS_X509_RFC5280_UTC_TIME_LEN - 1 ? 0 : -ERANGE;
}

/* ---- names --------------------------------------------------------------- */

/*
 * Canonicalises a destination. An IP literal (is_ip) becomes inet_ntop's form and
 * its bytes; an IPv4-mapped IPv6 address becomes the IPv4 address. A host name must
 * be LDH labels (underscore allowed, as real names use it) of at most 63 bytes, 253
 * in all, with no empty label or trailing dot; it is folded to lowercase. A
 * dotted-quad passed as a host name is refused: its certificate would carry a
 * dNSName no client matches against an address.
 */
static int canonical_name(const char *name, int is_ip, char out[NAME_MAX_LEN + 1],
                          unsigned char ip[16], size_t *ip_len)
{
  unsigned char v4[4];
  size_t len = strnlen(name, NAME_MAX_LEN + 1), i, label = 0;

  *ip_len = 0;
  if (len == 0 || len > NAME_MAX_LEN)
    return -EINVAL;
  if (is_ip) {
    if (inet_pton(AF_INET, name, ip) == 1) {
      *ip_len = 4;
      return inet_ntop(AF_INET, ip, out, NAME_MAX_LEN + 1) ? 0 : -EINVAL;
    }
    if (inet_pton(AF_INET6, name, ip) == 1) {
      static const unsigned char v4_mapped[12] = { 0, 0, 0, 0, 0,    0,
                                                   0, 0, 0, 0, 0xff, 0xff };

      /* ::ffff:a.b.c.d is an IPv4 peer seen through an IPv6 socket: clients check
       * the certificate against a.b.c.d. */
      if (memcmp(ip, v4_mapped, sizeof(v4_mapped)) == 0) {
        memmove(ip, ip + 12, 4);
        *ip_len = 4;
        return inet_ntop(AF_INET, ip, out, NAME_MAX_LEN + 1) ? 0 : -EINVAL;
      }
      *ip_len = 16;
      return inet_ntop(AF_INET6, ip, out, NAME_MAX_LEN + 1) ? 0 : -EINVAL;
    }
    return -EINVAL;
  }
  for (i = 0; i < len; i++) {
    char c = name[i];

    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c == '.') {
      if (label == 0)
        return -EINVAL;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
      if (++label > LABEL_MAX_LEN)
        return -EINVAL;
    } else {
      return -EINVAL;
    }
    out[i] = c;
  }
  out[len] = '\0';
  if (label == 0)
    return -EINVAL;
  if (inet_pton(AF_INET, out, v4) == 1)
    return -EINVAL;
  return 0;
}

/*
 * Prepends one attribute to a name list for mbedTLS's writer, which emits the list
 * last entry first: prepending attributes in DER order reproduces that order. The
 * memory comes from mbedtls_calloc because mbedtls_asn1_free_named_data_list frees it.
 */
static int name_prepend(mbedtls_asn1_named_data **head, const unsigned char *oid,
                        size_t oid_len, int tag, const unsigned char *val, size_t val_len)
{
  mbedtls_asn1_named_data *n = mbedtls_calloc(1, sizeof(*n));

  if (n == NULL)
    return -ENOMEM;
  n->oid.p = mbedtls_calloc(1, oid_len);
  n->val.p = mbedtls_calloc(1, val_len > 0 ? val_len : 1);
  if (n->oid.p == NULL || n->val.p == NULL) {
    mbedtls_free(n->oid.p);
    mbedtls_free(n->val.p);
    mbedtls_free(n);
    return -ENOMEM;
  }
  memcpy(n->oid.p, oid, oid_len);
  n->oid.len = oid_len;
  n->oid.tag = MBEDTLS_ASN1_OID;
  memcpy(n->val.p, val, val_len);
  n->val.len = val_len;
  n->val.tag = tag;
  n->next = *head;
  *head = n;
  return 0;
}

/* How much of a host name its leaf's CN holds. */
static size_t leaf_cn_len(size_t name_len)
{
  return name_len < CN_MAX_LEN ? name_len : CN_MAX_LEN;
}

static int cn_list(mbedtls_asn1_named_data **head, const char *cn, size_t len)
{
  return name_prepend(head, (const unsigned char *)MBEDTLS_OID_AT_CN,
                      MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN), MBEDTLS_ASN1_UTF8_STRING,
                      (const unsigned char *)cn, len);
}

/* ---- extensions ---------------------------------------------------------- */

/* mbedTLS 2.28 keeps no subjectKeyIdentifier, nameConstraints nor criticality, hence
 * the walk over the raw DER. */
int proxy_x509_find_ext(const mbedtls_x509_crt *crt, const char *oid, size_t oid_len,
                        unsigned char **val, size_t *val_len, int *critical)
{
  unsigned char *p = crt->v3_ext.p, *end;
  size_t len;

  if (p == NULL || crt->v3_ext.len == 0)
    return 0;
  end = p + crt->v3_ext.len;
  if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SEQUENCE) != 0 || len != (size_t)(end - p))
    return -EINVAL;
  while (p < end) {
    unsigned char *ext_end, *eoid;
    size_t eoid_len;
    int crit = 0, ret;

    if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SEQUENCE) != 0)
      return -EINVAL;
    ext_end = p + len;
    if (mbedtls_asn1_get_tag(&p, ext_end, &eoid_len, MBEDTLS_ASN1_OID) != 0)
      return -EINVAL;
    eoid = p;
    p += eoid_len;
    ret = mbedtls_asn1_get_bool(&p, ext_end, &crit);
    if (ret != 0 && ret != MBEDTLS_ERR_ASN1_UNEXPECTED_TAG)
      return -EINVAL;
    if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
        p + len != ext_end)
      return -EINVAL;
    if (eoid_len == oid_len && memcmp(eoid, oid, oid_len) == 0) {
      *val = p;
      *val_len = len;
      *critical = crit;
      return 1;
    }
    p = ext_end;
  }
  return 0;
}

static int set_basic_constraints(mbedtls_x509write_cert *w, int is_ca)
{
  unsigned char buf[16], *c = buf + sizeof(buf);
  size_t len = 0;
  int ret;

  if (is_ca) {
    /* pathLenConstraint 0: this CA signs leaves, never another CA. */
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_int(&c, buf, 0));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_bool(&c, buf, 1));
  }
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_SEQUENCE));
  /* Critical in both: OpenSSL's strict mode requires it of a CA. */
  return mbedtls_x509write_crt_set_extension(
      w, MBEDTLS_OID_BASIC_CONSTRAINTS, MBEDTLS_OID_SIZE(MBEDTLS_OID_BASIC_CONSTRAINTS),
      1, c, len);
}

static int set_san(mbedtls_x509write_cert *w, const char *name, const unsigned char *ip,
                   size_t ip_len)
{
  unsigned char buf[NAME_MAX_LEN + 16], *c = buf + sizeof(buf);
  size_t len = 0;
  int ret;

  if (ip_len > 0) {
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_raw_buffer(&c, buf, ip, ip_len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, ip_len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_CONTEXT(7)));
  } else {
    size_t n = strlen(name);

    MBEDTLS_ASN1_CHK_ADD(
        len, mbedtls_asn1_write_raw_buffer(&c, buf, (const unsigned char *)name, n));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, n));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_CONTEXT(2)));
  }
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_SEQUENCE));
  /* An address's certificate has an empty subject, which makes the subjectAltName
   * critical (RFC 5280 4.2.1.6). */
  return mbedtls_x509write_crt_set_extension(
      w, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME),
      ip_len > 0, c, len);
}

static int set_server_auth(mbedtls_x509write_cert *w)
{
  unsigned char buf[32], *c = buf + sizeof(buf);
  size_t len = 0;
  int ret;

  MBEDTLS_ASN1_CHK_ADD(len,
                       mbedtls_asn1_write_oid(&c, buf, MBEDTLS_OID_SERVER_AUTH,
                                              MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_SEQUENCE));
  return mbedtls_x509write_crt_set_extension(
      w, MBEDTLS_OID_EXTENDED_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
      0, c, len);
}

static int set_authority_key_id(mbedtls_x509write_cert *w, const unsigned char *keyid,
                                size_t keyid_len)
{
  unsigned char buf[KEYID_MAX_LEN + 16], *c = buf + sizeof(buf);
  size_t len = 0;
  int ret;

  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_raw_buffer(&c, buf, keyid, keyid_len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, keyid_len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_CONTEXT(0)));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&c, buf, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&c, buf, TAG_SEQUENCE));
  return mbedtls_x509write_crt_set_extension(
      w, MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER,
      MBEDTLS_OID_SIZE(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER), 0, c, len);
}

/* A random 16-byte serial: top bit clear (positive), next bit set (always 16 bytes). */
static int set_random_serial(mbedtls_x509write_cert *w)
{
  unsigned char raw[SERIAL_BYTES];
  mbedtls_mpi serial;
  int ret;

  mbedtls_mpi_init(&serial);
  ret = proxy_rng(NULL, raw, sizeof(raw));
  if (ret != 0)
    goto out;
  raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40);
  ret = mbedtls_mpi_read_binary(&serial, raw, sizeof(raw));
  if (ret != 0)
    goto out;
  ret = mbedtls_x509write_crt_set_serial(w, &serial);
out:
  mbedtls_mpi_free(&serial);
  return ret;
}

static int set_validity(mbedtls_x509write_cert *w, time_t not_before, time_t not_after)
{
  char nb[MBEDTLS_X509_RFC5280_UTC_TIME_LEN], na[MBEDTLS_X509_RFC5280_UTC_TIME_LEN];

  if (format_time(not_before, nb) != 0 || format_time(not_after, na) != 0)
    return MBEDTLS_ERR_X509_BAD_INPUT_DATA;
  return mbedtls_x509write_crt_set_validity(w, nb, na);
}

/*
 * The signature's AlgorithmIdentifier: NULL parameters for RSA PKCS#1 v1.5 (RFC
 * 4055), none at all for ECDSA (RFC 5758). mbedTLS 2.28's certificate writer puts a
 * NULL after ECDSA OIDs too, which webpki (rustls clients: uv, cargo, deno) refuses,
 * so certificates are assembled here instead of by mbedtls_x509write_crt_der.
 */
static int write_sig_alg(unsigned char **p, unsigned char *start, mbedtls_pk_type_t pk,
                         const char *oid, size_t oid_len)
{
  size_t len = 0;
  int ret;

  if (pk == MBEDTLS_PK_RSA)
    return mbedtls_asn1_write_algorithm_identifier(p, start, oid, oid_len, 0);
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_oid(p, start, oid, oid_len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, TAG_SEQUENCE));
  return (int)len;
}

/* A validity time ("YYYYMMDDhhmmssZ"): UTCTime through 2049, GeneralizedTime after
 * (RFC 5280 4.1.2.5). */
static int write_time(unsigned char **p, unsigned char *start, const char *t)
{
  size_t len = 0;
  int ret, utc = strncmp(t, "1950", 4) >= 0 && strncmp(t, "2050", 4) < 0;
  size_t skip = utc ? 2 : 0;

  MBEDTLS_ASN1_CHK_ADD(
      len, mbedtls_asn1_write_raw_buffer(p, start, (const unsigned char *)t + skip,
                                         MBEDTLS_X509_RFC5280_UTC_TIME_LEN - skip));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start,
                                                   utc ? MBEDTLS_ASN1_UTC_TIME
                                                       : MBEDTLS_ASN1_GENERALIZED_TIME));
  return (int)len;
}

/* Writes the TBSCertificate described by w backwards from *p (RFC 5280 4.1). */
static int write_tbs(unsigned char **p, unsigned char *start, mbedtls_x509write_cert *w,
                     mbedtls_pk_type_t pk, const char *sig_oid, size_t sig_oid_len)
{
  size_t len = 0, sub = 0;
  int ret;

  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_x509_write_extensions(p, start, w->extensions));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_len(p, start, sub));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_tag(p, start, TAG_SEQUENCE));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_len(p, start, sub));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_tag(p, start, TAG_EXPLICIT(3)));
  len += sub;
  ret = mbedtls_pk_write_pubkey_der(w->subject_key, start, (size_t)(*p - start));
  if (ret < 0)
    return ret;
  *p -= ret;
  len += (size_t)ret;
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_x509_write_names(p, start, w->subject));
  sub = 0;
  MBEDTLS_ASN1_CHK_ADD(sub, write_time(p, start, w->not_after));
  MBEDTLS_ASN1_CHK_ADD(sub, write_time(p, start, w->not_before));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_len(p, start, sub));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_tag(p, start, TAG_SEQUENCE));
  len += sub;
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_x509_write_names(p, start, w->issuer));
  MBEDTLS_ASN1_CHK_ADD(len, write_sig_alg(p, start, pk, sig_oid, sig_oid_len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_mpi(p, start, &w->serial));
  sub = 0;
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_int(p, start, MBEDTLS_X509_CRT_VERSION_3));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_len(p, start, sub));
  MBEDTLS_ASN1_CHK_ADD(sub, mbedtls_asn1_write_tag(p, start, TAG_EXPLICIT(0)));
  len += sub;
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, TAG_SEQUENCE));
  return (int)len;
}

/* Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } */
static int write_certificate(unsigned char **p, unsigned char *start,
                             const unsigned char *tbs, size_t tbs_len,
                             mbedtls_pk_type_t pk, const char *oid, size_t oid_len,
                             const unsigned char *sig, size_t sig_len)
{
  size_t len = 0;
  int ret;

  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_bitstring(p, start, sig, sig_len * 8));
  MBEDTLS_ASN1_CHK_ADD(len, write_sig_alg(p, start, pk, oid, oid_len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_raw_buffer(p, start, tbs, tbs_len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, TAG_SEQUENCE));
  return (int)len;
}

/* ---- curve groups -------------------------------------------------------- */

/*
 * mbedTLS keeps a table of multiples of a curve's base point in the group object
 * that first multiplies it (MBEDTLS_ECP_FIXED_POINT_OPTIM), and every later key
 * generation or ECDSA signature with that group is over twice as fast (P-256 here:
 * 0.66 -> 0.29 ms a key, 0.74 -> 0.33 ms a signature). A key's own group is loaded
 * afresh with each key and would build the table again every time, so keys are
 * made, and certificates signed, with groups kept here for the life of the process
 * (a few KiB each). A group is used by one thread at a time: CAs are made on the
 * thread pool while the loop mints leaves.
 */
#define GROUPS_MAX 8

static pthread_mutex_t groups_lock = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_ecp_group *groups[GROUPS_MAX];
static size_t ngroups;

static mbedtls_ecp_group *group_get(mbedtls_ecp_group_id id)
{
  mbedtls_ecp_group *g = NULL;
  size_t i;

  pthread_mutex_lock(&groups_lock);
  for (i = 0; i < ngroups; i++) {
    if (groups[i]->id == id) {
      g = groups[i];
      groups[i] = groups[--ngroups];
      break;
    }
  }
  pthread_mutex_unlock(&groups_lock);
  if (g != NULL)
    return g;
  g = malloc(sizeof(*g));
  if (g == NULL)
    return NULL;
  mbedtls_ecp_group_init(g);
  if (mbedtls_ecp_group_load(g, id) != 0) {
    mbedtls_ecp_group_free(g);
    free(g);
    return NULL;
  }
  return g;
}

static void group_put(mbedtls_ecp_group *g)
{
  pthread_mutex_lock(&groups_lock);
  if (ngroups < GROUPS_MAX) {
    groups[ngroups++] = g;
    g = NULL;
  }
  pthread_mutex_unlock(&groups_lock);
  if (g != NULL) {
    mbedtls_ecp_group_free(g);
    free(g);
  }
}

/*
 * ECDSA over hash with key's private scalar, computed in a kept group: the signature
 * DER-encoded into sig (MBEDTLS_PK_SIGNATURE_MAX_SIZE bytes), as mbedtls_pk_sign
 * would write it. The nonce is derived from the key and the hash (RFC 6979), with
 * the random generator only blinding the computation.
 */
static int ecdsa_sign(const mbedtls_ecp_keypair *key, mbedtls_md_type_t md_alg,
                      const unsigned char *hash, size_t hash_len, unsigned char *sig,
                      size_t *sig_len)
{
  unsigned char buf[MBEDTLS_ECDSA_MAX_LEN];
  unsigned char *p = buf + sizeof(buf);
  mbedtls_ecp_group *g = group_get(key->grp.id);
  mbedtls_mpi r, s;
  size_t len = 0;
  int ret;

  if (g == NULL)
    return MBEDTLS_ERR_ECP_ALLOC_FAILED;
  mbedtls_mpi_init(&r);
  mbedtls_mpi_init(&s);
  ret = mbedtls_ecdsa_sign_det_ext(g, &r, &s, &key->d, hash, hash_len, md_alg, proxy_rng,
                                   NULL);
  group_put(g);
  if (ret != 0)
    goto out;
  /* SEQUENCE { r INTEGER, s INTEGER }, written back to front. */
  if ((ret = mbedtls_asn1_write_mpi(&p, buf, &s)) < 0)
    goto out;
  len += (size_t)ret;
  if ((ret = mbedtls_asn1_write_mpi(&p, buf, &r)) < 0)
    goto out;
  len += (size_t)ret;
  if ((ret = mbedtls_asn1_write_len(&p, buf, len)) < 0)
    goto out;
  len += (size_t)ret;
  ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
  if (ret < 0)
    goto out;
  len += (size_t)ret;
  memcpy(sig, p, len);
  *sig_len = len;
  ret = 0;
out:
  mbedtls_mpi_free(&r);
  mbedtls_mpi_free(&s);
  return ret;
}

/*
 * Signs the certificate described by w (the setters of mbedTLS's writer fill it)
 * and parses the DER into crt, which must be empty. Returns 0 or an mbedTLS error.
 */
static int sign_into(mbedtls_x509write_cert *w, mbedtls_x509_crt *crt)
{
  unsigned char hash[MBEDTLS_MD_MAX_SIZE], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
  unsigned char *mem = malloc(TBS_MAX + DER_MAX), *tbs, *c;
  const mbedtls_md_info_t *md = mbedtls_md_info_from_type(w->md_alg);
  mbedtls_pk_type_t pk;
  const char *oid;
  size_t oid_len, tbs_len, sig_len;
  int ret;

  if (mem == NULL)
    return MBEDTLS_ERR_X509_ALLOC_FAILED;
  if (mbedtls_pk_can_do(w->issuer_key, MBEDTLS_PK_RSA)) {
    pk = MBEDTLS_PK_RSA;
  } else if (mbedtls_pk_can_do(w->issuer_key, MBEDTLS_PK_ECDSA)) {
    pk = MBEDTLS_PK_ECDSA;
  } else {
    ret = MBEDTLS_ERR_X509_INVALID_ALG;
    goto out;
  }
  ret = mbedtls_oid_get_oid_by_sig_alg(pk, w->md_alg, &oid, &oid_len);
  if (ret != 0 || md == NULL) {
    ret = ret != 0 ? ret : MBEDTLS_ERR_X509_INVALID_ALG;
    goto out;
  }

  c = mem + TBS_MAX;
  ret = write_tbs(&c, mem, w, pk, oid, oid_len);
  if (ret < 0)
    goto out;
  tbs = c;
  tbs_len = (size_t)ret;
  ret = mbedtls_md(md, tbs, tbs_len, hash);
  if (ret == 0 && pk == MBEDTLS_PK_ECDSA)
    ret = ecdsa_sign(mbedtls_pk_ec(*w->issuer_key), w->md_alg, hash,
                     mbedtls_md_get_size(md), sig, &sig_len);
  else if (ret == 0)
    ret = mbedtls_pk_sign(w->issuer_key, w->md_alg, hash, 0, sig, &sig_len, proxy_rng,
                          NULL);
  if (ret != 0)
    goto out;

  c = mem + TBS_MAX + DER_MAX;
  ret =
      write_certificate(&c, mem + TBS_MAX, tbs, tbs_len, pk, oid, oid_len, sig, sig_len);
  if (ret < 0)
    goto out;
  ret = mbedtls_x509_crt_parse_der(crt, c, (size_t)ret);
out:
  free(mem);
  return ret;
}

/* ---- keys ---------------------------------------------------------------- */

/*
 * Makes pk (initialised, empty) a new P-256 key. On failure pk is empty again: set up
 * but keyless, mbedtls_pk_setup would refuse it the next time (the CA's leaf key is
 * made again on the next leaf), and every later leaf would fail.
 */
static int gen_p256(mbedtls_pk_context *pk, mbedtls_pk_type_t type,
                    int (*f_rng)(void *, unsigned char *, size_t))
{
  int ret = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(type));
  mbedtls_ecp_keypair *key;
  mbedtls_ecp_group *g;

  if (ret != 0)
    goto out;
  key = mbedtls_pk_ec(*pk);
  ret = mbedtls_ecp_group_load(&key->grp, MBEDTLS_ECP_DP_SECP256R1);
  if (ret != 0)
    goto out;
  /* The key's own group never multiplies: see group_get. */
  g = group_get(MBEDTLS_ECP_DP_SECP256R1);
  if (g == NULL) {
    ret = MBEDTLS_ERR_ECP_ALLOC_FAILED;
    goto out;
  }
  ret = mbedtls_ecp_gen_keypair(g, &key->d, &key->Q, f_rng, NULL);
  group_put(g);
out:
  if (ret != 0) {
    mbedtls_pk_free(pk);
    mbedtls_pk_init(pk);
  }
  return ret;
}

/*
 * Checks that a loaded CA key is one every client we serve accepts signatures from,
 * and picks the digest: SHA-256, or the one matching a larger curve.
 */
static int ca_key_ok(const char *key_path, const mbedtls_pk_context *key,
                     mbedtls_md_type_t *md)
{
  *md = MBEDTLS_MD_SHA256;
  if (mbedtls_pk_get_type(key) == MBEDTLS_PK_RSA) {
    if (mbedtls_pk_get_bitlen(key) < 2048) {
      log_error("ca: CA key %s is RSA-%zu; use RSA of at least 2048 bits or ECDSA P-256",
                key_path, mbedtls_pk_get_bitlen(key));
      return -EINVAL;
    }
    return 0;
  }
  if (mbedtls_pk_get_type(key) == MBEDTLS_PK_ECKEY) {
    switch (mbedtls_pk_ec(*key)->grp.id) {
    case MBEDTLS_ECP_DP_SECP256R1:
      return 0;
    case MBEDTLS_ECP_DP_SECP384R1:
      *md = MBEDTLS_MD_SHA384;
      return 0;
    case MBEDTLS_ECP_DP_SECP521R1:
      *md = MBEDTLS_MD_SHA512;
      return 0;
    default:
      break;
    }
    log_error(
        "ca: CA key %s is on a curve clients do not accept; use P-256, P-384 or P-521",
        key_path);
    return -EINVAL;
  }
  log_error("ca: CA key %s is neither RSA nor ECDSA; use an ECDSA P-256 key", key_path);
  return -EINVAL;
}

/* ---- files --------------------------------------------------------------- */

/*
 * Reads a regular file of at most max bytes into a NUL-terminated heap buffer. With
 * secret set, refuses a file group or others can access before reading a byte of
 * it, and wipes the buffer on failure. Errors are logged with the path and the fix.
 */
static int read_file(const char *what, const char *path, size_t max, int secret,
                     unsigned char **out, size_t *out_len)
{
  unsigned char *buf = NULL;
  size_t size = 0, len = 0;
  struct stat st;
  int fd, ret;

  *out = NULL;
  *out_len = 0;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    ret = -errno;
    log_error("ca: cannot open %s %s: %s", what, path, strerror(-ret));
    return ret;
  }
  if (fstat(fd, &st) != 0) {
    ret = -errno;
    log_error("ca: cannot stat %s %s: %s", what, path, strerror(-ret));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    ret = -EINVAL;
    log_error("ca: %s %s is not a regular file", what, path);
    goto out;
  }
  if (secret && (st.st_mode & 077) != 0) {
    ret = -EPERM;
    log_error("ca: %s %s is accessible by group or others (mode %04o); "
              "restrict it with `chmod 600 %s`",
              what, path, (unsigned)(st.st_mode & 07777), path);
    goto out;
  }
  if (st.st_size < 0 || (uint64_t)st.st_size > max) {
    ret = -EFBIG;
    log_error("ca: %s %s is larger than %zu bytes", what, path, max);
    goto out;
  }
  size = (size_t)st.st_size;
  buf = malloc(size + 1);
  if (buf == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  while (len < size) {
    ssize_t n = read(fd, buf + len, size - len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ret = -errno;
      log_error("ca: cannot read %s %s: %s", what, path, strerror(-ret));
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  buf = NULL;
  ret = 0;
out:
  if (buf != NULL && secret)
    mbedtls_platform_zeroize(buf, size + 1);
  free(buf);
  close(fd);
  return ret;
}

static int fsync_dir(const char *dir)
{
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

  if (fd < 0)
    return -errno;
  if (fsync(fd) != 0)
    ret = -errno;
  close(fd);
  return ret;
}

/*
 * Replaces path with data atomically: a new file with a random name next to it,
 * created exclusively with mode (never through a symlink), written, fsynced and
 * renamed over path, then the directory is fsynced so the rename survives a crash.
 * fchmod pins the mode whatever the umask is; it can only narrow a key's 0600.
 */
static int write_file_atomic(const char *what, const char *path, const void *data,
                             size_t len, mode_t mode)
{
  char tmp[PATH_MAX], dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  const unsigned char *p = data;
  int fd = -1, ret, attempt;
  size_t off = 0;

  if (strlen(path) + 32 >= sizeof(tmp))
    return -ENAMETOOLONG;
  if (slash == NULL)
    snprintf(dir, sizeof(dir), ".");
  else if (slash == path)
    snprintf(dir, sizeof(dir), "/");
  else
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);

  for (attempt = 0; attempt < 8 && fd < 0; attempt++) {
    unsigned char rnd[8];

    ret = proxy_rng(NULL, rnd, sizeof(rnd));
    if (ret != 0) {
      ret = -EIO;
      goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp-%02x%02x%02x%02x%02x%02x%02x%02x", path, rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0 && errno != EEXIST) {
      ret = -errno;
      log_error("ca: cannot create %s next to %s: %s", what, path, strerror(-ret));
      return ret;
    }
  }
  if (fd < 0) {
    log_error("ca: cannot create a temporary file next to %s", path);
    return -EEXIST;
  }
  if (fchmod(fd, mode) != 0) {
    ret = -errno;
    goto fail;
  }
  while (off < len) {
    ssize_t n = write(fd, p + off, len - off);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ret = -errno;
      goto fail;
    }
    off += (size_t)n;
  }
  if (fsync(fd) != 0) {
    ret = -errno;
    goto fail;
  }
  ret = close(fd);
  fd = -1;
  if (ret != 0) {
    ret = -errno;
    goto fail;
  }
  if (rename(tmp, path) != 0) {
    ret = -errno;
    goto fail;
  }
  ret = fsync_dir(dir);
  if (ret != 0)
    log_error("ca: cannot fsync directory %s after writing %s: %s", dir, path,
              strerror(-ret));
  goto out;
fail:
  log_error("ca: cannot write %s %s: %s", what, path, strerror(-ret));
  if (fd >= 0)
    close(fd);
  unlink(tmp);
out:
  return ret;
}

/* ---- leaves -------------------------------------------------------------- */

static void leaf_free(struct proxy_leaf *leaf)
{
  if (leaf == NULL)
    return;
  if (leaf->user_free != NULL && leaf->user != NULL)
    leaf->user_free(leaf->user);
  /* The CA certificate behind the leaf belongs to the CA. */
  leaf->chain.next = NULL;
  mbedtls_x509_crt_free(&leaf->chain);
  free(leaf);
}

/* Mints a leaf for a canonical name (or address); the result is not in the cache. */
static int mint(struct proxy_ca *ca, const char *name, const unsigned char *ip,
                size_t ip_len, struct proxy_leaf **out)
{
  size_t name_len = strlen(name);
  struct proxy_leaf *leaf;
  mbedtls_x509write_cert w;
  time_t now = ca->now(), not_after;
  char err[128];
  int ret;

  *out = NULL;
  /* Not logged here: a sandbox connects as often as it likes (the caller logs). */
  if (now >= ca->not_after)
    return -EKEYEXPIRED;
  not_after = now + (time_t)ca->leaf_days * 86400;
  if (not_after > ca->not_after)
    not_after = ca->not_after;

  if (!ca->leaf_key_ready) {
    /* One leaf key per CA, made when the first leaf is: a sandbox that never has a
     * connection intercepted never pays for it. */
    ret = gen_p256(&ca->leaf_key, MBEDTLS_PK_ECDSA, ca->key_rng);
    if (ret != 0) {
      log_error("ca: cannot generate the leaf key: %s", mbed_str(ret, err, sizeof(err)));
      return mbed_errno(ret);
    }
    ca->leaf_pub.pk_info = mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY);
    ca->leaf_pub.pk_ctx = ca->leaf_key.pk_ctx;
    ca->leaf_key_ready = 1;
  }
  leaf = calloc(1, sizeof(*leaf) + name_len + 1);
  if (leaf == NULL)
    return -ENOMEM;
  mbedtls_x509_crt_init(&leaf->chain);
  leaf->key = &ca->leaf_key;
  memcpy(leaf->name, name, name_len + 1);

  mbedtls_x509write_crt_init(&w);
  /* An address gets no CN: with no dNSName in the certificate, OpenSSL checks a CN
   * that looks like a host name, as a dotted quad does, against the CA's DNS name
   * constraints, and a name-constrained CA's address leaves would all fail. */
  if (ip_len == 0) {
    ret = cn_list(&w.subject, name, leaf_cn_len(name_len));
    if (ret != 0)
      goto out;
  }
  w.issuer = ca->issuer; /* borrowed, handed back below */
  mbedtls_x509write_crt_set_md_alg(&w, ca->md);
  mbedtls_x509write_crt_set_subject_key(&w, &ca->leaf_pub);
  mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
  ret = set_random_serial(&w);
  if (ret == 0)
    ret = set_validity(&w, now - BACKDATE_SECONDS, not_after);
  if (ret == 0)
    ret = set_basic_constraints(&w, 0);
  if (ret == 0)
    ret = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
  if (ret == 0)
    ret = set_server_auth(&w);
  if (ret == 0)
    ret = mbedtls_x509write_crt_set_subject_key_identifier(&w);
  if (ret == 0)
    ret = set_authority_key_id(&w, ca->keyid, ca->keyid_len);
  if (ret == 0)
    ret = set_san(&w, name, ip, ip_len);
  if (ret == 0)
    ret = sign_into(&w, &leaf->chain);
  if (ret != 0) {
    log_error("ca: cannot mint a certificate for %s: %s", name,
              mbed_str(ret, err, sizeof(err)));
    ret = mbed_errno(ret);
    goto out;
  }
  leaf->chain.next = &ca->cert;
  *out = leaf;
  leaf = NULL;
out:
  w.issuer = NULL;
  mbedtls_x509write_crt_free(&w);
  leaf_free(leaf);
  return ret;
}

/* ---- the CA -------------------------------------------------------------- */

static int ca_new(const struct proxy_ca_opts *opts, struct proxy_ca **out)
{
  struct proxy_ca *ca;
  int ret;

  *out = NULL;
  if (opts != NULL &&
      (opts->cache_size > MAX_CACHE_SIZE || opts->leaf_days > MAX_LEAF_DAYS)) {
    log_error("ca: cache_size must be at most %u and leaf_days at most %u",
              MAX_CACHE_SIZE, MAX_LEAF_DAYS);
    return -EINVAL;
  }
  ret = proxy_rng_init();
  if (ret != 0) {
    log_error("ca: cannot seed the random generator from the kernel");
    return ret;
  }
  ca = calloc(1, sizeof(*ca));
  if (ca == NULL)
    return -ENOMEM;
  mbedtls_pk_init(&ca->leaf_key);
  mbedtls_pk_init(&ca->key);
  mbedtls_x509_crt_init(&ca->cert);
  ca->md = MBEDTLS_MD_SHA256;
  ca->cache_size =
      opts != NULL && opts->cache_size > 0 ? opts->cache_size : DEFAULT_CACHE_SIZE;
  ca->leaf_days =
      opts != NULL && opts->leaf_days > 0 ? opts->leaf_days : DEFAULT_LEAF_DAYS;
  ca->now = clock_now;
  ca->key_rng = proxy_rng;
  ca->budget_rate_us = MINT_BUDGET_US_PER_S;
  ca->budget_burst_us = MINT_BUDGET_BURST_US;
  ca->budget_us = ca->budget_burst_us;
  ca->budget_at = ca->now();
  ca->nbuckets = INITIAL_BUCKETS;
  ca->buckets = calloc(ca->nbuckets, sizeof(*ca->buckets));
  if (ca->buckets == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  ret = proxy_rng(NULL, (unsigned char *)ca->sip_key, sizeof(ca->sip_key));
  if (ret != 0) {
    ret = -EIO;
    goto out;
  }
  *out = ca;
  ca = NULL;
out:
  proxy_ca_free(ca);
  return ret;
}

static int self_sign(struct proxy_ca *ca, const char *cn)
{
  mbedtls_asn1_named_data *names = NULL;
  mbedtls_x509write_cert w;
  time_t now = ca->now();
  int ret;

  mbedtls_x509write_crt_init(&w);
  ret = cn_list(&names, cn, strlen(cn));
  if (ret != 0)
    goto out;
  /* Borrowed for the write, handed back before mbedtls_x509write_crt_free. */
  w.subject = names;
  w.issuer = names;
  mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&w, &ca->key);
  mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
  ret = set_random_serial(&w);
  if (ret == 0)
    ret = set_validity(&w, now - CA_BACKDATE_SECONDS, now + (time_t)CA_DAYS * 86400);
  if (ret == 0)
    ret = set_basic_constraints(&w, 1);
  if (ret == 0)
    ret = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_KEY_CERT_SIGN |
                                                      MBEDTLS_X509_KU_CRL_SIGN);
  if (ret == 0)
    ret = mbedtls_x509write_crt_set_subject_key_identifier(&w);
  if (ret == 0)
    ret = mbedtls_x509write_crt_set_authority_key_identifier(&w);
  if (ret == 0)
    ret = sign_into(&w, &ca->cert);
  if (ret != 0) {
    char err[128];

    log_error("ca: cannot create the CA certificate: %s",
              mbed_str(ret, err, sizeof(err)));
    ret = mbed_errno(ret);
  }
out:
  w.subject = NULL;
  w.issuer = NULL;
  mbedtls_x509write_crt_free(&w);
  mbedtls_asn1_free_named_data_list(&names);
  return ret;
}

/*
 * Derives what minting needs from the parsed CA certificate: the issuer list, the
 * key identifier, the expiry, the PEM; then generates the leaf key.
 */
static int ca_prepare(struct proxy_ca *ca, const char *cert_path)
{
  const mbedtls_x509_name *n;
  unsigned char *ext, *p;
  size_t ext_len, pem_len = 0;
  int crit, ret;

  for (n = &ca->cert.subject; n != NULL && n->oid.p != NULL; n = n->next) {
    if (n->next_merged) {
      log_error("ca: the subject of CA certificate %s has a multi-valued RDN, which "
                "authproxy cannot reproduce in leaf issuers; reissue it with one "
                "attribute per RDN",
                cert_path);
      return -EINVAL;
    }
    ret =
        name_prepend(&ca->issuer, n->oid.p, n->oid.len, n->val.tag, n->val.p, n->val.len);
    if (ret != 0)
      return ret;
  }
  if (ca->issuer == NULL) {
    log_error("ca: CA certificate %s has an empty subject; clients reject leaves it "
              "issues",
              cert_path);
    return -EINVAL;
  }

  ret = proxy_x509_find_ext(&ca->cert, MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER,
                 MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER), &ext, &ext_len,
                 &crit);
  if (ret < 0) {
    log_error("ca: CA certificate %s has malformed extensions", cert_path);
    return ret;
  }
  if (ret == 1) {
    p = ext;
    if (mbedtls_asn1_get_tag(&p, ext + ext_len, &ca->keyid_len,
                             MBEDTLS_ASN1_OCTET_STRING) != 0 ||
        ca->keyid_len == 0 || ca->keyid_len > KEYID_MAX_LEN ||
        p + ca->keyid_len != ext + ext_len) {
      log_error("ca: CA certificate %s has a malformed subjectKeyIdentifier", cert_path);
      return -EINVAL;
    }
    memcpy(ca->keyid, p, ca->keyid_len);
  } else {
    /* RFC 5280 method 1, as OpenSSL and mbedTLS compute it: SHA-1 of the key bits. */
    unsigned char buf[2048], *c = buf + sizeof(buf);

    ret = mbedtls_pk_write_pubkey(&c, buf, &ca->cert.pk);
    if (ret < 0)
      return mbed_errno(ret);
    ret = mbedtls_sha1_ret(c, (size_t)ret, ca->keyid);
    if (ret != 0)
      return mbed_errno(ret);
    ca->keyid_len = 20;
  }
  ca->not_after = x509_time_epoch(&ca->cert.valid_to);

  ret = mbedtls_pem_write_buffer(PEM_BEGIN_CRT, PEM_END_CRT, ca->cert.raw.p,
                                 ca->cert.raw.len, NULL, 0, &pem_len);
  if (ret != MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL || pem_len == 0)
    return -EIO;
  ca->cert_pem = malloc(pem_len);
  if (ca->cert_pem == NULL)
    return -ENOMEM;
  ret = mbedtls_pem_write_buffer(PEM_BEGIN_CRT, PEM_END_CRT, ca->cert.raw.p,
                                 ca->cert.raw.len, (unsigned char *)ca->cert_pem, pem_len,
                                 &pem_len);
  if (ret != 0)
    return mbed_errno(ret);

  return 0;
}

int proxy_ca_generate(const struct proxy_ca_opts *opts, struct proxy_ca **out)
{
  const char *cn =
      opts != NULL && opts->common_name != NULL ? opts->common_name : DEFAULT_CN;
  struct proxy_ca *ca = NULL;
  size_t i, len = strlen(cn);
  char err[128];
  int ret;

  *out = NULL;
  if (len == 0 || len > CN_MAX_LEN) {
    log_error("ca: common_name must be 1 to %d characters", CN_MAX_LEN);
    return -EINVAL;
  }
  /* Printable ASCII keeps the UTF8String valid for every parser (Go checks). */
  for (i = 0; i < len; i++) {
    if (cn[i] < 0x20 || cn[i] > 0x7e) {
      log_error("ca: common_name must be printable ASCII");
      return -EINVAL;
    }
  }
  ret = ca_new(opts, &ca);
  if (ret != 0)
    return ret;
  ret = gen_p256(&ca->key, MBEDTLS_PK_ECKEY, proxy_rng);
  if (ret != 0) {
    log_error("ca: cannot generate the CA key: %s", mbed_str(ret, err, sizeof(err)));
    ret = mbed_errno(ret);
    goto out;
  }
  ret = self_sign(ca, cn);
  if (ret != 0)
    goto out;
  ret = ca_prepare(ca, "(generated)");
  if (ret != 0)
    goto out;
  *out = ca;
  ca = NULL;
out:
  proxy_ca_free(ca);
  return ret;
}

/*
 * Checks what a CA certificate must satisfy before it signs anything, and warns about
 * what strict clients (OpenSSL 3 -x509_strict, Python 3.13) will refuse later.
 */
static int check_ca_cert(const struct proxy_ca *ca, const char *cert_path)
{
  const mbedtls_x509_crt *crt = &ca->cert;
  unsigned char *ext;
  size_t ext_len;
  int crit, ret;

  if (crt->next != NULL) {
    log_error("ca: %s holds more than one certificate; give the CA certificate alone",
              cert_path);
    return -EINVAL;
  }
  if (crt->subject_raw.len > TBS_MAX / 2) {
    log_error("ca: the subject of CA certificate %s is longer than %d bytes; reissue it "
              "with a shorter subject",
              cert_path, TBS_MAX / 2);
    return -EINVAL;
  }
  if (crt->version != 3 || !crt->ca_istrue) {
    log_error("ca: %s is not a CA certificate (basicConstraints CA:TRUE is required); "
              "give the certificate of a CA",
              cert_path);
    return -EINVAL;
  }
  if ((crt->ext_types & MBEDTLS_X509_EXT_KEY_USAGE) != 0 &&
      mbedtls_x509_crt_check_key_usage(crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0) {
    log_error("ca: CA certificate %s does not allow keyCertSign in its keyUsage",
              cert_path);
    return -EINVAL;
  }
  if (mbedtls_x509_crt_check_extended_key_usage(
          crt, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) != 0) {
    log_error("ca: CA certificate %s restricts extendedKeyUsage without serverAuth; "
              "clients would reject its server certificates",
              cert_path);
    return -EINVAL;
  }
  if (mbedtls_x509_time_is_past(&crt->valid_to)) {
    log_error("ca: CA certificate %s has expired; generate or install a new CA",
              cert_path);
    return -EKEYEXPIRED;
  }
  if (mbedtls_x509_time_is_future(&crt->valid_from)) {
    log_error(
        "ca: CA certificate %s is not valid yet; check the clock or the certificate",
        cert_path);
    return -EINVAL;
  }
  if ((crt->ext_types & MBEDTLS_X509_EXT_KEY_USAGE) == 0)
    log_warn("ca: CA certificate %s has no keyUsage extension; strict clients (Python "
             "3.13, openssl -x509_strict) will reject it",
             cert_path);
  ret = proxy_x509_find_ext(crt, MBEDTLS_OID_BASIC_CONSTRAINTS,
                 MBEDTLS_OID_SIZE(MBEDTLS_OID_BASIC_CONSTRAINTS), &ext, &ext_len, &crit);
  if (ret == 1 && !crit)
    log_warn("ca: CA certificate %s has a non-critical basicConstraints; strict clients "
             "(Python 3.13, openssl -x509_strict) will reject it",
             cert_path);
  ret = proxy_x509_find_ext(crt, MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER,
                 MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER), &ext, &ext_len,
                 &crit);
  if (ret == 0)
    log_warn("ca: CA certificate %s has no subjectKeyIdentifier; strict clients (Python "
             "3.13, openssl -x509_strict) will reject it",
             cert_path);
  return 0;
}

/*
 * Mints one leaf with a loaded CA and verifies it the way a client would, so a CA
 * that cannot issue working certificates fails at load rather than on first use.
 * The probe's name need not be within the CA's nameConstraints: mbedTLS verifies the
 * chain without them, and the leaf never leaves this function.
 */
static int probe(struct proxy_ca *ca, const char *cert_path)
{
  struct proxy_leaf *leaf = NULL;
  uint32_t flags = 0;
  char err[256];
  int ret;

  ret = mint(ca, PROBE_NAME, NULL, 0, &leaf);
  if (ret == -EKEYEXPIRED)
    log_error("ca: CA certificate %s has expired; generate or install a new CA",
              cert_path);
  if (ret != 0)
    return ret;
  if (leaf->chain.issuer_raw.len != ca->cert.subject_raw.len ||
      memcmp(leaf->chain.issuer_raw.p, ca->cert.subject_raw.p,
             ca->cert.subject_raw.len) != 0) {
    log_error("ca: leaves of CA certificate %s would not name it exactly as issuer; "
              "reissue the CA with a simpler subject",
              cert_path);
    ret = -EINVAL;
    goto out;
  }
  ret = mbedtls_x509_crt_verify(&leaf->chain, &ca->cert, NULL, PROBE_NAME, &flags, NULL,
                                NULL);
  if (ret != 0) {
    mbedtls_x509_crt_verify_info(err, sizeof(err), "", flags);
    err[strcspn(err, "\n")] = '\0';
    log_error("ca: a test leaf signed by CA certificate %s does not verify: %s",
              cert_path, err);
    ret = -EINVAL;
  }
out:
  leaf_free(leaf);
  return ret;
}

/* What the extension callback saw while a CA certificate was parsed. */
struct ext_seen {
  int name_constraints;  /* how many nameConstraints extensions */
  char critical_oid[64]; /* the first critical extension refused, dotted */
};

/*
 * mbedTLS 2.28 does not know nameConstraints, and fails a certificate that marks an
 * unknown extension critical, as RFC 5280 requires of nameConstraints: without this
 * callback, a CA restricted to the names it may sign (as an interception CA should be)
 * would not load. The extension is counted here and parsed once the certificate is
 * (load_name_constraints), where a malformed one can be refused with a message of
 * its own. Any other unknown critical extension is still refused, and named in the
 * error.
 */
static int ext_cb(void *ctx, const mbedtls_x509_crt *crt, const mbedtls_x509_buf *oid,
                  int critical, const unsigned char *p, const unsigned char *end)
{
  struct ext_seen *seen = ctx;

  (void)crt;
  (void)p;
  (void)end;
  if (oid->len == MBEDTLS_OID_SIZE(MBEDTLS_OID_NAME_CONSTRAINTS) &&
      memcmp(oid->p, MBEDTLS_OID_NAME_CONSTRAINTS, oid->len) == 0) {
    seen->name_constraints++;
    return 0;
  }
  if (critical && seen->critical_oid[0] == '\0' &&
      mbedtls_oid_get_numeric_string(seen->critical_oid, sizeof(seen->critical_oid),
                                     oid) < 0)
    snprintf(seen->critical_oid, sizeof(seen->critical_oid), "(unprintable OID)");
  return MBEDTLS_ERR_X509_INVALID_EXTENSIONS;
}

/*
 * Parses the certificates in buf (PEM, NUL-terminated at buf[len], or one DER
 * certificate) into crt, as mbedtls_x509_crt_parse would, but with ext_cb. Returns 0
 * or an mbedTLS error; every certificate must parse.
 */
static int parse_certs(mbedtls_x509_crt *crt, const unsigned char *buf, size_t len,
                       struct ext_seen *seen)
{
  const unsigned char *p = buf;
  size_t used, n = 0;
  int ret;

  memset(seen, 0, sizeof(*seen));
  if (strstr((const char *)buf, "-----BEGIN") == NULL)
    return mbedtls_x509_crt_parse_der_with_ext_cb(crt, buf, len, 1, ext_cb, seen);
  for (;;) {
    mbedtls_pem_context pem;

    mbedtls_pem_init(&pem);
    ret = mbedtls_pem_read_buffer(&pem, "-----BEGIN CERTIFICATE-----",
                                  "-----END CERTIFICATE-----", p, NULL, 0, &used);
    if (ret == 0)
      ret = mbedtls_x509_crt_parse_der_with_ext_cb(crt, pem.buf, pem.buflen, 1, ext_cb,
                                                   seen);
    mbedtls_pem_free(&pem);
    if (ret == MBEDTLS_ERR_PEM_NO_HEADER_FOOTER_PRESENT && n > 0)
      return 0;
    if (ret != 0)
      return ret;
    p += used;
    n++;
  }
}

/*
 * Parses the nameConstraints of a loaded CA into ca->nc, refusing the CA when they
 * are malformed or repeated (RFC 5280 4.2: one instance of an extension at most).
 */
static int load_name_constraints(struct proxy_ca *ca, const struct ext_seen *exts,
                                 const char *cert_path)
{
  unsigned char *val;
  size_t len;
  char text[512];
  unsigned other;
  int crit, ret;

  if (exts->name_constraints == 0)
    return 0;
  if (exts->name_constraints > 1) {
    log_error("ca: CA certificate %s has %d nameConstraints extensions; RFC 5280 allows "
              "one: reissue the CA with a single one",
              cert_path, exts->name_constraints);
    return -EINVAL;
  }
  ret = proxy_x509_find_ext(&ca->cert, MBEDTLS_OID_NAME_CONSTRAINTS,
                 MBEDTLS_OID_SIZE(MBEDTLS_OID_NAME_CONSTRAINTS), &val, &len, &crit);
  if (ret != 1) {
    log_error("ca: CA certificate %s has malformed extensions", cert_path);
    return -EINVAL;
  }
  ret = proxy_nc_parse(val, len, &ca->nc, text, sizeof(text));
  if (ret == -EINVAL) {
    log_error("ca: CA certificate %s has malformed nameConstraints: %s; reissue the CA "
              "with constraints as RFC 5280 4.2.1.10 defines them",
              cert_path, text);
    return ret;
  }
  if (ret != 0)
    return ret;
  proxy_nc_describe(ca->nc, text, sizeof(text));
  log_info("ca: CA certificate %s has nameConstraints (%s); authproxy applies them: a "
           "connection to a name outside them is refused (outside_ca_name_constraints) "
           "instead of intercepted with a certificate clients would reject",
           cert_path, text);
  /* Go's crypto/x509 handles these four forms only, and fails any chain through a
   * CA whose critical nameConstraints hold another ("unhandled critical extension"),
   * whatever names the leaf has. */
  other = proxy_nc_forms(ca->nc) &
          ~((1u << PROXY_NC_DNS_NAME) | (1u << PROXY_NC_IP_ADDRESS) |
            (1u << PROXY_NC_RFC822_NAME) | (1u << PROXY_NC_URI));
  if (crit && other != 0) {
    unsigned f = 0;

    while (((other >> f) & 1) == 0)
      f++;
    log_warn("ca: the critical nameConstraints of CA certificate %s hold a %s "
             "constraint, which Go programs cannot process: they reject every "
             "certificate this CA issues",
             cert_path, proxy_nc_form_name((enum proxy_nc_form)f));
  }
  return 0;
}

int proxy_ca_import(const struct proxy_ca_opts *opts, const char *cert_pem,
                    size_t cert_len, const char *key_pem, size_t key_len,
                    const char *label, const char *key_label, struct proxy_ca **out)
{
  struct proxy_ca *ca = NULL;
  unsigned char *buf = NULL;
  struct ext_seen exts;
  char err[128];
  int ret;

  *out = NULL;
  ret = ca_new(opts, &ca);
  if (ret != 0)
    return ret;
  /* Both parsers want a NUL-terminated PEM buffer. */
  buf = malloc(key_len + 1);
  if (buf == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  memcpy(buf, key_pem, key_len);
  buf[key_len] = '\0';
  ret = mbedtls_pk_parse_key(&ca->key, buf, key_len + 1, NULL, 0);
  mbedtls_platform_zeroize(buf, key_len + 1);
  free(buf);
  buf = NULL;
  if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
    log_error("ca: CA key %s is encrypted; store it decrypted with mode 0600 "
              "(openssl pkey -in %s -out NEW && chmod 600 NEW)", key_label, key_label);
    ret = -EINVAL;
    goto out;
  }
  if (ret != 0) {
    log_error("ca: cannot parse CA key %s: %s", key_label, mbed_str(ret, err, sizeof(err)));
    ret = -EINVAL;
    goto out;
  }
  ret = ca_key_ok(key_label, &ca->key, &ca->md);
  if (ret != 0)
    goto out;

  buf = malloc(cert_len + 1);
  if (buf == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  memcpy(buf, cert_pem, cert_len);
  buf[cert_len] = '\0';
  ret = parse_certs(&ca->cert, buf, cert_len, &exts);
  free(buf);
  buf = NULL;
  if (ret != 0) {
    if (exts.critical_oid[0] != '\0')
      log_error("ca: certificate %s has a critical extension %s that authproxy cannot "
                "process; reissue the CA without it",
                label, exts.critical_oid);
    else
      log_error("ca: cannot parse certificate %s: %s", label, mbed_str(ret, err, sizeof(err)));
    ret = -EINVAL;
    goto out;
  }
  ret = check_ca_cert(ca, label);
  if (ret != 0)
    goto out;
  ret = load_name_constraints(ca, &exts, label);
  if (ret != 0)
    goto out;
  /* The proofs below are the costly part of an import (a daemon restoring 1,000
   * sandboxes spent four fifths of its CPU in them); a proven pair (opts) had
   * them when it was first imported, and their outcome depends on nothing but the
   * pair. */
  if (opts == NULL || !opts->proven) {
    ret = mbedtls_pk_check_pair(&ca->cert.pk, &ca->key);
    if (ret != 0) {
      log_error("ca: CA key %s does not match certificate %s; give the key the "
                "certificate was issued for", key_label, label);
      ret = -EINVAL;
      goto out;
    }
  }
  ret = ca_prepare(ca, label);
  if (ret != 0)
    goto out;
  if (opts == NULL || !opts->proven) {
    ret = probe(ca, label);
    if (ret != 0)
      goto out;
  }
  if (ca->not_after - ca->now() < 30 * 86400)
    log_warn("ca: CA certificate %s expires within 30 days; leaves will not outlive it",
             label);
  *out = ca;
  ca = NULL;
out:
  proxy_ca_free(ca);
  return ret;
}

int proxy_ca_load(const struct proxy_ca_opts *opts, const char *cert_path,
                  const char *key_path, struct proxy_ca **out)
{
  unsigned char *key = NULL, *cert = NULL;
  size_t key_len = 0, cert_len = 0;
  int ret;

  *out = NULL;
  ret = read_file("CA key", key_path, FILE_MAX, 1, &key, &key_len);
  if (ret != 0)
    goto out;
  ret = read_file("CA certificate", cert_path, FILE_MAX, 0, &cert, &cert_len);
  if (ret != 0)
    goto out;
  ret = proxy_ca_import(opts, (const char *)cert, cert_len, (const char *)key, key_len,
                        cert_path, key_path, out);
out:
  if (key != NULL)
    mbedtls_platform_zeroize(key, key_len + 1);
  free(key);
  free(cert);
  return ret;
}

char *proxy_ca_key_pem(const struct proxy_ca *ca)
{
  mbedtls_pk_context key = ca->key;
  unsigned char *pem = malloc(KEY_PEM_MAX);

  if (pem == NULL)
    return NULL;
  if (mbedtls_pk_write_key_pem(&key, pem, KEY_PEM_MAX) != 0) {
    mbedtls_platform_zeroize(pem, KEY_PEM_MAX);
    free(pem);
    return NULL;
  }
  return (char *)pem;
}

int proxy_ca_save(const struct proxy_ca *ca, const char *cert_path, const char *key_path)
{
  /* mbedTLS 2.28 takes a non-const context to write a key it only reads: a shallow
   * copy of the handle avoids casting const away. */
  mbedtls_pk_context key = ca->key;
  unsigned char *pem = malloc(KEY_PEM_MAX);
  char err[128];
  int ret;

  if (pem == NULL)
    return -ENOMEM;
  ret = mbedtls_pk_write_key_pem(&key, pem, KEY_PEM_MAX);
  if (ret != 0) {
    log_error("ca: cannot encode the CA key: %s", mbed_str(ret, err, sizeof(err)));
    ret = mbed_errno(ret);
    goto out;
  }
  /* Key first: a crash between the two renames leaves a pair that load refuses as
   * mismatched, never a certificate whose key is lost. */
  ret = write_file_atomic("CA key", key_path, pem, strlen((char *)pem), 0600);
  if (ret != 0)
    goto out;
  ret = write_file_atomic("CA certificate", cert_path, ca->cert_pem, strlen(ca->cert_pem),
                          0644);
out:
  mbedtls_platform_zeroize(pem, KEY_PEM_MAX);
  free(pem);
  return ret;
}

const char *proxy_ca_cert_pem(const struct proxy_ca *ca)
{
  return ca->cert_pem;
}

/* ---- the cache ----------------------------------------------------------- */

static void lru_unlink(struct proxy_ca *ca, struct proxy_leaf *leaf)
{
  if (leaf->lru_prev != NULL)
    leaf->lru_prev->lru_next = leaf->lru_next;
  else
    ca->lru_head = leaf->lru_next;
  if (leaf->lru_next != NULL)
    leaf->lru_next->lru_prev = leaf->lru_prev;
  else
    ca->lru_tail = leaf->lru_prev;
  leaf->lru_prev = NULL;
  leaf->lru_next = NULL;
  ca->idle--;
}

static void lru_push(struct proxy_ca *ca, struct proxy_leaf *leaf)
{
  leaf->lru_prev = NULL;
  leaf->lru_next = ca->lru_head;
  if (ca->lru_head != NULL)
    ca->lru_head->lru_prev = leaf;
  else
    ca->lru_tail = leaf;
  ca->lru_head = leaf;
  ca->idle++;
}

static void unhash(struct proxy_ca *ca, struct proxy_leaf *leaf)
{
  struct proxy_leaf **pp = &ca->buckets[leaf->hash & (ca->nbuckets - 1)];

  while (*pp != NULL && *pp != leaf)
    pp = &(*pp)->hash_next;
  if (*pp == leaf) {
    *pp = leaf->hash_next;
    ca->count--;
  }
  leaf->hash_next = NULL;
}

/* Removes an unreferenced leaf from the cache and frees it. */
static void drop_idle(struct proxy_ca *ca, struct proxy_leaf *leaf)
{
  lru_unlink(ca, leaf);
  unhash(ca, leaf);
  leaf_free(leaf);
}

/* Doubles the table once it holds more leaves than buckets; on ENOMEM keeps the old. */
static void maybe_grow(struct proxy_ca *ca)
{
  struct proxy_leaf **nb, *leaf, *next;
  size_t i, n = ca->nbuckets * 2;

  if (ca->count <= ca->nbuckets || n > SIZE_MAX / sizeof(*nb))
    return;
  nb = calloc(n, sizeof(*nb));
  if (nb == NULL)
    return;
  for (i = 0; i < ca->nbuckets; i++) {
    for (leaf = ca->buckets[i]; leaf != NULL; leaf = next) {
      next = leaf->hash_next;
      leaf->hash_next = nb[leaf->hash & (n - 1)];
      nb[leaf->hash & (n - 1)] = leaf;
    }
  }
  free(ca->buckets);
  ca->buckets = nb;
  ca->nbuckets = n;
}

/*
 * A cached leaf is handed out again only while it is inside its validity window and
 * has at least a quarter of leaf_days left, unless reminting cannot give it more
 * because the CA itself expires first.
 */
static int leaf_stale(const struct proxy_ca *ca, const struct proxy_leaf *leaf,
                      time_t now)
{
  time_t not_before = x509_time_epoch(&leaf->chain.valid_from);
  time_t not_after = x509_time_epoch(&leaf->chain.valid_to);
  time_t margin = (time_t)ca->leaf_days * 86400 / 4;

  if (now < not_before || now >= not_after)
    return 1;
  return not_after - now < margin && not_after < ca->not_after;
}

/*
 * Whether the leaf mint() would make for a canonical name (or address) is within the
 * CA's nameConstraints: 0, or -EPERM with the reason in why. The names checked are
 * those mint() puts in the leaf: a dNSName and the subject CN, or an iPAddress and
 * an empty subject.
 */
static int within_constraints(const struct proxy_ca *ca, const char *name,
                              const unsigned char *ip, size_t ip_len, char *why,
                              size_t why_size)
{
  struct proxy_nc_names names;

  if (why_size > 0)
    why[0] = '\0';
  if (ca->nc == NULL)
    return 0;
  memset(&names, 0, sizeof(names));
  if (ip_len > 0) {
    names.ip = ip;
    names.ip_len = ip_len;
  } else {
    names.dns = name;
    names.cn = name;
    names.cn_len = leaf_cn_len(strlen(name));
  }
  return proxy_nc_check(ca->nc, &names, why, why_size);
}

int proxy_ca_check_name(const struct proxy_ca *ca, const char *name, int is_ip,
                        char *why, size_t why_size)
{
  char key[NAME_MAX_LEN + 1];
  unsigned char ip[16];
  size_t ip_len;
  int ret;

  if (why_size > 0)
    why[0] = '\0';
  if (name == NULL)
    return -EINVAL;
  ret = canonical_name(name, is_ip, key, ip, &ip_len);
  if (ret != 0)
    return ret;
  return within_constraints(ca, key, ip, ip_len, why, why_size);
}

/* Refills the signing budget for the time passed; 1 if a signature may start. */
static int budget_allows(struct proxy_ca *ca, time_t now)
{
  if (now > ca->budget_at) {
    int64_t secs = (int64_t)(now - ca->budget_at);

    /* Capped before multiplying: a clock that jumped must not overflow. */
    if (secs > ca->budget_burst_us / ca->budget_rate_us + 1)
      ca->budget_us = ca->budget_burst_us;
    else
      ca->budget_us += secs * ca->budget_rate_us;
    if (ca->budget_us > ca->budget_burst_us)
      ca->budget_us = ca->budget_burst_us;
  }
  /* A clock that went back restarts the refill from there. */
  ca->budget_at = now;
  return ca->budget_us > 0;
}

int proxy_ca_leaf(struct proxy_ca *ca, const char *name, int is_ip,
                  struct proxy_leaf **out)
{
  char key[NAME_MAX_LEN + 1];
  unsigned char ip[16];
  struct proxy_leaf **pp, *leaf;
  struct timespec t0, t1;
  size_t ip_len;
  uint64_t hash;
  time_t now;
  int ret;

  *out = NULL;
  if (name == NULL)
    return -EINVAL;
  if (ca->closing)
    return -ESHUTDOWN;
  ret = canonical_name(name, is_ip, key, ip, &ip_len);
  if (ret != 0)
    return ret;
  hash = proxy_siphash(ca->sip_key, key, strlen(key));
  now = ca->now();

  pp = &ca->buckets[hash & (ca->nbuckets - 1)];
  while (*pp != NULL) {
    leaf = *pp;
    if (leaf->hash != hash || strcmp(leaf->name, key) != 0) {
      pp = &leaf->hash_next;
      continue;
    }
    if (!leaf_stale(ca, leaf, now)) {
      if (leaf->refs == UINT_MAX)
        return -EOVERFLOW;
      if (leaf->refs == 0)
        lru_unlink(ca, leaf);
      leaf->refs++;
      ca->hits++;
      *out = leaf;
      return 0;
    }
    if (leaf->refs == 0) {
      /* Expiring and unused: drop it now. A referenced one stays for its holders
       * and is dropped from the LRU once released. */
      *pp = leaf->hash_next;
      leaf->hash_next = NULL;
      ca->count--;
      lru_unlink(ca, leaf);
      leaf_free(leaf);
      ca->evictions++;
      continue;
    }
    pp = &leaf->hash_next;
  }

  ca->misses++;
  /* Checked on a miss only: a cached leaf passed when it was minted, and a refused
   * name is never cached. */
  ret = within_constraints(ca, key, ip, ip_len, NULL, 0);
  if (ret != 0)
    return ret;
  if (!budget_allows(ca, now)) {
    ca->limited++;
    return -EAGAIN;
  }
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ret = mint(ca, key, ip, ip_len, &leaf);
  if (ret == -EKEYEXPIRED)
    ca->expired++;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ca->budget_us -= (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 +
                   (t1.tv_nsec - t0.tv_nsec) / 1000;
  if (ret != 0)
    return ret;
  ca->minted++;
  leaf->hash = hash;
  leaf->refs = 1;
  pp = &ca->buckets[hash & (ca->nbuckets - 1)];
  leaf->hash_next = *pp;
  *pp = leaf;
  ca->count++;
  maybe_grow(ca);
  *out = leaf;
  return 0;
}

static void ca_destroy(struct proxy_ca *ca)
{
  free(ca->buckets);
  proxy_nc_free(ca->nc);
  mbedtls_asn1_free_named_data_list(&ca->issuer);
  free(ca->cert_pem);
  mbedtls_x509_crt_free(&ca->cert);
  mbedtls_pk_free(&ca->key);
  mbedtls_pk_free(&ca->leaf_key);
  mbedtls_platform_zeroize(ca, sizeof(*ca));
  free(ca);
}

void proxy_leaf_unref(struct proxy_leaf *leaf)
{
  struct proxy_ca *ca;

  if (leaf == NULL)
    return;
  ca = ca_of(leaf);
  if (leaf->refs == 0) {
    /* Carrying on would put the leaf on the LRU twice and corrupt the cache. */
    log_error("ca: proxy_leaf_unref on %s, which holds no reference", leaf->name);
    abort();
  }
  if (--leaf->refs > 0)
    return;
  if (ca->closing) {
    unhash(ca, leaf);
    leaf_free(leaf);
    if (ca->count == 0)
      ca_destroy(ca);
    return;
  }
  if (leaf_stale(ca, leaf, ca->now())) {
    /* Replaced while in use (or about to be): nobody will look it up again. */
    unhash(ca, leaf);
    leaf_free(leaf);
    ca->evictions++;
    return;
  }
  lru_push(ca, leaf);
  while (ca->idle > ca->cache_size) {
    drop_idle(ca, ca->lru_tail);
    ca->evictions++;
  }
}

void proxy_ca_stats(const struct proxy_ca *ca, struct proxy_ca_stats *out)
{
  out->hits = ca->hits;
  out->misses = ca->misses;
  out->evictions = ca->evictions;
  out->limited = ca->limited;
  out->minted = ca->minted;
  out->expired = ca->expired;
  out->entries = ca->count;
}

void proxy_ca_set_clock(struct proxy_ca *ca, time_t (*now)(void))
{
  ca->now = now != NULL ? now : clock_now;
  ca->budget_at = ca->now();
}

void proxy_ca_set_key_rng(struct proxy_ca *ca,
                          int (*rng)(void *ctx, unsigned char *out, size_t len))
{
  ca->key_rng = rng != NULL ? rng : proxy_rng;
}

void proxy_ca_set_mint_budget(struct proxy_ca *ca, int64_t us_per_s, int64_t burst_us)
{
  ca->budget_rate_us = us_per_s > 0 ? us_per_s : MINT_BUDGET_US_PER_S;
  ca->budget_burst_us = burst_us > 0 ? burst_us : MINT_BUDGET_BURST_US;
  ca->budget_us = ca->budget_burst_us;
  ca->budget_at = ca->now();
}

void proxy_ca_free(struct proxy_ca *ca)
{
  if (ca == NULL || ca->closing)
    return;
  while (ca->lru_tail != NULL)
    drop_idle(ca, ca->lru_tail);
  if (ca->count > 0) {
    /* Leaves still in use borrow the CA's key and certificate: the CA goes with the
     * last of them (proxy_leaf_unref). */
    log_warn("ca: CA freed while %zu leaf certificate(s) are in use; releasing it with "
             "the last one",
             ca->count);
    ca->closing = 1;
    return;
  }
  ca_destroy(ca);
}
