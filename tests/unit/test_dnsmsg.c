/*
 * DNS message codec: queries captured from glibc, c-ares (node) and a hand-encoded
 * EDNS query (tests/data/dns/capture.py), hand-built malformed queries, and the
 * exact bytes of the answers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proxy/dnsmsg.h"
#include "test.h"

static uint8_t *load(const char *name, size_t *len)
{
  const char *path = test_data_path(name);
  FILE *f = fopen(path, "rb");
  uint8_t *buf;
  long n;

  if (f == NULL)
    TEST_FAIL_("open %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  ASSERT_GT(n, 0);
  buf = malloc((size_t)n);
  ASSERT_NOT_NULL(buf);
  ASSERT_EQ(fread(buf, 1, (size_t)n, f), n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* ---- a query builder ---- */

struct qbuf {
  uint8_t b[1024];
  size_t n;
};

static void put8(struct qbuf *q, unsigned v)
{
  ASSERT_LT(q->n, sizeof(q->b));
  q->b[q->n++] = (uint8_t)v;
}

static void put16(struct qbuf *q, unsigned v)
{
  put8(q, v >> 8);
  put8(q, v);
}

static void putmem(struct qbuf *q, const void *p, size_t n)
{
  ASSERT_LE(q->n + n, sizeof(q->b));
  memcpy(q->b + q->n, p, n);
  q->n += n;
}

static void header(struct qbuf *q, unsigned id, unsigned flags, unsigned qd, unsigned an,
                   unsigned ns, unsigned ar)
{
  q->n = 0;
  put16(q, id);
  put16(q, flags);
  put16(q, qd);
  put16(q, an);
  put16(q, ns);
  put16(q, ar);
}

/* Encodes a dotted name as labels ("" is the root). */
static void name(struct qbuf *q, const char *dotted)
{
  const char *p = dotted;

  while (*p != '\0') {
    size_t len = strcspn(p, ".");

    put8(q, (unsigned)len);
    putmem(q, p, len);
    p += len;
    if (*p == '.')
      p++;
  }
  put8(q, 0);
}

static void opt(struct qbuf *q, unsigned udp, unsigned version, const void *rdata,
                size_t rdlen)
{
  put8(q, 0);
  put16(q, PROXY_DNS_TYPE_OPT);
  put16(q, udp);
  put8(q, 0);
  put8(q, version);
  put16(q, 0);
  put16(q, (unsigned)rdlen);
  putmem(q, rdata, rdlen);
}

/* A well-formed A query for n, id 0x1234, RD, with or without EDNS. */
static void simple(struct qbuf *q, const char *n, int edns)
{
  header(q, 0x1234, 0x0100, 1, 0, 0, edns ? 1 : 0);
  name(q, n);
  put16(q, PROXY_DNS_TYPE_A);
  put16(q, PROXY_DNS_CLASS_IN);
  if (edns)
    opt(q, 1232, 0, "", 0);
}

static int parse(const struct qbuf *b, struct proxy_dns_query *q)
{
  return proxy_dns_parse_query(b->b, b->n, q);
}

/* ---- captured queries ---- */

