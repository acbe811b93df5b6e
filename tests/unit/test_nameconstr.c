/*
 * nameConstraints (proxy/nameconstr.c): strict parsing of the extension and RFC 5280
 * matching of the names our leaves carry, and of an upstream's subjects against
 * directoryName subtrees, on DER built here byte by byte. The
 * agreement with OpenSSL's checker on real leaves is in test_ca.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>

#include "proxy/nameconstr.h"
#include "test.h"

/* ---- building DER ------------------------------------------------------------ */

#define TAG_SEQ 0x30
#define TAG_SET 0x31
#define GN_RFC822 0x81
#define GN_DNS 0x82
#define GN_DIR 0xa4
#define GN_URI 0x86
#define GN_IP 0x87
#define GN_RID 0x88
#define GN_OTHER 0xa0

struct der {
  unsigned char b[16384];
  size_t n;
};

/* Appends tag, a DER length and the value. */
static void put(struct der *d, int tag, const void *v, size_t len)
{
  ASSERT_LT(d->n + len + 4, sizeof(d->b));
  d->b[d->n++] = (unsigned char)tag;
  if (len < 0x80) {
    d->b[d->n++] = (unsigned char)len;
  } else if (len < 0x100) {
    d->b[d->n++] = 0x81;
    d->b[d->n++] = (unsigned char)len;
  } else {
    d->b[d->n++] = 0x82;
    d->b[d->n++] = (unsigned char)(len >> 8);
    d->b[d->n++] = (unsigned char)len;
  }
  memcpy(d->b + d->n, v, len);
  d->n += len;
}

/* Wraps everything in d in one TLV. */
static void wrap(struct der *d, int tag)
{
  struct der t = { .n = 0 };

  put(&t, tag, d->b, d->n);
  *d = t;
}

/* One GeneralSubtree with base tag and value appended to d. */
static void subtree(struct der *d, int tag, const void *v, size_t len)
{
  struct der s = { .n = 0 };

  put(&s, tag, v, len);
  wrap(&s, TAG_SEQ);
  memcpy(d->b + d->n, s.b, s.n);
  d->n += s.n;
}

static void dns(struct der *d, const char *name)
{
  subtree(d, GN_DNS, name, strlen(name));
}

/* "192.0.2.0/24" or "2001:db8::/32" as an iPAddress subtree. */
static void ip(struct der *d, const char *cidr)
{
  unsigned char v[32];
  char addr[64];
  const char *slash = strchr(cidr, '/');
  int bits = atoi(slash + 1), i;
  size_t alen;

  snprintf(addr, sizeof(addr), "%.*s", (int)(slash - cidr), cidr);
  memset(v, 0, sizeof(v));
  if (inet_pton(AF_INET, addr, v) == 1)
    alen = 4;
  else if (inet_pton(AF_INET6, addr, v) == 1)
    alen = 16;
  else
    TEST_FAIL_("bad address %s", cidr);
  for (i = 0; i < bits; i++)
    v[alen + (size_t)i / 8] |= (unsigned char)(0x80 >> (i % 8));
  subtree(d, GN_IP, v, 2 * alen);
}

/* One AttributeTypeAndValue (OID 2.5.4.attr) appended to an RDN's contents. */
static void atv(struct der *rdn, int attr, int vtag, const void *v, size_t len)
{
  struct der a = { .n = 0 };
  unsigned char oid[3] = { 0x55, 0x04, (unsigned char)attr };

  put(&a, 0x06, oid, sizeof(oid));
  put(&a, vtag, v, len);
  wrap(&a, TAG_SEQ);
  memcpy(rdn->b + rdn->n, a.b, a.n);
  rdn->n += a.n;
}

/* The RDN whose attributes are in attrs, appended to name's RDNs. */
static void rdn(struct der *name, const struct der *attrs)
{
  struct der r = *attrs;

  wrap(&r, TAG_SET);
  memcpy(name->b + name->n, r.b, r.n);
  name->n += r.n;
}

/* A Name's RDN of one attribute: OID bytes (2.5.4.x: 55 04 x) and a value. */
static void one_rdn(struct der *name, int attr, int vtag, const void *v, size_t len)
{
  struct der a = { .n = 0 };

  atv(&a, attr, vtag, v, len);
  rdn(name, &a);
}

/* A directoryName subtree: the RDNs in rdns wrapped into a Name. */
static void dir(struct der *d, const struct der *rdns)
{
  struct der name = *rdns;

  wrap(&name, TAG_SEQ);
  subtree(d, GN_DIR, name.b, name.n);
}

/* NameConstraints from the permitted and excluded GeneralSubtree lists (NULL or
 * empty: absent). */
static void nc_der(struct der *out, const struct der *permitted,
                   const struct der *excluded)
{
  out->n = 0;
  if (permitted != NULL && permitted->n > 0)
    put(out, 0xa0, permitted->b, permitted->n);
  if (excluded != NULL && excluded->n > 0)
    put(out, 0xa1, excluded->b, excluded->n);
  wrap(out, TAG_SEQ);
}

static struct proxy_nc *parse_ok(const struct der *d)
{
  struct proxy_nc *nc = NULL;
  char err[256];
  int ret = proxy_nc_parse(d->b, d->n, &nc, err, sizeof(err));

  if (ret != 0)
    TEST_FAIL_("proxy_nc_parse: %d: %s", ret, err);
  ASSERT_NOT_NULL(nc);
  return nc;
}

/* ---- checking names ---------------------------------------------------------- */

static int check_dns(const struct proxy_nc *nc, const char *name, char *why, size_t size)
{
  struct proxy_nc_names n = { .dns = name, .cn = name, .cn_len = strlen(name) };

  return proxy_nc_check(nc, &n, why, size);
}

static int check_ip(const struct proxy_nc *nc, const char *addr, char *why, size_t size)
{
  unsigned char a[16];
  struct proxy_nc_names n = { .ip = a };

  if (inet_pton(AF_INET, addr, a) == 1)
    n.ip_len = 4;
  else if (inet_pton(AF_INET6, addr, a) == 1)
    n.ip_len = 16;
  else
    TEST_FAIL_("bad address %s", addr);
  return proxy_nc_check(nc, &n, why, size);
}

/* Each name in the NULL-terminated lists is inside (0) or outside (-EPERM). */
static void expect_dns(const struct proxy_nc *nc, const char *const *inside,
                       const char *const *outside)
{
  char why[512];

  for (; inside != NULL && *inside != NULL; inside++)
    if (check_dns(nc, *inside, why, sizeof(why)) != 0)
      TEST_FAIL_("%s refused: %s", *inside, why);
  for (; outside != NULL && *outside != NULL; outside++)
    if (check_dns(nc, *outside, why, sizeof(why)) != -EPERM)
      TEST_FAIL_("%s allowed", *outside);
}

