/*
 * The synthetic address table: placement, stability, both-way lookups, the bound,
 * recycling of idle entries, collisions.
 */
#include <errno.h>

#include "proxy/dns.h"
#include "proxy/dns_internal.h"
#include "test.h"

#define FIRST_ADDR (PROXY_DNS_SYNTH_BASE + 1)
#define LAST_ADDR (PROXY_DNS_SYNTH_BASE + PROXY_DNS_SYNTH_USABLE)
/* Home of "api.github.com" under the key "sandbox-a" (198.19.183.134). */
#define PINNED_API_GITHUB 0xc613b786u

static struct proxy_dns_table *new_table(size_t max, const char *key, uint64_t idle)
{
  struct proxy_dns_table *t = proxy_dns_table_new(max, key, idle);

  ASSERT_NOT_NULL(t);
  return t;
}

static uint32_t assign(struct proxy_dns_table *t, const char *name, uint64_t now)
{
  uint32_t addr = 0;

  ASSERT_EQ(proxy_dns_table_assign(t, name, now, &addr), 0);
  ASSERT(proxy_dns_is_synthetic(addr));
  ASSERT_GE(addr, FIRST_ADDR);
  ASSERT_LE(addr, LAST_ADDR);
  return addr;
}

TEST(range)
{
  ASSERT_EQ(proxy_dns_is_synthetic(0xc6120000), 1);  /* 198.18.0.0 */
  ASSERT_EQ(proxy_dns_is_synthetic(0xc613ffff), 1);  /* 198.19.255.255 */
  ASSERT_EQ(proxy_dns_is_synthetic(0xc611ffff), 0);  /* 198.17.255.255 */
  ASSERT_EQ(proxy_dns_is_synthetic(0xc6140000), 0);  /* 198.20.0.0 */
  ASSERT_EQ(proxy_dns_is_synthetic(0x7f000001), 0);
  ASSERT_EQ(PROXY_DNS_SYNTH_USABLE, 131070);
}

TEST(new_rejects_bad_arguments)
{
  errno = 0;
  ASSERT_NULL(proxy_dns_table_new(0, "k", 0));
  ASSERT_EQ(errno, EINVAL);
  ASSERT_NULL(proxy_dns_table_new(PROXY_DNS_SYNTH_USABLE + 1, "k", 0));
  ASSERT_NULL(proxy_dns_table_new(10, NULL, 0));
  proxy_dns_table_free(NULL);
}

TEST(both_ways)
{
  struct proxy_dns_table *t = new_table(100, "sandbox-a", 1000);
  char name[300];
  uint32_t a, b, addr;

  a = assign(t, "api.github.com", 0);
  ASSERT_STREQ(proxy_dns_table_lookup(t, a, 1), "api.github.com");
  ASSERT_EQ(assign(t, "api.github.com", 2), a);
  ASSERT_EQ(proxy_dns_table_count(t), 1);
  b = assign(t, "pypi.org", 3);
  ASSERT_NE(a, b);
  ASSERT_STREQ(proxy_dns_table_lookup(t, b, 4), "pypi.org");
  ASSERT_STREQ(proxy_dns_table_lookup(t, a, 5), "api.github.com");
  ASSERT_EQ(proxy_dns_table_count(t), 2);

  /* Unknown or foreign addresses. */
  ASSERT_NULL(proxy_dns_table_lookup(t, a == LAST_ADDR ? a - 1 : a + 1, 6));
  ASSERT_NULL(proxy_dns_table_lookup(t, PROXY_DNS_SYNTH_BASE, 6));
  ASSERT_NULL(proxy_dns_table_lookup(t, 0xc613ffff, 6));
  ASSERT_NULL(proxy_dns_table_lookup(t, 0x7f000001, 6));
  ASSERT_NULL(proxy_dns_table_lookup(t, 0, 6));

  /* Names: 1..253 bytes. */
  ASSERT_EQ(proxy_dns_table_assign(t, "", 7, &addr), -EINVAL);
  memset(name, 'a', sizeof(name));
  name[253] = '\0';
  assign(t, name, 7);
  name[253] = 'a';
  name[254] = '\0';
  ASSERT_EQ(proxy_dns_table_assign(t, name, 7, &addr), -EINVAL);
  ASSERT_EQ(proxy_dns_table_count(t), 3);
  proxy_dns_table_free(t);
}

