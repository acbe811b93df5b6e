/*
 * TLS glue between mbedTLS and the connection state machine.
 *
 * Reading: libuv's read buffer is lent to mbedTLS (t->rx) for one callback, and
 * mbedtls_ssl_handshake / mbedtls_ssl_read run until they want more; mbedTLS keeps a
 * partial record in its own buffer, so nothing is left over. Writing: the send BIO
 * hands every record to proxy_end_raw_write, which never refuses (backpressure works
 * on the reading side), so mbedTLS never sees WANT_WRITE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>

#include "proxy/ca.h"
#include "proxy/log.h"
#include "proxy/nameconstr.h"
#include "proxy/proxy_internal.h"
#include "proxy/rng.h"
#include "proxy/tls.h"
#include "proxy/tls_internal.h"

#define PLAIN_BUF_SIZE 16384
/*
 * Renegotiation is refused on both sides, and mbedTLS answers each request (a
 * HelloRequest from an upstream, a ClientHello from the sandbox) with a warning
 * alert written back to the peer. A peer that asks again after this many refusals on
 * one connection is cut off: one that sends requests without end and reads nothing
 * would otherwise have an alert queued for each, on its own end, which backpressure
 * (an end is read while its peer's queue has room) never stops. Go's TLS client
 * ends the connection at the first request; servers that ask once (for a client
 * certificate) go on after the refusal.
 */
#define RENEGOTIATIONS_REFUSED_MAX 16
#define TICKET_LIFETIME_S 86400

/*
 * Upstream TLS sessions, kept for resumption. One table for the whole daemon, but
 * every entry belongs to the sandbox whose connection made it (its serial, never
 * reused, so a sandbox attached again under the same name starts empty) and only
 * that sandbox's connections resume it: an upstream must not be able to link two
 * sandboxes by a session ID or ticket. A sandbox holds at most
 * SESSION_CACHE_PER_SANDBOX entries; at that many, its next one replaces its own
 * least recently used, so however many names it visits it cannot push the other
 * sandboxes' sessions out. Below it, the table's least recently used entry makes
 * room, whoever's it is. A sandbox's entries are freed when it is.
 */
#define SESSION_CACHE_SIZE 256
#define SESSION_CACHE_PER_SANDBOX 16

typedef void (*client_cb)(struct proxy_conn *c, int status, const char *reason);

struct proxy_tls {
  mbedtls_ssl_context ssl;
  struct proxy_end *e;
  const unsigned char *rx;   /* ciphertext lent for the current read callback */
  size_t rx_len;
  int handshake_done;
  int server;
  int check_ip;              /* upstream named by address: verify an IP SAN */
  int leaf_ip_san;           /* check_ip: the leaf verified carries it (ip_chain_verify) */
  struct chain_scratch *chain; /* check_ip: chain_verify's scratch */
  int close_notified;        /* the peer ended the stream with a close_notify */
  int reading;               /* in mbedtls_ssl_read: a record sent is its answer */
  unsigned refused;          /* renegotiations refused (alerts sent while reading) */
  /* Client side, until the server's ChangeCipherSpec: its plaintext records as
   * mbedTLS takes them, so that a certificate is screened before mbedTLS reads it. */
  struct proxy_tls_screen scr;
  struct proxy_leaf *leaf;   /* server side: the certificate presented */
  client_cb cb;
};

struct session_entry {
  char key[RULES_MAX_NAME_LEN + 8];  /* "name:port" */
  uint64_t owner;                    /* serial of the sandbox it belongs to */
  mbedtls_ssl_session session;
  uint64_t used;
  int valid;
};

/*
 * Scratch for chain_verify (below). mbedTLS runs the verify callback for every
 * certificate of the chain it built, from the trust anchor down to the leaf, within
 * one mbedtls_x509_crt_verify call on the loop's thread: the CA certificates are
 * remembered by depth until the leaf comes, and nothing outlives that call except
 * `why`, which the caller reads right after the handshake step that failed.
 */
struct chain_scratch {
  const mbedtls_x509_crt *cas[MBEDTLS_X509_MAX_VERIFY_CHAIN_SIZE]; /* by depth; 0 unused */
  int top;       /* deepest depth seen, 0 when none */
  char why[256]; /* why the last chain was refused by chain_verify, or "" */
};

struct proxy_upstream_tls {
  mbedtls_x509_crt ca;
  mbedtls_ssl_config conf;
  int *suites;                    /* offered to upstreams (upstream_suites), 0-ended */
  struct session_entry *sessions; /* upstream session resumption, LRU, per sandbox */
  uint64_t clock;
  struct chain_scratch chain;
};

struct proxy_tls_server {
  mbedtls_ssl_ticket_context tickets;
};

/* Sandbox-facing suites: ECDSA leaves, AEAD only. An mbedTLS server picks the first
 * suite of its own list that the client offers, so the order is the proxy's cost:
 * mbedTLS 2.28's ChaCha20-Poly1305 runs at about twice the speed of its AES-GCM even
 * with AES-NI (305 vs 160 MB/s on the benchmark machine; its GHASH works a block at a
 * time), and every intercepted byte is encrypted once toward the sandbox. */
static const int server_suites[] = {
  MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
  MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
  MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
  0,
};

static const mbedtls_ecp_group_id curves[] = {
  MBEDTLS_ECP_DP_CURVE25519,
  MBEDTLS_ECP_DP_SECP256R1,
  MBEDTLS_ECP_DP_SECP384R1,
  MBEDTLS_ECP_DP_NONE,
};

static const char *alpn_http11[] = { "http/1.1", NULL };

/*
 * The suites offered to upstreams: mbedTLS's defaults without finite-field DHE. With
 * DHE the server picks the group, and mbedTLS takes any modulus up to 8192 bits with
 * an exponent as long: 0.46 s of one core per modular exponentiation, three in a
 * handshake, all on the loop every sandbox shares. An upstream that picked DHE with
 * such a group (its own, or whoever answers on the path: the group is not signed by
 * the certificate's CA) held the loop for about a second per connection. Browsers
 * dropped DHE years ago (Chrome 53, Firefox 78); ECDHE on the curves below costs a
 * fixed, small amount. Returns a 0-ended array to free, or NULL.
 */
static int *upstream_suites(void)
{
  const int *all = mbedtls_ssl_list_ciphersuites();
  size_t i, n = 0;
  int *out;

  for (i = 0; all[i] != 0; i++)
    ;
  out = calloc(i + 1, sizeof(*out));
  if (out == NULL)
    return NULL;
  for (i = 0; all[i] != 0; i++) {
    const mbedtls_ssl_ciphersuite_t *cs = mbedtls_ssl_ciphersuite_from_id(all[i]);

    if (cs == NULL || cs->key_exchange == MBEDTLS_KEY_EXCHANGE_DHE_RSA ||
        cs->key_exchange == MBEDTLS_KEY_EXCHANGE_DHE_PSK)
      continue;
    out[n++] = all[i];
  }
  return out;
}

static void tls_error(int r, char *buf, size_t size)
{
  mbedtls_strerror(r, buf, size);
}

/* ---- BIO ---- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
  struct proxy_tls *t = ctx;
  uv_buf_t b = proxy_buf(buf, len);

  /* After the handshake, mbedtls_ssl_read sends nothing but its refusal of a
   * renegotiation (or a fatal alert as it fails): past the limit the refusal fails,
   * and so does the read (proxy_tls_on_read). */
  if (t->reading && ++t->refused > RENEGOTIATIONS_REFUSED_MAX)
    return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
  if (proxy_end_raw_write(t->e, &b, 1) != 0)
    return MBEDTLS_ERR_NET_SEND_FAILED;
  return (int)len;
}

