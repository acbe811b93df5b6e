/*
 * DNS message codec for the responder (RFC 1035 section 4, RFC 6891 for EDNS).
 *
 * Only what a stub resolver sends is accepted: one question, no answer or authority
 * records, at most one OPT record in the additional section. The question name is
 * checked byte by byte: a name of uncompressed labels of letters, digits, '-' and '_'
 * only, the host name syntax the rest of the proxy understands, is read; any other
 * byte marks the name unusable (answered NXDOMAIN, never put in the table), so a name
 * that would need escaping in presentation form never reaches the table.
 */
#include <errno.h>
#include <string.h>

#include "proxy/dnsmsg.h"

#define DNS_HEADER_LEN 12
#define DNS_FLAG_QR 0x8000
#define DNS_FLAG_AA 0x0400
#define DNS_FLAG_RD 0x0100
#define DNS_FLAG_RA 0x0080
#define DNS_FLAG_CD 0x0010
#define DNS_OPCODE_QUERY 0
#define DNS_MAX_NAME 253  /* presentation form, no trailing dot */
#define DNS_MAX_LABEL 63
#define DNS_OPT_FIXED 11  /* root name, type, class, ttl, rdlength */
#define DNS_A_RECORD_LEN 16 /* pointer to the question name, fixed part, 4 bytes */
#define DNS_EDNS_PAYLOAD 1232 /* the size DNS flag day 2020 settled on */
#define DNS_MAX_TTL 0x7fffffffu /* RFC 2181 section 8 */

