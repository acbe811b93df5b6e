/*
 * ClientHello parser: real hellos captured from curl, openssl s_client, python and
 * node (tests/data/tls/capture.py), and hand-built ones for each rejected shape.
 */
#include <errno.h>

#include "proxy/clienthello.h"
#include "test.h"

#define BIG (PROXY_HELLO_MAX_BYTES + 4096)

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

/* Concatenates the payloads of the records in rec[0..len) into msg. */
static size_t unframe(const uint8_t *rec, size_t len, uint8_t *msg)
{
  size_t pos = 0, out = 0;

  while (pos < len) {
    size_t rlen = (size_t)rec[pos + 3] << 8 | rec[pos + 4];

    memcpy(msg + out, rec + pos + 5, rlen);
    out += rlen;
    pos += 5 + rlen;
  }
  return out;
}

/* Frames msg into handshake records, cutting after each offset in cuts (ascending,
 * within the message) and in chunks of at most 16384. */
static size_t frame(const uint8_t *msg, size_t len, const size_t *cuts, size_t ncuts,
                    uint8_t *out)
{
  size_t pos = 0, o = 0, i = 0;

  while (pos < len) {
    size_t end = i < ncuts ? cuts[i] : len;

    if (end - pos > 16384)
      end = pos + 16384;
    else if (i < ncuts)
      i++;
    out[o] = 0x16;
    out[o + 1] = 3;
    out[o + 2] = 1;
    out[o + 3] = (uint8_t)((end - pos) >> 8);
    out[o + 4] = (uint8_t)(end - pos);
    memcpy(out + o + 5, msg + pos, end - pos);
    o += 5 + end - pos;
    pos = end;
  }
  return o;
}

/* ---- a tiny ClientHello builder ---- */

struct wbuf {
  uint8_t b[BIG];
  size_t n;
};

static void put8(struct wbuf *w, unsigned v)
{
  ASSERT_LT(w->n, sizeof(w->b));
  w->b[w->n++] = (uint8_t)v;
}

static void put16(struct wbuf *w, unsigned v)
{
  put8(w, v >> 8);
  put8(w, v);
}

static void putmem(struct wbuf *w, const void *p, size_t n)
{
  ASSERT_LE(w->n + n, sizeof(w->b));
  memcpy(w->b + w->n, p, n);
  w->n += n;
}

static void ext(struct wbuf *w, unsigned type, const void *data, size_t len)
{
  put16(w, type);
  put16(w, (unsigned)len);
  putmem(w, data, len);
}

/* A server_name extension with one host_name entry. */
static void ext_sni(struct wbuf *w, const char *name, size_t len)
{
  put16(w, 0);
  put16(w, (unsigned)len + 5);
  put16(w, (unsigned)len + 3);
  put8(w, 0);
  put16(w, (unsigned)len);
  putmem(w, name, len);
}

/* A handshake message around an extension block (NULL: no block at all). */
static size_t hello_msg(const struct wbuf *exts, uint8_t *out)
{
  static struct wbuf m;
  size_t body;

  m.n = 0;
  put8(&m, 1);
  put8(&m, 0), put16(&m, 0); /* length, patched below */
  put16(&m, 0x0303);
  for (int i = 0; i < 32; i++)
    put8(&m, 0x11);
  put8(&m, 0);                     /* session id */
  put16(&m, 4), put16(&m, 0x1301), put16(&m, 0xc02f); /* cipher suites */
  put8(&m, 1), put8(&m, 0);        /* compression: null */
  if (exts != NULL) {
    put16(&m, (unsigned)exts->n);
    putmem(&m, exts->b, exts->n);
  }
  body = m.n - 4;
  m.b[1] = (uint8_t)(body >> 16);
  m.b[2] = (uint8_t)(body >> 8);
  m.b[3] = (uint8_t)body;
  memcpy(out, m.b, m.n);
  return m.n;
}

static struct wbuf exts;
static uint8_t msg[BIG], rec[BIG + 8 * 1024];

/* Parses the hello made of exts in one record. */
static enum proxy_hello_status parse_exts(struct proxy_hello *h)
{
  size_t n = hello_msg(&exts, msg);

  n = frame(msg, n, NULL, 0, rec);
  return proxy_hello_parse(rec, n, h);
}

static void check_every_prefix(const uint8_t *buf, size_t len)
{
  struct proxy_hello h;
  size_t i;

  for (i = 0; i < len; i++) {
    enum proxy_hello_status st = proxy_hello_parse(buf, i, &h);

    if (st != PROXY_HELLO_NEED_MORE)
      TEST_FAIL_("prefix of %zu of %zu bytes: status %d, expected NEED_MORE", i, len, st);
  }
}

