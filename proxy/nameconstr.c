/*
 * nameConstraints (RFC 5280 4.2.1.10) for the CA that mints our leaves.
 *
 *   NameConstraints ::= SEQUENCE {
 *        permittedSubtrees       [0]     GeneralSubtrees OPTIONAL,
 *        excludedSubtrees        [1]     GeneralSubtrees OPTIONAL }
 *   GeneralSubtrees ::= SEQUENCE SIZE (1..MAX) OF GeneralSubtree
 *   GeneralSubtree ::= SEQUENCE {
 *        base                    GeneralName,
 *        minimum         [0]     BaseDistance DEFAULT 0,
 *        maximum         [1]     BaseDistance OPTIONAL }
 *
 * The module is IMPLICIT: [0] and [1] replace the SEQUENCE tag of GeneralSubtrees,
 * and each GeneralName carries its CHOICE tag, [4] directoryName wrapping a whole
 * Name because Name is itself a CHOICE.
 *
 * Our leaves carry three name forms (proxy/ca.c): a dNSName and a subject CN=name
 * for a host name, an iPAddress and an empty subject for an address. RFC 5280
 * applies a constraint of a form only to names of that form in the certificate
 * ("Restrictions apply only when the specified name form is present"; directoryName
 * ones to the subject "when the certificate includes a non-empty subject field"), so
 * the rfc822Name, URI, otherName, x400Address, ediPartyName and registeredID
 * subtrees a CA may carry are parsed and kept but never bind a leaf of ours: the
 * emailAddress attribute an rfc822Name constraint would reach is not in our subjects
 * either.
 *
 * Matching follows RFC 5280 and, where it is silent, what OpenSSL 3 and Go do:
 * - dNSName: "example.com" is within itself and any name made by adding labels on
 *   the left; a leading dot (".example.com", common practice, not in RFC 5280)
 *   keeps the subdomains only; an empty constraint holds every name; ASCII case is
 *   ignored.
 * - iPAddress: address and mask, 4+4 or 16+16 bytes; an address is within when it
 *   has the same length and agrees on the masked bits.
 * - directoryName: the constraint's RDNs must begin the subject's. Ours is one RDN,
 *   CN=name, so only the empty Name or that exact RDN holds it, values compared as
 *   OpenSSL compares them (converted from their string type, surrounding spaces
 *   trimmed, ASCII case ignored).
 *
 * An upstream's chain (proxy/tls.c) is held to its CAs' constraints too, and its
 * subjects are any Names: proxy_nc_check_subject compares them RDN by RDN as OpenSSL
 * 3 compares canonical encodings.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <mbedtls/asn1.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform.h>
#include <mbedtls/x509.h>

#include "proxy/nameconstr.h"
#include "proxy/utf8.h"

#define TAG_SEQUENCE (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)
#define TAG_SET (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SET)
#define TAG_SUBTREES(n) (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | (n))
#define FORMS 9
#define NUMERIC_STRING 0x12 /* not among mbedTLS's tag macros */
#define DN_TEXT_MAX 512
#define OID_TEXT_MAX 128
#define DNS_SHOWN_MAX 64 /* bytes of a malformed dNSName quoted in an error */

struct nc_subtree {
  unsigned char *base; /* the GeneralName's contents, inside proxy_nc.der */
  size_t len;
  unsigned char form;
  unsigned char excluded;
};

struct proxy_nc {
  unsigned char *der; /* our copy of the extension value */
  size_t count;
  unsigned forms;
  struct nc_subtree subtrees[];
};

/* Whether each form's GeneralName is constructed: the tag must say so exactly. */
static const struct {
  const char *name;
  int constructed;
} form_info[FORMS] = {
  { "otherName", 1 },     { "rfc822Name", 0 },    { "dNSName", 0 },
  { "x400Address", 1 },   { "directoryName", 1 }, { "ediPartyName", 1 },
  { "uniformResourceIdentifier", 0 }, { "iPAddress", 0 }, { "registeredID", 0 },
};

const char *proxy_nc_form_name(enum proxy_nc_form form)
{
  return (unsigned)form < FORMS ? form_info[form].name : "unknown GeneralName";
}

/* ---- bounded text -------------------------------------------------------- */

/* Appends to a fixed buffer; what does not fit is cut and marked with "...". */
struct text {
  char *buf;
  size_t size, used;
  int cut;
};

static void text_init(struct text *t, char *buf, size_t size)
{
  t->buf = buf;
  t->size = size;
  t->used = 0;
  t->cut = 0;
  if (size > 0)
    buf[0] = '\0';
}