/* 1 if mbedTLS's x509_name_cmp may find a and b equal: the same attribute types and
 * values of the same length, equal but for ASCII case, whatever their string types
 * (x509_name_cmp is as strict or stricter, so counting the trusted CAs it may take
 * never falls short). */
static int names_may_match(const mbedtls_x509_name *a, const mbedtls_x509_name *b)
{
  size_t i;

  for (; a != NULL && b != NULL; a = a->next, b = b->next) {
    if (a->oid.len != b->oid.len || a->val.len != b->val.len)
      return 0;
    for (i = 0; i < a->oid.len; i++)
      if (a->oid.p[i] != b->oid.p[i])
        return 0;
    for (i = 0; i < a->val.len; i++) {
      unsigned char x = a->val.p[i], y = b->val.p[i];

      if (x >= 'A' && x <= 'Z')
        x = (unsigned char)(x + 32);
      if (y >= 'A' && y <= 'Z')
        y = (unsigned char)(y + 32);
      if (x != y)
        return 0;
    }
  }
  return a == NULL && b == NULL;
}

/* 1 if mbedTLS 2.28's x509_string_cmp finds a and b equal: the same string type
 * and bytes, or both UTF8String or PrintableString and equal but for ASCII case. */
static int strings_match(const mbedtls_x509_buf *a, const mbedtls_x509_buf *b)
{
  size_t i;

  if (a->len != b->len)
    return 0;
  if (a->tag == b->tag && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0))
    return 1;
  if ((a->tag != MBEDTLS_ASN1_UTF8_STRING && a->tag != MBEDTLS_ASN1_PRINTABLE_STRING) ||
      (b->tag != MBEDTLS_ASN1_UTF8_STRING && b->tag != MBEDTLS_ASN1_PRINTABLE_STRING))
    return 0;
  for (i = 0; i < a->len; i++) {
    unsigned char x = a->p[i], diff = (unsigned char)(x ^ b->p[i]);

    if (diff != 0 && (diff != 32 || !((x >= 'a' && x <= 'z') || (x >= 'A' && x <= 'Z'))))
      return 0;
  }
  return 1;
}

/* 1 if mbedTLS 2.28's x509_name_cmp finds a and b equal (attribute by attribute:
 * type, value, and the same grouping into sets). */
static int names_match(const mbedtls_x509_name *a, const mbedtls_x509_name *b)
{
  for (; a != NULL || b != NULL; a = a->next, b = b->next) {
    if (a == NULL || b == NULL || a->oid.tag != b->oid.tag || a->oid.len != b->oid.len ||
        (a->oid.len > 0 && memcmp(a->oid.p, b->oid.p, a->oid.len) != 0) ||
        !strings_match(&a->val, &b->val) || a->next_merged != b->next_merged)
      return 0;
  }
  return 1;
}

/* 1 if mbedTLS 2.28 takes parent, one of the certificates the server sent, as a
 * candidate for child's parent at path_cnt certificates above the leaf with self_cnt
 * self-issued ones among them (x509_crt_check_parent and the max_pathlen check of
 * x509_crt_find_parent_in): it checks the signature of each candidate. */