/* ---- captured hellos ---- */

struct fixture {
  const char *file;
  const char *sni;
  int h2, http11, tls13;
  size_t records;
};

static const struct fixture fixtures[] = {
  { "tls/curl.bin", "example.com", 1, 1, 1, 1 },
  { "tls/curl_http11.bin", "api.github.com", 0, 1, 1, 1 },
  { "tls/openssl.bin", "api.openai.com", 1, 1, 1, 1 },
  { "tls/openssl_tls12.bin", "pypi.org", 0, 0, 0, 1 },
  { "tls/openssl_nosni.bin", "", 0, 0, 1, 1 },
  { "tls/openssl_ipsni.bin", "192.0.2.7", 0, 0, 1, 1 },
  { "tls/openssl_frag.bin", "fragmented.example.org", 1, 1, 1, 2 },
  { "tls/python.bin", "files.pythonhosted.org", 0, 1, 1, 1 },
  { "tls/python_nosni.bin", "", 0, 0, 1, 1 },
  { "tls/node.bin", "registry.npmjs.org", 1, 1, 1, 1 },
};

TEST(captured_hellos)
{
  for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
    const struct fixture *f = &fixtures[i];
    struct proxy_hello h;
    size_t len, pos = 0, nrec = 0;
    uint8_t *buf = load(f->file, &len);

    fprintf(stderr, "%s\n", f->file);
    ASSERT_EQ(proxy_hello_parse(buf, len, &h), PROXY_HELLO_OK);
    ASSERT_STREQ(h.sni, f->sni);
    ASSERT_EQ(h.sni_len, strlen(f->sni));
    ASSERT_EQ(h.alpn_h2, f->h2);
    ASSERT_EQ(h.alpn_http11, f->http11);
    ASSERT_EQ(h.has_alpn, f->h2 || f->http11);
    ASSERT_EQ(h.tls13_offered, f->tls13);
    ASSERT_EQ(h.version, 0x0303);
    ASSERT_EQ(h.record_bytes, len);
    while (pos < len) {
      pos += 5 + ((size_t)buf[pos + 3] << 8 | buf[pos + 4]);
      nrec++;
    }
    ASSERT_EQ(nrec, f->records);
    free(buf);
  }
}

TEST(captured_prefixes_need_more)
{
  for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
    size_t len;
    uint8_t *buf = load(fixtures[i].file, &len);

    check_every_prefix(buf, len);
    free(buf);
  }
}

/* Bytes after the hello (early data, the next record) are not part of it. */
TEST(bytes_after_hello_are_left_to_caller)
{
  static const uint8_t app[] = { 0x17, 0x03, 0x03, 0x00, 0x02, 0xaa, 0xbb };
  struct proxy_hello h;
  size_t len;
  uint8_t *buf = load("tls/curl.bin", &len);

  memcpy(rec, buf, len);
  memcpy(rec + len, app, sizeof(app));
  ASSERT_EQ(proxy_hello_parse(rec, len + sizeof(app), &h), PROXY_HELLO_OK);
  ASSERT_EQ(h.record_bytes, len);
  ASSERT_STREQ(h.sni, "example.com");
  free(buf);
}

/* The same hello re-framed into 2, 3 and many records parses to the same result. */
TEST(hello_split_across_records)
{
  static const size_t two[] = { 100 };
  static const size_t three[] = { 2, 60 };
  static const size_t in_header[] = { 1, 2, 3 };
  struct { const size_t *cuts; size_t n; } splits[] = {
    { two, 1 }, { three, 2 }, { in_header, 3 },
  };
  struct proxy_hello h;
  size_t len, mlen, n, i;
  uint8_t *buf = load("tls/python.bin", &len);

  mlen = unframe(buf, len, msg);
  for (i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
    n = frame(msg, mlen, splits[i].cuts, splits[i].n, rec);
    ASSERT_EQ(n, mlen + 5 * (splits[i].n + 1));
    ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_OK);
    ASSERT_STREQ(h.sni, "files.pythonhosted.org");
    ASSERT_EQ(h.alpn_http11, 1);
    ASSERT_EQ(h.tls13_offered, 1);
    ASSERT_EQ(h.record_bytes, n);
    check_every_prefix(rec, n);
  }

  /* One byte per record from the start of the name on: the name crosses dozens of
   * records, PROXY_HELLO_MAX_RECORDS in all. */
  {
    static size_t cuts[PROXY_HELLO_MAX_RECORDS];
    const uint8_t *at = memmem(msg, mlen, "files.pythonhosted.org", 22);
    size_t start;

    ASSERT_NOT_NULL(at);
    start = (size_t)(at - msg);
    for (i = 0; i + 1 < PROXY_HELLO_MAX_RECORDS; i++)
      cuts[i] = start + i;
    n = frame(msg, mlen, cuts, PROXY_HELLO_MAX_RECORDS - 1, rec);
    ASSERT_EQ(n, mlen + 5 * PROXY_HELLO_MAX_RECORDS);
    ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_OK);
    ASSERT_STREQ(h.sni, "files.pythonhosted.org");
    ASSERT_EQ(proxy_hello_parse(rec, n - 1, &h), PROXY_HELLO_NEED_MORE);
  }
  free(buf);
}

