/*
 * The per-sandbox certificate authority: an ECDSA P-256 CA, one P-256 leaf key per
 * CA, and leaf certificates minted per destination name (or IP address) on demand,
 * kept in a bounded LRU cache.
 */
#ifndef AUTHPROXY_CA_H
#define AUTHPROXY_CA_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

struct proxy_ca;

/* A minted certificate: leaf then CA in `chain`, and the CA-wide leaf key. */
struct proxy_leaf {
  mbedtls_x509_crt chain;
  mbedtls_pk_context *key; /* borrowed from the CA */
  void *user;              /* for the TLS layer (its per-leaf mbedtls_ssl_config) */
  void (*user_free)(void *user);
  /* private to ca.c */
  unsigned refs;
  struct proxy_leaf *lru_prev, *lru_next, *hash_next;
  uint64_t hash;
  char name[];
};

struct proxy_ca_opts {
  size_t cache_size;       /* leaves kept; default 1024 */
  uint32_t leaf_days;      /* validity of minted leaves; default 7 */
  const char *common_name; /* CA subject CN; default "authproxy sandbox CA" */
  /* For proxy_ca_import: the certificate and key were proven a pair that issues
   * leaves clients accept when they were first imported (or generated), and come
   * back from storage only this daemon can have written (its sealed state). The
   * key-pair check and the test leaf, a few ECDSA operations each, are skipped;
   * every check of the certificate itself still applies, those against the clock
   * (expired, not yet valid) included. */
  int proven;
};

/* Generates a new CA (key and self-signed certificate, 10 years). */
int proxy_ca_generate(const struct proxy_ca_opts *opts, struct proxy_ca **out);

/* Loads a CA from PEM files; fails when the key does not match the certificate, the
 * certificate is not a CA, or its nameConstraints are malformed. */
int proxy_ca_load(const struct proxy_ca_opts *opts, const char *cert_path,
                  const char *key_path, struct proxy_ca **out);

/* As proxy_ca_load, from PEM in memory; the labels name the sources in messages. */
int proxy_ca_import(const struct proxy_ca_opts *opts, const char *cert_pem,
                    size_t cert_len, const char *key_pem, size_t key_len,
                    const char *label, const char *key_label, struct proxy_ca **out);

/* The CA key as PEM (malloc'd, KEY_PEM_MAX bytes: wipe all of them with
 * mbedtls_platform_zeroize before freeing), or NULL. */
char *proxy_ca_key_pem(const struct proxy_ca *ca);

#define PROXY_CA_KEY_PEM_MAX 16384

/* Writes cert (0644) and key (0600, created with that mode, never widened) atomically
 * (temp file + rename). */
int proxy_ca_save(const struct proxy_ca *ca, const char *cert_path, const char *key_path);

/* The CA certificate as PEM (NUL-terminated, owned by the CA). */
const char *proxy_ca_cert_pem(const struct proxy_ca *ca);

/*
 * Returns the leaf for name (a normalized host name, or an IP literal when is_ip),
 * minting it on a miss and taking a reference the caller drops with
 * proxy_leaf_unref. The cache never holds more than cache_size leaves that nobody
 * references. -EPERM (nothing logged): the CA's nameConstraints do not cover the
 * name, so clients would reject its leaf and none is minted; proxy_ca_check_name
 * says why. -EAGAIN (nothing logged): a miss while the CA's signing budget is spent
 * (a tenth of a core on average, bursts of 5 s of signing; see ca.c); a cached leaf
 * is still served. -EKEYEXPIRED (nothing logged; counted in the stats' expired): the
 * CA has expired by the CA's clock. Other errors: -EINVAL (not a valid name), -ENOMEM,
 * -EIO.
 */
int proxy_ca_leaf(struct proxy_ca *ca, const char *name, int is_ip,
                  struct proxy_leaf **out);

/*
 * Checks name (as for proxy_ca_leaf) against the CA's nameConstraints (RFC 5280
 * 4.2.1.10) without minting: 0 when a leaf for it would be within them (always, for
 * a CA without any), -EPERM with the reason in why ("api.example.net is not within
 * any permitted dNSName subtree (example.com)"), -EINVAL for an invalid name.
 */
int proxy_ca_check_name(const struct proxy_ca *ca, const char *name, int is_ip,
                        char *why, size_t why_size);

void proxy_leaf_unref(struct proxy_leaf *leaf);

/*
 * Finds extension oid in crt's raw extensions. Returns 1 with its extnValue and
 * critical flag, 0 when absent, -EINVAL when the extensions do not parse.
 */
int proxy_x509_find_ext(const mbedtls_x509_crt *crt, const char *oid, size_t oid_len,
                        unsigned char **val, size_t *val_len, int *critical);

struct proxy_ca_stats {
  uint64_t hits, misses, evictions;
  uint64_t limited; /* misses refused with -EAGAIN: the signing budget was spent */
  uint64_t minted;  /* misses that minted a leaf (others were refused or failed) */
  uint64_t expired; /* misses refused with -EKEYEXPIRED: the CA had expired */
  size_t entries;
};
void proxy_ca_stats(const struct proxy_ca *ca, struct proxy_ca_stats *out);

/* Frees the CA and its cache. Every leaf reference must have been dropped before. */
void proxy_ca_free(struct proxy_ca *ca);

#endif