/* The same key gives the same addresses whatever the order of first use: what keeps
 * a sandbox's addresses across daemon restarts. */
TEST(stable_across_tables)
{
  static const char *names[] = { "api.github.com", "github.com", "pypi.org",
                                 "files.pythonhosted.org", "registry.npmjs.org",
                                 "api.openai.com", "example.com", "a.b.c.d.example" };
  const size_t n = sizeof(names) / sizeof(names[0]);
  struct proxy_dns_table *t1 = new_table(100, "sandbox-a", 1000);
  struct proxy_dns_table *t2 = new_table(100, "sandbox-a", 1000);
  size_t i;

  for (i = 0; i < n; i++) {
    uint32_t a1 = assign(t1, names[i], i);
    uint32_t a2 = assign(t2, names[n - 1 - i], i);

    (void)a2;
    ASSERT_EQ(a1, proxy_dns_table_home(t1, names[i]));
  }
  for (i = 0; i < n; i++)
    ASSERT_EQ(assign(t1, names[i], 100), assign(t2, names[i], 100));

  /* The placement hash is part of the on-the-wire behaviour: changing it moves
   * every sandbox's names to new addresses at the next upgrade. */
  ASSERT_EQ(proxy_dns_table_home(t1, "api.github.com"), PINNED_API_GITHUB);
  proxy_dns_table_free(t1);
  proxy_dns_table_free(t2);
}

/* A restarted daemon's empty table takes a name at the address a client kept from
 * before, when it is the name's own; never another name's, or a taken one. */
TEST(claim_after_restart)
{
  struct proxy_dns_table *t = new_table(100, "sandbox-a", 1000);
  uint32_t home = proxy_dns_table_home(t, "pypi.org");

  ASSERT_EQ(proxy_dns_table_claim(t, "api.github.com", home, 1), -ESRCH);
  ASSERT_EQ(proxy_dns_table_claim(t, "pypi.org", home == LAST_ADDR ? home - 1 : home + 1, 1),
            -ESRCH);
  ASSERT_EQ(proxy_dns_table_claim(t, "pypi.org", 0x7f000001, 1), -ESRCH);
  ASSERT_EQ(proxy_dns_table_count(t), 0);
  ASSERT_EQ(proxy_dns_table_claim(t, "pypi.org", home, 2), 0);
  ASSERT_STREQ(proxy_dns_table_lookup(t, home, 3), "pypi.org");
  ASSERT_EQ(assign(t, "pypi.org", 4), home);
  /* Taken now, and the name has its address. */
  ASSERT_EQ(proxy_dns_table_claim(t, "pypi.org", home, 5), -ESRCH);
  ASSERT_EQ(proxy_dns_table_claim(t, "api.github.com", PINNED_API_GITHUB, 6), 0);
  ASSERT_EQ(proxy_dns_table_count(t), 2);
  proxy_dns_table_free(t);
}

TEST(keys_differ)
{
  struct proxy_dns_table *t1 = new_table(1000, "sandbox-a", 0);
  struct proxy_dns_table *t2 = new_table(1000, "sandbox-b", 0);
  char name[64];
  int same = 0;

  for (int i = 0; i < 200; i++) {
    snprintf(name, sizeof(name), "host%d.example.com", i);
    if (assign(t1, name, 0) == assign(t2, name, 0))
      same++;
  }
  /* Two independent placements agree for about 200/131070 names. */
  ASSERT_LE(same, 1);
  proxy_dns_table_free(t1);
  proxy_dns_table_free(t2);
}

/* Finds two names with the same home address (a birthday search). */
static void find_collision(const struct proxy_dns_table *t, char *n1, char *n2, size_t size)
{
  static uint32_t first[PROXY_DNS_SYNTH_USABLE];
  char name[64];

  memset(first, 0xff, sizeof(first));
  for (uint32_t i = 0; i < 1000000; i++) {
    uint32_t off;

    snprintf(name, sizeof(name), "c%u.example", i);
    off = proxy_dns_table_home(t, name) - FIRST_ADDR;
    if (first[off] != UINT32_MAX) {
      snprintf(n1, size, "c%u.example", first[off]);
      snprintf(n2, size, "%s", name);
      return;
    }
    first[off] = i;
  }
  TEST_FAIL_("no collision in a million names");
}