/*
 * The parser walks every record header each time it is called again with more bytes:
 * a hello cut into 1-byte records and sent a byte at a time made that quadratic (10,000
 * records in 64 KiB, over a second of CPU for one connection). One record more than
 * PROXY_HELLO_MAX_RECORDS is refused, as soon as its first byte arrives.
 */
TEST(record_count_bounded)
{
  static size_t cuts[PROXY_HELLO_MAX_RECORDS + 1];
  struct proxy_hello h;
  size_t len, mlen, n, i, first_extra;
  uint8_t *buf = load("tls/python.bin", &len);

  mlen = unframe(buf, len, msg);
  ASSERT_GT(mlen, PROXY_HELLO_MAX_RECORDS + 1);
  for (i = 0; i < PROXY_HELLO_MAX_RECORDS; i++)
    cuts[i] = i + 1;
  n = frame(msg, mlen, cuts, PROXY_HELLO_MAX_RECORDS, rec);
  ASSERT_EQ(n, mlen + 5 * (PROXY_HELLO_MAX_RECORDS + 1));
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  first_extra = 6 * PROXY_HELLO_MAX_RECORDS;
  ASSERT_EQ(proxy_hello_parse(rec, first_extra + 1, &h), PROXY_HELLO_INVALID);
  ASSERT_EQ(proxy_hello_parse(rec, first_extra, &h), PROXY_HELLO_NEED_MORE);

  /* The same hello in 10,000 records of one byte each, the most 64 KiB holds, is
   * refused once the first PROXY_HELLO_MAX_RECORDS have been seen. */
  exts.n = 0;
  ext_sni(&exts, "many.example", 12);
  mlen = hello_msg(&exts, msg);
  {
    static uint8_t pad[12000];

    ext(&exts, 21, pad, 10000 - mlen - 4);
  }
  mlen = hello_msg(&exts, msg);
  ASSERT_EQ(mlen, 10000);
  {
    static size_t many[10000];

    for (i = 0; i + 1 < mlen; i++)
      many[i] = i + 1;
    n = frame(msg, mlen, many, mlen - 1, rec);
  }
  ASSERT_EQ(n, 6 * mlen);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  ASSERT_EQ(proxy_hello_parse(rec, first_extra + 1, &h), PROXY_HELLO_INVALID);
  free(buf);
}

/* ---- what is not TLS at all ---- */

TEST(not_tls)
{
  static const char http[] = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
  /* An SSLv2-compatible CLIENT-HELLO (RFC 5246 E.2): 2-byte header with the high bit
   * set. Reported as NOT_TLS: it cannot carry an SNI. */
  static const uint8_t sslv2[] = { 0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00,
                                   0x00, 0x00, 0x10, 0x00, 0x00, 0x39, 0x00, 0x00 };
  static const uint8_t ssh[] = "SSH-2.0-OpenSSH_9.2\r\n";
  struct proxy_hello h;

  ASSERT_EQ(proxy_hello_parse((const uint8_t *)http, 1, &h), PROXY_HELLO_NOT_TLS);
  ASSERT_EQ(proxy_hello_parse((const uint8_t *)http, strlen(http), &h),
            PROXY_HELLO_NOT_TLS);
  ASSERT_EQ(proxy_hello_parse(sslv2, sizeof(sslv2), &h), PROXY_HELLO_NOT_TLS);
  ASSERT_EQ(proxy_hello_parse(ssh, sizeof(ssh) - 1, &h), PROXY_HELLO_NOT_TLS);
  ASSERT_EQ(proxy_hello_parse((const uint8_t *)http, 0, &h), PROXY_HELLO_NEED_MORE);
}

/* ---- hand-built hellos ---- */