static int may_be_parent(const mbedtls_x509_crt *child, const mbedtls_x509_crt *parent,
                         unsigned path_cnt, unsigned self_cnt)
{
  if (!names_match(&child->issuer, &parent->subject) || !parent->ca_istrue)
    return 0;
#if defined(MBEDTLS_X509_CHECK_KEY_USAGE)
  if (mbedtls_x509_crt_check_key_usage(parent, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0)
    return 0;
#endif
  return parent->max_pathlen <= 0 || (size_t)parent->max_pathlen >= 1 + path_cnt - self_cnt;
}

/*
 * At least as many signatures as mbedTLS 2.28 checks to verify chain (the server's
 * certificates, leaf first) against trust, as x509_crt_verify_chain searches: for
 * each certificate, from the leaf up to the deepest chain it accepts, every trusted CA
 * whose subject may be its issuer (none taken as its parent, as if their signatures
 * failed), then the later certificates the server sent that mbedTLS takes as
 * candidates (may_be_parent), up to the first within its validity period; the first
 * of them, failing that, is the next certificate. The candidates must be exactly
 * mbedTLS's: a certificate counted that mbedTLS passes over (one that may not sign
 * certificates, or whose subject mbedTLS finds different) would lead the count up a
 * short path while mbedTLS searches a long one.
 */
static unsigned chain_checks(const mbedtls_x509_crt *chain, const mbedtls_x509_crt *trust)
{
  const mbedtls_x509_crt *child = chain, *p, *parent, *fallback;
  unsigned checks = 0, depth, self_cnt = 0;

  for (depth = 0; child != NULL && depth <= MBEDTLS_X509_MAX_INTERMEDIATE_CA; depth++) {
    for (p = trust; p != NULL; p = p->next)
      if (names_may_match(&child->issuer, &p->subject))
        checks++;
    parent = fallback = NULL;
    for (p = child->next; p != NULL && parent == NULL; p = p->next) {
      if (!may_be_parent(child, p, depth, self_cnt))
        continue;
      checks++;
      if (!mbedtls_x509_time_is_past(&p->valid_to) &&
          !mbedtls_x509_time_is_future(&p->valid_from))
        parent = p;
      else if (fallback == NULL)
        fallback = p;
    }
    /* x509_crt_verify_chain counts the intermediates issued by their own subject. */
    if (depth > 0 && names_match(&child->issuer, &child->subject))
      self_cnt++;
    child = parent != NULL ? parent : fallback;
  }
  return checks;
}

/*
 * SCREEN_OK, or why the certificates of a Certificate handshake message (body: its
 * len bytes) are refused before mbedTLS checks any of their signatures: an RSA
 * exponent longer than RSA_EXPONENT_MAX_BITS (SCREEN_EXPONENT), or a search for their
 * parents among them and in trust (the trusted CAs) that would check more than
 * CHAIN_CHECKS_MAX signatures (SCREEN_CHECKS; *checks says how many). What does not
 * parse is left out, as mbedTLS leaves it out or refuses it.
 */
static int screen_certificates(const unsigned char *body, size_t len,
                               const mbedtls_x509_crt *trust, unsigned *checks)
{
  mbedtls_x509_crt chain;
  const mbedtls_x509_crt *crt;
  int ret = SCREEN_OK;
  size_t off = 3, n;

  mbedtls_x509_crt_init(&chain);
  while (off + 3 <= len) {
    n = (size_t)body[off] << 16 | (size_t)body[off + 1] << 8 | body[off + 2];
    off += 3;
    if (n > len - off)
      break;
    (void)mbedtls_x509_crt_parse_der_nocopy(&chain, body + off, n);
    off += n;
  }
  for (crt = &chain; crt != NULL && crt->raw.p != NULL; crt = crt->next) {
    if (mbedtls_pk_get_type(&crt->pk) == MBEDTLS_PK_RSA &&
        mbedtls_mpi_bitlen(&mbedtls_pk_rsa(crt->pk)->E) > RSA_EXPONENT_MAX_BITS) {
      ret = SCREEN_EXPONENT;
      goto out;
    }
  }
  if (chain.raw.p != NULL) {
    *checks = chain_checks(&chain, trust);
    if (*checks > CHAIN_CHECKS_MAX)
      ret = SCREEN_CHECKS;
  }
out:
  mbedtls_x509_crt_free(&chain);
  return ret;
}

/* Screens a whole plaintext handshake record from the upstream (its body, len bytes)
 * for s: SCREEN_OK, or why a Certificate message in it is refused (screen_certificates,
 * which sets s->checks). */
static int screen_record(struct proxy_tls_screen *s, const mbedtls_x509_crt *trust,
                         const unsigned char *body, size_t len)
{
  size_t off = 0, n;
  int why;

  while (off + 4 <= len) {
    n = (size_t)body[off + 1] << 16 | (size_t)body[off + 2] << 8 | body[off + 3];
    if (n > len - off - 4)
      return SCREEN_OK; /* a message across records: mbedTLS 2.28 refuses those */
    if (body[off] == MBEDTLS_SSL_HS_CERTIFICATE) {
      why = screen_certificates(body + off + 4, n, trust, &s->checks);
      if (why != SCREEN_OK)
        return why;
    }
    off += 4 + n;
  }
  return SCREEN_OK;
}

int proxy_tls_screen_feed(struct proxy_tls_screen *s, const mbedtls_x509_crt *trust,
                          const unsigned char *data, size_t len)
{
  size_t i = 0, take, body_len;

  while (i < len && !s->screened) {
    if (s->rec_got < 5) {
      take = 5 - s->rec_got < len - i ? 5 - s->rec_got : len - i;
      memcpy(s->rec_hdr + s->rec_got, data + i, take);
      s->rec_got += take;
      i += take;
      if (s->rec_got < 5)
        break;
      if (s->rec_hdr[0] == MBEDTLS_SSL_MSG_CHANGE_CIPHER_SPEC) {
        s->screened = 1;
        break;
      }
      body_len = (size_t)s->rec_hdr[3] << 8 | s->rec_hdr[4];
      if (s->rec_hdr[0] == MBEDTLS_SSL_MSG_HANDSHAKE && body_len <= MBEDTLS_SSL_IN_CONTENT_LEN) {
        s->rec_body = malloc(body_len > 0 ? body_len : 1);
        if (s->rec_body == NULL)
          return MBEDTLS_ERR_SSL_ALLOC_FAILED;
      }
    }
    body_len = (size_t)s->rec_hdr[3] << 8 | s->rec_hdr[4];
    take = 5 + body_len - s->rec_got < len - i ? 5 + body_len - s->rec_got : len - i;
    if (s->rec_body != NULL)
      memcpy(s->rec_body + (s->rec_got - 5), data + i, take);
    s->rec_got += take;
    i += take;
    if (s->rec_got < 5 + body_len)
      break;
    s->rec_got = 0;
    if (s->rec_body != NULL) {
      s->screen = screen_record(s, trust, s->rec_body, body_len);
      free(s->rec_body);
      s->rec_body = NULL;
      if (s->screen != SCREEN_OK)
        return MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE;
    }
  }
  return 0;
}

void proxy_tls_screen_free(struct proxy_tls_screen *s)
{
  free(s->rec_body);
  s->rec_body = NULL;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
  struct proxy_tls *t = ctx;
  size_t n;
  int r;

  if (t->rx_len == 0)
    return MBEDTLS_ERR_SSL_WANT_READ;
  n = len < t->rx_len ? len : t->rx_len;
  memcpy(buf, t->rx, n);
  if (!t->server && !t->scr.screened) {
    r = proxy_tls_screen_feed(&t->scr, t->ssl.conf->ca_chain, buf, n);
    if (r != 0)
      return r;
  }
  t->rx += n;
  t->rx_len -= n;
  return (int)n;
}

/* ---- upstream trust ---- */

/* The nameConstraints of ca in *nc (NULL when it has none). 0, or -1 with the reason in
 * why when they do not parse. */
static int ca_constraints(const mbedtls_x509_crt *ca, struct proxy_nc **nc, char *why,
                          size_t why_size)
{
  unsigned char *der;
  char err[160];
  size_t der_len;
  int r, crit;

  *nc = NULL;
  r = proxy_x509_find_ext(ca, MBEDTLS_OID_NAME_CONSTRAINTS,
                          MBEDTLS_OID_SIZE(MBEDTLS_OID_NAME_CONSTRAINTS), &der, &der_len,
                          &crit);
  if (r == 0)
    return 0;
  if (r < 0 || proxy_nc_parse(der, der_len, nc, err, sizeof(err)) != 0) {
    snprintf(why, why_size, "an issuing CA's nameConstraints do not parse%s%s",
             r < 0 ? "" : ": ", r < 0 ? "" : err);
    return -1;
  }
  return 0;
}

/*
 * OpenSSL 3 refuses a certificate whose names (its subject's attributes and its
 * subjectAltName's entries) times the subtrees of a constraining CA above it exceed
 * this (NAME_CHECK_MAX in crypto/x509/v3_ncons.c). The same bound keeps the checks
 * below, each name against each subtree of its form, to a million comparisons for a
 * certificate and a CA: the upstream writes both (some 8,000 two-byte dNSNames fit
 * a 16 KiB certificate, and a CA may have 1,024 subtrees), and a chain has at most
 * 45 such pairs.
 */
#define NC_CHECK_MAX (1 << 20)

/* The names of crt that OpenSSL counts against NC_CHECK_MAX. */
static size_t name_count(const mbedtls_x509_crt *crt)
{
  const mbedtls_x509_sequence *san;
  const mbedtls_x509_name *n;
  size_t count = 0;

  for (n = &crt->subject; n != NULL; n = n->next)
    count += n->oid.p != NULL;
  if (crt->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME)
    for (san = &crt->subject_alt_names; san != NULL; san = san->next)
      count += san->buf.p != NULL;
  return count;
}

/*
 * Checks the names of crt (a leaf, or a CA below the one nc belongs to) against nc
 * as OpenSSL 3's NAME_CONSTRAINTS_check does for every certificate below a
 * constrained CA: the bound above, the subject against directoryName subtrees, and
 * each subjectAltName entry of the forms below against the subtrees of its form (a
 * dNSName or iPAddress encoded constructed, not at all).
 * rfc822Name and URI entries, and the emailAddress attributes of a subject, are not
 * checked (OpenSSL checks them against rfc822Name and URI subtrees). 0, or -1 with
 * the reason in why.
 */
static int names_within(const struct proxy_nc *nc, const mbedtls_x509_crt *crt, char *why,
                        size_t why_size)
{
  const mbedtls_x509_sequence *san;
  struct proxy_nc_names names;
  unsigned forms = proxy_nc_forms(nc);
  size_t count = name_count(crt);
  char name[256];

  if (count > 0 && proxy_nc_count(nc) > NC_CHECK_MAX / count) {
    snprintf(why, why_size, "the certificate has %zu names and a CA above it %zu "
             "nameConstraints subtrees: more than the %d comparisons OpenSSL makes",
             count, proxy_nc_count(nc), NC_CHECK_MAX);
    return -1;
  }
  if (proxy_nc_check_subject(nc, crt->subject_raw.p, crt->subject_raw.len, why,
                             why_size) != 0)
    return -1;
  if ((crt->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME) == 0)
    return 0;
  for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
    unsigned form = san->buf.tag & MBEDTLS_ASN1_TAG_VALUE_MASK;

    memset(&names, 0, sizeof(names));
    /* As mbedTLS matches a name (x509_crt_check_san): by the tag's number alone, so
     * a dNSName with the constructed bit set is one too. Its parser admits only
     * context-specific tags. */
    if ((form == PROXY_NC_DNS_NAME || form == PROXY_NC_IP_ADDRESS) &&
        (forms & 1u << form) != 0 && (san->buf.tag & MBEDTLS_ASN1_CONSTRUCTED) != 0) {
      /* BER, which RFC 5280 does not allow: OpenSSL reads the name from the string
       * segments inside and holds that to the subtrees, mbedTLS takes the bytes as
       * they are, and one reading within says nothing of the other. */
      snprintf(why, why_size, "a%s of the certificate is encoded constructed (BER, not "
               "DER), and its CA has %s nameConstraints",
               form == PROXY_NC_DNS_NAME ? " dNSName" : "n iPAddress",
               proxy_nc_form_name((enum proxy_nc_form)form));
      return -1;
    }
    if (form == PROXY_NC_DNS_NAME) {
      if ((forms & 1u << PROXY_NC_DNS_NAME) == 0)
        continue;
      if (san->buf.len >= sizeof(name) || memchr(san->buf.p, '\0', san->buf.len) != NULL) {
        snprintf(why, why_size, "a dNSName of the certificate is not a name, and its CA "
                 "has dNSName nameConstraints");
        return -1;
      }
      memcpy(name, san->buf.p, san->buf.len);
      name[san->buf.len] = '\0';
      names.dns = name;
    } else if (form == PROXY_NC_IP_ADDRESS) {
      if ((forms & 1u << PROXY_NC_IP_ADDRESS) == 0)
        continue;
      /* OpenSSL refuses one of another length (X509_V_ERR_UNSUPPORTED_NAME_SYNTAX). */
      if (san->buf.len != 4 && san->buf.len != 16) {
        snprintf(why, why_size, "an iPAddress of the certificate is %zu bytes, not an "
                 "IPv4 or IPv6 address, and its CA has iPAddress nameConstraints",
                 san->buf.len);
        return -1;
      }
      names.ip = san->buf.p;
      names.ip_len = san->buf.len;
    } else if (form == PROXY_NC_DIRECTORY_NAME) {
      /* By the number too: the contents must be a Name whatever the tag says. */
      if (proxy_nc_check_dirname(nc, san->buf.p, san->buf.len, why, why_size) != 0)
        return -1;
      continue;
    } else {
      continue;
    }
    if (proxy_nc_check(nc, &names, why, why_size) != 0)
      return -1;
  }
  return 0;
}