static void expect_ip(const struct proxy_nc *nc, const char *const *inside,
                      const char *const *outside)
{
  char why[512];

  for (; inside != NULL && *inside != NULL; inside++)
    if (check_ip(nc, *inside, why, sizeof(why)) != 0)
      TEST_FAIL_("%s refused: %s", *inside, why);
  for (; outside != NULL && *outside != NULL; outside++)
    if (check_ip(nc, *outside, why, sizeof(why)) != -EPERM)
      TEST_FAIL_("%s allowed", *outside);
}

TEST(dns_subtrees)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d;
  struct proxy_nc *nc;
  static const char *const inside[] = {
    "example.com", "api.example.com", "a.b.c.example.com", "host.corp.example",
    "x.y.corp.example", "notsecret.example.com", "secret.example.com.example.com",
    "openai.com", "api.openai.com", "az.example", "x.az.example", NULL,
  };
  static const char *const outside[] = {
    "example.net", "notexample.com", "example.com.evil.net", "com", "xample.com",
    /* the leading-dot form holds subdomains only */
    "corp.example", "xcorp.example",
    /* excluded, with everything under it */
    "secret.example.com", "deep.secret.example.com", "api.openai.com.evil", NULL,
  };
  char why[512];

  dns(&p, "example.com");
  dns(&p, ".corp.example");
  dns(&p, "OpenAI.COM"); /* the case of a constraint does not matter either */
  dns(&p, "AZ.example");
  dns(&x, "secret.example.com");
  nc_der(&d, &p, &x);
  nc = parse_ok(&d);
  expect_dns(nc, inside, outside);

  ASSERT_EQ(check_dns(nc, "api.example.net", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "api.example.net is not within any permitted dNSName subtree "
                    "(example.com, .corp.example, OpenAI.COM, AZ.example)");
  /* An empty name (an upstream's SAN may be one) is within none, and said so. */
  ASSERT_EQ(check_dns(nc, "", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, " is not within any permitted dNSName subtree "
                    "(example.com, .corp.example, OpenAI.COM, AZ.example)");
  ASSERT_EQ(check_dns(nc, "a.secret.example.com", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "a.secret.example.com is within the excluded dNSName subtree "
                    "secret.example.com");
  ASSERT_EQ(check_dns(nc, "api.example.com", why, sizeof(why)), 0);
  ASSERT_STREQ(why, "");
  /* A short buffer is cut, and marked. */
  ASSERT_EQ(check_dns(nc, "api.example.net", why, 24), -EPERM);
  ASSERT_STREQ(why, "api.example.net is n...");

  /* RFC 5280 4.2.1.10: a form the permittedSubtrees do not name is not restricted
   * by them; only dNSName subtrees here, so addresses pass. */
  expect_ip(nc, (const char *const[]){ "192.0.2.7", "2001:db8::1", NULL }, NULL);
  /* A leaf with both forms is refused by its name, whatever its address. */
  {
    struct proxy_nc_names both = { .dns = "api.example.net",
                                   .ip = (const unsigned char *)"\xc0\x00\x02\x07",
                                   .ip_len = 4 };

    ASSERT_EQ(proxy_nc_check(nc, &both, why, sizeof(why)), -EPERM);
    ASSERT_CONTAINS(why, "api.example.net is not within");
  }
  proxy_nc_free(nc);
}

TEST(dns_excluded_only_and_empty_constraint)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d;
  struct proxy_nc *nc;

  /* Excluded subtrees alone restrict nothing else. */
  dns(&x, "internal.example");
  dns(&x, ".corp");
  nc_der(&d, NULL, &x);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "example.com", "corp", "xinternal.example", NULL },
             (const char *const[]){ "internal.example", "a.internal.example", "x.corp",
                                    NULL });
  proxy_nc_free(nc);

  /* The empty dNSName holds every name: permitted, it allows all; excluded, none. */
  x.n = 0;
  subtree(&p, GN_DNS, "", 0);
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "example.com", "a.b", NULL }, NULL);
  proxy_nc_free(nc);
  nc_der(&d, NULL, &p);
  nc = parse_ok(&d);
  expect_dns(nc, NULL, (const char *const[]){ "example.com", "a.b", NULL });
  proxy_nc_free(nc);
}

/*
 * A wildcard dNSName (an upstream's leaf may carry one) speaks for every name one
 * label deeper: "*.example.com" is refused when a name it matches is excluded, as
 * Chrome and the pyca/webpki verifiers refuse it (a partial match; OpenSSL compares
 * the strings only). Permitted subtrees still need the wildcard wholly inside.
 */
TEST(dns_wildcard_meets_excluded)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d;
  struct proxy_nc *nc;
  char why[512];

  dns(&p, "example.com");
  dns(&p, "only.example.org");
  dns(&x, "secret.example.com");
  dns(&x, ".corp.example.com");
  dns(&x, "deep.er.example.com");
  nc_der(&d, &p, &x);
  nc = parse_ok(&d);
  expect_dns(nc,
             (const char *const[]){ "*.x.example.com", "*.api.example.com",
                                    "x.er.example.com", NULL },
             (const char *const[]){ "*.example.com", "*.EXAMPLE.com", "*.er.example.com",
                                    "*.secret.example.com", "*.corp.example.com",
                                    "*.deep.er.example.com", "*.example.org", NULL });
  ASSERT_EQ(check_dns(nc, "*.example.com", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "*.example.com matches names in the excluded dNSName subtree "
                    "secret.example.com");
  proxy_nc_free(nc);

  /* Excluded subtrees alone: a one-label subtree adds no label to any domain, and a
   * wildcard over another domain of the same length matches nothing excluded. */
  x.n = 0;
  dns(&x, "internal");
  dns(&x, "secret.example.com");
  nc_der(&d, NULL, &x);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "*.example.org", "*.exbmple.com", "*.corp",
                                        "*xexample.com", NULL },
             (const char *const[]){ "*.example.com", "*.internal", "a.internal", NULL });
  proxy_nc_free(nc);
}

