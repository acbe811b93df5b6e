/*
 * Host and path matching: normalization of names and paths, host globs, IPs and
 * CIDRs, ports, and the usual bypass shapes (trailing dots, case, look-alike
 * domains, encoded traversal).
 */
#include "test_rules_helpers.h"

#include "rules/rules_internal.h"

struct host_case {
  const char *pattern;
  const char *name; /* destination name (NULL: address-only) */
  const char *ip;   /* destination address (NULL: unknown) */
  uint16_t port;
  int match;
};

static const struct host_case host_cases[] = {
  { "api.github.com", "api.github.com", NULL, 443, 1 },
  { "api.github.com", "github.com", NULL, 443, 0 },
  { "api.github.com", "api.github.co", NULL, 443, 0 },
  { "api.github.com", "api.github.comm", NULL, 443, 0 },
  { "api.github.com", "xapi.github.com", NULL, 443, 0 },
  { "API.GitHub.COM", "api.github.com", NULL, 443, 1 },
  { "github.com.", "github.com", NULL, 443, 1 },
  { "*.github.com", "a.github.com", NULL, 443, 1 },
  { "*.github.com", "a.b.github.com", NULL, 443, 1 },
  { "*.github.com", "github.com", NULL, 443, 0 },
  { "*.github.com", "evilgithub.com", NULL, 443, 0 },
  { "*.github.com", "github.com.evil.com", NULL, 443, 0 },
  { "*.github.com", "a.github.com.evil", NULL, 443, 0 },
  { "*.github.com", "a-github.com", NULL, 443, 0 },
  { "*.github.com", NULL, "140.82.112.3", 443, 0 },
  { "*.github.com", "api.github.com", NULL, 1, 1 },
  { "*github.com", "evilgithub.com", NULL, 443, 1 },
  { "*github.com", "github.com", NULL, 443, 1 },
  { "api.*.com", "api.github.com", NULL, 443, 1 },
  { "api.*.com", "api.a.b.com", NULL, 443, 1 },
  { "api.*.com", "api.com", NULL, 443, 0 },
  { "*-api.example.com", "eu-api.example.com", NULL, 443, 1 },
  { "*-api.example.com", "a.b-api.example.com", NULL, 443, 1 },
  { "*-api.example.com", "api.example.com", NULL, 443, 0 },
  { "*.*.example.com", "a.b.example.com", NULL, 443, 1 },
  { "*.*.example.com", "a.example.com", NULL, 443, 0 },
  { "*.co", "a.co", NULL, 443, 1 },
  { "*.co", "a.com", NULL, 443, 0 },
  { "*", "anything.example", NULL, 443, 1 },
  { "*", NULL, "192.0.2.1", 443, 1 },
  { "*", "10.0.0.1", NULL, 443, 1 },
  { "api.github.com:443", "api.github.com", NULL, 443, 1 },
  { "api.github.com:443", "api.github.com", NULL, 80, 0 },
  { "*.github.com:8443", "a.github.com", NULL, 8443, 1 },
  { "*.github.com:8443", "a.github.com", NULL, 443, 0 },
  { "*:8080", "x.example", NULL, 8080, 1 },
  { "*:8080", "x.example", NULL, 80, 0 },
  { "a-b_c.example.com", "a-b_c.example.com", NULL, 443, 1 },
  { "zoom.us", "zoom.us", NULL, 443, 1 },
  { "*.xyz", "a-z.xyz", NULL, 443, 1 },
  { "xn--bcher-kva.example", "xn--bcher-kva.example", NULL, 443, 1 },
  { "localhost", "localhost", NULL, 80, 1 },
  { "10.0.0.0/8", "10.1.2.3", NULL, 443, 1 },
  { "10.0.0.0/8", NULL, "10.1.2.3", 443, 1 },
  /* A named flow is dialed by name: the address the sandbox chose does not match. */
  { "10.0.0.0/8", "example.com", "10.1.2.3", 443, 0 },
  { "10.20.0.5", "evil.example", "10.20.0.5", 443, 0 },
  { "10.20.0.5", "10.20.0.5", "192.0.2.1", 443, 1 },
  { "10.20.0.5", "192.0.2.1", "10.20.0.5", 443, 0 },
  { "10.0.0.0/8", NULL, "11.0.0.1", 443, 0 },
  { "10.0.0.0/8", "example.com", NULL, 443, 0 },
  { "10.0.0.0/8", NULL, "::ffff:10.9.9.9", 443, 1 },
  { "10.0.0.1", NULL, "10.0.0.2", 443, 0 },
  { "127.0.0.1", "127.0.0.1", NULL, 80, 1 },
  { "127.0.0.1", NULL, "::ffff:127.0.0.1", 80, 1 },
  { "127.0.0.1", "::ffff:127.0.0.1", NULL, 80, 1 },
  { "::ffff:10.0.0.0/104", NULL, "10.1.1.1", 443, 1 },
  { "::1", "::1", NULL, 443, 1 },
  { "::1", NULL, "::1", 443, 1 },
  { "::1", NULL, "127.0.0.1", 443, 0 },
  { "[::1]", NULL, "::1", 443, 1 },
  { "2001:db8::/32", NULL, "2001:db8:1::5", 443, 1 },
  { "2001:db8::/32", NULL, "2001:db9::5", 443, 0 },
  { "[2001:db8::1]:443", NULL, "2001:db8::1", 443, 1 },
  { "[2001:db8::1]:443", NULL, "2001:db8::1", 80, 0 },
  { "[2001:db8::/32]:443", NULL, "2001:db8::7", 443, 1 },
  { "[2001:db8::]/32:443", NULL, "2001:db8::7", 443, 1 },
  { "fe80::/10", NULL, "fe80::1", 443, 1 },
  { "0.0.0.0/0", NULL, "8.8.8.8", 443, 1 },
  { "0.0.0.0/0", NULL, "2001:db8::1", 443, 0 },
  { "::/0", NULL, "2001:db8::1", 443, 1 },
  { "::/0", NULL, "8.8.8.8", 443, 0 },
  { "192.168.1.0/24:22", NULL, "192.168.1.5", 22, 1 },
  { "192.168.1.0/24:22", NULL, "192.168.1.5", 23, 0 },
  { "10.0.0.1.", "10.0.0.1", NULL, 443, 1 },
};