TEST(builder_baseline)
{
  struct proxy_hello h;

  exts.n = 0;
  ext_sni(&exts, "example.org", 11);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_STREQ(h.sni, "example.org");
  ASSERT_EQ(h.has_alpn, 0);
  ASSERT_EQ(h.tls13_offered, 0);

  /* No extension block at all, as an SSL 3.0 client sends. */
  ASSERT_EQ(frame(msg, hello_msg(NULL, msg), NULL, 0, rec), 5 + 4 + 2 + 32 + 1 + 6 + 2);
  ASSERT_EQ(proxy_hello_parse(rec, 5 + 4 + 2 + 32 + 1 + 6 + 2, &h), PROXY_HELLO_OK);
  ASSERT_EQ(h.sni_len, 0);

  /* An empty extension block. */
  exts.n = 0;
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
}

TEST(sni_copied_exactly)
{
  static const char *names[] = { "Example.COM", "a", "xn--bcher-kva.example",
                                 "under_score.example.", "[::1]", "10.0.0.1" };
  char longest[256];
  struct proxy_hello h;

  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    exts.n = 0;
    ext_sni(&exts, names[i], strlen(names[i]));
    ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
    ASSERT_STREQ(h.sni, names[i]);
  }
  /* 255 bytes fit; 256 do not (no DNS name is that long). */
  memset(longest, 'a', sizeof(longest));
  exts.n = 0;
  ext_sni(&exts, longest, 255);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.sni_len, 255);
  ASSERT_EQ(h.sni[255], '\0');
  exts.n = 0;
  ext_sni(&exts, longest, 256);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
}

TEST(sni_invalid_shapes)
{
  static const uint8_t two_names[] = { 0x00, 0x10, 0x00, 0x00, 0x05, 'a', '.', 'c',
                                       'o', 'm', 0x00, 0x00, 0x05, 'b', '.', 'c',
                                       'o', 'm' };
  static const uint8_t other_type[] = { 0x00, 0x08, 0x01, 0x00, 0x05, 'a', '.', 'c',
                                        'o', 'm' };
  static const uint8_t empty_name[] = { 0x00, 0x03, 0x00, 0x00, 0x00 };
  static const uint8_t empty_list[] = { 0x00, 0x00 };
  static const uint8_t list_short[] = { 0x00, 0x07, 0x00, 0x00, 0x05, 'a', '.', 'c',
                                        'o', 'm' };
  static const uint8_t list_long[] = { 0x00, 0x09, 0x00, 0x00, 0x05, 'a', '.', 'c',
                                       'o', 'm' };
  static const uint8_t name_long[] = { 0x00, 0x08, 0x00, 0x00, 0x06, 'a', '.', 'c',
                                       'o', 'm' };
  static const uint8_t trailing[] = { 0x00, 0x09, 0x00, 0x00, 0x05, 'a', '.', 'c',
                                      'o', 'm', 0x00 };
  static const uint8_t nul[] = { 0x00, 0x08, 0x00, 0x00, 0x05, 'a', '\0', 'c', 'o',
                                 'm' };
  static const uint8_t nul_last[] = { 0x00, 0x08, 0x00, 0x00, 0x05, 'a', '.', 'c', 'o',
                                      '\0' };
  static const struct { const uint8_t *d; size_t n; } bad[] = {
    { two_names, sizeof(two_names) }, { other_type, sizeof(other_type) },
    { empty_name, sizeof(empty_name) }, { empty_list, sizeof(empty_list) },
    { list_short, sizeof(list_short) }, { list_long, sizeof(list_long) },
    { name_long, sizeof(name_long) }, { trailing, sizeof(trailing) },
    { nul, sizeof(nul) }, { nul_last, sizeof(nul_last) }, { (const uint8_t *)"", 0 },
  };
  struct proxy_hello h;

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    fprintf(stderr, "case %zu\n", i);
    exts.n = 0;
    ext(&exts, 0, bad[i].d, bad[i].n);
    ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
    ASSERT_EQ(h.sni_len, 0);
  }
  /* Two server_name extensions, each with one valid name. */
  exts.n = 0;
  ext_sni(&exts, "a.com", 5);
  ext_sni(&exts, "b.com", 5);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
}

TEST(duplicate_extensions)
{
  static const uint8_t alpn[] = { 0x00, 0x03, 0x02, 'h', '2' };
  static const uint8_t grease1[] = { 0 }, grease2[] = { 1 };
  struct proxy_hello h;

  exts.n = 0;
  ext_sni(&exts, "a.com", 5);
  ext(&exts, 16, alpn, sizeof(alpn));
  ext(&exts, 16, alpn, sizeof(alpn));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);

  /* Unknown extensions, too: two with type 0xfafa. */
  exts.n = 0;
  ext(&exts, 0xfafa, grease1, 1);
  ext_sni(&exts, "a.com", 5);
  ext(&exts, 0xfafa, grease2, 1);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);

  /* Two different GREASE values are fine, as Chrome sends. */
  exts.n = 0;
  ext(&exts, 0x0a0a, grease1, 0);
  ext_sni(&exts, "a.com", 5);
  ext(&exts, 0xfafa, grease2, 1);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_STREQ(h.sni, "a.com");
}