TEST(collision_probes_linearly)
{
  struct proxy_dns_table *t = new_table(100, "collide", 0);
  struct proxy_dns_table *t2 = new_table(100, "collide", 0);
  char n1[64], n2[64];
  uint32_t home, a1, a2;

  find_collision(t, n1, n2, sizeof(n1));
  home = proxy_dns_table_home(t, n1);
  ASSERT_EQ(proxy_dns_table_home(t, n2), home);
  a1 = assign(t, n1, 0);
  a2 = assign(t, n2, 0);
  ASSERT_EQ(a1, home);
  ASSERT_EQ(a2, home == LAST_ADDR ? FIRST_ADDR : home + 1);
  ASSERT_STREQ(proxy_dns_table_lookup(t, a1, 1), n1);
  ASSERT_STREQ(proxy_dns_table_lookup(t, a2, 1), n2);

  /* First come, first placed: in the other order the other name wins the home. */
  ASSERT_EQ(assign(t2, n2, 0), home);
  ASSERT_EQ(assign(t2, n1, 0), a2);
  proxy_dns_table_free(t);
  proxy_dns_table_free(t2);
}

/* Probing wraps from the last usable address to the first, skipping 198.18.0.0 and
 * 198.19.255.255. */
TEST(probe_wraps_and_skips_edges)
{
  struct proxy_dns_table *t = new_table(100, "wrap", 0);
  char name[64], last1[64] = "", last2[64] = "";
  uint32_t i;

  for (i = 0; i < 5000000 && last2[0] == '\0'; i++) {
    snprintf(name, sizeof(name), "w%u.example", i);
    if (proxy_dns_table_home(t, name) == LAST_ADDR) {
      if (last1[0] == '\0')
        snprintf(last1, sizeof(last1), "%s", name);
      else
        snprintf(last2, sizeof(last2), "%s", name);
    }
  }
  ASSERT(last2[0] != '\0');
  ASSERT_EQ(assign(t, last1, 0), LAST_ADDR);
  ASSERT_EQ(assign(t, last2, 0), FIRST_ADDR);
  proxy_dns_table_free(t);
}

TEST(full_without_idle_entries_is_enospc)
{
  struct proxy_dns_table *t = new_table(3, "k", 1000);
  uint32_t a, b, c, addr = 0;

  a = assign(t, "a.example", 0);
  b = assign(t, "b.example", 1);
  c = assign(t, "c.example", 2);
  ASSERT_EQ(proxy_dns_table_assign(t, "d.example", 500, &addr), -ENOSPC);
  ASSERT_EQ(proxy_dns_table_assign(t, "d.example", 999, &addr), -ENOSPC);
  ASSERT_EQ(proxy_dns_table_count(t), 3);
  /* Known names still resolve, both ways. */
  ASSERT_EQ(assign(t, "a.example", 600), a);
  ASSERT_STREQ(proxy_dns_table_lookup(t, b, 600), "b.example");
  ASSERT_STREQ(proxy_dns_table_lookup(t, c, 600), "c.example");
  /* A clock that went backwards does not make an entry idle. */
  ASSERT_EQ(proxy_dns_table_assign(t, "d.example", 100, &addr), -ENOSPC);
  proxy_dns_table_free(t);
}

TEST(recycles_least_recently_used_when_idle)
{
  struct proxy_dns_table *t = new_table(3, "k", 1000);
  uint32_t a, b, c, d, addr = 0;

  a = assign(t, "a.example", 0);
  b = assign(t, "b.example", 0);
  c = assign(t, "c.example", 0);
  ASSERT_EQ(assign(t, "a.example", 500), a); /* order of use: b, c, a */

  /* b is the least recently used and idle for 1200 ms: recycled for d. */
  d = assign(t, "d.example", 1200);
  ASSERT_EQ(proxy_dns_table_count(t), 3);
  ASSERT_EQ(d, proxy_dns_table_home(t, "d.example"));
  if (d != b)
    ASSERT_NULL(proxy_dns_table_lookup(t, b, 1200));
  ASSERT_STREQ(proxy_dns_table_lookup(t, a, 1200), "a.example");
  ASSERT_STREQ(proxy_dns_table_lookup(t, c, 1200), "c.example");
  ASSERT_STREQ(proxy_dns_table_lookup(t, d, 1200), "d.example");

  /* The lookups refreshed a and c; d was used at 1200 too. Nothing is idle at
   * 1300, so b cannot come back. */
  ASSERT_EQ(proxy_dns_table_assign(t, "b.example", 1300, &addr), -ENOSPC);
  /* At 2200 a (last used 1200, first in the order) is idle: recycled for b, which
   * returns to its home address. */
  ASSERT_EQ(assign(t, "b.example", 2200), b);
  ASSERT_STREQ(proxy_dns_table_lookup(t, c, 2200), "c.example");
  ASSERT_STREQ(proxy_dns_table_lookup(t, d, 2200), "d.example");
  if (a != b)
    ASSERT_NULL(proxy_dns_table_lookup(t, a, 2200));
  proxy_dns_table_free(t);
}