TEST(ip_subtrees)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d;
  struct proxy_nc *nc;
  static const char *const inside[] = {
    "192.0.2.0",  "192.0.2.7",   "192.0.2.127", "192.0.2.192", "192.0.2.255",
    "2001:db8::", "2001:db8::1", "2001:db8:ffff:ffff::1",     "10.9.8.7", NULL,
  };
  static const char *const outside[] = {
    "192.0.3.1",   "192.0.1.255",  "10.0.0.1",  "0.0.0.0", "255.255.255.255",
    "192.0.2.128", "192.0.2.191", /* excluded /26 */
    "2001:db9::1", "2001:db7:ffff::1", "::1",   "::ffff:192.0.2.7", "::c000:207", NULL,
  };
  char why[512];

  ip(&p, "192.0.2.0/24");
  ip(&p, "2001:db8::/32");
  ip(&p, "10.9.8.7/32");
  ip(&x, "192.0.2.128/26");
  nc_der(&d, &p, &x);
  nc = parse_ok(&d);
  expect_ip(nc, inside, outside);
  ASSERT_EQ(check_ip(nc, "192.0.3.1", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "192.0.3.1 is not within any permitted iPAddress subtree "
                    "(192.0.2.0/24, 2001:db8::/32, 10.9.8.7/32)");
  ASSERT_EQ(check_ip(nc, "192.0.2.130", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "192.0.2.130 is within the excluded iPAddress subtree 192.0.2.128/26");
  /* No dNSName subtree: host names are not restricted. */
  expect_dns(nc, (const char *const[]){ "example.com", NULL }, NULL);
  proxy_nc_free(nc);

  /* An IPv4 address against IPv6 subtrees only: the permittedSubtrees name the
   * iPAddress form, and no subtree of it holds the address (OpenSSL agrees). */
  p.n = 0;
  x.n = 0;
  ip(&p, "2001:db8::/32");
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_ip(nc, (const char *const[]){ "2001:db8::5", NULL },
            (const char *const[]){ "192.0.2.7", NULL });
  proxy_nc_free(nc);

  /* Host bits set in the constraint's address are ignored; /0 holds its family. */
  p.n = 0;
  ip(&p, "192.0.2.99/24");
  ip(&p, "::/0");
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_ip(nc, (const char *const[]){ "192.0.2.1", "fe80::1", NULL },
            (const char *const[]){ "192.0.3.1", NULL });
  proxy_nc_free(nc);
}

TEST(directory_name_subtrees)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d, rdn = { .n = 0 };
  struct proxy_nc *nc;
  struct proxy_nc_names names = { 0 };
  static const unsigned char bmp[] = { 0, 'A', 0, 'p', 0, 'I', 0, '.', 0, 'x', 0, 'y' };
  char why[512];

  /* O=Corp: a subject CN=name is not within it. */
  one_rdn(&rdn, 0x0a, 0x0c, "Corp", 4);
  dir(&p, &rdn);
  ip(&p, "192.0.2.0/24");
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  ASSERT_EQ(check_dns(nc, "api.example.com", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "the leaf's subject CN=api.example.com is not within any "
                    "permitted directoryName subtree (O=Corp)");
  /* An address's leaf has an empty subject, which RFC 5280 exempts. */
  expect_ip(nc, (const char *const[]){ "192.0.2.1", NULL },
            (const char *const[]){ "192.0.3.1", NULL });
  names.ip = (const unsigned char *)"\xc0\x00\x02\x01";
  names.ip_len = 4;
  ASSERT_EQ(proxy_nc_check(nc, &names, why, sizeof(why)), 0);
  proxy_nc_free(nc);

  /* CN=<name> exactly: compared as OpenSSL does, whatever the string type, case
   * and surrounding spaces. */
  p.n = 0;
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x13, "  API.Example.com ", 18); /* PrintableString */
  dir(&p, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x1e, bmp, sizeof(bmp)); /* BMPString "ApI.xy" */
  dir(&p, &rdn);
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "api.example.com", "api.xy", NULL },
             (const char *const[]){ "www.example.com", "api.example.co", "api.example.comm",
                                    NULL });
  proxy_nc_free(nc);

  /* Every character OpenSSL counts as a space (isspace) is trimmed, and a
   * UniversalString compares like the other string types. */
  p.n = 0;
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x0c, "\t\n\v api.example.com \f\r", 22);
  dir(&p, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x1c, "\0\0\0A\0\0\0p\0\0\0i\0\0\0.\0\0\0x\0\0\0y", 24);
  dir(&p, &rdn);
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "api.example.com", "api.xy", NULL },
             (const char *const[]){ "www.example.com", "api.x", NULL });
  proxy_nc_free(nc);

  /* A character beyond U+00FF is not ASCII, wherever it is: CN=\u0100 and
   * CN=api.xy\u0100 exclude no name of ours. */
  x.n = 0;
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x1e, "\x01\x00", 2);
  dir(&x, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x0c, "\xc3\xa9", 2); /* UTF8String U+00E9 */
  dir(&x, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x1c, "\0\0\0a\0\0\0p\0\0\0i\0\0\0.\0\0\0x\0\0\0y\0\0\x01\0",
          28);
  dir(&x, &rdn);
  nc_der(&d, NULL, &x);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "api.example.com", "api.xy", "a", NULL }, NULL);
  proxy_nc_free(nc);
  x.n = 0;

  /* Not the same: another attribute, a space inside, two RDNs, two attributes in
   * one RDN, a NumericString (a type OpenSSL keeps as it is). */
  p.n = 0;
  rdn.n = 0;
  one_rdn(&rdn, 0x0b, 0x0c, "api.example.com", 15); /* OU */
  dir(&p, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x0c, "api. example.com", 16);
  dir(&p, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x0c, "api.example.com", 15);
  one_rdn(&rdn, 0x0a, 0x0c, "Corp", 4);
  dir(&p, &rdn);
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x12, "api.example.com", 15); /* NumericString */
  dir(&p, &rdn);
  {
    /* CN=api.example.com+O=Corp: one RDN, two attributes. */
    struct der atvs = { .n = 0 }, a = { .n = 0 }, name;
    static const unsigned char cn_oid[] = { 0x55, 0x04, 0x03 };
    static const unsigned char o_oid[] = { 0x55, 0x04, 0x0a };

    put(&a, 0x06, cn_oid, 3);
    put(&a, 0x0c, "api.example.com", 15);
    wrap(&a, TAG_SEQ);
    memcpy(atvs.b, a.b, a.n);
    atvs.n = a.n;
    a.n = 0;
    put(&a, 0x06, o_oid, 3);
    put(&a, 0x0c, "Corp", 4);
    wrap(&a, TAG_SEQ);
    memcpy(atvs.b + atvs.n, a.b, a.n);
    atvs.n += a.n;
    name = atvs;
    wrap(&name, TAG_SET);
    dir(&p, &name);
  }
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_dns(nc, NULL, (const char *const[]){ "api.example.com", NULL });
  proxy_nc_free(nc);

  /* The empty Name is the root of the directory: permitted holds all, excluded none. */
  p.n = 0;
  rdn.n = 0;
  dir(&p, &rdn);
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "api.example.com", NULL }, NULL);
  proxy_nc_free(nc);
  nc_der(&d, NULL, &p);
  nc = parse_ok(&d);
  expect_dns(nc, NULL, (const char *const[]){ "api.example.com", NULL });
  ASSERT_EQ(check_dns(nc, "api.example.com", why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "the leaf's subject CN=api.example.com is within the excluded "
                    "directoryName subtree the empty name");
  proxy_nc_free(nc);

  /* Excluded CN=name refuses that name only. */
  x.n = 0;
  rdn.n = 0;
  one_rdn(&rdn, 0x03, 0x0c, "secret.example.com", 18);
  dir(&x, &rdn);
  nc_der(&d, NULL, &x);
  nc = parse_ok(&d);
  expect_dns(nc, (const char *const[]){ "example.com", "a.secret.example.com", NULL },
             (const char *const[]){ "secret.example.com", NULL });
  proxy_nc_free(nc);
}