TEST(captured_queries)
{
  static const struct {
    const char *file, *name;
    uint16_t qtype;
    int edns;
    uint16_t udp;
  } cases[] = {
    { "dns/glibc_a.bin", "pypi.org", PROXY_DNS_TYPE_A, 0, 0 },
    { "dns/glibc_aaaa.bin", "pypi.org", PROXY_DNS_TYPE_AAAA, 0, 0 },
    { "dns/glibc_edns_a.bin", "pypi.org", PROXY_DNS_TYPE_A, 1, 1200 },
    { "dns/glibc_edns_aaaa.bin", "pypi.org", PROXY_DNS_TYPE_AAAA, 1, 1200 },
    { "dns/node_a.bin", "registry.npmjs.org", PROXY_DNS_TYPE_A, 0, 0 },
    { "dns/hand_edns_cookie.bin", "api.github.com", PROXY_DNS_TYPE_A, 1, 4096 },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct proxy_dns_query q;
    size_t len;
    uint8_t *msg = load(cases[i].file, &len);

    fprintf(stderr, "%s\n", cases[i].file);
    ASSERT_EQ(proxy_dns_parse_query(msg, len, &q), 0);
    ASSERT_STREQ(q.name, cases[i].name);
    ASSERT_EQ(q.name_len, strlen(cases[i].name));
    ASSERT_EQ(q.qtype, cases[i].qtype);
    ASSERT_EQ(q.qclass, PROXY_DNS_CLASS_IN);
    ASSERT_EQ(q.opcode, 0);
    ASSERT_EQ(q.id, msg[0] << 8 | msg[1]);
    ASSERT_EQ(q.flags & 0x0100, 0x0100);
    ASSERT_EQ(q.has_edns, cases[i].edns);
    ASSERT_EQ(q.edns_udp_size, cases[i].udp);
    ASSERT(q.question == msg + 12);
    ASSERT_EQ(q.question_len, strlen(cases[i].name) + 2 + 4);
    /* Every strict prefix is truncated, hence dropped. */
    for (size_t n = 0; n < len; n++)
      ASSERT_EQ(proxy_dns_parse_query(msg, n, &q), -EINVAL);
    free(msg);
  }
}

TEST(names_lowercased_question_kept)
{
  struct proxy_dns_query q;
  size_t len;
  uint8_t *msg = load("dns/hand_edns_cookie.bin", &len);

  ASSERT_EQ(proxy_dns_parse_query(msg, len, &q), 0);
  ASSERT_STREQ(q.name, "api.github.com");
  ASSERT_MEMEQ(q.question, "\x03" "ApI" "\x06" "GiThUb" "\x03" "cOm", 16);
  free(msg);
}

TEST(name_syntax)
{
  static const char *ok[] = { "a", "xn--bcher-kva.example", "_dmarc.example.com",
                              "0-9.A-Z.a-z", "123.example" };
  struct proxy_dns_query q;
  struct qbuf b;
  char buf[300];

  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    simple(&b, ok[i], 0);
    ASSERT_EQ(parse(&b, &q), 0);
    ASSERT_EQ(q.name_len, strlen(ok[i]));
  }
  /* The root: a query for "." */
  simple(&b, "", 0);
  ASSERT_EQ(parse(&b, &q), 0);
  ASSERT_STREQ(q.name, "");
  ASSERT_EQ(q.name_len, 0);

  /* Bytes outside [A-Za-z0-9-_], including a dot and a NUL inside a label: the
   * query parses (it is answered NXDOMAIN) but the name is marked unusable and never
   * read as a host name. */
  {
    static const char bad[] = " *./\\@\x7f\x80\xff\0:";

    for (size_t i = 0; i < sizeof(bad) - 1; i++) {
      header(&b, 1, 0x0100, 1, 0, 0, 0);
      put8(&b, 3);
      put8(&b, 'a');
      put8(&b, (uint8_t)bad[i]);
      put8(&b, 'b');
      put8(&b, 0);
      put16(&b, 1), put16(&b, 1);
      ASSERT_EQ(parse(&b, &q), 0);
      ASSERT_EQ(q.name_unusable, 1);
      ASSERT_STREQ(q.name, "");
      ASSERT_EQ(q.name_len, 0);
      ASSERT_EQ(q.question_len, 9);
      b.b[14] = 'x';
      ASSERT_EQ(parse(&b, &q), 0); /* the same query with a good byte */
      ASSERT_EQ(q.name_unusable, 0);
      ASSERT_STREQ(q.name, "axb");
    }
  }

  /* A label of 63 bytes is fine, 64 is not. */
  memset(buf, 'a', 64);
  buf[63] = '\0';
  simple(&b, buf, 0);
  ASSERT_EQ(parse(&b, &q), 0);
  buf[63] = 'a';
  buf[64] = '\0';
  simple(&b, buf, 0);
  ASSERT_EQ(parse(&b, &q), -EINVAL);

  /* 253 bytes in presentation form is the limit: 4 labels of 63 and 61... */
  memset(buf, 'b', sizeof(buf));
  buf[63] = buf[127] = buf[191] = '.';
  buf[253] = '\0';
  simple(&b, buf, 0);
  ASSERT_EQ(parse(&b, &q), 0);
  ASSERT_EQ(q.name_len, 253);
  /* ...one more byte is too long. */
  buf[253] = 'b';
  buf[254] = '\0';
  simple(&b, buf, 0);
  ASSERT_EQ(parse(&b, &q), -EINVAL);
}