TEST(alpn)
{
  static const uint8_t good[] = { 0x00, 0x15, 0x05, 'h', '2', 'c', 'x', 'y', 0x02,
                                  'h', '2', 0x08, 'h', 't', 't', 'p', '/', '1',
                                  '.', '1', 0x02, 'h', '3' };
  static const uint8_t only_h2c[] = { 0x00, 0x04, 0x03, 'h', '2', 'c' };
  static const uint8_t one_byte[] = { 0x00, 0x02, 0x01, 'x' }; /* the shortest list */
  static const uint8_t http10[] = { 0x00, 0x09, 0x08, 'h', 't', 't', 'p', '/', '1', '.',
                                    '0' };
  static const uint8_t empty_proto[] = { 0x00, 0x04, 0x02, 'h', '2', 0x00 };
  static const uint8_t empty_list[] = { 0x00, 0x00 };
  static const uint8_t overrun[] = { 0x00, 0x03, 0x03, 'h', '2' };
  static const uint8_t list_short[] = { 0x00, 0x02, 0x02, 'h', '2' };
  static const uint8_t no_list[] = { 0x00 };
  static const struct { const uint8_t *d; size_t n; } bad[] = {
    { empty_proto, sizeof(empty_proto) }, { empty_list, sizeof(empty_list) },
    { overrun, sizeof(overrun) }, { list_short, sizeof(list_short) },
    { no_list, sizeof(no_list) },
  };
  struct proxy_hello h;

  exts.n = 0;
  ext(&exts, 16, good, sizeof(good));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.has_alpn, 1);
  ASSERT_EQ(h.alpn_h2, 1);
  ASSERT_EQ(h.alpn_http11, 1);

  exts.n = 0;
  ext(&exts, 16, only_h2c, sizeof(only_h2c));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.has_alpn, 1);
  ASSERT_EQ(h.alpn_h2, 0);
  ASSERT_EQ(h.alpn_http11, 0);

  exts.n = 0;
  ext(&exts, 16, one_byte, sizeof(one_byte));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.has_alpn, 1);
  ASSERT_EQ(h.alpn_h2, 0);

  /* Eight bytes that are not "http/1.1" do not offer it. */
  exts.n = 0;
  ext(&exts, 16, http10, sizeof(http10));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.has_alpn, 1);
  ASSERT_EQ(h.alpn_http11, 0);

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    fprintf(stderr, "case %zu\n", i);
    exts.n = 0;
    ext(&exts, 16, bad[i].d, bad[i].n);
    ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
  }
}

TEST(supported_versions)
{
  static const uint8_t tls13[] = { 0x04, 0x7a, 0x7a, 0x03, 0x04 };
  static const uint8_t tls12[] = { 0x02, 0x03, 0x03 };
  static const uint8_t odd[] = { 0x03, 0x03, 0x04, 0x03 };
  static const uint8_t empty[] = { 0x00 };
  static const uint8_t mismatch[] = { 0x04, 0x03, 0x04 };
  struct proxy_hello h;

  exts.n = 0;
  ext(&exts, 43, tls13, sizeof(tls13));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.tls13_offered, 1);
  /* client_version 0x0303 is overridden by a list without 0x0303: TLS 1.3 only. */
  ASSERT_EQ(h.tls12_offered, 0);
  exts.n = 0;
  ext(&exts, 43, tls12, sizeof(tls12));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.tls13_offered, 0);
  ASSERT_EQ(h.tls12_offered, 1);
  exts.n = 0;
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);
  ASSERT_EQ(h.tls12_offered, 1); /* no list: client_version 0x0303 */
  {
    size_t n = hello_msg(&exts, msg);

    msg[5] = 0x01; /* client_version TLS 1.0, no list: TLS 1.2 is not offered */
    n = frame(msg, n, NULL, 0, rec);
    ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_OK);
    ASSERT_EQ(h.version, 0x0301);
    ASSERT_EQ(h.tls12_offered, 0);
  }
  exts.n = 0;
  ext(&exts, 43, odd, sizeof(odd));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
  exts.n = 0;
  ext(&exts, 43, empty, sizeof(empty));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
  exts.n = 0;
  ext(&exts, 43, mismatch, sizeof(mismatch));
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
}