/* RFC 5280 4.2.1.10: constraints of forms a leaf does not carry do not bind it. */
TEST(other_forms_never_bind_our_leaves)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d, other = { .n = 0 };
  static const unsigned char rid[] = { 0x2a, 0x03, 0x04 };
  static const unsigned char upn_oid[] = { 0x2b, 0x06, 0x01, 0x04, 0x01,
                                           0x82, 0x37, 0x14, 0x02, 0x03 };
  struct proxy_nc *nc;
  char text[512];

  subtree(&p, GN_RFC822, "example.com", 11);
  subtree(&p, GN_URI, ".example.com", 12);
  subtree(&p, GN_RID, rid, sizeof(rid));
  put(&other, 0x06, upn_oid, sizeof(upn_oid));
  {
    struct der v = { .n = 0 };

    put(&v, 0x0c, "@corp", 5);
    put(&other, 0xa0, v.b, v.n);
  }
  subtree(&p, GN_OTHER, other.b, other.n);
  subtree(&x, GN_RFC822, "", 0);
  nc_der(&d, &p, &x);
  nc = parse_ok(&d);
  ASSERT_EQ(proxy_nc_forms(nc), (1u << PROXY_NC_RFC822_NAME) | (1u << PROXY_NC_URI) |
                                    (1u << PROXY_NC_REGISTERED_ID) |
                                    (1u << PROXY_NC_OTHER_NAME));
  expect_dns(nc, (const char *const[]){ "example.net", NULL }, NULL);
  expect_ip(nc, (const char *const[]){ "198.51.100.1", NULL }, NULL);
  proxy_nc_describe(nc, text, sizeof(text));
  ASSERT_STREQ(text, "permitted otherName (a value of 21 bytes), rfc822Name "
                     "(example.com), uniformResourceIdentifier (.example.com), "
                     "registeredID (1.2.3.4); excluded rfc822Name ()");
  proxy_nc_free(nc);
}

TEST(describe)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d, rdn = { .n = 0 };
  struct proxy_nc *nc;
  char text[512], small[40];

  dns(&p, "example.com");
  ip(&p, "192.0.2.0/24");
  dns(&p, ".example.org");
  one_rdn(&rdn, 0x0a, 0x0c, "Corp", 4);
  dir(&x, &rdn);
  dns(&x, "a.example.com");
  nc_der(&d, &p, &x);
  nc = parse_ok(&d);
  ASSERT_EQ(proxy_nc_forms(nc), (1u << PROXY_NC_DNS_NAME) | (1u << PROXY_NC_IP_ADDRESS) |
                                    (1u << PROXY_NC_DIRECTORY_NAME));
  proxy_nc_describe(nc, text, sizeof(text));
  ASSERT_STREQ(text, "permitted dNSName (example.com, .example.org), iPAddress "
                     "(192.0.2.0/24); excluded dNSName (a.example.com), directoryName "
                     "(O=Corp)");
  proxy_nc_describe(nc, small, sizeof(small));
  ASSERT_EQ(strlen(small), sizeof(small) - 1);
  ASSERT_STREQ(small, "permitted dNSName (example.com, .exa...");
  ASSERT_STREQ(proxy_nc_form_name(PROXY_NC_IP_ADDRESS), "iPAddress");
  ASSERT_STREQ(proxy_nc_form_name(PROXY_NC_REGISTERED_ID), "registeredID");
  ASSERT_STREQ(proxy_nc_form_name((enum proxy_nc_form)9), "unknown GeneralName");
  /* A buffer exactly the text's length is one byte short: cut and marked. */
  {
    size_t full = strlen(text);
    char exact[512], four[4];

    proxy_nc_describe(nc, exact, full + 1);
    ASSERT_STREQ(exact, text);
    proxy_nc_describe(nc, exact, full);
    ASSERT_EQ(strlen(exact), full - 1);
    ASSERT_STREQ(exact + full - 4, "...");
    proxy_nc_describe(nc, four, sizeof(four));
    ASSERT_STREQ(four, "...");
  }
  proxy_nc_free(nc);
}

/* ---- malformed extensions ---------------------------------------------------- */

struct bad_case {
  const char *hex;
  const char *err; /* a part of the message */
};

static size_t unhex(const char *hex, unsigned char *out, size_t size)
{
  size_t n = 0;
  unsigned v;

  while (*hex != '\0') {
    if (*hex == ' ') {
      hex++;
      continue;
    }
    ASSERT_LT(n, size);
    ASSERT_EQ(sscanf(hex, "%2x", &v), 1);
    out[n++] = (unsigned char)v;
    hex += 2;
  }
  return n;
}

