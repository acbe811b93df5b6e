/*
 * Seals TLS-sized records with each AEAD that a TLS 1.2 server built on mbedTLS and
 * one built on OpenSSL both offer, in both libraries: authproxy's (mbedTLS 2.28) and
 * the one nginx, HAProxy and the load generators use (OpenSSL's libcrypto). Prints
 * one line per cipher and library: "NAME LIBRARY MB/s". scripts/bench/aead.sh runs it.
 *
 *   aeadbench RECORDS   seals RECORDS records of 16 KiB with each
 */
#include <mbedtls/chachapoly.h>
#include <mbedtls/gcm.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECORD 16384

static unsigned char in[RECORD], out[RECORD + 16], key[32], iv[12], tag[16];
static unsigned char aad[13];

static double now(void)
{
  struct timespec t;

  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void report(const char *name, const char *lib, long n, double secs)
{
  printf("%s %s %.0f\n", name, lib, (double)n * RECORD / secs / 1e6);
}

/* bits 0: ChaCha20-Poly1305; otherwise AES-GCM with a key of that size. */
static int mbed(const char *name, int bits, long n)
{
  mbedtls_chachapoly_context cp;
  mbedtls_gcm_context gcm;
  double t;
  long i;
  int ret = 0;

  mbedtls_chachapoly_init(&cp);
  mbedtls_gcm_init(&gcm);
  if (bits == 0)
    ret = mbedtls_chachapoly_setkey(&cp, key);
  else
    ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, (unsigned)bits);
  t = now();
  for (i = 0; i < n && ret == 0; i++) {
    iv[11] = (unsigned char)i; /* a fresh nonce per record, as TLS uses */
    if (bits == 0)
      ret = mbedtls_chachapoly_encrypt_and_tag(&cp, RECORD, iv, aad, sizeof(aad), in,
                                               out, tag);
    else
      ret = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, RECORD, iv, sizeof(iv),
                                      aad, sizeof(aad), in, out, sizeof(tag), tag);
  }
  t = now() - t;
  mbedtls_chachapoly_free(&cp);
  mbedtls_gcm_free(&gcm);
  if (ret != 0) {
    fprintf(stderr, "aeadbench: mbedTLS %s failed: -0x%04x\n", name, (unsigned)-ret);
    return -1;
  }
  report(name, "mbedtls", n, t);
  return 0;
}

static int ossl(const char *name, const EVP_CIPHER *cipher, long n)
{
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int len, ok;
  double t;
  long i;

  ok = ctx != NULL && EVP_EncryptInit_ex(ctx, cipher, NULL, key, NULL) == 1;
  t = now();
  for (i = 0; i < n && ok; i++) {
    iv[11] = (unsigned char)i;
    ok = EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) == 1 &&
         EVP_EncryptUpdate(ctx, NULL, &len, aad, sizeof(aad)) == 1 &&
         EVP_EncryptUpdate(ctx, out, &len, in, RECORD) == 1 &&
         EVP_EncryptFinal_ex(ctx, out + len, &len) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, sizeof(tag), tag) == 1;
  }
  t = now() - t;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) {
    fprintf(stderr, "aeadbench: OpenSSL %s failed\n", name);
    return -1;
  }
  report(name, "openssl", n, t);
  return 0;
}

int main(int argc, char **argv)
{
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;

  if (argc != 2 || n <= 0) {
    fprintf(stderr, "usage: aeadbench RECORDS\n");
    return 2;
  }
  memset(in, 0xa5, sizeof(in));
  memset(key, 0x3c, sizeof(key));
  if (mbed("AES-128-GCM", 128, n) || ossl("AES-128-GCM", EVP_aes_128_gcm(), n) ||
      mbed("AES-256-GCM", 256, n) || ossl("AES-256-GCM", EVP_aes_256_gcm(), n) ||
      mbed("ChaCha20-Poly1305", 0, n) ||
      ossl("ChaCha20-Poly1305", EVP_chacha20_poly1305(), n))
    return 1;
  return 0;
}