TEST(compression_and_label_types)
{
  struct proxy_dns_query q;
  struct qbuf b;

  /* A pointer to offset 12, i.e. to itself: a loop; and a pointer after a label. */
  header(&b, 1, 0x0100, 1, 0, 0, 0);
  put16(&b, 0xc00c);
  put16(&b, 1), put16(&b, 1);
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  header(&b, 1, 0x0100, 1, 0, 0, 0);
  put8(&b, 1), put8(&b, 'a');
  put16(&b, 0xc00c);
  put16(&b, 1), put16(&b, 1);
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  /* The extended label types 0x40 and 0x80. */
  header(&b, 1, 0x0100, 1, 0, 0, 0);
  put8(&b, 0x41), put8(&b, 'a'), put8(&b, 0);
  put16(&b, 1), put16(&b, 1);
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  b.b[12] = 0x81;
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  b.b[12] = 0x01;
  ASSERT_EQ(parse(&b, &q), 0);
}

TEST(header_checks)
{
  struct proxy_dns_query q;
  struct qbuf b;

  /* Too short for a header. */
  simple(&b, "example.com", 0);
  ASSERT_EQ(proxy_dns_parse_query(b.b, 11, &q), -EINVAL);
  /* A response (QR set) is never answered. */
  b.b[2] |= 0x80;
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  b.b[2] &= 0x7f;
  ASSERT_EQ(parse(&b, &q), 0);

  /* Opcodes other than QUERY: IQUERY, STATUS, NOTIFY, UPDATE, and a QR response
   * with a strange opcode still is dropped. */
  for (unsigned op = 1; op < 16; op++) {
    simple(&b, "example.com", 0);
    b.b[2] = (uint8_t)(op << 3 | 1);
    ASSERT_EQ(parse(&b, &q), -ENOTSUP);
    ASSERT_EQ(q.opcode, op);
    ASSERT_EQ(q.id, 0x1234);
    b.b[2] |= 0x80;
    ASSERT_EQ(parse(&b, &q), -EINVAL);
  }

  /* QDCOUNT 0 and 2, an answer record, an authority record. */
  simple(&b, "example.com", 0);
  b.b[5] = 0;
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  ASSERT_EQ(q.opcode, 0);
  b.b[5] = 2;
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  b.b[5] = 1;
  b.b[7] = 1;
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  b.b[7] = 0;
  b.b[9] = 1;
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  b.b[9] = 0;
  ASSERT_EQ(parse(&b, &q), 0);

  /* Trailing garbage, and an additional record announced but missing. */
  simple(&b, "example.com", 0);
  put8(&b, 0);
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  simple(&b, "example.com", 0);
  b.b[11] = 1;
  ASSERT_EQ(parse(&b, &q), -EINVAL);
}