TEST(malformed_refused)
{
  static const struct bad_case cases[] = {
    { "", "not a DER SEQUENCE" },
    { "04 00", "not a DER SEQUENCE" },
    { "30 00", "neither permittedSubtrees nor excludedSubtrees" },
    { "30 06 a0 03 30 01 82", "not a DER SEQUENCE" }, /* outer length too long */
    { "30 06 a0 04 30 02 82 00 00", "not a DER SEQUENCE" }, /* trailing byte */
    { "30 02 a0 00", "permittedSubtrees is empty" },
    { "30 02 a1 00", "excludedSubtrees is empty" },
    { "30 06 a0 05 30 02 82 00", "permittedSubtrees overruns the extension" },
    { "30 06 a1 05 30 02 82 00", "excludedSubtrees overruns the extension" },
    { "30 08 a1 02 30 00 a0 02 30 00", "excludedSubtrees item 1 has no base name" },
    /* [1] before [0], [0] twice, an unknown field */
    { "30 0c a1 04 30 02 82 00 a0 04 30 02 82 00", "unexpected bytes (tag 0xa0)" },
    { "30 0c a0 04 30 02 82 00 a0 04 30 02 82 00", "unexpected bytes (tag 0xa0)" },
    { "30 08 a0 04 30 02 82 00 a2 00", "unexpected bytes (tag 0xa2)" },
    /* a GeneralSubtree that is not a SEQUENCE, an unknown GeneralName */
    { "30 04 a0 02 31 00", "permittedSubtrees item 1 is not a GeneralSubtree" },
    { "30 06 a0 04 30 02 89 00", "tag 0x89 is not a GeneralName" },
    { "30 06 a0 04 30 02 02 00", "tag 0x02 is not a GeneralName" },
    { "30 06 a0 04 30 02 9f 00", "tag 0x9f is not a GeneralName" },
    { "30 06 a0 04 30 02 a2 00", "the dNSName is constructed" },
    { "30 06 a0 04 30 02 84 00", "the directoryName is not constructed" },
    { "30 06 a0 04 30 02 82 05", "the dNSName overruns its GeneralSubtree" },
    /* minimum and maximum, even a DER-forbidden explicit minimum 0 */
    { "30 09 a0 07 30 05 82 00 80 01 00", "minimum or maximum" },
    { "30 09 a0 07 30 05 82 00 81 01 02", "minimum or maximum" },
    { "30 09 a0 07 30 05 82 00 04 01 02", "item 1 has trailing bytes" },
    /* dNSName constraints that are not domains */
    { "30 07 a0 05 30 03 82 01 2e", "dNSName \".\" is a lone dot" },
    { "30 0a a0 08 30 06 82 04 61 2e 2e 62", "dNSName \"a..b\" has an empty label" },
    { "30 09 a0 07 30 05 82 03 2e 2e 62", "dNSName \"..b\" has an empty label" },
    { "30 09 a0 07 30 05 82 03 61 62 2e", "dNSName \"ab.\" ends with a dot" },
    { "30 09 a0 07 30 05 82 03 61 20 62", "\"a b\" has a space or a byte that is not" },
    { "30 09 a0 07 30 05 82 03 61 c3 a9", "\"a\\xc3\\xa9\" has a space or a byte" },
    { "30 09 a0 07 30 05 82 03 61 0a 62", "\"a\\x0ab\" has a space or a byte" },
    /* iPAddress: lengths, masks */
    { "30 0a a0 08 30 06 87 04 c0 00 02 00", "is not 8 bytes" },
    { "30 0f a0 0d 30 0b 87 09 c0 00 02 00 ff ff ff 00 00", "is not 8 bytes" },
    { "30 0e a0 0c 30 0a 87 08 c0 00 02 00 ff 00 ff 00", "not contiguous" },
    { "30 0e a0 0c 30 0a 87 08 c0 00 02 00 00 00 00 01", "not contiguous" },
    /* directoryName: not a Name, an empty RDN, an attribute without value, trailing */
    { "30 08 a0 06 30 04 a4 02 31 00", "the directoryName is not a DER Name" },
    { "30 0a a0 08 30 06 a4 04 30 02 31 00", "the directoryName is not a DER Name" },
    { "30 0f a0 0d 30 0b a4 09 30 07 31 05 30 03 06 01 55",
      "the directoryName is not a DER Name" },
    { "30 0a a0 08 30 06 a4 04 30 00 05 00", "the directoryName is not a DER Name" },
    { "30 12 a0 10 30 0e a4 0c 30 0a 31 08 30 06 06 01 55 1f 01 00",
      "the directoryName is not a DER Name" },
    /* a Name with bytes after its SEQUENCE, an attribute with a byte after its value */
    { "30 14 a0 12 30 10 a4 0e 30 00 31 0a 30 08 06 03 55 04 03 0c 01 61",
      "the directoryName is not a DER Name" },
    { "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 0c 01 61 00",
      "the directoryName is not a DER Name" },
    /* an attribute type that is not an OID, alone and after a whole attribute */
    { "30 12 a0 10 30 0e a4 0c 30 0a 31 08 30 06 0c 01 55 0c 01 41",
      "the directoryName is not a DER Name" },
    { "30 1c a0 1a 30 18 a4 16 30 14 31 12 30 08 06 03 55 04 03 0c 01 61 30 06 0c 01 55 "
      "0c 01 41",
      "the directoryName is not a DER Name" },
    { "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 1e 02 df ff",
      "OpenSSL cannot decode" }, /* BMPString U+DFFF, the last surrogate */
    /* attribute types and values OpenSSL cannot decode: it then rejects the CA */
    { "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 03 55 04 03 1a 01 61",
      "attribute type or value OpenSSL cannot decode" }, /* VisibleString */
    { "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 03 55 04 03 04 01 61",
      "OpenSSL cannot decode" }, /* OCTET STRING */
    { "30 16 a0 14 30 12 a4 10 30 0e 31 0c 30 0a 06 03 55 04 03 2c 03 0c 01 61",
      "OpenSSL cannot decode" }, /* constructed UTF8String */
    { "30 16 a0 14 30 12 a4 10 30 0e 31 0c 30 0a 06 03 55 04 03 1e 03 00 61 00",
      "OpenSSL cannot decode" }, /* BMPString of odd length */
    { "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 1e 02 d8 00",
      "OpenSSL cannot decode" }, /* BMPString surrogate */
    { "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 0c 02 c0 af",
      "OpenSSL cannot decode" }, /* overlong UTF-8 */
    { "30 16 a0 14 30 12 a4 10 30 0e 31 0c 30 0a 06 03 55 04 03 0c 03 ed a0 80",
      "OpenSSL cannot decode" }, /* UTF-8 surrogate */
    { "30 16 a0 14 30 12 a4 10 30 0e 31 0c 30 0a 06 03 55 04 03 1c 03 00 00 61",
      "OpenSSL cannot decode" }, /* UniversalString of 3 bytes */
    { "30 17 a0 15 30 13 a4 11 30 0f 31 0d 30 0b 06 03 55 04 03 1c 04 00 11 00 00",
      "OpenSSL cannot decode" }, /* beyond U+10FFFF */
    { "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 03 55 04 ff 0c 01 61",
      "OpenSSL cannot decode" }, /* OID cut short */
    { "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 03 55 80 03 0c 01 61",
      "OpenSSL cannot decode" }, /* OID subidentifier not minimal */
    /* forms never applied to our leaves, in encodings OpenSSL cannot decode */
    { "30 07 a0 05 30 03 a0 01 00", "the otherName is not an OID and one [0] value" },
    { "30 0b a0 09 30 07 a0 05 06 03 2a 03 04", "the otherName is not an OID" },
    { "30 11 a0 0f 30 0d a0 0b 06 03 2a 03 04 a0 04 05 00 05 00", "otherName is not" },
    { "30 0d a0 0b 30 09 a0 07 06 01 80 a0 02 05 00", "otherName is not" },
    { "30 0f a0 0d 30 0b a0 09 06 03 2a 03 04 a1 02 05 00", "otherName is not" }, /* [1] */
    { "30 07 a0 05 30 03 88 01 80", "the registeredID is not a valid OBJECT IDENTIFIER" },
    { "30 08 a0 06 30 04 88 02 2a 83", "registeredID is not a valid" },
    { "30 06 a0 04 30 02 88 00", "registeredID is not a valid" },
    { "30 07 a0 05 30 03 a5 01 00", "the ediPartyName is not an EDIPartyName" },
    { "30 0b a0 09 30 07 a5 05 a0 03 0c 01 78", "ediPartyName is not" }, /* no [1] */
    { "30 0b a0 09 30 07 a5 05 a1 03 16 01 78", "ediPartyName is not" }, /* IA5String */
    { "30 08 a0 06 30 04 a5 02 a1 00", "ediPartyName is not" },
    { "30 0d a0 0b 30 09 a5 07 a1 05 1e 03 00 61 00", "ediPartyName is not" },
    /* IA5 forms beyond ASCII */
    { "30 07 a0 05 30 03 81 01 e9", "the rfc822Name has a byte beyond ASCII" },
    { "30 07 a0 05 30 03 86 01 e9", "the uniformResourceIdentifier has a byte beyond" },
  };
  struct proxy_nc *nc = (struct proxy_nc *)1;
  unsigned char der[64];
  char err[256];
  size_t i, n;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    n = unhex(cases[i].hex, der, sizeof(der));
    memset(err, 'x', sizeof(err));
    if (proxy_nc_parse(der, n, &nc, err, sizeof(err)) != -EINVAL)
      TEST_FAIL_("case %zu (%s) was not refused", i, cases[i].hex);
    ASSERT_NULL(nc);
    if (strstr(err, cases[i].err) == NULL)
      TEST_FAIL_("case %zu (%s): \"%s\" not in \"%s\"", i, cases[i].hex, cases[i].err,
                 err);
  }
  /* The same framing, well formed, parses: the cases fail for what they change. */
  n = unhex("30 0e a0 0c 30 0a 87 08 c0 00 02 00 ff ff ff 00", der, sizeof(der));
  ASSERT_EQ(proxy_nc_parse(der, n, &nc, err, sizeof(err)), 0);
  proxy_nc_free(nc);
  n = unhex("30 12 a0 10 30 0e a4 0c 30 0a 31 08 30 06 06 01 55 0c 01 41", der,
            sizeof(der));
  ASSERT_EQ(proxy_nc_parse(der, n, &nc, err, sizeof(err)), 0);
  proxy_nc_free(nc);
  {
    /* The string types and encodings OpenSSL decodes pass. */
    static const char *const good[] = {
      "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 03 55 04 03 12 01 31",
      "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 03 55 04 03 14 01 e9",
      "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 0c 02 c3 a9",
      "30 17 a0 15 30 13 a4 11 30 0f 31 0d 30 0b 06 03 55 04 03 0c 04 f0 9f 94 91",
      "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 1e 02 00 e9",
      "30 17 a0 15 30 13 a4 11 30 0f 31 0d 30 0b 06 03 55 04 03 1c 04 00 10 ff ff",
      "30 14 a0 12 30 10 a4 0e 30 0c 31 0a 30 08 06 04 2a 86 48 01 13 00",
      /* well-formed bases of the forms that never bind our leaves */
      "30 0b a0 09 30 07 a5 05 a1 03 0c 01 78",
      "30 10 a0 0e 30 0c a5 0a a0 03 13 01 61 a1 03 0c 01 78",
      "30 0d a0 0b 30 09 a0 07 06 01 2a a0 02 05 00",
      "30 0a a0 08 30 06 88 04 2a 86 48 01",
      "30 0c a0 0a 30 08 a5 06 a1 04 0c 02 c0 af", /* OpenSSL does not convert it */
      "30 0e a0 0c 30 0a a5 08 a1 06 1c 04 00 00 00 61", /* UniversalString, 4 bytes */
      "30 0c a0 0a 30 08 a5 06 a1 04 1e 02 00 61",       /* BMPString, 2 bytes */
      "30 15 a0 13 30 11 a4 0f 30 0d 31 0b 30 09 06 03 55 04 03 1e 02 e0 00",
      /* printable ASCII from ! to ~ in a dNSName; DEL in an IA5String */
      "30 0b a0 09 30 07 82 05 21 2e 61 2e 7e",
      "30 07 a0 05 30 03 81 01 7f",
    };

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
      n = unhex(good[i], der, sizeof(der));
      if (proxy_nc_parse(der, n, &nc, err, sizeof(err)) != 0)
        TEST_FAIL_("%s refused: %s", good[i], err);
      proxy_nc_free(nc);
    }
  }
  n = unhex("30 0c a0 04 30 02 82 00 a1 04 30 02 82 00", der, sizeof(der));
  ASSERT_EQ(proxy_nc_parse(der, n, &nc, err, sizeof(err)), 0);
  proxy_nc_free(nc);
  /* err may be absent. */
  ASSERT_EQ(proxy_nc_parse(der, 3, &nc, NULL, 0), -EINVAL);
}