static void text_addf(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void text_addf(struct text *t, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (t->size == 0 || t->cut)
    return;
  va_start(ap, fmt);
  n = vsnprintf(t->buf + t->used, t->size - t->used, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= t->size - t->used) {
    t->used = t->size - 1;
    t->cut = 1;
    if (t->size >= 4)
      memcpy(t->buf + t->size - 4, "...", 4);
    return;
  }
  t->used += (size_t)n;
}

/* An IA5String for a log line: bytes that are not printable as \xNN. */
static void add_escaped(struct text *t, const unsigned char *b, size_t len)
{
  size_t i;

  for (i = 0; i < len; i++) {
    if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
      text_addf(t, "%c", b[i]);
    else
      text_addf(t, "\\x%02x", b[i]);
  }
}

/* ---- bases --------------------------------------------------------------- */

static int is_space(unsigned c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static unsigned char lower(unsigned char c)
{
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/*
 * A dNSName constraint: empty (every name), or a domain with an optional leading
 * dot whose labels are non-empty runs of printable ASCII other than space, with no
 * trailing dot. Go refuses a CA whose constraints break this, and "." alone means
 * "every name" to Go but "names ending in a dot", that is none, to OpenSSL.
 */
static const char *dns_base_error(const unsigned char *b, size_t len)
{
  size_t i = 0, label = 0;

  if (len == 0)
    return NULL;
  if (b[0] == '.')
    i = 1;
  if (i == len)
    return "is a lone dot";
  for (; i < len; i++) {
    if (b[i] == '.') {
      if (label == 0)
        return "has an empty label";
      label = 0;
    } else if (b[i] < 0x21 || b[i] > 0x7e) {
      return "has a space or a byte that is not printable ASCII";
    } else {
      label++;
    }
  }
  return label == 0 ? "ends with a dot" : NULL;
}

/* An IA5String (rfc822Name, URI): seven-bit bytes. */
static int ia5_ok(const unsigned char *b, size_t len)
{
  size_t i;

  for (i = 0; i < len; i++)
    if (b[i] > 0x7f)
      return 0;
  return 1;
}

/* The prefix length of a contiguous mask, or -1 when its ones are not contiguous. */
static int mask_prefix(const unsigned char *mask, size_t len)
{
  size_t i;
  int bits = 0, zero_seen = 0, b;

  for (i = 0; i < len; i++) {
    for (b = 7; b >= 0; b--) {
      if (mask[i] & (1u << b)) {
        if (zero_seen)
          return -1;
        bits++;
      } else {
        zero_seen = 1;
      }
    }
  }
  return bits;
}

/*
 * Whether b holds the contents of an OBJECT IDENTIFIER as OpenSSL decodes one: not
 * empty, no subidentifier starting with a 0x80 byte, the last one complete.
 */
static int oid_ok(const unsigned char *b, size_t len)
{
  size_t i;

  if (len == 0 || (b[len - 1] & 0x80) != 0)
    return 0;
  for (i = 0; i < len; i++)
    if (b[i] == 0x80 && (i == 0 || (b[i - 1] & 0x80) == 0))
      return 0;
  return 1;
}

/* A Unicode scalar value: at most U+10FFFF, not a surrogate. */
static int scalar_ok(unsigned long c)
{
  return c <= 0x10ffff && (c < 0xd800 || c > 0xdfff);
}

/*
 * Whether an attribute value of a directoryName decodes as OpenSSL 3 decodes it. A
 * Name whose value does not (a VisibleString, an INTEGER, a constructed string, a
 * BMPString of odd length, UTF-8 OpenSSL refuses...) makes OpenSSL's decoding of the
 * whole extension fail, and it then rejects every certificate the CA issues. The
 * string types below are those Names use; OpenSSL also takes a few others (BIT
 * STRING, SEQUENCE) that no Name of a CA needs, refused here as well.
 */
static int value_ok(int tag, const unsigned char *v, size_t len)
{
  size_t i, n;
  uint32_t cp;

  switch (tag) {
  case MBEDTLS_ASN1_PRINTABLE_STRING:
  case MBEDTLS_ASN1_T61_STRING:
  case MBEDTLS_ASN1_IA5_STRING:
  case NUMERIC_STRING:
    return 1; /* one byte a character, any byte */
  case MBEDTLS_ASN1_UTF8_STRING:
    for (i = 0; i < len; i += n) {
      n = proxy_utf8_seq(v + i, len - i, &cp);
      if (n == 0)
        return 0;
    }
    return 1;
  case MBEDTLS_ASN1_BMP_STRING:
    if (len % 2 != 0)
      return 0;
    for (i = 0; i < len; i += 2)
      if (!scalar_ok((unsigned long)v[i] << 8 | v[i + 1]))
        return 0;
    return 1;
  case MBEDTLS_ASN1_UNIVERSAL_STRING:
    if (len % 4 != 0)
      return 0;
    for (i = 0; i < len; i += 4)
      if (!scalar_ok((unsigned long)v[i] << 24 | (unsigned long)v[i + 1] << 16 |
                     (unsigned long)v[i + 2] << 8 | v[i + 3]))
        return 0;
    return 1;
  default:
    return 0;
  }
}

/*
 * Compares a directoryName attribute value with our CN the way OpenSSL's canonical
 * encoding does: strings of any of the types below converted to characters, spaces
 * around them dropped, ASCII case folded. Our CN is lowercase LDH, with no space
 * and nothing beyond ASCII, so a value with a space inside or a character beyond
 * ASCII differs from it, as does a value of any other type.
 */
static int value_is_cn(int tag, const unsigned char *v, size_t len, const char *cn,
                       size_t cn_len)
{
  size_t unit, n, i, k = 0;

  switch (tag) {
  case MBEDTLS_ASN1_UTF8_STRING:
  case MBEDTLS_ASN1_PRINTABLE_STRING:
  case MBEDTLS_ASN1_T61_STRING:
  case MBEDTLS_ASN1_IA5_STRING:
    unit = 1;
    break;
  case MBEDTLS_ASN1_BMP_STRING:
    unit = 2;
    break;
  case MBEDTLS_ASN1_UNIVERSAL_STRING:
    unit = 4;
    break;
  default:
    return 0;
  }
  if (cn == NULL || len % unit != 0)
    return 0;
  n = len / unit;
  for (i = 0; i < n; i++) {
    const unsigned char *u = v + i * unit;
    unsigned c = u[unit - 1];
    size_t j;

    for (j = 0; j + 1 < unit; j++)
      if (u[j] != 0)
        return 0; /* beyond U+00FF: not ASCII */
    if (c > 0x7f)
      return 0;
    if (is_space(c) && (k == 0 || k == cn_len))
      continue; /* leading or trailing */
    if (k == cn_len || lower((unsigned char)c) != (unsigned char)cn[k])
      return 0;
    k++;
  }
  return k == cn_len;
}

/*
 * Walks a directoryName's Name (RFC 5280 4.1.2.4: a SEQUENCE of non-empty SETs of
 * SEQUENCE { OID, value }). Returns -EINVAL when it is not one, -EILSEQ when an
 * attribute type or value is one OpenSSL cannot decode (value_ok), else 1 when the
 * subject CN=cn (one RDN; cn NULL: none) is within it, 0 when not.
 */
static int dn_within(unsigned char *p, const unsigned char *end, const char *cn,
                     size_t cn_len)
{
  size_t len, rdns = 0, first_atvs = 0;
  int first_is_cn = 0;

  if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SEQUENCE) != 0 || p + len != end)
    return -EINVAL;
  while (p < end) {
    unsigned char *rdn_end;
    size_t atvs = 0;

    if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SET) != 0 || len == 0)
      return -EINVAL;
    rdn_end = p + len;
    while (p < rdn_end) {
      unsigned char *atv_end, *oid;
      size_t oid_len;
      int tag;

      if (mbedtls_asn1_get_tag(&p, rdn_end, &len, TAG_SEQUENCE) != 0)
        return -EINVAL;
      atv_end = p + len;
      if (mbedtls_asn1_get_tag(&p, atv_end, &oid_len, MBEDTLS_ASN1_OID) != 0 ||
          oid_len == 0)
        return -EINVAL;
      oid = p;
      p += oid_len;
      if (p >= atv_end)
        return -EINVAL;
      tag = *p++;
      /* Attribute values are universal types; a high tag number is nothing we know. */
      if ((tag & 0x1f) == 0x1f || mbedtls_asn1_get_len(&p, atv_end, &len) != 0 ||
          p + len != atv_end)
        return -EINVAL;
      if (!oid_ok(oid, oid_len) || !value_ok(tag, p, len))
        return -EILSEQ;
      if (rdns == 0 && atvs == 0)
        first_is_cn = oid_len == MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN) &&
                      memcmp(oid, MBEDTLS_OID_AT_CN, oid_len) == 0 &&
                      value_is_cn(tag, p, len, cn, cn_len);
      p = atv_end;
      atvs++;
    }
    if (rdns == 0)
      first_atvs = atvs;
    rdns++;
  }
  if (rdns == 0)
    return 1; /* the empty Name: the root of every subtree */
  return rdns == 1 && first_atvs == 1 && first_is_cn;
}