/*
 * Checks every name of the leaf against nc, an issuing CA's nameConstraints
 * (names_within), and its CN when it has no subjectAltName, since mbedTLS then
 * matches the CN. 0, or -1 with the reason in why.
 */
static int leaf_within_constraints(const struct proxy_nc *nc, const mbedtls_x509_crt *leaf,
                                   char *why, size_t why_size)
{
  struct proxy_nc_names names;
  const mbedtls_x509_name *n;
  char name[256], reason[256];
  int ret = -1;

  if (names_within(nc, leaf, reason, sizeof(reason)) != 0)
    goto out;
  if (leaf->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME) {
    ret = 0;
    goto out;
  }
  for (n = &leaf->subject; n != NULL; n = n->next) {
    if (n->oid.p == NULL || MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) != 0)
      continue;
    if (n->val.len >= sizeof(name) || memchr(n->val.p, '\0', n->val.len) != NULL) {
      snprintf(reason, sizeof(reason), "the certificate's CN is not a name");
      goto out;
    }
    memcpy(name, n->val.p, n->val.len);
    name[n->val.len] = '\0';
    memset(&names, 0, sizeof(names));
    names.dns = name;
    if (proxy_nc_check(nc, &names, reason, sizeof(reason)) != 0)
      goto out;
  }
  ret = 0;
out:
  /* why keeps what it says (an extendedKeyUsage refusal) unless this refuses. */
  if (ret != 0)
    snprintf(why, why_size, "%s", reason);
  return ret;
}

/*
 * Checks the names of the CA certificate sub against nc, the nameConstraints of a CA
 * above it in the chain (names_within), as OpenSSL does for every certificate below a
 * constrained CA but a self-issued CA (the caller skips those: RFC 5280 6.1.3 (b), a
 * self-issued certificate in the middle of a path is not bound; its subject is its
 * issuer's). 0, or -1 with the reason in why.
 */
static int ca_within_constraints(const struct proxy_nc *nc, const mbedtls_x509_crt *sub,
                                 char *why, size_t why_size)
{
  char reason[200]; /* with the prefix below, within chain_scratch.why */

  /* why keeps what it says (an extendedKeyUsage refusal) unless this refuses. */
  if (names_within(nc, sub, reason, sizeof(reason)) == 0)
    return 0;
  snprintf(why, why_size, "a CA of the chain: %s", reason);
  return -1;
}

static int self_issued(const mbedtls_x509_crt *crt)
{
  return proxy_nc_names_equal(crt->subject_raw.p, crt->subject_raw.len, crt->issuer_raw.p,
                              crt->issuer_raw.len);
}

/*
 * The restrictions a CA places on what it signs that mbedTLS 2.28 does not apply and
 * browsers do: an issuing CA's extendedKeyUsage must allow serverAuth (a CA for e-mail
 * or client certificates is not audited for TLS servers), and the leaf's names must be
 * within every issuing CA's nameConstraints (mbedTLS refuses a certificate whose
 * constraints are critical, but ignores non-critical ones, which the CA/Browser Forum
 * allows), as must the names of the CAs below a constrained CA (their subjects and
 * subjectAltNames), but a self-issued one's.
 * Runs as the verify callback of the upstream configuration, for the daemon's own
 * connections and for the credential callback's.
 */
static int chain_verify(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
  struct proxy_nc *nc[MBEDTLS_X509_MAX_VERIFY_CHAIN_SIZE] = { NULL };
  struct chain_scratch *cs = ctx;
  int i, j;

  if (depth < 0 || depth >= MBEDTLS_X509_MAX_VERIFY_CHAIN_SIZE) {
    *flags |= MBEDTLS_X509_BADCERT_OTHER;
    return 0;
  }
  if (depth > 0) {
    if (depth > cs->top || cs->cas[depth] != NULL) {
      /* The first call of a new chain: the deepest certificate comes first, and every
       * chain ends at depth 0, which clears the scratch. */
      memset(cs, 0, sizeof(*cs));
      cs->top = depth;
    }
    cs->cas[depth] = crt;
    if (mbedtls_x509_crt_check_extended_key_usage(crt, MBEDTLS_OID_SERVER_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) !=
        0) {
      *flags |= MBEDTLS_X509_BADCERT_EXT_KEY_USAGE;
      snprintf(cs->why, sizeof(cs->why), "an issuing CA's extendedKeyUsage does not "
               "include serverAuth");
    }
    return 0;
  }
  if (cs->top == 0)
    cs->why[0] = '\0'; /* a leaf alone: a trusted self-signed certificate */
  /* Each CA's nameConstraints are parsed once, here, for the leaf and for the
   * intermediates below it. */
  for (i = 1; i <= cs->top; i++) {
    if (cs->cas[i] == NULL)
      continue;
    if (ca_constraints(cs->cas[i], &nc[i], cs->why, sizeof(cs->why)) != 0 ||
        (nc[i] != NULL && leaf_within_constraints(nc[i], crt, cs->why, sizeof(cs->why)) != 0)) {
      *flags |= MBEDTLS_X509_BADCERT_OTHER;
      break;
    }
  }
  /* The intermediates' names, against the CAs above each (every nc[] parsed: the
   * loop above ran to the end). */
  for (i = 1; i < cs->top && (*flags & MBEDTLS_X509_BADCERT_OTHER) == 0; i++) {
    if (cs->cas[i] == NULL || self_issued(cs->cas[i]))
      continue;
    for (j = i + 1; j <= cs->top; j++) {
      if (nc[j] != NULL && ca_within_constraints(nc[j], cs->cas[i], cs->why,
                                                 sizeof(cs->why)) != 0) {
        *flags |= MBEDTLS_X509_BADCERT_OTHER;
        break;
      }
    }
  }
  for (i = 1; i <= cs->top; i++)
    proxy_nc_free(nc[i]);
  memset(cs->cas, 0, sizeof(cs->cas));
  cs->top = 0;
  return 0;
}