/*
 * A directoryName whose last attribute value ends the permittedSubtrees, the
 * excludedSubtrees right after it: the value is checked within its own length. Read
 * one character further, a UTF8String would run into the 0xa1 tag and a
 * UniversalString into "a1 0d 30 0b", neither a character.
 */
TEST(value_checked_within_its_length)
{
  static const struct {
    int tag;
    const char *v;
    size_t len;
  } values[] = {
    { 0x0c, "a", 1 },             /* UTF8String */
    { 0x1c, "\0\0\0a", 4 },       /* UniversalString */
    { 0x1e, "\0a", 2 },            /* BMPString */
  };
  struct der p, x, d, rdn;
  struct proxy_nc *nc;
  size_t i;

  for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    fprintf(stderr, "tag 0x%02x\n", values[i].tag);
    p.n = x.n = rdn.n = 0;
    one_rdn(&rdn, 0x03, values[i].tag, values[i].v, values[i].len);
    dir(&p, &rdn);
    dns(&x, "b.example");
    nc_der(&d, &p, &x);
    ASSERT_EQ(d.b[d.n - 15], 0xa1); /* a1 0d 30 0b 82 09 b.example */
    nc = parse_ok(&d);
    expect_dns(nc, (const char *const[]){ "a", NULL },
               (const char *const[]){ "b", "b.example", NULL });
    proxy_nc_free(nc);
  }
}

/* A malformed dNSName is quoted in the error up to 64 bytes; "..." marks a longer
 * one as cut. */
/* An IA5String base ending the permittedSubtrees is checked within its length (one byte
 * further is the 0xa1 of the excludedSubtrees), and DEL is shown escaped. */
TEST(ia5_base_checked_within_its_length)
{
  struct der p = { .n = 0 }, x = { .n = 0 }, d;
  struct proxy_nc *nc;
  char text[256];

  subtree(&p, GN_RFC822, "a\x7f.example", 10);
  dns(&x, "b.example");
  nc_der(&d, &p, &x);
  ASSERT_EQ(d.b[d.n - 15], 0xa1);
  nc = parse_ok(&d);
  proxy_nc_describe(nc, text, sizeof(text));
  ASSERT_STREQ(text, "permitted rfc822Name (a\\x7f.example); excluded dNSName (b.example)");
  proxy_nc_free(nc);
}