/* ---- directoryName subtrees against a whole subject (upstream chains) ------ */

/* One attribute of a Name: its type's OID and its value's tag and contents. */
struct ava {
  const unsigned char *oid;
  size_t oid_len;
  int tag;
  const unsigned char *v;
  size_t len;
};

/*
 * Reads the AttributeTypeAndValue at *p (within an RDN ending at end) into a, as
 * dn_within reads those of a constraint. Returns 0, -EINVAL when it is not one,
 * -EILSEQ when its type or value is one OpenSSL cannot decode.
 */
static int ava_read(unsigned char **p, const unsigned char *end, struct ava *a)
{
  unsigned char *atv_end;
  size_t len;

  if (mbedtls_asn1_get_tag(p, end, &len, TAG_SEQUENCE) != 0)
    return -EINVAL;
  atv_end = *p + len;
  if (mbedtls_asn1_get_tag(p, atv_end, &a->oid_len, MBEDTLS_ASN1_OID) != 0 ||
      a->oid_len == 0)
    return -EINVAL;
  a->oid = *p;
  *p += a->oid_len;
  if (*p >= atv_end)
    return -EINVAL;
  a->tag = *(*p)++;
  if ((a->tag & 0x1f) == 0x1f || mbedtls_asn1_get_len(p, atv_end, &a->len) != 0 ||
      *p + a->len != atv_end)
    return -EINVAL;
  a->v = *p;
  *p = atv_end;
  if (!oid_ok(a->oid, a->oid_len) || !value_ok(a->tag, a->v, a->len))
    return -EILSEQ;
  return 0;
}

/*
 * Attributes in one RDN of a subject compared with directoryName subtrees. rdn_equal
 * costs their number squared, and an upstream's leaf is the server's to write (about
 * 1,600 attributes fit a 16 KiB certificate); real multi-valued RDNs hold two or three.
 */
#define RDN_MAX_ATTRS 16

/*
 * Walks a whole Name (SEQUENCE included, exactly filling p..end). Returns its number
 * of RDNs, -EINVAL when it is not a DER Name, -EILSEQ when an attribute is one
 * OpenSSL cannot decode, -E2BIG when an RDN holds more than RDN_MAX_ATTRS.
 */
static int name_rdns(unsigned char *p, const unsigned char *end)
{
  size_t len, attrs;
  int rdns = 0, r;

  if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SEQUENCE) != 0 || p + len != end)
    return -EINVAL;
  while (p < end) {
    unsigned char *rdn_end;
    struct ava a;

    if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SET) != 0 || len == 0)
      return -EINVAL;
    rdn_end = p + len;
    for (attrs = 0; p < rdn_end; attrs++) {
      if (attrs == RDN_MAX_ATTRS)
        return -E2BIG;
      r = ava_read(&p, rdn_end, &a);
      if (r != 0)
        return r;
    }
    if (rdns == INT_MAX)
      return -EINVAL;
    rdns++;
  }
  return rdns;
}

/*
 * An attribute value as OpenSSL 3 reads it to compare Names (x509_name_canon and
 * asn1_string_canon in crypto/x509/x_name.c): a UTF8String, BMPString,
 * UniversalString, PrintableString, TeletexString or IA5String becomes characters
 * (the last three one byte a character, as OpenSSL converts them: Latin-1), spaces
 * around them dropped, each run of spaces inside one ' ', ASCII letters lowercase.
 * canon_next gives the characters one at a time.
 */
struct canon {
  const unsigned char *p, *end; /* what is left, the surrounding spaces cut off */
  size_t unit;                  /* bytes a character; 0 for UTF-8 */
};

