/*
 * The screen of an upstream's plaintext handshake records (tls.c), shared with its
 * fuzz target (tests/fuzz/fuzz_upstream_screen.c). Nothing else includes it.
 */
#ifndef AUTHPROXY_TLS_INTERNAL_H
#define AUTHPROXY_TLS_INTERNAL_H

#include <stddef.h>

#include <mbedtls/x509_crt.h>

/*
 * The largest RSA public exponent accepted in an upstream's certificates, in bits.
 * mbedTLS checks each signature of a chain as it builds it, with keys from the
 * certificates the server sent, before it knows whether the chain reaches a trusted
 * CA, and takes any exponent below the modulus: with 8192-bit keys and exponents as
 * long, a 14 KiB chain that chains to nothing cost 1.8 s of the loop all sandboxes
 * share. Certificates use 65537 (CA/Browser Forum: at most 2^256-1); Go's crypto/rsa
 * refuses exponents above 2^31-1, OpenSSL above 64 bits for keys over 3072 bits
 * (and checks no signature before a chain reaches a trust anchor).
 */
#define RSA_EXPONENT_MAX_BITS 32
/*
 * The most signatures the search for an upstream chain's parents may check. For each
 * certificate, from the leaf up, mbedTLS checks the signature of every trusted CA and
 * of every later certificate the server sent whose subject names its issuer, and
 * goes on past one outside its validity period (kept as a fallback). A chain of
 * expired CA certificates that all bear one name made that search quadratic: 37 with
 * P-521 keys in one 16 KiB message cost about 300 checks, 2.9 s of the loop all
 * sandboxes share. The longest chain mbedTLS accepts (the leaf and
 * MBEDTLS_X509_MAX_INTERMEDIATE_CA intermediates below a trusted CA) needs one check
 * per intermediate and one for the trusted CA; one more spares a root or an expired
 * cross-signed certificate sent along.
 */
#define CHAIN_CHECKS_MAX (MBEDTLS_X509_MAX_INTERMEDIATE_CA + 2)

/* Why the screen refused an upstream's chain. */
enum { SCREEN_OK, SCREEN_EXPONENT, SCREEN_CHECKS };

/* An upstream's plaintext records, followed until its ChangeCipherSpec. Zeroed to
 * start; proxy_tls_screen_free frees a record still arriving. */
struct proxy_tls_screen {
  unsigned char rec_hdr[5];
  size_t rec_got;            /* bytes of the current record received, header included */
  unsigned char *rec_body;   /* a handshake record's body, while it arrives */
  int screened;              /* the ChangeCipherSpec came: records are encrypted */
  int screen;                /* why screen_certificates refused the chain (SCREEN_*) */
  unsigned checks;           /* ... the signature checks it counted, for SCREEN_CHECKS */
};

/*
 * Follows the upstream's records through the bytes handed to mbedTLS (data, len, in
 * any pieces), keeping each handshake record's body until it is whole and screening
 * its Certificate messages then (against trust, the trusted CAs), before mbedTLS has
 * it all. 0, or an mbedTLS error that fails the handshake (s->screen says why).
 */
int proxy_tls_screen_feed(struct proxy_tls_screen *s, const mbedtls_x509_crt *trust,
                          const unsigned char *data, size_t len);
void proxy_tls_screen_free(struct proxy_tls_screen *s);

#endif
