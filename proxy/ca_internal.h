/*
 * Hooks into proxy/ca.c for its unit tests; nothing in the daemon calls them.
 */
#ifndef AUTHPROXY_CA_INTERNAL_H
#define AUTHPROXY_CA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "proxy/ca.h"

/*
 * Replaces the clock the CA reads (time(2) by default) for validity windows and for
 * deciding when a cached leaf is too close to expiry to hand out, so tests can move
 * time forward without waiting.
 */
void proxy_ca_set_clock(struct proxy_ca *ca, time_t (*now)(void));

/*
 * Replaces the signing budget (refill rate in microseconds of signing per second of
 * the CA's clock, and the most it holds; 0 keeps the default) and fills it, so tests
 * can spend it in a few signatures.
 */
void proxy_ca_set_mint_budget(struct proxy_ca *ca, int64_t us_per_s, int64_t burst_us);

/*
 * Replaces the random source the CA's leaf key is generated from (proxy_rng; NULL
 * restores it), so tests can make that generation fail as running out of memory
 * inside mbedTLS would.
 */
void proxy_ca_set_key_rng(struct proxy_ca *ca,
                          int (*rng)(void *ctx, unsigned char *out, size_t len));

#endif
