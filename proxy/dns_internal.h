/*
 * Internals of the DNS table and responder shared with their unit tests.
 */
#ifndef AUTHPROXY_DNS_INTERNAL_H
#define AUTHPROXY_DNS_INTERNAL_H

#include <stddef.h>
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

/*
 * Write requests (answers the socket did not take at once) a TCP client may have
 * queued before the responder stops reading from it until they have all been
 * written. Each is a heap allocation of about 230 to 530 bytes.
 */
#define PROXY_DNS_TCP_WRITES_MAX 16

/*
 * The number of write requests queued in user space, summed over d's TCP clients
 * (closing clients excluded). Each client's share never exceeds
 * PROXY_DNS_TCP_WRITES_MAX; tests use it to check the bound. Borrows d.
 */
size_t proxy_dns_tcp_queued(const struct proxy_dns *d);

#endif