/* Every length field of the fixed part, too short and too long. */
TEST(lengths_must_fit)
{
  struct proxy_hello h;
  size_t n, base;

  exts.n = 0;
  ext_sni(&exts, "example.org", 11);
  base = hello_msg(&exts, msg);

  /* Handshake length one short / one long of the body. */
  msg[3]--;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID); /* record > message */
  msg[3] += 2;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_NEED_MORE);
  msg[3]--;

  /* Client version major other than 3. */
  msg[4] = 2;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[4] = 3;

  /* Session id longer than 32, and longer than what is left. */
  msg[38] = 33;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[38] = 0;

  /* Cipher suites: odd, zero, overrunning. */
  msg[40] = 3;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[40] = 0;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[39] = 0xff, msg[40] = 0xfe;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[39] = 0, msg[40] = 4;

  /* Compression methods: none, overrunning. */
  msg[45] = 0;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[45] = 0xff;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[45] = 1;

  /* Extension block length one short, one long. */
  msg[48]--;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[48] += 2;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[48]--;

  /* An extension whose length overruns the block. */
  msg[52]++;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[52]--;

  /* One stray byte after the last extension (block length adjusted). */
  msg[base] = 0;
  msg[48]++;
  msg[3]++;
  n = frame(msg, base + 1, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[48]--;
  msg[3]--;

  /* And the untouched message still parses: every case above failed for its own
   * reason. */
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_OK);
  ASSERT_STREQ(h.sni, "example.org");
}

TEST(record_layer)
{
  static const uint8_t alert[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28 };
  struct proxy_hello h;
  size_t len, n;
  uint8_t *buf = load("tls/curl.bin", &len);
  uint8_t hdr[9];

  /* Record version major 2; a record of 0 bytes; one over 2^14. */
  memcpy(rec, buf, len);
  rec[1] = 2;
  ASSERT_EQ(proxy_hello_parse(rec, len, &h), PROXY_HELLO_INVALID);
  ASSERT_EQ(proxy_hello_parse(rec, 2, &h), PROXY_HELLO_INVALID);
  rec[1] = 3;
  rec[3] = 0, rec[4] = 0;
  ASSERT_EQ(proxy_hello_parse(rec, 5, &h), PROXY_HELLO_INVALID);
  rec[3] = 0x40, rec[4] = 0x01;
  ASSERT_EQ(proxy_hello_parse(rec, 5, &h), PROXY_HELLO_INVALID);

  /* A handshake message other than client_hello (here: server_hello). */
  memcpy(rec, buf, len);
  rec[5] = 2;
  ASSERT_EQ(proxy_hello_parse(rec, len, &h), PROXY_HELLO_INVALID);
  ASSERT_EQ(proxy_hello_parse(rec, 6, &h), PROXY_HELLO_INVALID);

  /* The hello split in two, with an alert or application data between the parts. */
  {
    static const size_t cut[] = { 200 };
    uint8_t m[600];
    size_t mlen = unframe(buf, len, m), first = 5 + 200;

    n = frame(m, mlen, cut, 1, rec);
    ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_OK);
    memmove(rec + first + sizeof(alert), rec + first, n - first);
    memcpy(rec + first, alert, sizeof(alert));
    ASSERT_EQ(proxy_hello_parse(rec, n + sizeof(alert), &h), PROXY_HELLO_INVALID);
    ASSERT_EQ(proxy_hello_parse(rec, first + 1, &h), PROXY_HELLO_INVALID);
    rec[first] = 0x17;
    ASSERT_EQ(proxy_hello_parse(rec, n + sizeof(alert), &h), PROXY_HELLO_INVALID);
    rec[first] = 0x14;
    ASSERT_EQ(proxy_hello_parse(rec, n + sizeof(alert), &h), PROXY_HELLO_INVALID);
  }

  /* Another handshake message in the record that ends the hello. */
  memcpy(rec, buf, len);
  rec[4] += 4;
  memcpy(rec + len, "\x0b\x00\x00\x00", 4);
  ASSERT_EQ(proxy_hello_parse(rec, len + 4, &h), PROXY_HELLO_INVALID);
  /* ... known from the headers alone, before the rest arrives. */
  ASSERT_EQ(proxy_hello_parse(rec, 9, &h), PROXY_HELLO_INVALID);

  /* A handshake length beyond the limit is refused from its first 9 bytes. */
  memcpy(hdr, "\x16\x03\x01\x40\x00\x01\x01\x00\x00", 9);
  ASSERT_EQ(proxy_hello_parse(hdr, 9, &h), PROXY_HELLO_INVALID);
  /* A body of 65512 bytes takes 4 records at least: 65512 + 4 + 4 * 5 = 65536. */
  hdr[6] = 0, hdr[7] = 0xff, hdr[8] = 0xe8;
  ASSERT_EQ(proxy_hello_parse(hdr, 9, &h), PROXY_HELLO_NEED_MORE);
  hdr[8] = 0xe9;
  ASSERT_EQ(proxy_hello_parse(hdr, 9, &h), PROXY_HELLO_INVALID);
  free(buf);
}