static uint16_t load16(const uint8_t *p)
{
  return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static void store16(uint8_t *p, unsigned v)
{
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void store32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static int is_label_byte(uint8_t c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '_';
}

/* Reads the question name at msg[*pos], lowercased into q->name. A name with a byte
 * outside the host name syntax is well-formed DNS that names no host: it is read to
 * its end, q->name is left empty and q->name_unusable set. */
static int parse_name(const uint8_t *msg, size_t len, size_t *pos,
                      struct proxy_dns_query *q)
{
  size_t p = *pos, out = 0, i;
  int unusable = 0;

  for (;;) {
    size_t label;

    if (p >= len)
      return -EINVAL;
    label = msg[p++];
    if (label == 0)
      break;
    /* 0xC0 is a compression pointer, 0x40 and 0x80 are the obsolete extended label
     * types (RFC 6891 section 5); neither belongs in a question we answer. Values
     * 64..191 also cover every length above 63. */
    if (label > DNS_MAX_LABEL)
      return -EINVAL;
    if (label > len - p)
      return -EINVAL;
    if (out + (out > 0) + label > DNS_MAX_NAME)
      return -EINVAL;
    if (out > 0)
      q->name[out++] = '.';
    for (i = 0; i < label; i++) {
      uint8_t c = msg[p + i];

      if (!is_label_byte(c))
        unusable = 1;
      q->name[out++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    p += label;
  }
  if (unusable)
    out = 0;
  q->name[out] = '\0';
  q->name_len = out;
  q->name_unusable = unusable;
  *pos = p;
  return 0;
}

/* Reads one additional record at msg[*pos]; only a single OPT record is answerable. */
static int parse_additional(const uint8_t *msg, size_t len, size_t *pos,
                            struct proxy_dns_query *q)
{
  size_t p = *pos, rdlen, end;

  if (p >= len)
    return -EINVAL;
  /* An OPT record is owned by the root. Anything else here (TSIG, SIG(0), a
   * client's idea of glue) is well-formed DNS we do not implement: FORMERR. */
  if (msg[p] != 0)
    return -ENOTSUP;
  if (len - p < DNS_OPT_FIXED)
    return -EINVAL;
  if (load16(msg + p + 1) != PROXY_DNS_TYPE_OPT)
    return -ENOTSUP;
  /* RFC 6891 section 6.1.1: more than one OPT is a format error. */
  if (q->has_edns)
    return -ENOTSUP;
  /* EDNS version (the second byte of the TTL field) other than 0 should get
   * BADVERS, an extended rcode that a header-only error cannot carry; no client
   * sends another version, so FORMERR is answered instead. */
  if (msg[p + 6] != 0)
    return -ENOTSUP;
  rdlen = load16(msg + p + 9);
  if (rdlen > len - p - DNS_OPT_FIXED)
    return -EINVAL;
  /* The options (code, length, data) must tile the RDATA exactly. */
  end = p + DNS_OPT_FIXED + rdlen;
  p += DNS_OPT_FIXED;
  while (p < end) {
    size_t olen;

    if (end - p < 4)
      return -EINVAL;
    olen = load16(msg + p + 2);
    if (olen > end - p - 4)
      return -EINVAL;
    p += 4 + olen;
  }
  q->has_edns = 1;
  q->edns_udp_size = load16(msg + *pos + 3);
  /* RFC 6891 section 6.2.3: values below 512 are treated as 512. */
  if (q->edns_udp_size < 512)
    q->edns_udp_size = 512;
  *pos = end;
  return 0;
}

int proxy_dns_parse_query(const uint8_t *msg, size_t len, struct proxy_dns_query *q)
{
  size_t pos = DNS_HEADER_LEN, start, i, arcount;
  int rc;

  memset(q, 0, sizeof(*q));
  if (len < DNS_HEADER_LEN)
    return -EINVAL;
  q->id = load16(msg);
  q->flags = load16(msg + 2);
  q->opcode = (uint8_t)((q->flags >> 11) & 0xf);
  /* Never answer a response: two responders could otherwise talk to each other
   * forever. */
  if (q->flags & DNS_FLAG_QR)
    return -EINVAL;
  if (q->opcode != DNS_OPCODE_QUERY)
    return -ENOTSUP;
  if (load16(msg + 4) != 1 || load16(msg + 6) != 0 || load16(msg + 8) != 0)
    return -ENOTSUP;
  arcount = load16(msg + 10);

  start = pos;
  rc = parse_name(msg, len, &pos, q);
  if (rc != 0)
    return rc;
  if (len - pos < 4)
    return -EINVAL;
  q->qtype = load16(msg + pos);
  q->qclass = load16(msg + pos + 2);
  pos += 4;
  q->question = msg + start;
  q->question_len = pos - start;

  for (i = 0; i < arcount; i++) {
    rc = parse_additional(msg, len, &pos, q);
    if (rc != 0)
      return rc;
  }
  if (pos != len)
    return -EINVAL;
  return 0;
}

/* Answers are authoritative when they state a fact about our synthetic namespace
 * (an address, NODATA, NXDOMAIN); REFUSED and the error rcodes say nothing about
 * the name. RA is always set: to the sandbox we are the recursive resolver, and
 * some stubs warn when it is missing. RD and CD are copied (RFC 1035 4.1.1,
 * RFC 6840 5.9). */
static void put_header(uint8_t *out, const struct proxy_dns_query *q, int rcode,
                       unsigned qd, unsigned an, unsigned ar)
{
  unsigned flags = DNS_FLAG_QR | (unsigned)(q->opcode & 0xf) << 11 | DNS_FLAG_RA |
                   (q->flags & (DNS_FLAG_RD | DNS_FLAG_CD)) | (unsigned)rcode;

  if (rcode == PROXY_DNS_RCODE_NOERROR || rcode == PROXY_DNS_RCODE_NXDOMAIN)
    flags |= DNS_FLAG_AA;
  store16(out, q->id);
  store16(out + 2, flags);
  store16(out + 4, qd);
  store16(out + 6, an);
  store16(out + 8, 0);
  store16(out + 10, ar);
}

int proxy_dns_build_answer(const struct proxy_dns_query *q, int rcode,
                           const uint32_t *addr4, uint32_t ttl, uint8_t *out,
                           size_t size)
{
  size_t need, p;

  if (rcode < 0 || rcode > 15 || q->question == NULL || q->question_len < 5)
    return -EINVAL;
  need = DNS_HEADER_LEN + q->question_len + (addr4 ? DNS_A_RECORD_LEN : 0) +
         (q->has_edns ? DNS_OPT_FIXED : 0);
  if (size < need)
    return -ENOSPC;

  put_header(out, q, rcode, 1, addr4 ? 1 : 0, q->has_edns ? 1 : 0);
  /* The question is echoed byte for byte, case included: resolvers that randomize
   * the case of the name (0x20 encoding) check it. */
  memcpy(out + DNS_HEADER_LEN, q->question, q->question_len);
  p = DNS_HEADER_LEN + q->question_len;
  if (addr4 != NULL) {
    store16(out + p, 0xc000 | DNS_HEADER_LEN); /* the question's name */
    store16(out + p + 2, PROXY_DNS_TYPE_A);
    store16(out + p + 4, PROXY_DNS_CLASS_IN);
    store32(out + p + 6, ttl > DNS_MAX_TTL ? DNS_MAX_TTL : ttl);
    store16(out + p + 10, 4);
    memcpy(out + p + 12, addr4, 4); /* already in network byte order */
    p += DNS_A_RECORD_LEN;
  }
  if (q->has_edns) {
    out[p] = 0; /* root */
    store16(out + p + 1, PROXY_DNS_TYPE_OPT);
    store16(out + p + 3, DNS_EDNS_PAYLOAD);
    store32(out + p + 5, 0); /* extended rcode 0, version 0, no DO */
    store16(out + p + 9, 0);
    p += DNS_OPT_FIXED;
  }
  return (int)p;
}

int proxy_dns_build_error(const struct proxy_dns_query *q, int rcode, uint8_t *out,
                          size_t size)
{
  if (rcode < 0 || rcode > 15)
    return -EINVAL;
  if (size < DNS_HEADER_LEN)
    return -ENOSPC;
  put_header(out, q, rcode, 0, 0, 0);
  return DNS_HEADER_LEN;
}