/* A lookup by address counts as use: the name stays while connections go to it. */
TEST(lookup_refreshes)
{
  struct proxy_dns_table *t = new_table(2, "k", 100);
  uint32_t a, b, addr = 0;

  a = assign(t, "a.example", 0);
  b = assign(t, "b.example", 10);
  ASSERT_STREQ(proxy_dns_table_lookup(t, a, 200), "a.example");
  assign(t, "c.example", 250); /* recycles b, not a */
  ASSERT_STREQ(proxy_dns_table_lookup(t, a, 260), "a.example");
  (void)b;
  ASSERT_EQ(proxy_dns_table_assign(t, "b.example", 270, &addr), -ENOSPC);
  proxy_dns_table_free(t);
}

TEST(many_names)
{
  const size_t n = 100000;
  struct proxy_dns_table *t = new_table(n, "many", 1000000);
  static uint32_t addrs[100000];
  char name[64];
  uint32_t addr = 0;
  size_t i, at_home = 0;

  for (i = 0; i < n; i++) {
    snprintf(name, sizeof(name), "n%zu.example.com", i);
    addrs[i] = assign(t, name, i);
    at_home += addrs[i] == proxy_dns_table_home(t, name);
  }
  ASSERT_EQ(proxy_dns_table_count(t), n);
  /* Collisions happened and were resolved; most names still sit at home. */
  ASSERT_LT(at_home, n);
  ASSERT_GT(at_home, n / 2);
  for (i = 0; i < n; i++) {
    snprintf(name, sizeof(name), "n%zu.example.com", i);
    ASSERT_STREQ(proxy_dns_table_lookup(t, addrs[i], n + i), name);
  }
  /* Full: the oldest use is at time n, so not idle until n + 1000000. */
  ASSERT_EQ(proxy_dns_table_assign(t, "new.example", n + 999999, &addr), -ENOSPC);
  addr = assign(t, "new.example", n + 1000000);
  ASSERT_STREQ(proxy_dns_table_lookup(t, addr, n + 1000000), "new.example");
  /* n0 was looked up first, so it was the least recently used and is gone. */
  if (addrs[0] != addr)
    ASSERT_NULL(proxy_dns_table_lookup(t, addrs[0], n + 1000000));
  ASSERT_EQ(proxy_dns_table_count(t), n);
  proxy_dns_table_free(t);
}

/* Every usable address handed out exactly once; then recycling reuses the freed one. */
TEST(whole_range)
{
  static uint8_t used[PROXY_DNS_SYNTH_USABLE];
  struct proxy_dns_table *t = new_table(PROXY_DNS_SYNTH_USABLE, "whole", 10);
  char name[64];
  uint32_t addr = 0, first = 0, i;

  for (i = 0; i < PROXY_DNS_SYNTH_USABLE; i++) {
    snprintf(name, sizeof(name), "h%u", i);
    addr = assign(t, name, 0);
    if (i == 0)
      first = addr;
    ASSERT_EQ(used[addr - FIRST_ADDR], 0);
    used[addr - FIRST_ADDR] = 1;
  }
  ASSERT_EQ(proxy_dns_table_count(t), PROXY_DNS_SYNTH_USABLE);
  ASSERT_EQ(proxy_dns_table_assign(t, "one.more", 5, &addr), -ENOSPC);
  /* "h0" is the least recently used: its address is the only free one. */
  ASSERT_EQ(assign(t, "one.more", 10), first);
  ASSERT_STREQ(proxy_dns_table_lookup(t, first, 10), "one.more");
  proxy_dns_table_free(t);
}