/* A hello padded to exactly PROXY_HELLO_MAX_BYTES of records parses; one byte more,
 * or the same bytes in more records, does not. */
TEST(oversized)
{
  static uint8_t pad[PROXY_HELLO_MAX_BYTES];
  struct proxy_hello h;
  size_t mlen, n, nrec, padlen;

  exts.n = 0;
  ext_sni(&exts, "big.example", 11);
  mlen = hello_msg(&exts, msg);
  /* Record headers: 3 full records of 16384 and the remainder. */
  nrec = 4;
  padlen = PROXY_HELLO_MAX_BYTES - 5 * nrec - mlen - 4;
  ext(&exts, 21, pad, padlen); /* padding extension */
  mlen = hello_msg(&exts, msg);
  n = frame(msg, mlen, NULL, 0, rec);
  ASSERT_EQ(n, PROXY_HELLO_MAX_BYTES);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_OK);
  ASSERT_STREQ(h.sni, "big.example");
  ASSERT_EQ(h.record_bytes, PROXY_HELLO_MAX_BYTES);

  /* The same message in one more record crosses the limit. */
  {
    static const size_t cut[] = { 10 };

    n = frame(msg, mlen, cut, 1, rec);
    ASSERT_EQ(n, PROXY_HELLO_MAX_BYTES + 5);
    ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
    /* Refused as soon as the offending record header is seen. */
    ASSERT_EQ(proxy_hello_parse(rec, n - 100, &h), PROXY_HELLO_INVALID);
  }

  /* One byte more of padding. */
  exts.n = 0;
  ext_sni(&exts, "big.example", 11);
  ext(&exts, 21, pad, padlen + 1);
  mlen = hello_msg(&exts, msg);
  n = frame(msg, mlen, NULL, 0, rec);
  ASSERT_EQ(n, PROXY_HELLO_MAX_BYTES + 1);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  /* Known from the handshake header: no framing of that message fits the limit. */
  ASSERT_EQ(proxy_hello_parse(rec, 9, &h), PROXY_HELLO_INVALID);
}

/* Records that end one byte short of the limit, then one more record: the limit
 * counts from where the last record ended, and that arithmetic must not wrap when
 * fewer than a record header's bytes are left. Small records first (2 or 3 bytes), then
 * full ones, within PROXY_HELLO_MAX_RECORDS. */
TEST(limit_reached_by_small_records)
{
  static uint8_t pad[PROXY_HELLO_MAX_BYTES];
  static size_t cuts[PROXY_HELLO_MAX_RECORDS];
  struct proxy_hello h;
  size_t mlen, n, k = 56, i, off = 0, nrec;

  for (i = 0; i < k; i++) {
    off += i == 0 ? 3 : 2;
    cuts[i] = off;
  }
  /* 4 more records of at most 16384 bytes (frame() cuts them) end at 65535. */
  nrec = k + 4;
  off = PROXY_HELLO_MAX_BYTES - 1 - 5 * nrec;
  cuts[k] = off;
  ASSERT_LE(off - cuts[k - 1], 4 * 16384);
  ASSERT_GT(off - cuts[k - 1], 3 * 16384);
  /* The rest of the message, 100 bytes, goes in the record that crosses the limit. */
  exts.n = 0;
  ext_sni(&exts, "small.example", 13);
  mlen = hello_msg(&exts, msg);
  ext(&exts, 21, pad, off + 100 - mlen - 4);
  mlen = hello_msg(&exts, msg);
  ASSERT_EQ(mlen, off + 100);
  n = frame(msg, mlen, cuts, k + 1, rec);
  ASSERT_EQ(n, PROXY_HELLO_MAX_BYTES - 1 + 5 + 100);
  ASSERT_LT(nrec + 1, PROXY_HELLO_MAX_RECORDS + 1);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  ASSERT_EQ(proxy_hello_parse(rec, PROXY_HELLO_MAX_BYTES - 1 + 5, &h), PROXY_HELLO_INVALID);
  /* Up to the limit, the same records are a valid prefix. */
  ASSERT_EQ(proxy_hello_parse(rec, PROXY_HELLO_MAX_BYTES - 1, &h), PROXY_HELLO_NEED_MORE);
}