TEST(edns)
{
  static const uint8_t cookie[] = { 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8 };
  static const uint8_t two_opts[] = { 0, 10, 0, 0, 0, 12, 0, 2, 0, 0 };
  static const uint8_t short_opt[] = { 0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8 };
  static const uint8_t stub_opt[] = { 0, 10, 0 };
  /* An option without data (padding, RFC 7830) may end the RDATA. */
  static const uint8_t last_empty[] = { 0, 10, 0, 0, 0, 12, 0, 0 };
  struct proxy_dns_query q;
  struct qbuf b;

  simple(&b, "example.com", 1);
  ASSERT_EQ(parse(&b, &q), 0);
  ASSERT_EQ(q.has_edns, 1);
  ASSERT_EQ(q.edns_udp_size, 1232);

  /* A payload size below 512 counts as 512. */
  header(&b, 1, 0x0100, 1, 0, 0, 1);
  name(&b, "example.com");
  put16(&b, 1), put16(&b, 1);
  opt(&b, 100, 0, cookie, sizeof(cookie));
  ASSERT_EQ(parse(&b, &q), 0);
  ASSERT_EQ(q.edns_udp_size, 512);

  /* Options must tile the RDATA. */
  b.n -= sizeof(cookie) + 2;
  put16(&b, sizeof(two_opts));
  putmem(&b, two_opts, sizeof(two_opts));
  ASSERT_EQ(parse(&b, &q), 0);
  b.n -= sizeof(two_opts) + 2;
  put16(&b, sizeof(last_empty));
  putmem(&b, last_empty, sizeof(last_empty));
  ASSERT_EQ(parse(&b, &q), 0);
  ASSERT_EQ(q.has_edns, 1);
  b.n -= sizeof(last_empty) + 2;
  put16(&b, sizeof(short_opt));
  putmem(&b, short_opt, sizeof(short_opt));
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  b.n -= sizeof(short_opt) + 2;
  put16(&b, sizeof(stub_opt));
  putmem(&b, stub_opt, sizeof(stub_opt));
  ASSERT_EQ(parse(&b, &q), -EINVAL);
  /* RDLENGTH past the end of the message. */
  b.n -= sizeof(stub_opt) + 2;
  put16(&b, 20);
  putmem(&b, cookie, sizeof(cookie));
  ASSERT_EQ(parse(&b, &q), -EINVAL);

  /* Two OPT records: FORMERR. */
  header(&b, 1, 0x0100, 1, 0, 0, 2);
  name(&b, "example.com");
  put16(&b, 1), put16(&b, 1);
  opt(&b, 1232, 0, "", 0);
  opt(&b, 1232, 0, "", 0);
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);

  /* EDNS version 1: FORMERR (see dnsmsg.c on BADVERS). */
  header(&b, 1, 0x0100, 1, 0, 0, 1);
  name(&b, "example.com");
  put16(&b, 1), put16(&b, 1);
  opt(&b, 1232, 1, "", 0);
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);

  /* An OPT owned by a name other than the root, and a TSIG-like record. */
  header(&b, 1, 0x0100, 1, 0, 0, 1);
  name(&b, "example.com");
  put16(&b, 1), put16(&b, 1);
  name(&b, "x");
  put16(&b, PROXY_DNS_TYPE_OPT), put16(&b, 1232), put16(&b, 0), put16(&b, 0);
  put16(&b, 0);
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  header(&b, 1, 0x0100, 1, 0, 0, 1);
  name(&b, "example.com");
  put16(&b, 1), put16(&b, 1);
  put8(&b, 0);
  put16(&b, 250), put16(&b, 255), put16(&b, 0), put16(&b, 0), put16(&b, 0);
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  /* ... but a cut-off OPT is malformed. */
  header(&b, 1, 0x0100, 1, 0, 0, 1);
  name(&b, "example.com");
  put16(&b, 1), put16(&b, 1);
  put8(&b, 0);
  put16(&b, PROXY_DNS_TYPE_OPT);
  ASSERT_EQ(parse(&b, &q), -EINVAL);
}

/* ---- answers ---- */

TEST(answer_a_exact_bytes)
{
  static const uint8_t expect[] = {
    0x12, 0x34, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* header */
    0x01, 'a', 0x02, 'b', 'c', 0x00, 0x00, 0x01, 0x00, 0x01,                 /* question */
    0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04,  /* A ... */
    198, 18, 0, 7,
  };
  uint32_t addr = htonl(0xc6120007);
  struct proxy_dns_query q;
  struct qbuf b;
  uint8_t out[512];

  simple(&b, "a.bc", 0);
  ASSERT_EQ(parse(&b, &q), 0);
  ASSERT_EQ(proxy_dns_build_answer(&q, PROXY_DNS_RCODE_NOERROR, &addr, 60, out,
                                   sizeof(out)),
            sizeof(expect));
  ASSERT_MEMEQ(out, expect, sizeof(expect));
  /* A buffer of exactly that size is enough. */
  memset(out, 0, sizeof(out));
  ASSERT_EQ(proxy_dns_build_answer(&q, PROXY_DNS_RCODE_NOERROR, &addr, 60, out,
                                   sizeof(expect)),
            sizeof(expect));
  ASSERT_MEMEQ(out, expect, sizeof(expect));
  /* Every smaller buffer is refused without writing past it. */
  for (size_t n = 0; n < sizeof(expect); n++)
    ASSERT_EQ(proxy_dns_build_answer(&q, 0, &addr, 60, out, n), -ENOSPC);
}