int proxy_upstream_tls_new(const char *system, const char *const *extra, size_t nextra,
                           struct proxy_upstream_tls **out, char *err, size_t errsz)
{
  struct proxy_upstream_tls *u;
  char msg[128];
  size_t i;
  int r, ret = -EINVAL;

  *out = NULL;
  u = calloc(1, sizeof(*u));
  if (u == NULL)
    return -ENOMEM;
  mbedtls_x509_crt_init(&u->ca);
  mbedtls_ssl_config_init(&u->conf);
  u->sessions = calloc(SESSION_CACHE_SIZE, sizeof(*u->sessions));
  if (u->sessions == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  if (system == NULL)
    system = "/etc/ssl/certs/ca-certificates.crt";
  r = mbedtls_x509_crt_parse_file(&u->ca, system);
  if (r < 0) {
    /* A missing system store is not fatal when the operator names its own CAs. */
    if (nextra == 0) {
      tls_error(r, msg, sizeof(msg));
      snprintf(err, errsz, "upstream TLS: cannot load the system trust store %s: %s "
               "(install ca-certificates, or pass --upstream-ca FILE)", system, msg);
      goto out;
    }
    log_warn("upstream TLS: no system trust store at %s; trusting only --upstream-ca", system);
  }
  for (i = 0; i < nextra; i++) {
    r = mbedtls_x509_crt_parse_file(&u->ca, extra[i]);
    if (r != 0) {
      tls_error(r, msg, sizeof(msg));
      snprintf(err, errsz, "upstream TLS: cannot load CA file %s: %s%s", extra[i], msg,
               r > 0 ? " (some certificates in it did not parse)" : "");
      goto out;
    }
  }
  r = mbedtls_ssl_config_defaults(&u->conf, MBEDTLS_SSL_IS_CLIENT,
                                  MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (r != 0)
    goto out;
  mbedtls_ssl_conf_authmode(&u->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&u->conf, &u->ca, NULL);
  mbedtls_ssl_conf_verify(&u->conf, chain_verify, &u->chain);
  mbedtls_ssl_conf_rng(&u->conf, proxy_rng, NULL);
  mbedtls_ssl_conf_min_version(&u->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_renegotiation(&u->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  mbedtls_ssl_conf_session_tickets(&u->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
  mbedtls_ssl_conf_curves(&u->conf, curves);
  u->suites = upstream_suites();
  if (u->suites == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  mbedtls_ssl_conf_ciphersuites(&u->conf, u->suites);
  if (mbedtls_ssl_conf_alpn_protocols(&u->conf, alpn_http11) != 0)
    goto out;
  *out = u;
  u = NULL;
  ret = 0;
out:
  proxy_upstream_tls_free(u);
  return ret;
}

void proxy_upstream_tls_free(struct proxy_upstream_tls *u)
{
  size_t i;

  if (u == NULL)
    return;
  if (u->sessions != NULL) {
    for (i = 0; i < SESSION_CACHE_SIZE; i++)
      if (u->sessions[i].valid)
        mbedtls_ssl_session_free(&u->sessions[i].session);
    free(u->sessions);
  }
  mbedtls_ssl_config_free(&u->conf);
  mbedtls_x509_crt_free(&u->ca);
  free(u->suites);
  free(u);
}

const struct mbedtls_ssl_config *proxy_upstream_tls_conf(const struct proxy_upstream_tls *u)
{
  return &u->conf;
}

/*
 * The entry of sandbox `owner` for key, or NULL. With create, a missing entry is made
 * (invalid until filled) in the slot the policy above gives up: the owner's own least
 * recently used entry once it holds SESSION_CACHE_PER_SANDBOX, else a free slot or
 * the table's least recently used one.
 */
static struct session_entry *session_find(struct proxy_upstream_tls *u, uint64_t owner,
                                          const char *key, int create)
{
  struct session_entry *lru = NULL, *own_lru = NULL;
  unsigned own = 0;
  size_t i;

  for (i = 0; i < SESSION_CACHE_SIZE; i++) {
    struct session_entry *s = &u->sessions[i];

    if (s->valid && s->owner == owner) {
      if (strcmp(s->key, key) == 0)
        return s;
      own++;
      if (own_lru == NULL || s->used < own_lru->used)
        own_lru = s;
    }
    if (lru == NULL || !s->valid || (lru->valid && s->used < lru->used))
      lru = s;
  }
  if (!create)
    return NULL;
  if (own >= SESSION_CACHE_PER_SANDBOX)
    lru = own_lru;
  if (lru->valid)
    mbedtls_ssl_session_free(&lru->session);
  memset(lru, 0, sizeof(*lru));
  snprintf(lru->key, sizeof(lru->key), "%s", key);
  lru->owner = owner;
  mbedtls_ssl_session_init(&lru->session);
  return lru;
}

unsigned proxy_upstream_tls_drop_sessions(struct proxy_upstream_tls *u, uint64_t owner)
{
  unsigned n = 0;
  size_t i;

  if (u == NULL)
    return 0;
  for (i = 0; i < SESSION_CACHE_SIZE; i++) {
    struct session_entry *s = &u->sessions[i];

    if (s->owner != owner)
      continue;
    if (s->valid) {
      mbedtls_ssl_session_free(&s->session);
      n++;
    }
    memset(s, 0, sizeof(*s));
  }
  return n;
}

/* ---- per-sandbox server state ---- */

int proxy_tls_server_new(struct proxy_tls_server **out)
{
  struct proxy_tls_server *s = calloc(1, sizeof(*s));

  *out = NULL;
  if (s == NULL)
    return -ENOMEM;
  mbedtls_ssl_ticket_init(&s->tickets);
  if (mbedtls_ssl_ticket_setup(&s->tickets, proxy_rng, NULL, MBEDTLS_CIPHER_AES_256_GCM,
                               TICKET_LIFETIME_S) != 0) {
    mbedtls_ssl_ticket_free(&s->tickets);
    free(s);
    return -EIO;
  }
  *out = s;
  return 0;
}

void proxy_tls_server_free(struct proxy_tls_server *s)
{
  if (s == NULL)
    return;
  mbedtls_ssl_ticket_free(&s->tickets);
  free(s);
}

static void leaf_conf_free(void *p)
{
  mbedtls_ssl_config_free(p);
  free(p);
}

/* The server configuration presenting one leaf; cached with the leaf. */
static mbedtls_ssl_config *leaf_conf(struct proxy_sandbox *sb, struct proxy_leaf *leaf)
{
  mbedtls_ssl_config *conf;

  if (leaf->user != NULL)
    return leaf->user;
  conf = malloc(sizeof(*conf));
  if (conf == NULL)
    return NULL;
  mbedtls_ssl_config_init(conf);
  if (mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT) != 0 ||
      mbedtls_ssl_conf_own_cert(conf, &leaf->chain, leaf->key) != 0 ||
      mbedtls_ssl_conf_alpn_protocols(conf, alpn_http11) != 0) {
    leaf_conf_free(conf);
    return NULL;
  }
  mbedtls_ssl_conf_rng(conf, proxy_rng, NULL);
  mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(conf, server_suites);
  mbedtls_ssl_conf_curves(conf, curves);
  mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
  if (sb->tls_server != NULL)
    mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write,
                                        mbedtls_ssl_ticket_parse,
                                        &sb->tls_server->tickets);
  leaf->user = conf;
  leaf->user_free = leaf_conf_free;
  return conf;
}

/* ---- per connection ---- */

void proxy_tls_free(struct proxy_tls *t)
{
  if (t == NULL)
    return;
  mbedtls_ssl_free(&t->ssl);
  proxy_leaf_unref(t->leaf);
  proxy_tls_screen_free(&t->scr);
  free(t);
}

int proxy_tls_close_notified(const struct proxy_tls *t)
{
  return t->close_notified;
}

int proxy_tls_buffered(const struct proxy_tls *t)
{
  return t->rx_len > 0 || mbedtls_ssl_get_bytes_avail(&t->ssl) > 0 ||
         mbedtls_ssl_check_pending(&t->ssl) != 0;
}

int proxy_tls_idle(const struct proxy_tls *t)
{
  return t->handshake_done && t->cb == NULL && !proxy_tls_buffered(t);
}

void proxy_tls_move(struct proxy_tls *t, struct proxy_end *e)
{
  t->e = e;
  t->rx = NULL;
}

static struct proxy_tls *tls_new(struct proxy_end *e, const mbedtls_ssl_config *conf)
{
  struct proxy_tls *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return NULL;
  mbedtls_ssl_init(&t->ssl);
  if (mbedtls_ssl_setup(&t->ssl, conf) != 0) {
    mbedtls_ssl_free(&t->ssl);
    free(t);
    return NULL;
  }
  t->e = e;
  mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
  return t;
}

/* 1 if certificate crt (NULL: none) carries an iPAddress SAN equal to the address in
 * name. */
static int crt_has_ip_san(const mbedtls_x509_crt *crt, const char *name)
{
  const mbedtls_x509_sequence *san;
  unsigned char addr[16];
  size_t alen;

  if (inet_pton(AF_INET, name, addr) == 1)
    alen = 4;
  else if (inet_pton(AF_INET6, name, addr) == 1)
    alen = 16;
  else
    return 0;
  if (crt == NULL)
    return 0;
  for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
    if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && san->buf.len == alen &&
        memcmp(san->buf.p, addr, alen) == 0)
      return 1;
  }
  return 0;
}

/* chain_verify for an upstream named by an address, noting whether the leaf carries
 * its IP SAN: a handshake that fails on the certificate's dates alone is named by
 * them only if the certificate is the address's (handshake_failed). */
static int ip_chain_verify(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
  struct proxy_tls *t = ctx;

  if (depth == 0)
    t->leaf_ip_san = crt_has_ip_san(crt, t->e->conn->name);
  return chain_verify(t->chain, crt, depth, flags);
}

static void client_done(struct proxy_conn *c, struct proxy_tls *t, int status,
                        const char *reason)
{
  client_cb cb = t->cb;

  t->cb = NULL;
  if (cb != NULL)
    cb(c, status, reason);
}

static void handshake_done(struct proxy_conn *c, struct proxy_tls *t)
{
  struct proxy_upstream_tls *u = c->sb->ctx->upstream_tls;
  struct session_entry *s;
  char key[sizeof(s->key)];

  t->handshake_done = 1;
  if (t->server) {
    uv_timer_stop(&c->timer);
    proxy_http_start(c);
    return;
  }
  if (t->check_ip && !crt_has_ip_san(mbedtls_ssl_get_peer_cert(&t->ssl), c->name)) {
    if (proxy_log_nth(++c->sb->tls_up_failed))
      log_info("sandbox %s conn %llu: upstream %s: certificate has no IP address SAN for "
               "it; nothing was sent (%llu such failures in this sandbox)", c->sb->name,
               (unsigned long long)c->id, c->name, (unsigned long long)c->sb->tls_up_failed);
    client_done(c, t, -EPROTO, "upstream_tls_failed");
    return;
  }
  snprintf(key, sizeof(key), "%s:%u", c->name, c->port);
  s = session_find(u, c->sb->serial, key, 1);
  if (mbedtls_ssl_get_session(&t->ssl, &s->session) == 0) {
    s->valid = 1;
    s->used = ++u->clock;
  } else {
    mbedtls_ssl_session_free(&s->session);
    s->valid = 0;
  }
  client_done(c, t, 0, NULL);
}

static void handshake_failed(struct proxy_conn *c, struct proxy_tls *t, int r)
{
  const char *reason = "upstream_tls_failed";
  int dates = 0; /* failed on the certificate's dates alone: the clock may be wrong */
  char msg[160], info[512];
  uint32_t flags;

  tls_error(r, msg, sizeof(msg));
  /* The sandbox can repeat either failure as fast as it connects: the log shows the
   * 1st, 10th, 100th and every 1000th, with the count, not a line per connection. */
  if (t->server && c->alpn_not_http11) {
    /* Interception speaks HTTP/1.1 only: a client that offers no http/1.1 in ALPN
     * (gRPC and other HTTP/2-only clients offer just h2) is refused with the
     * no_application_protocol alert, which names no host and no fix. */
    if (proxy_log_nth(++c->sb->tls_down_failed))
      log_warn("sandbox %s conn %llu: the client of %s offers %s but not http/1.1 in ALPN; "
               "intercepted connections speak HTTP/1.1 only, %s (%llu failed handshakes "
               "in this sandbox)",
               c->sb->name, (unsigned long long)c->id,
               c->name_src != NAME_NONE ? c->name : "(address)",
               c->alpn_not_http11 == 2 ? "h2" : "other protocols",
               c->action == RULES_DENY
                   ? "and this one was to be told that its host is denied"
                   : "so an HTTP/2-only client such as gRPC cannot reach a host whose "
                     "requests authproxy changes",
               (unsigned long long)c->sb->tls_down_failed);
    /* A denial keeps its own reason (proxy_conn_close keeps the first). */
    proxy_conn_close(c, 1, "sandbox_alpn_not_http11");
    return;
  }
  if (t->server && c->no_tls12) {
    /* Interception speaks TLS 1.2 only (mbedTLS 2.28): a client restricted to TLS
     * 1.3, or to older versions, fails before it sees a certificate, so the sandbox
     * CA is not the question. */
    if (proxy_log_nth(++c->sb->tls_down_failed))
      log_warn("sandbox %s conn %llu: the client of %s offers only %s; intercepted "
               "connections speak TLS 1.2, so allow TLS 1.2 in the client, or list the "
               "host in no_proxy so it is tunnelled without interception (%s) (%llu "
               "failed handshakes in this sandbox)",
               c->sb->name, (unsigned long long)c->id,
               c->name_src != NAME_NONE ? c->name : "(address)",
               c->no_tls12 == 2 ? "TLS 1.3" : "versions older than TLS 1.2", msg,
               (unsigned long long)c->sb->tls_down_failed);
    proxy_conn_close(c, 1, "sandbox_tls_failed");
    return;
  }
  if (t->server) {
    /* The usual cause is a client that does not trust the sandbox CA. */
    if (proxy_log_nth(++c->sb->tls_down_failed))
      log_info("sandbox %s conn %llu: TLS handshake with the sandbox for %s failed: %s "
               "(does the client trust the sandbox CA?) (%llu such failures in this "
               "sandbox)", c->sb->name, (unsigned long long)c->id,
               c->name_src != NAME_NONE ? c->name : "(address)", msg,
               (unsigned long long)c->sb->tls_down_failed);
    proxy_conn_close(c, 1, "sandbox_tls_failed");
    return;
  }
  if (r == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && t->ssl.in_msg != NULL &&
      t->ssl.in_msgtype == MBEDTLS_SSL_MSG_ALERT &&
      t->ssl.in_msg[1] == MBEDTLS_SSL_ALERT_MSG_NO_APPLICATION_PROTOCOL) {
    /* The upstream refused http/1.1, all the proxy offers in ALPN: an HTTP/2-only
     * server (a gRPC or Node http2 server without HTTP/1.1). Not a certificate, not a
     * TLS version: the answer and the log say so, and what would work. */
    if (proxy_log_nth(++c->sb->tls_up_failed))
      log_warn("sandbox %s conn %llu: upstream %s refused http/1.1 in ALPN (a "
               "no_application_protocol alert): it speaks only HTTP/2, and requests "
               "authproxy changes go out over HTTP/1.1, so they cannot reach it; nothing "
               "was sent (%llu such failures in this sandbox)", c->sb->name,
               (unsigned long long)c->id, c->name, (unsigned long long)c->sb->tls_up_failed);
    client_done(c, t, -EPROTO, "upstream_alpn_not_http11");
    return;
  }
  flags = mbedtls_ssl_get_verify_result(&t->ssl);
  info[0] = '\0';
  if (flags != 0 && flags != (uint32_t)-1) {
    const char *why = c->sb->ctx->upstream_tls->chain.why;
    size_t n;

    mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    n = strcspn(info, "\n");
    info[n] = '\0';
    /* chain_verify's reason for the flags it set (verify ran within this step). */
    if ((flags & (MBEDTLS_X509_BADCERT_OTHER | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE)) &&
        why[0] != '\0')
      snprintf(info + n, sizeof(info) - n, " (%s)", why);
  }
  if (t->scr.screen == SCREEN_EXPONENT)
    snprintf(info, sizeof(info), "a certificate it sent has an RSA public exponent of more "
             "than %d bits, refused before any signature is checked", RSA_EXPONENT_MAX_BITS);
  else if (t->scr.screen == SCREEN_CHECKS)
    snprintf(info, sizeof(info), "its certificates would need %u signature checks to search "
             "for their parents, more than %d; refused before any is checked",
             t->scr.checks, CHAIN_CHECKS_MAX);
  /* A chain that failed on time alone (every certificate trusted and valid for the
   * name, but one outside its validity period) is as often the host's clock, stepped
   * or never set, as the certificate: the answer says so, not "did not verify for its
   * name", so that someone checks the clock. An upstream named by an address has its
   * name checked only after the handshake (handshake_done): a certificate without its
   * IP SAN is another host's, whatever its dates. */
  if (t->scr.screen == SCREEN_OK && flags != 0 && flags != (uint32_t)-1 &&
      (flags & ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)) == 0) {
    if (t->check_ip && !t->leaf_ip_san) {
      size_t n = strlen(info);

      snprintf(info + n, sizeof(info) - n, "; and it has no IP address SAN for %s",
               c->name);
    } else {
      dates = 1;
      reason = (flags & MBEDTLS_X509_BADCERT_FUTURE) ? "upstream_certificate_not_yet_valid"
                                                     : "upstream_certificate_expired";
    }
  }
  if (proxy_log_nth(++c->sb->tls_up_failed))
    log_info("sandbox %s conn %llu: upstream TLS with %s failed: %s%s%s%s; nothing was "
             "sent (%llu such failures in this sandbox)", c->sb->name,
             (unsigned long long)c->id, c->name, msg, info[0] ? ": " : "", info,
             dates ? " by this host's clock (if the certificate is current, check the clock)"
                   : "",
             (unsigned long long)c->sb->tls_up_failed);
  client_done(c, t, -EPROTO, reason);
}

void proxy_tls_on_read(struct proxy_end *e, const char *data, size_t len)
{
  struct proxy_conn *c = e->conn;
  struct proxy_tls *t = e->tls;
  char *plain = c->sb->ctx->plain_buf;
  int r;

  t->rx = (const unsigned char *)data;
  t->rx_len = len;
  if (!t->handshake_done) {
    r = mbedtls_ssl_handshake(&t->ssl);
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
      goto out;
    if (r != 0) {
      handshake_failed(c, t, r);
      goto out;
    }
    handshake_done(c, t);
  }
  /* Not past the end's close: a lingering close (proxy_conn_linger) closes the
   * upstream from inside this loop once its answer is whole, and what follows in the
   * same read (its close_notify) is no longer the connection's. Passed on, that end
   * closed the connection at once, and the answer still queued toward the sandbox
   * was cancelled. */
  while (c->state != CONN_CLOSING && e->tls == t && e->open) {
    size_t before = t->rx_len;

    t->reading = 1;
    r = mbedtls_ssl_read(&t->ssl, (unsigned char *)plain, PLAIN_BUF_SIZE);
    t->reading = 0;
    if (r > 0) {
      proxy_conn_on_data(c, e, plain, (size_t)r);
      continue;
    }
    /* mbedTLS also says WANT_READ after a record that carried no data (a warning
     * alert, a renegotiation it refused) while more records wait in the buffer:
     * only an empty buffer ends the loop, or they would be dropped with it. Such a
     * call consumes at least a record header; one that took nothing ends the loop,
     * which runs for every sandbox. */
    if (r == MBEDTLS_ERR_SSL_WANT_READ && t->rx_len > 0 && t->rx_len < before)
      continue;
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
      break;
    if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
      t->close_notified = r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY;
      e->eof = 1;
      proxy_end_want_read(e, 0);
      proxy_conn_on_eof(c, e, UV_EOF);
      break;
    }
    if (t->refused > RENEGOTIATIONS_REFUSED_MAX) {
      log_debug("conn %llu: the %s asked to renegotiate again after %u refusals; closing",
                (unsigned long long)c->id, e == &c->down ? "sandbox" : "upstream",
                RENEGOTIATIONS_REFUSED_MAX);
      proxy_conn_close(c, 1, e == &c->down ? "sandbox_tls_renegotiation"
                                           : "upstream_tls_renegotiation");
      break;
    }
    {
      char msg[160];

      tls_error(r, msg, sizeof(msg));
      log_debug("conn %llu: TLS read from %s: %s", (unsigned long long)c->id,
                e == &c->down ? "sandbox" : "upstream", msg);
    }
    /* A fatal alert or a bad record from the upstream in the middle of an answer
     * whose framing shows the cut: as for a reset, what the sandbox is owed up to
     * there still reaches it (closing now would cancel the write queue). */
    if (e == &c->up && proxy_http_on_up_cut(c, "upstream_tls_error") == 0)
      break;
    proxy_conn_close(c, 1, e == &c->down ? "sandbox_tls_error" : "upstream_tls_error");
    break;
  }
out:
  /* A callback may have handed the session to another end (the pool) or freed it
   * (the upstream closed): then it is no longer this end's to touch. */
  if (e->tls == t) {
    t->rx = NULL;
    t->rx_len = 0;
  }
}