static int canon_type(int tag)
{
  return tag == MBEDTLS_ASN1_UTF8_STRING || tag == MBEDTLS_ASN1_BMP_STRING ||
         tag == MBEDTLS_ASN1_UNIVERSAL_STRING || tag == MBEDTLS_ASN1_PRINTABLE_STRING ||
         tag == MBEDTLS_ASN1_T61_STRING || tag == MBEDTLS_ASN1_IA5_STRING;
}

/* The character at p, before end, and the bytes it takes (value_ok passed: at least 1). */
static size_t canon_char(const struct canon *c, const unsigned char *p,
                         const unsigned char *end, uint32_t *cp)
{
  size_t i;

  if (c->unit == 0)
    return proxy_utf8_seq(p, (size_t)(end - p), cp);
  *cp = 0;
  for (i = 0; i < c->unit; i++)
    *cp = *cp << 8 | p[i];
  return c->unit;
}

static void canon_init(struct canon *c, int tag, const unsigned char *v, size_t len)
{
  const unsigned char *p = v, *end = v + len, *first = NULL, *last = NULL;
  uint32_t cp;
  size_t n;

  c->unit = tag == MBEDTLS_ASN1_UTF8_STRING        ? 0
            : tag == MBEDTLS_ASN1_BMP_STRING       ? 2
            : tag == MBEDTLS_ASN1_UNIVERSAL_STRING ? 4
                                                   : 1;
  for (; p < end; p += n) {
    n = canon_char(c, p, end, &cp);
    if (n == 0)
      break; /* not reached: value_ok checked the value */
    if (!is_space(cp)) {
      if (first == NULL)
        first = p;
      last = p + n;
    }
  }
  c->p = first != NULL ? first : end;
  c->end = first != NULL ? last : end;
}

/* The next character, or -1 at the end. */
static long canon_next(struct canon *c)
{
  uint32_t cp, next;
  size_t n;

  if (c->p >= c->end)
    return -1;
  n = canon_char(c, c->p, c->end, &cp);
  if (n == 0)
    return -1;
  c->p += n;
  if (!is_space(cp))
    return cp < 0x80 ? lower((unsigned char)cp) : (long)cp;
  /* A run of spaces inside the value (never at its end: c->end follows a character
   * that is not one). */
  while (c->p < c->end) {
    n = canon_char(c, c->p, c->end, &next);
    if (n == 0 || !is_space(next))
      break;
    c->p += n;
  }
  return ' ';
}

/* Whether two attributes are the same in OpenSSL's canonical form: the same type,
 * and values of the string types above equal as characters, other values (a
 * NumericString) the same type and bytes, since OpenSSL copies those as they are. */
static int ava_equal(const struct ava *a, const struct ava *b)
{
  struct canon ca, cb;
  long x, y;

  if (a->oid_len != b->oid_len || memcmp(a->oid, b->oid, a->oid_len) != 0)
    return 0;
  if (!canon_type(a->tag) || !canon_type(b->tag))
    return a->tag == b->tag && a->len == b->len && memcmp(a->v, b->v, a->len) == 0;
  canon_init(&ca, a->tag, a->v, a->len);
  canon_init(&cb, b->tag, b->v, b->len);
  do {
    x = canon_next(&ca);
    y = canon_next(&cb);
    if (x != y)
      return 0;
  } while (x >= 0);
  return 1;
}

/* How many attributes of the RDN p..end (checked by name_rdns) equal a. */
static size_t ava_count(unsigned char *p, const unsigned char *end, const struct ava *a)
{
  struct ava b;
  size_t n = 0;

  while (p < end && ava_read(&p, end, &b) == 0)
    n += ava_equal(a, &b);
  return n;
}

/*
 * Whether two RDNs (contents of their SETs, checked by name_rdns) are equal as
 * OpenSSL compares them: it encodes each RDN as a DER SET OF, which sorts the
 * attributes, so a multi-valued RDN equals another holding the same attributes in
 * any order, each as many times.
 */
static int rdn_equal(unsigned char *a, const unsigned char *a_end, unsigned char *b,
                     const unsigned char *b_end)
{
  unsigned char *p = a;
  struct ava x;
  size_t na = 0, nb = 0;

  while (p < a_end && ava_read(&p, a_end, &x) == 0)
    na++;
  p = b;
  while (p < b_end && ava_read(&p, b_end, &x) == 0)
    nb++;
  if (na != nb)
    return 0;
  p = a;
  while (p < a_end && ava_read(&p, a_end, &x) == 0)
    if (ava_count(a, a_end, &x) != ava_count(b, b_end, &x))
      return 0;
  return 1;
}

/*
 * Whether the subject Name s..s_end is within the directoryName subtree Name
 * b..b_end (both checked by name_rdns): the subtree's RDNs begin the subject's
 * (RFC 5280 4.2.1.10), as OpenSSL 3's nc_dn finds the canonical encoding of the
 * subtree to begin the subject's.
 */
static int name_prefix(unsigned char *b, const unsigned char *b_end, unsigned char *s,
                       const unsigned char *s_end)
{
  size_t len, s_len;

  if (mbedtls_asn1_get_tag(&b, b_end, &len, TAG_SEQUENCE) != 0 ||
      mbedtls_asn1_get_tag(&s, s_end, &len, TAG_SEQUENCE) != 0)
    return 0;
  while (b < b_end) {
    if (s >= s_end || mbedtls_asn1_get_tag(&b, b_end, &len, TAG_SET) != 0 ||
        mbedtls_asn1_get_tag(&s, s_end, &s_len, TAG_SET) != 0 ||
        !rdn_equal(b, b + len, s, s + s_len))
      return 0;
    b += len;
    s += s_len;
  }
  return 1;
}

static int dns_within(const char *name, const unsigned char *b, size_t blen)
{
  size_t nlen = strlen(name), i;
  const char *tail;

  if (blen == 0)
    return 1;
  if (nlen < blen)
    return 0;
  tail = name + nlen - blen;
  /* "example.com" holds the name itself and names ending in ".example.com";
   * ".example.com" only the latter, since a canonical name never starts with a dot. */
  if (b[0] != '.' && nlen > blen && tail[-1] != '.')
    return 0;
  for (i = 0; i < blen; i++)
    if (lower((unsigned char)tail[i]) != lower(b[i]))
      return 0;
  return 1;
}