TEST(host_patterns)
{
  size_t i;

  for (i = 0; i < sizeof(host_cases) / sizeof(host_cases[0]); i++) {
    const struct host_case *c = &host_cases[i];
    char json[512];
    struct rules_config *cfg;
    struct rules_decision d;

    snprintf(json, sizeof(json),
             "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"%s\"],"
             "\"headers\":[{\"name\":\"X-T\",\"type\":\"plaintext\",\"value\":\"v\"}]}]}",
             c->pattern);
    cfg = parse_ok(json, NULL);
    d = conn_decide(cfg, c->name, c->ip, c->port);
    if (d.action != (c->match ? RULES_INTERCEPT : RULES_TUNNEL))
      TEST_FAIL_("case %zu: pattern %s, name %s, ip %s, port %u: expected %s, got %d", i,
                 c->pattern, c->name ? c->name : "(null)", c->ip ? c->ip : "(null)",
                 c->port, c->match ? "match" : "no match", d.action);
    if (c->match)
      ASSERT_STREQ(d.entry, "r");
    rules_config_unref(cfg);
  }
  ASSERT_GE(i, 40);
}

/* Names arrive normalized; ones that are not (or that resolvers read as addresses)
 * are denied rather than matched as text. */
TEST(unnormalized_names_denied)
{
  static const char *const bad[] = {
    "API.github.com", "github.com.", "a..b", ".a", "127.1", "2130706433", "0x7f000001",
    "1.2.3.04", "exa mple.com", "caf\xc3\xa9.com", "a:b", "", "[::1]", "a.b.99",
    "host.1999",
  };
  struct rules_config *cfg = parse_ok("{\"no_proxy\":[\"*\"]}", NULL);
  size_t i;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct rules_decision d = conn_decide(cfg, bad[i], NULL, 443);
    struct rules_request_decision r;

    if (d.action != RULES_DENY)
      TEST_FAIL_("name \"%s\" was not denied", bad[i]);
    ASSERT_STREQ(d.reason, "invalid_name");
    req_decide(cfg, bad[i], 443, "GET", "/", &r);
    ASSERT_EQ(r.deny, 1);
    ASSERT_STREQ(r.reason, "invalid_name");
  }
  rules_config_unref(cfg);
}

static void norm_host(const char *in, const char *expect)
{
  char out[RULES_MAX_NAME_LEN + 1];
  int n = rules_normalize_host(in, strlen(in), out, sizeof(out));

  if (expect == NULL) {
    if (n != -EINVAL)
      TEST_FAIL_("normalize_host(\"%s\") = %d (\"%s\"), expected -EINVAL", in, n,
                 n >= 0 ? out : "");
    return;
  }
  if (n < 0)
    TEST_FAIL_("normalize_host(\"%s\") failed: %d", in, n);
  ASSERT_EQ(n, strlen(expect));
  ASSERT_STREQ(out, expect);
}

