/*
 * Internals of the DNS table shared with its unit tests.
 */
#ifndef AUTHPROXY_DNS_INTERNAL_H
#define AUTHPROXY_DNS_INTERNAL_H

#include <stdint.h>

#include "proxy/dns.h"

/* PROXY_DNS_SYNTH_BITS is the prefix length: the range has 2^17 addresses. */
#define PROXY_DNS_SYNTH_HOST_BITS (32 - PROXY_DNS_SYNTH_BITS)

/* Usable addresses: 198.18.0.1 .. 198.19.255.254 (the first and last are skipped). */
#define PROXY_DNS_SYNTH_USABLE ((UINT32_C(1) << PROXY_DNS_SYNTH_HOST_BITS) - 2)

/*
 * The address (host byte order) that name is placed at when it is free: the start of
 * its probe sequence. Depends only on the table's key, so tests can construct
 * collisions.
 */
uint32_t proxy_dns_table_home(const struct proxy_dns_table *t, const char *name);

#endif
