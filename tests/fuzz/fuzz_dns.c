/*
 * Fuzz target for the DNS codec: parses a query and, when it parses (or is
 * answerable with an error), builds every kind of answer the responder gives and
 * checks their shape: the id and question echoed, the counts, and that a too-small
 * buffer is refused rather than overrun.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/dnsmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_header(const uint8_t *out, const struct proxy_dns_query *q, int rcode)
{
  if ((out[0] << 8 | out[1]) != q->id || !(out[2] & 0x80) || (out[3] & 0x0f) != rcode)
    abort();
  if (((out[2] >> 3) & 0x0f) != q->opcode || (out[2] & 1) != ((q->flags >> 8) & 1))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const int rcodes[] = { PROXY_DNS_RCODE_NOERROR, PROXY_DNS_RCODE_NXDOMAIN,
                                PROXY_DNS_RCODE_REFUSED, PROXY_DNS_RCODE_SERVFAIL };
  struct proxy_dns_query q;
  uint8_t out[512];
  uint32_t addr = 0x010012c6;
  size_t i;
  int rc, n;

  rc = proxy_dns_parse_query(data, size, &q);
  if (rc == -ENOTSUP) {
    n = proxy_dns_build_error(&q, PROXY_DNS_RCODE_FORMERR, out, sizeof(out));
    if (n != 12)
      abort();
    check_header(out, &q, PROXY_DNS_RCODE_FORMERR);
    return 0;
  }
  if (rc != 0) {
    if (rc != -EINVAL)
      abort();
    return 0;
  }
  if (q.name_len > 253 || strlen(q.name) != q.name_len || q.question < data ||
      q.question + q.question_len > data + size || q.question_len > 255 + 4)
    abort();
  for (i = 0; i < q.name_len; i++)
    if (q.name[i] >= 'A' && q.name[i] <= 'Z')
      abort();
  for (i = 0; i < sizeof(rcodes) / sizeof(rcodes[0]); i++) {
    const uint32_t *a = i == 0 ? &addr : NULL;
    size_t need = 12 + q.question_len + (a ? 16 : 0) + (q.has_edns ? 11 : 0);

    n = proxy_dns_build_answer(&q, rcodes[i], a, 60, out, sizeof(out));
    if (n < 0 || (size_t)n != need)
      abort();
    check_header(out, &q, rcodes[i]);
    if (memcmp(out + 12, q.question, q.question_len) != 0 || out[7] != (a ? 1 : 0) ||
        out[11] != (q.has_edns ? 1 : 0))
      abort();
    if (proxy_dns_build_answer(&q, rcodes[i], a, 60, out, need - 1) != -ENOSPC)
      abort();
  }
  return 0;
}