TEST(normalize_host)
{
  char long_label[80], long_name[300], out[RULES_MAX_NAME_LEN + 1];
  size_t i;

  norm_host("API.GitHub.com.", "api.github.com");
  norm_host("api.github.com", "api.github.com");
  norm_host("exa_mple.com", "exa_mple.com");
  norm_host("localhost", "localhost");
  norm_host("1.2.3.4", "1.2.3.4");
  norm_host("1.2.3.4.", "1.2.3.4");
  norm_host("[::1]", "::1");
  norm_host("[0:0::1]", "::1");
  norm_host("::1", "::1");
  norm_host("[::FFFF:1.2.3.4]", "::ffff:1.2.3.4");
  norm_host("[2001:DB8::1]", "2001:db8::1");
  norm_host("", NULL);
  norm_host(".", NULL);
  norm_host("a..b", NULL);
  norm_host(".a", NULL);
  norm_host("a.b..", NULL);
  norm_host("ex ample.com", NULL);
  norm_host("caf\xc3\xa9.com", NULL);
  norm_host("a/b", NULL);
  norm_host("*.github.com", NULL);
  norm_host("127.1", NULL);
  norm_host("2130706433", NULL);
  norm_host("0x7f000001", NULL);
  norm_host("0x7f.0.0.1", NULL);
  norm_host("1.2.3.04", NULL);
  norm_host("1.2.3.4.5", NULL);
  norm_host("[1.2.3.4]", NULL);
  norm_host("[::1", NULL);
  norm_host("[fe80::1%eth0]", NULL);
  /* As long as INET6_ADDRSTRLEN, which counts the NUL: longer than any IPv6 literal. */
  norm_host("[1111:2222:3333:4444:5555:6666:7777:8888:9999:a]", NULL);
  ASSERT_EQ(rules_normalize_host("a\0b", 3, out, sizeof(out)), -EINVAL);

  memset(long_label, 'a', 63);
  long_label[63] = '\0';
  norm_host(long_label, long_label);
  memset(long_label, 'a', 64);
  long_label[64] = '\0';
  norm_host(long_label, NULL);
  /* 253 bytes: labels of 9 "a" characters and dots. */
  for (i = 0; i < 253; i++)
    long_name[i] = (i % 10 == 9) ? '.' : 'a';
  long_name[253] = '\0';
  norm_host(long_name, long_name);
  long_name[253] = 'a';
  long_name[254] = '\0';
  norm_host(long_name, NULL);
}

/* A name of the longest length a DNS name has (253) is matched, whole; one byte more is
 * denied, never cut to 253 bytes and matched as the shorter name it begins with (that
 * name's credential would go to the longer one). */
TEST(longest_name_matched_whole)
{
  char name[256], json[512];
  struct rules_config *cfg;
  struct rules_request_decision r;
  struct rules_decision d;
  size_t i;

  /* Labels of nine letters and dots, the last one "example" so that it is a name. */
  for (i = 0; i < 253; i++)
    name[i] = (i % 10 == 9) ? '.' : 'a';
  memcpy(name + 246, "example", 7);
  name[253] = '\0';
  snprintf(json, sizeof(json),
           "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"%s\"],"
           "\"headers\":[{\"name\":\"X-T\",\"type\":\"plaintext\",\"value\":\"v\"}]}]}",
           name);
  cfg = parse_ok(json, NULL);
  d = conn_decide(cfg, name, NULL, 443);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_STREQ(d.entry, "r");
  req_decide(cfg, name, 443, "GET", "/", &r);
  ASSERT_EQ(r.deny, 0);
  ASSERT_EQ(r.nheaders, 1);

  name[253] = 's';
  name[254] = '\0';
  d = conn_decide(cfg, name, NULL, 443);
  ASSERT_EQ(d.action, RULES_DENY);
  ASSERT_STREQ(d.reason, "invalid_name");
  req_decide(cfg, name, 443, "GET", "/", &r);
  ASSERT_EQ(r.deny, 1);
  ASSERT_STREQ(r.reason, "invalid_name");
  ASSERT_EQ(r.nheaders, 0);
  rules_config_unref(cfg);
}

/* The normalized form of a name matches; the raw one is refused: both shapes of a
 * trailing-dot or uppercase bypass end up at the same decision or a deny. */