void proxy_tls_on_eof(struct proxy_end *e)
{
  struct proxy_conn *c = e->conn;
  struct proxy_tls *t = e->tls;

  if (!t->handshake_done) {
    if (t->server)
      proxy_conn_close(c, 1, "sandbox_closed");
    else
      client_done(c, t, -ECONNRESET, "upstream_tls_failed");
    return;
  }
  proxy_conn_on_eof(c, e, UV_EOF);
}

int proxy_tls_write(struct proxy_end *e, const uv_buf_t *bufs, unsigned nbufs)
{
  struct proxy_tls *t = e->tls;
  unsigned i;

  if (!t->handshake_done)
    return UV_ENOTCONN;
  for (i = 0; i < nbufs; i++) {
    const unsigned char *p = (const unsigned char *)bufs[i].base;
    size_t len = bufs[i].len;

    while (len > 0) {
      int r = mbedtls_ssl_write(&t->ssl, p, len);

      if (r <= 0)
        return UV_EPIPE;
      p += r;
      len -= (size_t)r;
    }
  }
  return 0;
}

void proxy_tls_close_notify(struct proxy_end *e)
{
  struct proxy_tls *t = e->tls;

  if (t != NULL && t->handshake_done)
    mbedtls_ssl_close_notify(&t->ssl);
}