TEST(malformed_dns_name_quoted_up_to_64_bytes)
{
  struct der p = { .n = 0 }, d;
  struct proxy_nc *nc = NULL;
  char name[80], err[256], want[100];

  memset(name, 'a', sizeof(name));
  name[63] = '.';
  subtree(&p, GN_DNS, name, 64);
  nc_der(&d, &p, NULL);
  ASSERT_EQ(proxy_nc_parse(d.b, d.n, &nc, err, sizeof(err)), -EINVAL);
  snprintf(want, sizeof(want), "dNSName \"%.64s\" ends with a dot", name);
  ASSERT_CONTAINS(err, want);

  p.n = 0;
  name[63] = 'a';
  name[64] = '.';
  subtree(&p, GN_DNS, name, 65);
  nc_der(&d, &p, NULL);
  ASSERT_EQ(proxy_nc_parse(d.b, d.n, &nc, err, sizeof(err)), -EINVAL);
  snprintf(want, sizeof(want), "dNSName \"%.64s...\" ends with a dot", name);
  ASSERT_CONTAINS(err, want);
  ASSERT_NULL(nc);
}

TEST(subtree_count_is_bounded)
{
  struct der p = { .n = 0 }, d;
  struct proxy_nc *nc = NULL;
  char err[256];
  int i;

  /* 30 02 82 00: the smallest GeneralSubtree, four bytes. */
  for (i = 0; i < PROXY_NC_MAX_SUBTREES; i++)
    subtree(&p, GN_DNS, "", 0);
  nc_der(&d, &p, NULL);
  nc = parse_ok(&d);
  proxy_nc_free(nc);
  subtree(&p, GN_DNS, "", 0);
  nc_der(&d, &p, NULL);
  ASSERT_EQ(proxy_nc_parse(d.b, d.n, &nc, err, sizeof(err)), -EINVAL);
  ASSERT_CONTAINS(err, "more than 1024 subtrees");
}

/* ---- an upstream's subjects (proxy_nc_check_subject) ------------------------- */

#define ATTR_CN 3
#define ATTR_O 10
#define ATTR_OU 11
#define UTF8 0x0c
#define PRINTABLE 0x13
#define NUMERIC 0x12
#define VISIBLE 0x1a
#define BMP 0x1e
#define UNIVERSAL 0x1c

/* A Name of RDNs of one attribute each: (attr, tag, text) triples, ended by attr 0. */
static void name_of(struct der *name, ...)
{
  struct der one;
  va_list ap;
  int attr;

  name->n = 0;
  va_start(ap, name);
  while ((attr = va_arg(ap, int)) != 0) {
    int tag = va_arg(ap, int);
    const char *text = va_arg(ap, const char *);

    one.n = 0;
    atv(&one, attr, tag, text, strlen(text));
    rdn(name, &one);
  }
  va_end(ap);
  wrap(name, TAG_SEQ);
}

/* NameConstraints with one directoryName subtree, permitted or excluded, besides a
 * permitted dNSName one (which never binds a subject). */
static struct proxy_nc *dir_nc(const struct der *name_rdns, int excluded)
{
  struct der d = { .n = 0 }, dn = { .n = 0 }, out;

  dns(&dn, "example.com");
  dir(&d, name_rdns);
  if (excluded) {
    struct der permitted = dn;

    nc_der(&out, &permitted, &d);
  } else {
    memcpy(dn.b + dn.n, d.b, d.n);
    dn.n += d.n;
    nc_der(&out, &dn, NULL);
  }
  return parse_ok(&out);
}

static int check_subject(const struct proxy_nc *nc, struct der *subject, char *why,
                         size_t size)
{
  return proxy_nc_check_subject(nc, subject->b, subject->n, why, size);
}

/*
 * Subjects compared as OpenSSL 3 compares canonical encodings; the cases that
 * `openssl verify` was asked about are in test_upstream_trust.c, these are the ones
 * the openssl command line cannot make (the same attribute twice in one RDN, string
 * types it does not write) and the reason's text.
 */
TEST(subject_against_directory_name)
{
  struct der base = { .n = 0 }, one = { .n = 0 }, subject;
  struct proxy_nc *nc;
  char why[256];

  /* Subtree: O=Example, then {O=a, O=a} (one RDN holding one attribute twice). */
  atv(&one, ATTR_O, UTF8, "Example", 7);
  rdn(&base, &one);
  one.n = 0;
  atv(&one, ATTR_O, UTF8, "a", 1);
  atv(&one, ATTR_O, UTF8, "a", 1);
  rdn(&base, &one);
  nc = dir_nc(&base, 0);

  subject.n = 0;
  one.n = 0;
  atv(&one, ATTR_O, BMP, "\0E\0X\0A\0M\0P\0L\0E", 14);
  rdn(&subject, &one);
  one.n = 0;
  atv(&one, ATTR_O, UNIVERSAL, "\0\0\0A", 4);
  atv(&one, ATTR_O, PRINTABLE, " a\t", 3);
  rdn(&subject, &one);
  wrap(&subject, TAG_SEQ);
  ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), 0);

  /* {O=a, O=b}: as many attributes, not the same ones. */
  subject.n = 0;
  one.n = 0;
  atv(&one, ATTR_O, UTF8, "example", 7);
  rdn(&subject, &one);
  one.n = 0;
  atv(&one, ATTR_O, UTF8, "a", 1);
  atv(&one, ATTR_O, UTF8, "b", 1);
  rdn(&subject, &one);
  wrap(&subject, TAG_SEQ);
  ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), -EPERM);
  ASSERT_STREQ(why, "the certificate's subject O=example, O=a + O=b is not within any "
                     "permitted directoryName subtree (O=Example, O=a + O=a)");
  proxy_nc_free(nc);

  /* Inner runs of any spaces are one; NumericStrings are kept as they are. */
  base.n = 0;
  one.n = 0;
  atv(&one, ATTR_O, UTF8, "big example corp", 16);
  rdn(&base, &one);
  one.n = 0;
  atv(&one, ATTR_OU, NUMERIC, "12 3", 4);
  rdn(&base, &one);
  nc = dir_nc(&base, 1);
  name_of(&subject, ATTR_O, UTF8, " BIG\t\n example   Corp ", ATTR_OU, NUMERIC, "12 3",
          ATTR_CN, UTF8, "x", 0);
  ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), -EPERM);
  ASSERT_CONTAINS(why, "is within the excluded directoryName subtree");
  name_of(&subject, ATTR_O, UTF8, "big example corp", ATTR_OU, NUMERIC, "12  3", 0);
  ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), 0);
  name_of(&subject, ATTR_O, UTF8, "big example corp", ATTR_OU, UTF8, "12 3", 0);
  ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), 0);
  name_of(&subject, ATTR_O, UTF8, "bigexample corp", ATTR_OU, NUMERIC, "12 3", 0);
  ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), 0);
  proxy_nc_free(nc);
}

/*
 * Fail closed: a subject that is not a Name, or holds a value OpenSSL cannot decode
 * (a VisibleString, an odd-length BMPString, bad UTF-8), is refused when the CA has
 * directoryName subtrees of either kind, and not looked at when it has none. The
 * empty subject is never bound.
 */