TEST(trailing_dot_and_case_bypass)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"gh\",\"match_hosts\":[\"api.github.com\"],"
      "\"headers\":[{\"name\":\"X-T\",\"type\":\"plaintext\",\"value\":\"v\"}]}],"
      "\"egress\":{\"deny\":[\"evil.example\"]}}",
      NULL);
  static const char *const shapes[] = { "API.GITHUB.COM", "api.github.com.", "Api.GitHub.Com." };
  static const char *const evil[] = { "EVIL.example", "evil.example.", "eViL.EXAMPLE." };
  char out[RULES_MAX_NAME_LEN + 1];
  size_t i;

  for (i = 0; i < 3; i++) {
    ASSERT_GT(rules_normalize_host(shapes[i], strlen(shapes[i]), out, sizeof(out)), 0);
    ASSERT_EQ(conn_action(cfg, out, 443), RULES_INTERCEPT);
    ASSERT_EQ(conn_action(cfg, shapes[i], 443), RULES_DENY);
    ASSERT_GT(rules_normalize_host(evil[i], strlen(evil[i]), out, sizeof(out)), 0);
    ASSERT_STREQ(conn_decide(cfg, out, NULL, 443).reason, "egress_deny");
  }
  rules_config_unref(cfg);
}

TEST(glob_functions)
{
  ASSERT_EQ(rules_host_glob_match("*.github.com", "a.github.com"), 1);
  ASSERT_EQ(rules_host_glob_match("*.github.com", "github.com"), 0);
  ASSERT_EQ(rules_host_glob_match("*", ""), 1);
  ASSERT_EQ(rules_host_glob_match("a*b*c", "axxbyyc"), 1);
  ASSERT_EQ(rules_host_glob_match("a*b*c", "axxbyy"), 0);
  ASSERT_EQ(rules_host_glob_match("*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 0);
  ASSERT_EQ(rules_path_glob_match("/repos/*", "/repos/a/b"), 1);
  ASSERT_EQ(rules_path_glob_match("/repos/*", "/repos/"), 1);
  ASSERT_EQ(rules_path_glob_match("/repos/*", "/repos"), 0);
  ASSERT_EQ(rules_path_glob_match("/repos/*", "/reposx/a"), 0);
  ASSERT_EQ(rules_path_glob_match("/*/git-receive-pack", "/o/r.git/git-receive-pack"), 1);
  ASSERT_EQ(rules_path_glob_match("/*/git-receive-pack", "/o/r.git/git-upload-pack"), 0);
}

/* A segment longer than the search keeps a table for (only the exported helpers take
 * one) is still taken at its leftmost place: taken at a later one, "*S*S*" would not
 * match "SS". */
TEST(glob_long_segment_leftmost)
{
  static char pat[2 * 2100 + 4], subj[2 * 2100 + 1];
  size_t m = 2100;

  pat[0] = '*';
  memset(pat + 1, 's', m);
  pat[1 + m] = '*';
  memset(pat + 2 + m, 's', m);
  pat[2 + 2 * m] = '*';
  memset(subj, 's', 2 * m);
  ASSERT_EQ(rules_glob_match(pat, 3 + 2 * m, subj, 2 * m), 1);
  ASSERT_EQ(rules_glob_match(pat, 3 + 2 * m, subj, 2 * m - 1), 0);
}

/* The subject of a glob is the sandbox's (a path up to 8 KiB, a name): whatever the
 * pattern, matching compares each subject byte a bounded number of times. Retrying
 * from the last star one byte further took plen * slen comparisons. */
TEST(glob_work_is_linear)
{
  static char pat[2049], subj[8193];
  static const struct {
    const char *head, *fill, *tail;
  } shapes[] = {
    { "*", "a", "b" },       /* a star, then a long literal that fails at its end */
    { "*", "a", "b*" },      /* the same between two stars */
    { "/*", "ab", "c*/" },   /* a repeated pair */
    { "*", "a*", "b" },      /* many stars */
    { "/", "a", "*" },       /* a plain prefix */
  };
  size_t i, k, plen, slen = sizeof(subj) - 1, steps;
  int match, icase;

  memset(subj, 'a', slen);
  subj[0] = '/';
  for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
    plen = (size_t)snprintf(pat, sizeof(pat), "%s", shapes[i].head);
    while (plen + strlen(shapes[i].fill) + strlen(shapes[i].tail) < sizeof(pat) - 1) {
      memcpy(pat + plen, shapes[i].fill, strlen(shapes[i].fill));
      plen += strlen(shapes[i].fill);
    }
    plen += (size_t)snprintf(pat + plen, sizeof(pat) - plen, "%s", shapes[i].tail);
    for (icase = 0; icase < 2; icase++) {
      steps = rules_glob_steps(pat, plen, subj, slen, icase, &match);
      ASSERT_EQ(match, i == 4);
      if (steps > 4 * (plen + slen))
        TEST_FAIL_("pattern %zu (%s...%s, %zu bytes), icase %d: %zu comparisons for a "
                   "%zu-byte subject",
                   i, shapes[i].head, shapes[i].tail, plen, icase, steps, slen);
    }
  }
  /* Still right where the leftmost place of a segment is the one to take. */
  for (k = 0; k < 2; k++) {
    ASSERT_EQ(rules_glob_steps("*aab*", 5, "aaab", 4, (int)k, &match) > 0, 1);
    ASSERT_EQ(match, 1);
    rules_glob_steps("*ab*ab", 6, "xabab", 5, (int)k, &match);
    ASSERT_EQ(match, 1);
    rules_glob_steps("*ab*ab", 6, "xab", 3, (int)k, &match);
    ASSERT_EQ(match, 0);
    rules_glob_steps("a*a", 3, "a", 1, (int)k, &match);
    ASSERT_EQ(match, 0);
  }
  rules_glob_steps("*AB*", 4, "xab", 3, 1, &match);
  ASSERT_EQ(match, 1);
  rules_glob_steps("*AB*", 4, "xab", 3, 0, &match);
  ASSERT_EQ(match, 0);
}

/* xorshift64: the same sequence on every run. */
static uint64_t glob_rand(uint64_t *st)
{
  *st ^= *st << 13;
  *st ^= *st >> 7;
  *st ^= *st << 17;
  return *st;
}

static unsigned char ref_fold(unsigned char c)
{
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* The glob by its definition, one table row per pattern byte from the end: row[j] is
 * whether the rest of the pattern matches s[j..]. O(plen * slen). */
static int ref_glob(const char *p, size_t plen, const char *s, size_t slen, int icase)
{
  static unsigned char rows[2][4608];
  unsigned char *row = rows[0], *next = rows[1], *t;
  size_t i, j;

  ASSERT_LT(slen, sizeof(rows[0]));
  memset(row, 0, slen);
  row[slen] = 1;
  for (i = plen; i-- > 0;) {
    for (j = slen + 1; j-- > 0;) {
      if (p[i] == '*')
        next[j] = row[j] || (j < slen && next[j + 1]);
      else
        next[j] = j < slen && row[j + 1] &&
                  (p[i] == s[j] || (icase && ref_fold((unsigned char)p[i]) ==
                                                 ref_fold((unsigned char)s[j])));
    }
    t = row;
    row = next;
    next = t;
  }
  return row[0];
}

static void check_glob(const char *p, size_t plen, const char *s, size_t slen)
{
  int icase, match, want;

  for (icase = 0; icase < 2; icase++) {
    rules_glob_steps(p, plen, s, slen, icase, &match);
    want = ref_glob(p, plen, s, slen, icase);
    if (match != want)
      TEST_FAIL_("icase %d: \"%.*s\" against \"%.*s\": %d, by definition %d", icase,
                 (int)(plen > 80 ? 80 : plen), p, (int)(slen > 80 ? 80 : slen), s, match,
                 want);
  }
}

/* The matcher agrees with the glob's definition on random and adversarial pairs:
 * empty ones, only stars, text before the first star overlapping text after the last
 * ("a*a", "ab*ba"), periodic segments, either case, bytes above 0x7f (never folded),
 * and segments at and past GLOB_SEG_MAX (searched naively there). */
TEST(glob_agrees_with_definition)
{
  static const char *const alphabets[] = { "ab*", "aA*", "ab*/", "aAbB*\xc3\xe3", "*",
                                           "a",   "aab*", "xy*/aX" };
  static const char *const fixed[][2] = {
    { "", "" },      { "", "a" },       { "*", "" },        { "**", "" },
    { "***", "ab" }, { "a*a", "a" },    { "a*a", "aa" },    { "ab*ba", "aba" },
    { "ab*ba", "abba" }, { "aba*aba", "ababa" }, { "*aab*", "aaab" },
    { "a*\xc3", "A\xe3" }, { "\xc3*", "\xe3" },
  };
  /* Segments of 2047, 2048 (GLOB_SEG_MAX), 2049 and 3048 bytes between two stars. */
  static const size_t long_len[] = { 2049, 2050, 2051, 2050, 3050, 2051 };
  static char pat[3100], subj[4600];
  uint64_t st = 0x9e3779b97f4a7c15ULL;
  size_t i, k, plen, slen, n;

  for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
    check_glob(fixed[i][0], strlen(fixed[i][0]), fixed[i][1], strlen(fixed[i][1]));
  for (i = 0; i < 100000; i++) {
    const char *al = alphabets[glob_rand(&st) % 8];

    n = strlen(al);
    plen = glob_rand(&st) % 12;
    for (k = 0; k < plen; k++)
      pat[k] = al[glob_rand(&st) % n];
    if (glob_rand(&st) % 3 == 0) {
      /* A subject the pattern nearly spells, stars filled, then maybe one byte off. */
      for (k = 0, slen = 0; k < plen && slen < 17; k++) {
        size_t r = glob_rand(&st) % 4;

        if (pat[k] != '*')
          subj[slen++] =
              glob_rand(&st) % 5 ? pat[k] : (char)ref_fold((unsigned char)pat[k]);
        while (pat[k] == '*' && r-- > 0 && slen < 17)
          subj[slen++] = "abA/"[glob_rand(&st) % 4];
      }
      if (slen > 0 && glob_rand(&st) % 4 == 0)
        subj[glob_rand(&st) % slen] = 'b';
    } else {
      slen = glob_rand(&st) % 18;
      for (k = 0; k < slen; k++)
        subj[k] = al[glob_rand(&st) % n];
    }
    check_glob(pat, plen, subj, slen);
  }
  /* Long segments (a path pattern holds up to 2048 bytes; past GLOB_SEG_MAX only the
   * exported helpers can pass one) cut from the subject, sometimes one byte off. */
  for (i = 0; i < sizeof(long_len) / sizeof(long_len[0]); i++) {
    plen = long_len[i];
    slen = plen + 200 + glob_rand(&st) % 400;
    for (k = 0; k < slen; k++)
      subj[k] = (i & 1 ? "aab" : "ab")[glob_rand(&st) % (i & 1 ? 3 : 2)];
    k = glob_rand(&st) % (slen - plen + 1);
    memcpy(pat + 1, subj + k, plen - 2);
    pat[0] = '*';
    pat[plen - 1] = '*';
    if (i % 4 == 1)
      pat[1 + glob_rand(&st) % (plen - 2)] = 'B';
    if (i % 4 == 2)
      pat[plen - 1] = subj[slen - 1];
    check_glob(pat, plen, subj, slen);
  }
}

/* A path pattern against a path by definition, ASCII letters in either case. */
static int ref_pathpat(const struct rules_pathpat *p, size_t plen, const char *path,
                       size_t len)
{
  size_t i;

  if (p->kind == RULES_PP_GLOB)
    return ref_glob(p->glob, plen, path, len, 1);
  if (len < plen || (p->kind == RULES_PP_EXACT && len != plen))
    return 0;
  for (i = 0; i < plen; i++)
    if (ref_fold((unsigned char)path[i]) != ref_fold((unsigned char)p->glob[i]))
      return 0;
  return 1;
}

/* The three spellings a deny path covers, matched one by one as they are defined: as
 * written, the path's one trailing slash left out (not the root's), the pattern's
 * left out (not for a prefix pattern). */
static int ref_deny(const struct rules_pathpat *p, const char *path, size_t len)
{
  return ref_pathpat(p, p->len, path, len) ||
         (len > 1 && path[len - 1] == '/' && ref_pathpat(p, p->len, path, len - 1)) ||
         (p->kind != RULES_PP_PREFIX && p->len > 1 && p->glob[p->len - 1] == '/' &&
          ref_pathpat(p, p->len - 1, path, len));
}

/* rules_pathpat_match_deny matches a glob once for the three spellings; on patterns
 * and paths as the config and the request give them (parsed, normalized, and the
 * ambiguous paths left out: those match every deny entry) it agrees with three
 * matches. */
TEST(deny_forms_agree_with_three_matches)
{
  static const char *const alphabets[] = { "a/*", "aB/*", "/*x", "a*/", "/a*A", "b/*%41" };
  struct rules_arena arena = { 0 };
  uint64_t st = 0x2545f4914f6cdd1dULL;
  char pat[16], path[32], norm[64], err[256];
  size_t i, k, n, plen, len, tested = 0, globs = 0;
  int flags, got;

  for (i = 0; i < 200000; i++) {
    const char *al = alphabets[glob_rand(&st) % 6];
    struct rules_pathpat pp;

    n = strlen(al);
    plen = 1 + glob_rand(&st) % 10;
    pat[0] = glob_rand(&st) % 6 == 0 ? '*' : '/';
    for (k = 1; k < plen; k++)
      pat[k] = al[glob_rand(&st) % n];
    pat[plen] = '\0';
    path[0] = '/';
    len = 1;
    if (glob_rand(&st) % 2 == 0) {
      /* A path the pattern nearly spells, perhaps with a slash more. */
      for (k = 0; k < plen && len < 24; k++) {
        size_t r = glob_rand(&st) % 3;

        if (pat[k] != '*' && (k > 0 || pat[k] != '/'))
          path[len++] = pat[k];
        while (pat[k] == '*' && r-- > 0)
          path[len++] = "aB/*"[glob_rand(&st) % 4];
      }
      if (glob_rand(&st) % 2 == 0)
        path[len++] = '/';
    } else {
      for (k = glob_rand(&st) % 14; k > 0; k--)
        path[len++] = "aAbB/*x"[glob_rand(&st) % 7];
    }
    if (rules_pathpat_parse(&arena, pat, &pp, err, sizeof(err)) != 0)
      continue;
    got = rules_normalize_path(path, len, norm, sizeof(norm), &flags);
    if (got < 0 || (flags & RULES_PATH_AMBIGUOUS))
      continue;
    tested++;
    globs += pp.kind == RULES_PP_GLOB;
    len = (size_t)got;
    if (rules_pathpat_match_deny(&pp, norm, len) != ref_deny(&pp, norm, len))
      TEST_FAIL_("deny path \"%s\" against \"%s\": %d, three matches %d", pat, norm,
                 rules_pathpat_match_deny(&pp, norm, len), ref_deny(&pp, norm, len));
  }
  rules_arena_free(&arena);
  /* Most pairs are kept, so the comparison is not vacuous. */
  ASSERT_LT(80000, tested);
  ASSERT_LT(40000, globs);
}

struct path_case {
  const char *in;
  const char *out; /* NULL: -EINVAL */
  int ambiguous;
};

static const struct path_case path_cases[] = {
  { "/repos/a/b", "/repos/a/b", 0 },
  /* Dot-segments are removed (RFC 3986) and make the path ambiguous: it is forwarded
   * as sent, and some servers (Express) route before removing them. */
  { "/repos/../admin", "/admin", 1 },
  { "/repos/%2e%2e/admin", "/admin", 1 },
  { "/repos/%2E%2E/admin", "/admin", 1 },
  { "/repos/.%2e/admin", "/admin", 1 },
  { "/repos/a/%2e/b", "/repos/a/b", 1 },
  { "/a/./b", "/a/b", 1 },
  { "/a/b/.", "/a/b/", 1 },
  { "/a/b/..", "/a/", 1 },
  { "/..", "/", 1 },
  { "/../../etc/passwd", "/etc/passwd", 1 },
  { "/a//../b", "/a/b", 1 }, /* nginx: /b */
  { "/a/...", "/a/...", 0 },
  { "//repos//a", "//repos//a", 1 },
  { "/repos/", "/repos/", 0 },
  { "/a/%2F/b", "/a/%2F/b", 1 },
  { "/repos/a?x=/../admin", "/repos/a", 0 },
  { "/repos/a?", "/repos/a", 0 },
  { "/r%65pos/a", "/repos/a", 0 },
  { "/%7Euser", "/~user", 0 },
  { "/a%3fb", "/a%3Fb", 0 },
  /* Printable reserved characters decode (servers decode the path before routing),
   * except '%' (no double decoding), '*' (a pattern's glob), '?', '#', ';'. */
  { "/models/x%3Agenerate", "/models/x:generate", 0 },
  { "/a%40b%21%24%26%27%28%29%2B%2C%3D", "/a@b!$&'()+,=", 0 },
  { "/a%2Ab", "/a%2Ab", 0 },
  { "/%2561dmin", "/%2561dmin", 1 }, /* decoded twice: /admin */
  { "/%25%36%31dmin", "/%2561dmin", 1 },
  { "/%25%3F", "/%25%3F", 0 },
  { "/a%25", "/a%25", 0 },
  { "/a%25zz", "/a%25zz", 0 },
  { "/a%23b", "/a%23b", 0 },
  { "/a%3bb", "/a%3Bb", 0 },
  { "/a%20b%7f%e2%82%ac", "/a%20b%7F%E2%82%AC", 0 },
  { "/a%2fb", "/a%2Fb", 1 },
  { "/repos%2F..%2Fadmin", "/repos%2F..%2Fadmin", 1 },
  { "/a%5Cb", "/a%5Cb", 1 },
  { "/a\\b", "/a\\b", 1 },
  { "/a%00", "/a%00", 1 },
  { "/repos/..;/admin", "/repos/..;/admin", 1 },
  { "/repos/.;x/a", "/repos/.;x/a", 1 },
  { "/a;b/c", "/a;b/c", 1 }, /* servlet containers: /a/c */
  { "/admin;jsessionid=1", "/admin;jsessionid=1", 1 },
  { "/a%zz", NULL, 0 },
  { "/a%4", NULL, 0 },
  { "/a%", NULL, 0 },
  { "a/b", NULL, 0 },
  { "", NULL, 0 },
  { "?q=1", NULL, 0 },
  { "*", NULL, 0 },
  { "/a b", NULL, 0 },
  { "/a#b", NULL, 0 },
  { "/a\r\n", NULL, 0 },
  { "http://x/a", NULL, 0 },
};

TEST(normalize_path)
{
  char out[256];
  size_t i;

  for (i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
    const struct path_case *c = &path_cases[i];
    int flags = -1, n = rules_normalize_path(c->in, strlen(c->in), out, sizeof(out), &flags);

    if (c->out == NULL) {
      if (n != -EINVAL)
        TEST_FAIL_("normalize_path(\"%s\") = %d, expected -EINVAL", c->in, n);
      continue;
    }
    if (n < 0)
      TEST_FAIL_("normalize_path(\"%s\") failed: %d", c->in, n);
    if (strcmp(out, c->out) != 0 || (size_t)n != strlen(c->out))
      TEST_FAIL_("normalize_path(\"%s\") = \"%s\", expected \"%s\"", c->in, out, c->out);
    if (((flags & RULES_PATH_AMBIGUOUS) != 0) != c->ambiguous)
      TEST_FAIL_("normalize_path(\"%s\"): ambiguous flag %d, expected %d", c->in, flags,
                 c->ambiguous);
  }
  ASSERT_GE(i, 20);
  /* A NUL inside the given length is a control byte, not an end. */
  ASSERT_EQ(rules_normalize_path("/a\0b", 4, out, sizeof(out), NULL), -EINVAL);
  /* The output must fit: the path without its query plus the NUL. */
  ASSERT_EQ(rules_normalize_path("/abcd", 5, out, 5, NULL), -ENOSPC);
  ASSERT_EQ(rules_normalize_path("/abcd?long-query", 16, out, 6, NULL), 5);
}

/* Request-level matching of match_paths, with the traversal shapes. */
TEST(match_paths_bypass_shapes)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"gh\",\"match_hosts\":[\"api.github.com\"],"
      "\"match_paths\":[\"/repos/*\",\"/user\"],"
      "\"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"t\"}]}]}",
      NULL);
  static const struct {
    const char *path;
    int inject;
    int deny;
  } cases[] = {
    { "/repos/a/b", 1, 0 },
    { "/repos/a/b?x=1", 1, 0 },
    { "/repos/", 1, 0 },
    { "/user", 1, 0 },
    { "/user?q=/repos/x", 1, 0 },
    { "/user/", 0, 0 },
    { "/users", 0, 0 },
    { "/repos", 0, 0 },
    { "/admin?/repos/x", 0, 0 },
    { "/repos/../admin", 0, 0 },
    { "/repos/%2e%2e/admin", 0, 0 },
    { "/repos/%2E%2e/admin", 0, 0 },
    { "/r%65pos/a", 1, 0 },
    { "//repos/a", 0, 0 },
    { "/repos//../admin", 0, 0 }, /* nginx merges the slashes first: /admin */
    { "/repos/a//b", 0, 0 },
    { "/repos%2Fa", 0, 0 },
    { "/repos/a%2F..%2F..%2Fadmin", 0, 0 },
    { "/repos/..;/admin", 0, 0 },
    { "/repos;x/a", 0, 0 },
    { "/repos/a\\..\\..\\admin", 0, 0 },
    { "/repos/a%zz", 0, 1 },
    { "repos/a", 0, 1 },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct rules_request_decision r;

    req_decide(cfg, "api.github.com", 443, "GET", cases[i].path, &r);
    if (r.deny != cases[i].deny || (r.nheaders == 1) != cases[i].inject)
      TEST_FAIL_("path %s: deny %d, %zu headers; expected deny %d, inject %d",
                 cases[i].path, r.deny, r.nheaders, cases[i].deny, cases[i].inject);
    if (r.deny)
      ASSERT_STREQ(r.reason, "invalid_path");
  }
  rules_config_unref(cfg);
}