/*
 * Whether a wildcard dNSName "*.D" (an upstream's leaf may carry one; ours never do)
 * matches a name within the dNSName subtree b that it is not within as a string: b is
 * D with one label added, a name the wildcard matches (Chrome's partial match for
 * excluded subtrees). A leading-dot b holds only names deeper than it, which the
 * wildcard matches only when it is within b already.
 */
static int wildcard_meets(const char *name, const unsigned char *b, size_t blen)
{
  const unsigned char *dot;
  size_t i, dlen;

  if (name[0] != '*' || name[1] != '.' || blen == 0 || b[0] == '.')
    return 0;
  dot = memchr(b, '.', blen);
  if (dot == NULL)
    return 0;
  dlen = blen - (size_t)(dot + 1 - b);
  if (strlen(name + 2) != dlen)
    return 0;
  for (i = 0; i < dlen; i++)
    if (lower((unsigned char)name[2 + i]) != lower(dot[1 + i]))
      return 0;
  return 1;
}

static int ip_within(const unsigned char *ip, size_t ip_len, const unsigned char *b,
                     size_t blen)
{
  size_t i;

  if (blen != 2 * ip_len)
    return 0;
  for (i = 0; i < ip_len; i++)
    if ((ip[i] & b[ip_len + i]) != (b[i] & b[ip_len + i]))
      return 0;
  return 1;
}

/* ---- parsing ------------------------------------------------------------- */

static int parse_error(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int parse_error(char *err, size_t err_size, const char *fmt, ...)
{
  va_list ap;

  if (err_size > 0) {
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
  }
  return -EINVAL;
}

/* One TLV of tag (any tag when tag is -1) exactly filling *p..end; its value in *v. */
static int one_tlv(unsigned char *p, const unsigned char *end, int tag, unsigned char **v,
                   size_t *len)
{
  if (p >= end || (tag >= 0 && *p != tag) || (*p & 0x1f) == 0x1f)
    return 0;
  p++;
  if (mbedtls_asn1_get_len(&p, end, len) != 0 || p + *len != end)
    return 0;
  *v = p;
  return 1;
}

/* otherName: SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY }. */
static int other_name_ok(unsigned char *p, const unsigned char *end)
{
  unsigned char *v;
  size_t len;

  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_OID) != 0 || !oid_ok(p, len))
    return 0;
  p += len;
  return one_tlv(p, end, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED, &v,
                 &len) &&
         one_tlv(v, v + len, -1, &v, &len);
}

/* ediPartyName: SEQUENCE { nameAssigner [0] DirectoryString OPTIONAL, partyName [1]
 * DirectoryString }, each tag EXPLICIT, DirectoryString a CHOICE of five strings
 * (checked as OpenSSL decodes them: only the lengths of BMP and UniversalStrings). */
static int edi_party_ok(unsigned char *p, const unsigned char *end)
{
  int i;

  for (i = 0; i < 2; i++) {
    int tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | i;
    unsigned char *v;
    size_t len;

    if (i == 0 && (p == end || *p != tag))
      continue;
    if (mbedtls_asn1_get_tag(&p, end, &len, tag) != 0 || len == 0 ||
        (*p != MBEDTLS_ASN1_T61_STRING && *p != MBEDTLS_ASN1_PRINTABLE_STRING &&
         *p != MBEDTLS_ASN1_UNIVERSAL_STRING && *p != MBEDTLS_ASN1_UTF8_STRING &&
         *p != MBEDTLS_ASN1_BMP_STRING) ||
        !one_tlv(p, p + len, -1, &v, &len))
      return 0;
    /* OpenSSL checks these lengths only: it never converts these strings. */
    if ((p[0] == MBEDTLS_ASN1_BMP_STRING && len % 2 != 0) ||
        (p[0] == MBEDTLS_ASN1_UNIVERSAL_STRING && len % 4 != 0))
      return 0;
    p = v + len;
  }
  return p == end;
}

/* Checks one GeneralSubtree's base by its form; NULL when it is well formed. */
static const char *base_error(int form, unsigned char *b, size_t len)
{
  switch (form) {
  case PROXY_NC_DNS_NAME:
    return dns_base_error(b, len);
  case PROXY_NC_IP_ADDRESS:
    if (len != 8 && len != 32)
      return "is not 8 bytes (IPv4 address and mask) nor 32 (IPv6)";
    if (mask_prefix(b + len / 2, len / 2) < 0)
      return "has a mask whose one bits are not contiguous";
    return NULL;
  case PROXY_NC_DIRECTORY_NAME:
    switch (dn_within(b, b + len, NULL, 0)) {
    case -EINVAL:
      return "is not a DER Name";
    case -EILSEQ:
      return "has an attribute type or value OpenSSL cannot decode (it then rejects "
             "every certificate of the CA); values must be UTF8String, "
             "PrintableString, TeletexString, IA5String, NumericString, BMPString or "
             "UniversalString, validly encoded";
    default:
      return NULL;
    }
  case PROXY_NC_RFC822_NAME:
  case PROXY_NC_URI:
    return ia5_ok(b, len) ? NULL : "has a byte beyond ASCII";
  /* Never applied to our leaves, but OpenSSL rejects every certificate of a CA
   * whose extension it cannot decode. */
  case PROXY_NC_REGISTERED_ID:
    return oid_ok(b, len) ? NULL
                          : "is not a valid OBJECT IDENTIFIER (OpenSSL cannot decode it)";
  case PROXY_NC_OTHER_NAME:
    return other_name_ok(b, b + len) ? NULL
                                     : "is not an OID and one [0] value (OpenSSL cannot "
                                       "decode it)";
  case PROXY_NC_EDI_PARTY_NAME:
    return edi_party_ok(b, b + len) ? NULL
                                    : "is not an EDIPartyName (OpenSSL cannot decode it)";
  default:
    return NULL; /* never applied to our leaves; only its framing matters */
  }
}