/*
 * The sandbox CA's nameConstraints do not cover the name: a leaf for it would fail
 * the client's verification with a certificate error that names nothing, so the
 * connection is refused here, with one log line that names the host and the fix. A
 * denied connection keeps its own reason; it only loses its 403 page.
 */
static void outside_name_constraints(struct proxy_conn *c, const char *name, int is_ip)
{
  struct proxy_sandbox *sb = c->sb;
  char why[384];

  if (proxy_ca_check_name(sb->ca, name, is_ip, why, sizeof(why)) != -EPERM)
    snprintf(why, sizeof(why), "%s is outside them", name);
  /* A client retrying in a loop must not fill the log: the first refusal is logged,
   * then the 10th, 100th and every 1000th, with the count. */
  if (c->action == RULES_DENY) {
    log_debug("sandbox %s: %s is denied; no 403 inside TLS, since the sandbox CA's "
              "nameConstraints do not cover it: %s",
              sb->name, name, why);
  } else if (proxy_log_nth(++sb->nc_refused)) {
    log_warn("sandbox %s: connection to %s refused (outside_ca_name_constraints): the "
             "sandbox CA's nameConstraints do not cover it (%s), so clients would "
             "reject any certificate for it; reissue the CA with constraints that "
             "include it, or list it in no_proxy so it is tunnelled without "
             "interception (%llu such refusals in this sandbox)",
             sb->name, name, why, (unsigned long long)sb->nc_refused);
  }
  proxy_conn_close(c, 1, "outside_ca_name_constraints");
}

