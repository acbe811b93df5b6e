/*
 * The nameConstraints of a CA certificate (RFC 5280 4.2.1.10), parsed strictly, and
 * the check of the names one of our leaves would carry against them. mbedTLS 2.28
 * neither parses nor applies the extension; the clients that verify our leaves do,
 * so proxy/ca.c refuses to mint a leaf they would reject. proxy/tls.c applies the
 * constraints of an upstream's issuing CAs with the same parser.
 */
#ifndef AUTHPROXY_NAMECONSTR_H
#define AUTHPROXY_NAMECONSTR_H

#include <stddef.h>

struct proxy_nc;

/* GeneralName forms (their context tag numbers, RFC 5280 4.2.1.6). */
enum proxy_nc_form {
  PROXY_NC_OTHER_NAME = 0,
  PROXY_NC_RFC822_NAME = 1,
  PROXY_NC_DNS_NAME = 2,
  PROXY_NC_X400_ADDRESS = 3,
  PROXY_NC_DIRECTORY_NAME = 4,
  PROXY_NC_EDI_PARTY_NAME = 5,
  PROXY_NC_URI = 6,
  PROXY_NC_IP_ADDRESS = 7,
  PROXY_NC_REGISTERED_ID = 8,
};

/* The names one leaf carries; a NULL member is a name form the leaf does not have. */
struct proxy_nc_names {
  const char *dns;         /* subjectAltName dNSName, canonical (see ca.c) */
  const char *cn;          /* the value of the subject's only attribute, a CN; NULL: */
  size_t cn_len;           /* the subject is empty */
  const unsigned char *ip; /* subjectAltName iPAddress: 4 or 16 bytes */
  size_t ip_len;
};

/* At most this many GeneralSubtrees in all; a CA with more is refused. */
#define PROXY_NC_MAX_SUBTREES 1024

/*
 * Parses the extnValue of a nameConstraints extension (copied; the caller keeps
 * der). Anything RFC 5280 or DER does not allow is refused: no subtrees at all, an
 * empty GeneralSubtrees, a GeneralName with a wrong tag or encoding, minimum or
 * maximum fields (RFC 5280: not used; OpenSSL rejects every leaf under them), a
 * dNSName that is not a domain (empty label, trailing dot, space, non-ASCII), an
 * iPAddress that is not an address and contiguous mask of 8 or 32 bytes, a
 * directoryName that is not a Name or holds an attribute OpenSSL cannot decode,
 * trailing bytes. Returns 0, -ENOMEM, or -EINVAL with what is wrong in err
 * (NUL-terminated, truncated to err_size).
 */
int proxy_nc_parse(const unsigned char *der, size_t len, struct proxy_nc **out,
                   char *err, size_t err_size);

/*
 * Checks a leaf's names against the constraints with RFC 5280 semantics: a name form
 * the leaf carries must be within a permitted subtree of its form when the
 * permittedSubtrees hold any of that form, and within no excluded subtree of it;
 * forms the leaf does not carry are not restricted. Returns 0 when the leaf is within
 * them, -EPERM with the reason in why (naming the name and the subtrees it misses or
 * falls in) when clients would reject it.
 */
int proxy_nc_check(const struct proxy_nc *nc, const struct proxy_nc_names *names,
                   char *why, size_t why_size);

/*
 * Checks the subject of a certificate a CA issued (der: the DER of its Name, SEQUENCE
 * included; borrowed, not written) against the CA's directoryName subtrees, as OpenSSL
 * 3 does for an upstream's chain: the subject is within a subtree when the subtree's
 * RDNs begin its own, attributes compared in OpenSSL's canonical form (string values
 * as characters, surrounding spaces dropped, inner runs of spaces one space, ASCII
 * case ignored; a multi-valued RDN's attributes in any order). An empty subject is
 * not constrained (RFC 5280 4.2.1.10). Returns 0 when it is within them or there are
 * none, -EPERM with the reason in why when it misses every permitted subtree or falls
 * in an excluded one, -EILSEQ when directoryName subtrees exist and the subject is
 * not a Name, holds an attribute OpenSSL cannot decode (refused: it cannot be
 * compared) or an RDN of more than 16 attributes (whose comparison would cost their
 * number squared). Our own leaves go through proxy_nc_check.
 */
int proxy_nc_check_subject(const struct proxy_nc *nc, unsigned char *der, size_t len,
                           char *why, size_t why_size);

/*
 * Checks a directoryName of a certificate's subjectAltName (der: the Name inside the
 * [4] tag, SEQUENCE included; borrowed, not written) against the CA's directoryName
 * subtrees, as proxy_nc_check_subject checks a subject and with its results, but an
 * empty Name is bound as OpenSSL 3 binds it: only an empty permitted subtree holds
 * it. Names in the reason as "the certificate's directoryName".
 */
int proxy_nc_check_dirname(const struct proxy_nc *nc, unsigned char *der, size_t len,
                           char *why, size_t why_size);

/* Whether two DER Names (borrowed) are equal as OpenSSL 3 compares them (X509_NAME_cmp:
 * the same RDNs, compared as proxy_nc_check_subject compares them); 0 also when
 * either does not decode. */
int proxy_nc_names_equal(unsigned char *a, size_t a_len, unsigned char *b, size_t b_len);

/* The subtrees, as text for a log line: "permitted dNSName (example.com, .example.org),
 * iPAddress (192.0.2.0/24); excluded dNSName (a.example.com)", cut to size with "...". */
void proxy_nc_describe(const struct proxy_nc *nc, char *buf, size_t size);

/* Bit n set: some subtree (permitted or excluded) has GeneralName form n. */
unsigned proxy_nc_forms(const struct proxy_nc *nc);

/* How many subtrees, permitted and excluded, of every form. */
size_t proxy_nc_count(const struct proxy_nc *nc);

/* "dNSName", "iPAddress", ...: the RFC 5280 name of a form. */
const char *proxy_nc_form_name(enum proxy_nc_form form);

void proxy_nc_free(struct proxy_nc *nc);

#endif
