/*
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash, for hash tables
 * whose keys someone else chooses and for values derived from a secret.
 */
#ifndef AUTHPROXY_SIPHASH_H
#define AUTHPROXY_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of len bytes at data under key (k0, k1 as the reference's little-endian
 * halves of the 16-byte key). */
uint64_t proxy_siphash(const uint64_t key[2], const void *data, size_t len);

#endif