static int parse_subtrees(struct proxy_nc *nc, size_t cap, unsigned char *p,
                          const unsigned char *end, int excluded, char *err,
                          size_t err_size)
{
  const char *what = excluded ? "excludedSubtrees" : "permittedSubtrees";
  size_t item = 0;

  if (p == end)
    return parse_error(err, err_size,
                       "%s is empty; RFC 5280 requires at least one GeneralSubtree",
                       what);
  while (p < end) {
    unsigned char *sub_end, *base;
    const char *bad;
    size_t len;
    int tag, form;

    item++;
    if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SEQUENCE) != 0)
      return parse_error(err, err_size, "%s item %zu is not a GeneralSubtree", what,
                         item);
    sub_end = p + len;
    if (p == sub_end)
      return parse_error(err, err_size, "%s item %zu has no base name", what, item);
    tag = *p++;
    form = tag & 0x1f;
    if ((tag & 0xc0) != MBEDTLS_ASN1_CONTEXT_SPECIFIC || form >= FORMS)
      return parse_error(err, err_size, "%s item %zu: tag 0x%02x is not a GeneralName",
                         what, item, (unsigned)tag);
    if (((tag & MBEDTLS_ASN1_CONSTRUCTED) != 0) != form_info[form].constructed)
      return parse_error(err, err_size, "%s item %zu: the %s is %s", what, item,
                         form_info[form].name,
                         form_info[form].constructed ? "not constructed" : "constructed");
    if (mbedtls_asn1_get_len(&p, sub_end, &len) != 0)
      return parse_error(err, err_size, "%s item %zu: the %s overruns its GeneralSubtree",
                         what, item, form_info[form].name);
    base = p;
    p += len;
    if (p != sub_end && (*p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 0) ||
                         *p == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 1)))
      return parse_error(err, err_size,
                         "%s item %zu has a minimum or maximum field, which RFC 5280 "
                         "does not allow and OpenSSL rejects",
                         what, item);
    if (p != sub_end)
      return parse_error(err, err_size, "%s item %zu has trailing bytes", what, item);
    bad = base_error(form, base, len);
    if (bad != NULL && form == PROXY_NC_DNS_NAME) {
      char shown[4 * DNS_SHOWN_MAX + 4];
      struct text t;

      /* Escaped: the message goes to the log, and the bytes are not a name. */
      text_init(&t, shown, sizeof(shown));
      add_escaped(&t, base, len < DNS_SHOWN_MAX ? len : DNS_SHOWN_MAX);
      return parse_error(err, err_size, "%s item %zu: dNSName \"%s%s\" %s", what, item,
                         shown, len > DNS_SHOWN_MAX ? "..." : "", bad);
    }
    if (bad != NULL)
      return parse_error(err, err_size, "%s item %zu: the %s %s", what, item,
                         form_info[form].name, bad);
    if (nc->count == cap)
      return parse_error(err, err_size, "more than %d subtrees", PROXY_NC_MAX_SUBTREES);
    nc->subtrees[nc->count].base = base;
    nc->subtrees[nc->count].len = len;
    nc->subtrees[nc->count].form = (unsigned char)form;
    nc->subtrees[nc->count].excluded = (unsigned char)excluded;
    nc->count++;
    nc->forms |= 1u << form;
  }
  return 0;
}