void proxy_tls_intercept(struct proxy_conn *c)
{
  struct proxy_sandbox *sb = c->sb;
  struct proxy_leaf *leaf = NULL;
  mbedtls_ssl_config *conf;
  struct proxy_tls *t;
  char ip[INET6_ADDRSTRLEN];
  const char *name;
  char *hello;
  size_t hello_len;
  int is_ip, r;

  if (sb->ca == NULL) {
    proxy_conn_close(c, 1, c->reason ? c->reason : "interception_unavailable");
    return;
  }
  if (c->name_src != NAME_NONE) {
    name = c->name;
    is_ip = proxy_conn_name_is_ip(c);
  } else {
    /* An address-only flow: the address is its name from now on (Host must match). */
    uv_ip_name((const struct sockaddr *)&c->dst, ip, sizeof(ip));
    snprintf(c->name, sizeof(c->name), "%s", ip);
    c->name_src = NAME_ADDR;
    name = c->name;
    is_ip = 1;
  }
  r = proxy_ca_leaf(sb->ca, name, is_ip, &leaf);
  if (r == -EPERM) {
    outside_name_constraints(c, name, is_ip);
    return;
  }
  if (r == -EAGAIN) {
    struct proxy_ca_stats cs;

    /* New names faster than the CA's signing budget allows: refused before any
     * signature; the log shows the 1st, 10th, 100th and every 1000th. */
    proxy_ca_stats(sb->ca, &cs);
    if (proxy_log_nth(cs.limited))
      log_warn("sandbox %s: connection to %s refused (certificate_rate_limited): the "
               "sandbox asks for certificates for new names faster than its CA may "
               "sign them (%llu such refusals in this sandbox)",
               sb->name, name, (unsigned long long)cs.limited);
    proxy_conn_close(c, 1, "certificate_rate_limited");
    return;
  }
  if (r == -EKEYEXPIRED) {
    struct proxy_ca_stats cs;

    /* Every new name (a cached leaf never outlives the CA) until the CA is replaced:
     * the log shows the 1st, 10th, 100th and every 1000th. */
    proxy_ca_stats(sb->ca, &cs);
    if (proxy_log_nth(cs.expired))
      log_warn("sandbox %s: connection to %s refused (certificate_unavailable): the "
               "sandbox CA has expired by this host's clock (set the clock right if it "
               "is wrong; otherwise the sandbox needs a new CA) (%llu such refusals in "
               "this sandbox)",
               sb->name, name, (unsigned long long)cs.expired);
    proxy_conn_close(c, 1, "certificate_unavailable");
    return;
  }
  if (r != 0) {
    log_warn("sandbox %s: cannot mint a certificate for %s: %s", sb->name, name,
             strerror(-r));
    proxy_conn_close(c, 1, "certificate_unavailable");
    return;
  }
  conf = leaf_conf(sb, leaf);
  t = conf ? tls_new(&c->down, conf) : NULL;
  if (t == NULL) {
    proxy_leaf_unref(leaf);
    proxy_conn_close(c, 1, "out_of_memory");
    return;
  }
  t->server = 1;
  t->leaf = leaf;
  c->down.tls = t;
  if (c->action != RULES_DENY)
    c->intercept_tls = 1;
  c->state = CONN_TLS_DOWN;
  proxy_conn_arm_timer(c, sb->limits.handshake_ms);
  /* The ClientHello the sniffer read is the start of the TLS stream. */
  hello = c->pending;
  hello_len = c->pending_len;
  c->pending = NULL;
  c->pending_len = 0;
  c->pending_cap = 0;
  proxy_tls_on_read(&c->down, hello, hello_len);
  free(hello);
  proxy_end_want_read(&c->down, 1);
}

void proxy_tls_client_start(struct proxy_conn *c, client_cb cb)
{
  struct proxy_upstream_tls *u = c->sb->ctx->upstream_tls;
  struct session_entry *s;
  struct proxy_tls *t;
  char key[sizeof(s->key)];
  int r;

  if (u == NULL) {
    cb(c, -ENOTSUP, "upstream_tls_failed");
    return;
  }
  t = tls_new(&c->up, &u->conf);
  if (t == NULL) {
    cb(c, -ENOMEM, "out_of_memory");
    return;
  }
  t->cb = cb;
  c->up.tls = t;
  if (proxy_conn_name_is_ip(c)) {
    /* mbedTLS 2.28 matches names only against dNSName SANs: check the address
     * ourselves after the handshake, before anything is sent. */
    t->check_ip = 1;
    t->chain = &u->chain;
    mbedtls_ssl_set_verify(&t->ssl, ip_chain_verify, t);
    r = mbedtls_ssl_set_hostname(&t->ssl, NULL);
  } else {
    r = mbedtls_ssl_set_hostname(&t->ssl, c->name);
  }
  if (r != 0) {
    client_done(c, t, -EINVAL, "upstream_tls_failed");
    return;
  }
  snprintf(key, sizeof(key), "%s:%u", c->name, c->port);
  s = session_find(u, c->sb->serial, key, 0);
  if (s != NULL && s->valid) {
    s->used = ++u->clock;
    mbedtls_ssl_set_session(&t->ssl, &s->session);
  }
  proxy_end_want_read(&c->up, 1);
  r = mbedtls_ssl_handshake(&t->ssl);
  if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE)
    handshake_failed(c, t, r);
}