TEST(subject_undecodable_refused)
{
  static const unsigned char bad_utf8[] = { 'a', 0xc0, 0x80 };
  struct der base, subject, one, d = { .n = 0 }, out;
  struct proxy_nc *kinds[3];
  char why[256];
  int k;

  base.n = 0;
  one.n = 0;
  atv(&one, ATTR_O, UTF8, "Example", 7);
  rdn(&base, &one);
  kinds[0] = dir_nc(&base, 0);
  kinds[1] = dir_nc(&base, 1);
  dns(&d, "example.com");
  nc_der(&out, &d, NULL);
  kinds[2] = parse_ok(&out);
  for (k = 0; k < 3; k++) {
    int expect = k < 2 ? -EILSEQ : 0;

    name_of(&subject, ATTR_O, UTF8, "Example", ATTR_CN, VISIBLE, "x", 0);
    ASSERT_EQ(check_subject(kinds[k], &subject, why, sizeof(why)), expect);
    if (k < 2)
      ASSERT_STREQ(why, "the certificate's subject has an attribute type or value "
                         "OpenSSL cannot decode, and its CA has directoryName "
                         "nameConstraints");
    name_of(&subject, ATTR_O, BMP, "Exa", 0);
    ASSERT_EQ(check_subject(kinds[k], &subject, why, sizeof(why)), expect);
    subject.n = 0;
    one.n = 0;
    atv(&one, ATTR_O, UTF8, bad_utf8, sizeof(bad_utf8));
    rdn(&subject, &one);
    wrap(&subject, TAG_SEQ);
    ASSERT_EQ(check_subject(kinds[k], &subject, why, sizeof(why)), expect);
    /* Not a Name: trailing bytes, an empty RDN. */
    name_of(&subject, ATTR_O, UTF8, "Example", 0);
    subject.b[subject.n++] = 0;
    ASSERT_EQ(check_subject(kinds[k], &subject, why, sizeof(why)), expect);
    if (k < 2)
      ASSERT_CONTAINS(why, "is not a DER Name");
    subject.n = 0;
    put(&subject, TAG_SET, "", 0);
    wrap(&subject, TAG_SEQ);
    ASSERT_EQ(check_subject(kinds[k], &subject, why, sizeof(why)), expect);
    /* The empty subject. */
    subject.n = 0;
    wrap(&subject, TAG_SEQ);
    ASSERT_EQ(check_subject(kinds[k], &subject, why, sizeof(why)), 0);
    proxy_nc_free(kinds[k]);
  }
}

/*
 * A directoryName of a subjectAltName is compared as a subject is, but an empty one
 * is bound (OpenSSL's nc_dn: no canonical encoding but the empty one begins it), and
 * the reason names it as a directoryName. The chains are in test_upstream_trust.c.
 */
TEST(dirname_san_against_directory_name)
{
  struct der base = { .n = 0 }, one = { .n = 0 }, name;
  struct proxy_nc *nc;
  char why[256];
  int excluded;

  atv(&one, ATTR_O, UTF8, "Example", 7);
  rdn(&base, &one);
  for (excluded = 0; excluded < 2; excluded++) {
    nc = dir_nc(&base, excluded);
    name.n = 0;
    wrap(&name, TAG_SEQ);
    ASSERT_EQ(check_subject(nc, &name, why, sizeof(why)), 0);
    ASSERT_EQ(proxy_nc_check_dirname(nc, name.b, name.n, why, sizeof(why)),
              excluded ? 0 : -EPERM);
    if (!excluded)
      ASSERT_STREQ(why, "the certificate's directoryName the empty name is not within "
                         "any permitted directoryName subtree (O=Example)");
    name_of(&name, ATTR_O, PRINTABLE, " EXAMPLE", ATTR_CN, UTF8, "x", 0);
    ASSERT_EQ(proxy_nc_check_dirname(nc, name.b, name.n, why, sizeof(why)),
              excluded ? -EPERM : 0);
    if (excluded)
      ASSERT_STREQ(why, "the certificate's directoryName O= EXAMPLE, CN=x is within the "
                         "excluded directoryName subtree O=Example");
    name_of(&name, ATTR_O, UTF8, "Example", 0);
    name.b[name.n++] = 0;
    ASSERT_EQ(proxy_nc_check_dirname(nc, name.b, name.n, why, sizeof(why)), -EILSEQ);
    ASSERT_STREQ(why, "the certificate's directoryName is not a DER Name, and its CA "
                      "has directoryName nameConstraints");
    proxy_nc_free(nc);
  }
}

/* A multi-valued RDN is compared attribute against attribute, so its size is bounded:
 * 16 attributes are compared, 17 refused (a server could send 1,600). */
TEST(subject_rdn_attributes_bounded)
{
  struct der base = { .n = 0 }, one = { .n = 0 }, subject;
  struct proxy_nc *nc;
  char why[256];
  int i;

  atv(&one, ATTR_O, UTF8, "Example", 7);
  rdn(&base, &one);
  nc = dir_nc(&base, 1); /* excluded O=Example */
  for (i = 16; i <= 17; i++) {
    int k;

    subject.n = 0;
    one.n = 0;
    for (k = 0; k < i; k++)
      atv(&one, ATTR_O, UTF8, "Other", 5);
    rdn(&subject, &one);
    wrap(&subject, TAG_SEQ);
    ASSERT_EQ(check_subject(nc, &subject, why, sizeof(why)), i == 16 ? 0 : -EILSEQ);
  }
  ASSERT_STREQ(why, "the certificate's subject has an RDN of more than 16 attributes, and "
                    "its CA has directoryName nameConstraints");
  proxy_nc_free(nc);
}

/* Names equal as OpenSSL's X509_NAME_cmp finds them (a CA is self-issued when its
 * subject and issuer are). */
TEST(names_equal)
{
  struct der a, b;

  name_of(&a, ATTR_CN, UTF8, "int p", 0);
  name_of(&b, ATTR_CN, PRINTABLE, "  INT   P ", 0);
  ASSERT_EQ(proxy_nc_names_equal(a.b, a.n, b.b, b.n), 1);
  name_of(&b, ATTR_CN, UTF8, "int p", ATTR_O, UTF8, "x", 0);
  ASSERT_EQ(proxy_nc_names_equal(a.b, a.n, b.b, b.n), 0);
  ASSERT_EQ(proxy_nc_names_equal(b.b, b.n, a.b, a.n), 0);
  name_of(&b, ATTR_O, UTF8, "int p", 0);
  ASSERT_EQ(proxy_nc_names_equal(a.b, a.n, b.b, b.n), 0);
  name_of(&a, ATTR_CN, VISIBLE, "int p", 0);
  name_of(&b, ATTR_CN, VISIBLE, "int p", 0);
  ASSERT_EQ(proxy_nc_names_equal(a.b, a.n, b.b, b.n), 0);
  a.n = 0;
  wrap(&a, TAG_SEQ);
  b.n = 0;
  wrap(&b, TAG_SEQ);
  ASSERT_EQ(proxy_nc_names_equal(a.b, a.n, b.b, b.n), 1);
}
