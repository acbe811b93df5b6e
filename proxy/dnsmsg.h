/*
 * DNS message codec for the responder: parses a query and builds the answers the
 * responder gives (synthetic A records, NODATA, errors). Pure; no I/O.
 */
#ifndef AUTHPROXY_DNSMSG_H
#define AUTHPROXY_DNSMSG_H

#include <stddef.h>
#include <stdint.h>

#define PROXY_DNS_TYPE_A 1
#define PROXY_DNS_TYPE_AAAA 28
#define PROXY_DNS_TYPE_OPT 41
#define PROXY_DNS_CLASS_IN 1

#define PROXY_DNS_RCODE_NOERROR 0
#define PROXY_DNS_RCODE_FORMERR 1
#define PROXY_DNS_RCODE_SERVFAIL 2
#define PROXY_DNS_RCODE_NXDOMAIN 3
#define PROXY_DNS_RCODE_NOTIMP 4
#define PROXY_DNS_RCODE_REFUSED 5

/* The one question of a query, and what the answer must echo. */
struct proxy_dns_query {
  uint16_t id;
  uint16_t flags;      /* as received (RD is echoed) */
  uint8_t opcode;
  uint16_t qtype;
  uint16_t qclass;
  char name[254];      /* presentation form, lowercased, no trailing dot; "" is the root
                          (or an unusable name) */
  size_t name_len;
  int name_unusable;   /* a label has a byte outside [A-Za-z0-9-_] ("*", a space, UTF-8):
                          no host has this name; name is "" */
  const uint8_t *question; /* the raw question section inside the message (borrowed) */
  size_t question_len;
  int has_edns;
  uint16_t edns_udp_size; /* the client's advertised payload size (>= 512) */
};

/*
 * Parses a query message. Returns 0 on success (a name with bytes outside
 * [A-Za-z0-9-_] in a label included: q->name_unusable); -EINVAL for anything that must
 * be dropped silently (shorter than a header, QR set, truncated or looping names,
 * labels over 63 or names over 253 bytes, compression pointers in a question, trailing
 * garbage). Returns -ENOTSUP when the
 * header is valid but the query is not answerable (opcode other than QUERY,
 * QDCOUNT != 1, answer or authority records present): the caller answers NOTIMP or
 * FORMERR with proxy_dns_build_error, which only needs id, flags and opcode.
 */
int proxy_dns_parse_query(const uint8_t *msg, size_t len, struct proxy_dns_query *q);

/*
 * Builds an answer to q into out[0..size): rcode, and when addr4 is not NULL one A
 * record with that address (network byte order) and ttl. An A query answered with
 * addr4 == NULL and NOERROR is NODATA. EDNS is echoed when the query had it. Returns
 * the message length, or -ENOSPC if size is too small.
 */
int proxy_dns_build_answer(const struct proxy_dns_query *q, int rcode,
                           const uint32_t *addr4, uint32_t ttl, uint8_t *out,
                           size_t size);

/* Builds a header-only error answer (no question) for id/flags/opcode of q. */
int proxy_dns_build_error(const struct proxy_dns_query *q, int rcode, uint8_t *out,
                          size_t size);

#endif