TEST(answer_edns_nodata_flags)
{
  static const uint8_t opt_rr[] = { 0x00, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0 };
  struct proxy_dns_query q;
  struct qbuf b;
  uint8_t out[512];
  uint32_t addr = htonl(0xc6120001);
  int n;

  /* EDNS in the query: OPT echoed with our payload size, even for NODATA. */
  simple(&b, "example.com", 1);
  b.b[3] = 0x30; /* AD and CD set by the client */
  ASSERT_EQ(parse(&b, &q), 0);
  n = proxy_dns_build_answer(&q, PROXY_DNS_RCODE_NOERROR, NULL, 60, out, sizeof(out));
  ASSERT_EQ(n, 12 + 17 + 11);
  ASSERT_EQ(out[2], 0x85);  /* QR, AA, RD */
  ASSERT_EQ(out[3], 0x90);  /* RA, CD copied, AD not */
  ASSERT_EQ(out[7], 0);     /* no answer */
  ASSERT_EQ(out[11], 1);    /* one additional: OPT */
  ASSERT_MEMEQ(out + 12 + 17, opt_rr, sizeof(opt_rr));

  /* With an address: answer, then OPT. */
  n = proxy_dns_build_answer(&q, PROXY_DNS_RCODE_NOERROR, &addr, 60, out, sizeof(out));
  ASSERT_EQ(n, 12 + 17 + 16 + 11);
  ASSERT_EQ(out[7], 1);
  ASSERT_MEMEQ(out + 12 + 17 + 16, opt_rr, sizeof(opt_rr));

  /* No RD in the query, none in the answer; REFUSED is not authoritative. */
  b.b[2] = 0;
  ASSERT_EQ(parse(&b, &q), 0);
  n = proxy_dns_build_answer(&q, PROXY_DNS_RCODE_REFUSED, NULL, 60, out, sizeof(out));
  ASSERT_GT(n, 0);
  ASSERT_EQ(out[2], 0x80);
  ASSERT_EQ(out[3], 0x95);
  n = proxy_dns_build_answer(&q, PROXY_DNS_RCODE_NXDOMAIN, NULL, 60, out, sizeof(out));
  ASSERT_EQ(out[2], 0x84);
  ASSERT_EQ(out[3], 0x93);

  /* A TTL above 2^31 - 1 is clamped (RFC 2181 section 8). */
  n = proxy_dns_build_answer(&q, 0, &addr, 0xffffffffu, out, sizeof(out));
  ASSERT_MEMEQ(out + 12 + 17 + 6, "\x7f\xff\xff\xff", 4);

  /* rcodes beyond 4 bits would need EDNS extended rcodes; 15 is the last that fits. */
  ASSERT_EQ(proxy_dns_build_answer(&q, 16, NULL, 60, out, sizeof(out)), -EINVAL);
  ASSERT_EQ(proxy_dns_build_answer(&q, -1, NULL, 60, out, sizeof(out)), -EINVAL);
  ASSERT_EQ(proxy_dns_build_answer(&q, 15, NULL, 60, out, sizeof(out)), 12 + 17 + 11);
  ASSERT_EQ(out[3] & 0x0f, 15);

  /* A query that did not parse has no question to echo: only a header-only error
   * answers it. */
  b.b[5] = 2; /* QDCOUNT 2 */
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  ASSERT_EQ(proxy_dns_build_answer(&q, PROXY_DNS_RCODE_FORMERR, NULL, 60, out,
                                   sizeof(out)),
            -EINVAL);
}

