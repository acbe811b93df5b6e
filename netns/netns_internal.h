/*
 * netns: declarations shared by the files of the module (and by its tests). Not part
 * of the module's interface: the daemon uses netns/netns.h only.
 */
#ifndef AUTHPROXY_NETNS_INTERNAL_H
#define AUTHPROXY_NETNS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "netns/netns.h"

/* Writes "netns: " + the formatted message into err (if err and errsz are set). */
void netns_errf(char *err, size_t errsz, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/*
 * Names the message of a batch that an error answer refers to. names[i] describes the
 * message sent with sequence number first_seq + i; any other sequence number (the
 * batch begin/end messages) is the batch as a whole. Writes e.g. "netns: nf_tables
 * rejected rule 6 of chain nat_output (...): Operation not supported" into err;
 * kmsg (may be NULL) is the kernel's extended-ack text.
 */
void netns_nft_describe_error(const char *const *names, size_t n, uint32_t first_seq,
                              uint32_t seq, int error, const char *kmsg, char *err,
                              size_t errsz);

/*
 * Sends a complete nf_tables batch (begin and end messages included; every message in
 * between carries NLM_F_ACK) on a new NETLINK_NETFILTER socket of the calling thread's
 * namespace and collects one answer per acknowledged message, up to a bounded time.
 * names/first_seq as for netns_nft_describe_error, n the number of acknowledged
 * messages. Returns 0 when the kernel accepted every message, else the first error
 * (lowest sequence number) as a negative errno, described in err.
 */
int netns_nft_talk(const void *batch, size_t len, uint32_t first_seq,
                   const char *const *names, size_t n, char *err, size_t errsz);

/* Atomically replaces table inet authproxy with the lockdown table
 * (netns_build_lockdown) and removes the TPROXY routing, in the calling thread's
 * namespace. */
int netns_install_lockdown(char *err, size_t errsz);

/* Adds (tproxy set) or removes (clear) the fwmark policy routing TPROXY needs, in the
 * calling thread's namespace: `ip rule fwmark NETNS_TPROXY_MARK lookup
 * NETNS_TPROXY_TABLE` and `local default dev lo table NETNS_TPROXY_TABLE`, IPv4 and
 * IPv6 (IPv4 only with ipv4_only). *existed (may be NULL) is set when the IPv4 rule
 * was already present. Clearing ignores parts that are absent. */
int netns_tproxy_routing_set(int ipv4_only, int *existed, char *err, size_t errsz);
int netns_tproxy_routing_clear(char *err, size_t errsz);

#endif
