/*
 * The process-wide random source: one CTR_DRBG (AES-256) seeded from the kernel
 * (mbedTLS entropy, getrandom), shared by every module that needs random bytes.
 */
#ifndef AUTHPROXY_RNG_H
#define AUTHPROXY_RNG_H

#include <stddef.h>

/*
 * Seeds the generator if it is not seeded yet. Idempotent and thread-safe; calling
 * it at start-up surfaces a broken entropy source early instead of on first use.
 * Returns 0 or -EIO.
 */
int proxy_rng_init(void);

/*
 * Fills out with len random bytes. The signature is mbedTLS's f_rng: pass proxy_rng
 * with a NULL p_rng (ctx is ignored). Seeds on first use, serialises callers with a
 * mutex, and reseeds from the kernel in a child after fork() so parent and child
 * never share a stream. Returns 0 or a negative mbedTLS error code.
 */
int proxy_rng(void *ctx, unsigned char *out, size_t len);

#endif