int proxy_nc_parse(const unsigned char *der, size_t len, struct proxy_nc **out,
                   char *err, size_t err_size)
{
  /* Every GeneralSubtree takes at least four bytes (30 02 82 00). */
  size_t cap = len / 4 < PROXY_NC_MAX_SUBTREES ? len / 4 : PROXY_NC_MAX_SUBTREES;
  struct proxy_nc *nc;
  unsigned char *p, *end;
  size_t seq_len;
  int ret, have = 0, i;

  *out = NULL;
  if (err_size > 0)
    err[0] = '\0';
  nc = calloc(1, sizeof(*nc) + cap * sizeof(nc->subtrees[0]));
  if (nc == NULL)
    return -ENOMEM;
  nc->der = malloc(len > 0 ? len : 1);
  if (nc->der == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  if (len > 0)
    memcpy(nc->der, der, len);
  p = nc->der;
  end = p + len;
  if (mbedtls_asn1_get_tag(&p, end, &seq_len, TAG_SEQUENCE) != 0 || p + seq_len != end) {
    ret = parse_error(err, err_size, "not a DER SEQUENCE");
    goto out;
  }
  /* [0] then [1], each at most once, in that order (DER). */
  for (i = 0; i < 2; i++) {
    size_t sub_len;

    if (p == end || *p != TAG_SUBTREES(i))
      continue;
    if (mbedtls_asn1_get_tag(&p, end, &sub_len, TAG_SUBTREES(i)) != 0) {
      ret = parse_error(err, err_size, "%s overruns the extension",
                        i == 0 ? "permittedSubtrees" : "excludedSubtrees");
      goto out;
    }
    ret = parse_subtrees(nc, cap, p, p + sub_len, i, err, err_size);
    if (ret != 0)
      goto out;
    p += sub_len;
    have = 1;
  }
  if (p != end) {
    ret = parse_error(err, err_size,
                      "unexpected bytes (tag 0x%02x) where permittedSubtrees [0] or "
                      "excludedSubtrees [1] may be",
                      (unsigned)*p);
    goto out;
  }
  if (!have) {
    ret = parse_error(err, err_size,
                      "neither permittedSubtrees nor excludedSubtrees, one of which RFC "
                      "5280 requires");
    goto out;
  }
  *out = nc;
  nc = NULL;
  ret = 0;
out:
  proxy_nc_free(nc);
  return ret;
}

void proxy_nc_free(struct proxy_nc *nc)
{
  if (nc == NULL)
    return;
  free(nc->der);
  free(nc);
}

unsigned proxy_nc_forms(const struct proxy_nc *nc)
{
  return nc->forms;
}

size_t proxy_nc_count(const struct proxy_nc *nc)
{
  return nc->count;
}

/* ---- text ---------------------------------------------------------------- */

/* A DER Name (SEQUENCE included) as mbedTLS writes one, "the empty name" for none. */
static void add_dn(struct text *t, unsigned char *p, size_t der_len)
{
  const unsigned char *end = p + der_len;
  mbedtls_x509_name name, *n, *next;
  char buf[DN_TEXT_MAX];
  size_t len;

  if (mbedtls_asn1_get_tag(&p, end, &len, TAG_SEQUENCE) != 0 || len == 0) {
    text_addf(t, "the empty name");
    return;
  }
  memset(&name, 0, sizeof(name));
  if (mbedtls_x509_get_name(&p, p + len, &name) == 0 &&
      mbedtls_x509_dn_gets(buf, sizeof(buf), &name) > 0)
    text_addf(t, "%s", buf);
  else
    text_addf(t, "(a name longer than %d characters)", DN_TEXT_MAX);
  /* mbedtls_x509_get_name allocates every node after the first. */
  for (n = name.next; n != NULL; n = next) {
    next = n->next;
    mbedtls_free(n);
  }
}

static void add_subtree(struct text *t, const struct nc_subtree *s)
{
  char addr[INET6_ADDRSTRLEN];

  switch (s->form) {
  case PROXY_NC_DNS_NAME:
    /* Checked at parse time: printable ASCII, no space. */
    if (s->len == 0)
      text_addf(t, "\"\" (every name)");
    else
      text_addf(t, "%.*s", (int)s->len, (const char *)s->base);
    break;
  case PROXY_NC_IP_ADDRESS:
    if (inet_ntop(s->len == 8 ? AF_INET : AF_INET6, s->base, addr, sizeof(addr)) == NULL)
      snprintf(addr, sizeof(addr), "?");
    text_addf(t, "%s/%d", addr, mask_prefix(s->base + s->len / 2, s->len / 2));
    break;
  case PROXY_NC_DIRECTORY_NAME:
    add_dn(t, s->base, s->len);
    break;
  case PROXY_NC_RFC822_NAME:
  case PROXY_NC_URI:
    add_escaped(t, s->base, s->len);
    break;
  case PROXY_NC_REGISTERED_ID: {
    mbedtls_x509_buf oid = { .tag = MBEDTLS_ASN1_OID, .len = s->len, .p = s->base };
    char dotted[OID_TEXT_MAX];

    if (mbedtls_oid_get_numeric_string(dotted, sizeof(dotted), &oid) > 0)
      text_addf(t, "%s", dotted);
    else
      text_addf(t, "an OID of %zu bytes", s->len);
    break;
  }
  default:
    text_addf(t, "a value of %zu bytes", s->len);
    break;
  }
}

/* Lists the subtrees of one form and kind, separated by commas. */
static void add_list(struct text *t, const struct proxy_nc *nc, int form, int excluded)
{
  size_t i, n = 0;

  for (i = 0; i < nc->count; i++) {
    if (nc->subtrees[i].form != form || nc->subtrees[i].excluded != excluded)
      continue;
    if (n++ > 0)
      text_addf(t, ", ");
    add_subtree(t, &nc->subtrees[i]);
  }
}

void proxy_nc_describe(const struct proxy_nc *nc, char *buf, size_t size)
{
  struct text t;
  int excluded, form;

  text_init(&t, buf, size);
  for (excluded = 0; excluded < 2; excluded++) {
    int first = 1;
    size_t i;

    for (form = 0; form < FORMS; form++) {
      for (i = 0; i < nc->count; i++)
        if (nc->subtrees[i].form == form && nc->subtrees[i].excluded == excluded)
          break;
      if (i == nc->count)
        continue;
      if (first)
        text_addf(&t, "%s%s ", t.used > 0 ? "; " : "",
                  excluded ? "excluded" : "permitted");
      else
        text_addf(&t, ", ");
      first = 0;
      text_addf(&t, "%s (", form_info[form].name);
      add_list(&t, nc, form, excluded);
      text_addf(&t, ")");
    }
  }
}

/* ---- checking ------------------------------------------------------------ */

static int within(const struct nc_subtree *s, const struct proxy_nc_names *names)
{
  switch (s->form) {
  case PROXY_NC_DNS_NAME:
    return dns_within(names->dns, s->base, s->len);
  case PROXY_NC_IP_ADDRESS:
    return ip_within(names->ip, names->ip_len, s->base, s->len);
  case PROXY_NC_DIRECTORY_NAME:
    return dn_within(s->base, s->base + s->len, names->cn, names->cn_len) == 1;
  default:
    return 0;
  }
}

/* The name of form the leaf carries, as the reason names it. */
static void add_name(struct text *t, int form, const struct proxy_nc_names *names)
{
  char addr[INET6_ADDRSTRLEN];

  switch (form) {
  case PROXY_NC_DNS_NAME:
    text_addf(t, "%s", names->dns);
    break;
  case PROXY_NC_IP_ADDRESS:
    if (inet_ntop(names->ip_len == 4 ? AF_INET : AF_INET6, names->ip, addr,
                  sizeof(addr)) == NULL)
      snprintf(addr, sizeof(addr), "?");
    text_addf(t, "%s", addr);
    break;
  default:
    text_addf(t, "the leaf's subject CN=%.*s", (int)names->cn_len, names->cn);
    break;
  }
}

/*
 * RFC 5280 6.1.3 (b) and (c), for one form the leaf carries: within some permitted
 * subtree of the form when the permittedSubtrees have any, and within no excluded
 * one. A form the permittedSubtrees do not mention is not restricted by them: the
 * permitted set of each form starts as every name (6.1.2 (b)) and "If
 * permittedSubtrees does not include a particular name type, the permitted_subtrees
 * state variable is unchanged for that name type" (6.1.4 (g)). So a CA permitting
 * only dNSName subtrees does not restrict the iPAddress of an address's leaf.
 */
static int check_form(const struct proxy_nc *nc, int form,
                      const struct proxy_nc_names *names, struct text *why)
{
  int permitted = 0, inside = 0;
  size_t i;

  for (i = 0; i < nc->count; i++) {
    const struct nc_subtree *s = &nc->subtrees[i];

    if (s->form != form)
      continue;
    if (s->excluded && within(s, names)) {
      add_name(why, form, names);
      text_addf(why, " is within the excluded %s subtree ", form_info[form].name);
      add_subtree(why, s);
      return -EPERM;
    }
    /* A wildcard that matches an excluded name speaks for it: refused, as Chrome
     * and the pyca/webpki verifiers refuse it (OpenSSL compares strings only). */
    if (s->excluded && form == PROXY_NC_DNS_NAME && wildcard_meets(names->dns, s->base,
                                                                   s->len)) {
      add_name(why, form, names);
      text_addf(why, " matches names in the excluded %s subtree ", form_info[form].name);
      add_subtree(why, s);
      return -EPERM;
    }
    if (!s->excluded) {
      permitted = 1;
      inside = inside || within(s, names);
    }
  }
  if (permitted && !inside) {
    add_name(why, form, names);
    text_addf(why, " is not within any permitted %s subtree (", form_info[form].name);
    add_list(why, nc, form, 0);
    text_addf(why, ")");
    return -EPERM;
  }
  return 0;
}

int proxy_nc_check(const struct proxy_nc *nc, const struct proxy_nc_names *names,
                   char *why, size_t why_size)
{
  struct text t;
  int ret = 0;

  text_init(&t, why, why_size);
  if (names->dns != NULL)
    ret = check_form(nc, PROXY_NC_DNS_NAME, names, &t);
  if (ret == 0 && names->ip != NULL && (names->ip_len == 4 || names->ip_len == 16))
    ret = check_form(nc, PROXY_NC_IP_ADDRESS, names, &t);
  /* RFC 5280 4.2.1.10: directoryName constraints bind a non-empty subject. */
  if (ret == 0 && names->cn != NULL)
    ret = check_form(nc, PROXY_NC_DIRECTORY_NAME, names, &t);
  return ret;
}

/*
 * A Name of a certificate against the directoryName subtrees of nc: its subject (what
 * "the certificate's subject"), whose emptiness exempts it, or a directoryName of its
 * subjectAltName (what "the certificate's directoryName"), which OpenSSL 3 binds even
 * when empty (nc_dn: the empty Name's canonical encoding begins with no subtree's but
 * the empty one's). The reason goes to t.
 */
static int check_dn(const struct proxy_nc *nc, unsigned char *der, size_t len,
                    const char *what, int empty_bound, struct text *t)
{
  int permitted = 0, inside = 0, rdns;
  size_t i;

  if ((nc->forms & 1u << PROXY_NC_DIRECTORY_NAME) == 0)
    return 0;
  /* Checked whole before any comparison, which then reads it without failing. */
  rdns = name_rdns(der, der + len);
  if (rdns < 0) {
    if (rdns == -E2BIG)
      text_addf(t, "%s has an RDN of more than %d attributes, and its CA has "
                "directoryName nameConstraints", what, RDN_MAX_ATTRS);
    else
      text_addf(t, "%s %s, and its CA has directoryName nameConstraints", what,
                rdns == -EINVAL ? "is not a DER Name"
                                : "has an attribute type or value OpenSSL cannot decode");
    return -EILSEQ;
  }
  /* RFC 5280 4.2.1.10: directoryName constraints bind a non-empty subject. */
  if (rdns == 0 && !empty_bound)
    return 0;
  for (i = 0; i < nc->count; i++) {
    const struct nc_subtree *s = &nc->subtrees[i];
    int in;

    if (s->form != PROXY_NC_DIRECTORY_NAME)
      continue;
    in = name_prefix(s->base, s->base + s->len, der, der + len);
    if (s->excluded && in) {
      text_addf(t, "%s ", what);
      add_dn(t, der, len);
      text_addf(t, " is within the excluded directoryName subtree ");
      add_subtree(t, s);
      return -EPERM;
    }
    if (!s->excluded) {
      permitted = 1;
      inside = inside || in;
    }
  }
  if (permitted && !inside) {
    text_addf(t, "%s ", what);
    add_dn(t, der, len);
    text_addf(t, " is not within any permitted directoryName subtree (");
    add_list(t, nc, PROXY_NC_DIRECTORY_NAME, 0);
    text_addf(t, ")");
    return -EPERM;
  }
  return 0;
}

int proxy_nc_check_subject(const struct proxy_nc *nc, unsigned char *der, size_t len,
                           char *why, size_t why_size)
{
  struct text t;

  text_init(&t, why, why_size);
  return check_dn(nc, der, len, "the certificate's subject", 0, &t);
}

int proxy_nc_check_dirname(const struct proxy_nc *nc, unsigned char *der, size_t len,
                           char *why, size_t why_size)
{
  struct text t;

  text_init(&t, why, why_size);
  return check_dn(nc, der, len, "the certificate's directoryName", 1, &t);
}

int proxy_nc_names_equal(unsigned char *a, size_t a_len, unsigned char *b, size_t b_len)
{
  int na = name_rdns(a, a + a_len), nb = name_rdns(b, b + b_len);

  return na >= 0 && na == nb && name_prefix(a, a + a_len, b, b + b_len);
}