static uint8_t m2[1024];

/* msg[0..len) with msg[at..at+cut) replaced by ins[0..n), the handshake length
 * adjusted: a field resized with the rest of the hello kept well formed. */
static size_t splice(const uint8_t *m, size_t len, size_t at, size_t cut, const void *ins,
                     size_t n, uint8_t *out)
{
  size_t body;

  ASSERT_LE(at + cut, len);
  memcpy(out, m, at);
  memcpy(out + at, ins, n);
  memcpy(out + at + n, m + at + cut, len - at - cut);
  body = len - cut + n - 4;
  out[1] = (uint8_t)(body >> 16);
  out[2] = (uint8_t)(body >> 8);
  out[3] = (uint8_t)body;
  return len - cut + n;
}

/* The parse of msg's first len bytes spliced (splice) and framed in one record. */
static int parse_spliced(size_t len, size_t at, size_t cut, const void *ins, size_t n,
                         struct proxy_hello *h)
{
  size_t k = splice(msg, len, at, cut, ins, n, m2);

  k = frame(m2, k, NULL, 0, rec);
  return proxy_hello_parse(rec, k, h);
}

/*
 * A length within its own bound but beyond the bytes the hello has left, and lists of
 * a length the fields forbid followed by a well-formed rest: each is refused for that
 * field alone, not because what follows fails to parse in its place.
 */
TEST(fixed_part_lengths_against_the_rest)
{
  struct proxy_hello h;
  size_t n, base;

  exts.n = 0;
  ext_sni(&exts, "example.org", 11);
  base = hello_msg(&exts, msg);

  /* A session id of 32 bytes, the most allowed, when only 30 bytes follow. */
  msg[38] = 32;
  n = frame(msg, base, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
  msg[38] = 0;

  /* A session id of 33 bytes, all of them there. */
  {
    uint8_t sid[34];

    memset(sid, 0x5a, sizeof(sid));
    sid[0] = 33;
    ASSERT_EQ(parse_spliced(base, 38, 1, sid, 34, &h), PROXY_HELLO_INVALID);
    sid[0] = 32;
    ASSERT_EQ(parse_spliced(base, 38, 1, sid, 33, &h), PROXY_HELLO_OK);
  }

  /* No compression method at all, then extensions. */
  ASSERT_EQ(parse_spliced(base, 45, 2, "\x00", 1, &h), PROXY_HELLO_INVALID);

  /* An empty cipher suite list, then compression methods and extensions. */
  ASSERT_EQ(parse_spliced(base, 39, 6, "\x00\x00", 2, &h), PROXY_HELLO_INVALID);
  /* Three bytes of cipher suites, an odd length. */
  ASSERT_EQ(parse_spliced(base, 39, 6, "\x00\x03\x13\x01\xc0", 5, &h), PROXY_HELLO_INVALID);
  /* One suite, two bytes: the splice itself keeps the hello valid. */
  ASSERT_EQ(parse_spliced(base, 39, 6, "\x00\x02\x13\x01", 4, &h), PROXY_HELLO_OK);
  ASSERT_STREQ(h.sni, "example.org");
}

/* An extension block that ends inside an extension's type or length (1 to 3 bytes
 * after the last whole extension, which here is empty), and a lone byte after the
 * compression methods where the block's length would be. */
TEST(truncated_extension_header)
{
  static const uint8_t stray[] = { 0xfa, 0xfa, 0x00 };
  struct proxy_hello h;
  size_t n, k;

  for (k = 1; k <= sizeof(stray); k++) {
    fprintf(stderr, "%zu stray bytes\n", k);
    exts.n = 0;
    ext(&exts, 0x0a0a, "", 0);
    putmem(&exts, stray, k);
    ASSERT_EQ(parse_exts(&h), PROXY_HELLO_INVALID);
    ASSERT_EQ(h.sni_len, 0);
  }
  /* Without the stray bytes it parses. */
  exts.n = 0;
  ext(&exts, 0x0a0a, "", 0);
  ASSERT_EQ(parse_exts(&h), PROXY_HELLO_OK);

  n = hello_msg(NULL, msg);
  n = splice(msg, n, n, 0, "\x01", 1, m2);
  n = frame(m2, n, NULL, 0, rec);
  ASSERT_EQ(proxy_hello_parse(rec, n, &h), PROXY_HELLO_INVALID);
}