TEST(error_answers)
{
  struct proxy_dns_query q;
  struct qbuf b;
  uint8_t out[12];

  simple(&b, "example.com", 1);
  b.b[2] = 0x21; /* opcode 4 (NOTIFY), RD */
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  ASSERT_EQ(proxy_dns_build_error(&q, PROXY_DNS_RCODE_NOTIMP, out, sizeof(out)), 12);
  ASSERT_MEMEQ(out, "\x12\x34\xa1\x84\0\0\0\0\0\0\0\0", 12);
  ASSERT_EQ(proxy_dns_build_error(&q, PROXY_DNS_RCODE_NOTIMP, out, 11), -ENOSPC);

  simple(&b, "example.com", 0);
  b.b[5] = 2;
  ASSERT_EQ(parse(&b, &q), -ENOTSUP);
  ASSERT_EQ(proxy_dns_build_error(&q, PROXY_DNS_RCODE_FORMERR, out, sizeof(out)), 12);
  ASSERT_MEMEQ(out, "\x12\x34\x81\x81\0\0\0\0\0\0\0\0", 12);

  /* The rcode fits the header's 4 bits, 0 to 15, or nothing is written. */
  ASSERT_EQ(proxy_dns_build_error(&q, 0, out, sizeof(out)), 12);
  ASSERT_EQ(out[3], 0x80);
  ASSERT_EQ(proxy_dns_build_error(&q, 15, out, sizeof(out)), 12);
  ASSERT_EQ(out[3], 0x8f);
  memset(out, 0xee, sizeof(out));
  ASSERT_EQ(proxy_dns_build_error(&q, 16, out, sizeof(out)), -EINVAL);
  ASSERT_EQ(proxy_dns_build_error(&q, -1, out, sizeof(out)), -EINVAL);
  ASSERT_EQ(out[0], 0xee);
}

/* ---- reads stay inside the message ---- */

/* Where an inaccessible page begins: bytes copied to just before it are a message
 * that nothing follows, so a read past its end faults instead of seeing whatever
 * happens to lie after it in the caller's buffer. */
static uint8_t *guard_page(void)
{
  static uint8_t *end;

  if (end == NULL) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);

    ASSERT(m != MAP_FAILED);
    ASSERT_EQ(mprotect(m + page, page, PROT_NONE), 0);
    end = m + page;
  }
  return end;
}

/* Parses msg[0..n) copied flush against the guard page. */
static int parse_guarded(const uint8_t *msg, size_t n, struct proxy_dns_query *q)
{
  uint8_t *at = guard_page() - n;

  ASSERT_LE(n, 4096);
  memmove(at, msg, n);
  return proxy_dns_parse_query(at, n, q);
}

/*
 * Every prefix of a query ends where the sender's datagram ends: the parser must
 * refuse it from its own bytes. A read one byte past the end (a name that stops after
 * a label, an announced OPT record that is missing) would otherwise decide the
 * outcome by the byte after the datagram, an OPT missing its root byte turning a drop
 * into a FORMERR.
 */
TEST(prefixes_read_nothing_past_the_end)
{
  static const uint8_t cookie[] = { 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8 };
  static const char *const files[] = { "dns/glibc_a.bin", "dns/glibc_edns_a.bin",
                                       "dns/node_a.bin", "dns/hand_edns_cookie.bin" };
  struct proxy_dns_query q;
  struct qbuf b;
  size_t i, n, len;

  for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    uint8_t *msg = load(files[i], &len);

    fprintf(stderr, "%s\n", files[i]);
    ASSERT_EQ(parse_guarded(msg, len, &q), 0);
    for (n = 0; n < len; n++)
      ASSERT_EQ(parse_guarded(msg, n, &q), -EINVAL);
    free(msg);
  }
  header(&b, 1, 0x0100, 1, 0, 0, 1);
  name(&b, "a.example");
  put16(&b, 1), put16(&b, 1);
  opt(&b, 1232, 0, cookie, sizeof(cookie));
  ASSERT_EQ(parse_guarded(b.b, b.n, &q), 0);
  for (n = 0; n < b.n; n++)
    ASSERT_EQ(parse_guarded(b.b, n, &q), -EINVAL);
}
