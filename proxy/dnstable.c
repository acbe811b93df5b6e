/*
 * The synthetic address table: name <-> address in 198.18.0.0/15, per sandbox.
 *
 * Placement. A name's home address is base + 1 + SipHash(key, name) mod 131070,
 * where key is derived from the sandbox name, so a name gets the same address after
 * a daemon restart unless another name took it first. On collision the next 31
 * addresses are tried (linear probing); if all are taken, the probe jumps to a new
 * pseudo-random start derived from the hash, up to 8 runs of 32, and only then scans
 * on linearly until a free address turns up. The jumps matter because the sandbox
 * may know its own name and so the key: with pure linear probing it could pick names
 * that all share one home and make every assignment walk an ever longer cluster.
 * With jumps, a long search needs the table to be nearly full, and the final scan
 * is bounded by the range.
 *
 * Linear probing clusters, so near full the scan gets long: a lookup per address
 * would cost milliseconds per assignment. Once a table holds BITMAP_MIN names it
 * therefore also keeps a bitmap of taken addresses (16 KiB, small next to the
 * entries by then), and probes and scans test bits, 64 at a time in the scan.
 *
 * Indexes. Two chained hash indexes (name -> entry, address -> entry) give O(1)
 * lookups both ways. Their bucket hashes use a random per-table key, not the
 * sandbox key, so the sandbox cannot aim names or addresses at one bucket. Both
 * indexes share one bucket array that starts at 16 buckets and doubles when the
 * table holds more entries than buckets.
 *
 * Recycling. Entries form a list ordered by last use. When the table is full, the
 * least recently used entry is dropped for a new name only if it has been idle for
 * min_idle_ms; otherwise assignment fails with -ENOSPC: refusing a query is better
 * than giving an address that a client may still hold a new meaning.
 *
 * Memory. One allocation per entry, the name inline: about 50 bytes of header plus
 * the name, and 16 bytes of buckets per entry; a table with 100,000 names of 20
 * bytes takes about 10 MB (the bitmap adds 16 KiB), an empty one a few hundred
 * bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "proxy/dns.h"
#include "proxy/dns_internal.h"
#include "proxy/siphash.h"

#define NAME_MAX_LEN 253
#define MIN_BUCKETS 16
#define MAX_BUCKETS (UINT32_C(1) << PROXY_DNS_SYNTH_HOST_BITS) /* >= the most entries */
#define PROBE_RUN 32
#define PROBE_JUMPS 8
#define BITMAP_MIN 4096
#define BITMAP_WORDS ((PROXY_DNS_SYNTH_USABLE + 63) / 64)

struct dns_entry {
  struct dns_entry *name_next; /* chain in the name index */
  struct dns_entry *addr_next; /* chain in the address index */
  struct dns_entry *older;     /* use-order list */
  struct dns_entry *newer;
  uint64_t last_use;
  uint32_t name_hash; /* secret-keyed hash of the name: bucket and quick compare */
  uint32_t addr;      /* host byte order */
  uint8_t len;
  char name[];        /* len bytes and a NUL */
};

struct proxy_dns_table {
  uint64_t place_key[2];  /* from the caller's key: placement, stable across restarts */
  uint64_t bucket_key[2]; /* random: index buckets */
  struct dns_entry **by_name; /* nbuckets chains, then nbuckets more for by_addr */
  struct dns_entry **by_addr;
  size_t nbuckets;            /* a power of two */
  uint64_t *taken;            /* bit per usable address, from BITMAP_MIN entries on */
  size_t count;
  size_t max_entries;
  uint64_t min_idle_ms;
  struct dns_entry *oldest;
  struct dns_entry *newest;
};

/* ---- hashing ---- */

/* SplitMix64's finalizer: derives the next probe start from the previous one. */
static uint64_t mix64(uint64_t x)
{
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

/* ---- indexes ---- */

static uint32_t offset_to_addr(uint32_t off)
{
  return PROXY_DNS_SYNTH_BASE + 1 + off; /* off in [0, PROXY_DNS_SYNTH_USABLE) */
}

static uint32_t addr_to_offset(uint32_t addr)
{
  return addr - PROXY_DNS_SYNTH_BASE - 1;
}

static void mark(struct proxy_dns_table *t, uint32_t addr, int taken)
{
  uint32_t off = addr_to_offset(addr);

  if (t->taken == NULL)
    return;
  if (taken)
    t->taken[off / 64] |= UINT64_C(1) << (off % 64);
  else
    t->taken[off / 64] &= ~(UINT64_C(1) << (off % 64));
}

static size_t name_bucket(const struct proxy_dns_table *t, uint32_t hash)
{
  return hash & (t->nbuckets - 1);
}

static size_t addr_bucket(const struct proxy_dns_table *t, uint32_t addr)
{
  uint8_t b[4] = { (uint8_t)(addr >> 24), (uint8_t)(addr >> 16), (uint8_t)(addr >> 8),
                   (uint8_t)addr };

  return proxy_siphash(t->bucket_key, b, sizeof(b)) & (t->nbuckets - 1);
}

static struct dns_entry *find_name(const struct proxy_dns_table *t, const char *name,
                                   size_t len, uint32_t hash)
{
  struct dns_entry *e;

  for (e = t->by_name[name_bucket(t, hash)]; e != NULL; e = e->name_next)
    if (e->name_hash == hash && e->len == len && memcmp(e->name, name, len) == 0)
      return e;
  return NULL;
}

static struct dns_entry *find_addr(const struct proxy_dns_table *t, uint32_t addr)
{
  struct dns_entry *e;

  for (e = t->by_addr[addr_bucket(t, addr)]; e != NULL; e = e->addr_next)
    if (e->addr == addr)
      return e;
  return NULL;
}

static void index_insert(struct proxy_dns_table *t, struct dns_entry *e)
{
  size_t nb = name_bucket(t, e->name_hash), ab = addr_bucket(t, e->addr);

  e->name_next = t->by_name[nb];
  t->by_name[nb] = e;
  e->addr_next = t->by_addr[ab];
  t->by_addr[ab] = e;
  mark(t, e->addr, 1);
}

static void index_remove(struct proxy_dns_table *t, struct dns_entry *e)
{
  struct dns_entry **pp;

  for (pp = &t->by_name[name_bucket(t, e->name_hash)]; *pp != e; pp = &(*pp)->name_next)
    ;
  *pp = e->name_next;
  for (pp = &t->by_addr[addr_bucket(t, e->addr)]; *pp != e; pp = &(*pp)->addr_next)
    ;
  *pp = e->addr_next;
  mark(t, e->addr, 0);
}

/* Doubles the buckets. On allocation failure the table keeps working with longer
 * chains, so the error is not reported. */
static void grow(struct proxy_dns_table *t)
{
  struct dns_entry **b, *e;
  size_t n = t->nbuckets * 2;

  b = calloc(2 * n, sizeof(*b));
  if (b == NULL)
    return;
  free(t->by_name);
  t->by_name = b;
  t->by_addr = b + n;
  t->nbuckets = n;
  for (e = t->oldest; e != NULL; e = e->newer)
    index_insert(t, e);
}

/* ---- use order ---- */

static void lru_unlink(struct proxy_dns_table *t, struct dns_entry *e)
{
  if (e->older != NULL)
    e->older->newer = e->newer;
  else
    t->oldest = e->newer;
  if (e->newer != NULL)
    e->newer->older = e->older;
  else
    t->newest = e->older;
  e->older = e->newer = NULL;
}

static void lru_append(struct proxy_dns_table *t, struct dns_entry *e)
{
  e->older = t->newest;
  e->newer = NULL;
  if (t->newest != NULL)
    t->newest->newer = e;
  else
    t->oldest = e;
  t->newest = e;
}

static void touch(struct proxy_dns_table *t, struct dns_entry *e, uint64_t now_ms)
{
  e->last_use = now_ms;
  if (t->newest != e) {
    lru_unlink(t, e);
    lru_append(t, e);
  }
}

/* ---- placement ---- */

static uint64_t place_hash(const struct proxy_dns_table *t, const char *name, size_t len)
{
  return proxy_siphash(t->place_key, name, len);
}

/* Creates the bitmap of taken addresses; without memory the table goes on without. */
static void bitmap_create(struct proxy_dns_table *t)
{
  struct dns_entry *e;
  uint32_t off;

  t->taken = calloc(BITMAP_WORDS, sizeof(*t->taken));
  if (t->taken == NULL)
    return;
  /* The bits past the last usable address count as taken. */
  for (off = PROXY_DNS_SYNTH_USABLE; off < BITMAP_WORDS * 64; off++)
    t->taken[off / 64] |= UINT64_C(1) << (off % 64);
  for (e = t->oldest; e != NULL; e = e->newer)
    mark(t, e->addr, 1);
}

static int offset_taken(const struct proxy_dns_table *t, uint32_t off)
{
  if (t->taken != NULL)
    return (t->taken[off / 64] >> (off % 64)) & 1;
  return find_addr(t, offset_to_addr(off)) != NULL;
}

/* The first free offset at or after start, wrapping around. */
static int scan_free(const struct proxy_dns_table *t, uint32_t start, uint32_t *found)
{
  uint32_t w = start / 64, i, off;
  uint64_t word;

  if (t->taken == NULL) {
    for (i = 0; i < PROXY_DNS_SYNTH_USABLE; i++) {
      off = (start + i) % PROXY_DNS_SYNTH_USABLE;
      if (!offset_taken(t, off)) {
        *found = off;
        return 0;
      }
    }
    return -ENOSPC;
  }
  /* Bits below start in its word are looked at last, after wrapping around. */
  word = t->taken[w] | ((UINT64_C(1) << (start % 64)) - 1);
  for (i = 0; i <= BITMAP_WORDS; i++) {
    if (word != ~UINT64_C(0)) {
      *found = w * 64 + (uint32_t)__builtin_ctzll(~word);
      return 0;
    }
    w = (w + 1) % BITMAP_WORDS;
    word = t->taken[w];
  }
  return -ENOSPC;
}

/* Finds a free address for a name whose placement hash is h (see the top comment).
 * The caller guarantees that fewer than PROXY_DNS_SYNTH_USABLE addresses are taken. */
static int find_free(const struct proxy_dns_table *t, uint64_t h, uint32_t *addr)
{
  uint64_t x = h;
  uint32_t start = (uint32_t)(h % PROXY_DNS_SYNTH_USABLE), off, i, jump;
  int rc;

  for (jump = 0; jump < PROBE_JUMPS; jump++) {
    for (i = 0; i < PROBE_RUN; i++) {
      off = (start + i) % PROXY_DNS_SYNTH_USABLE;
      if (!offset_taken(t, off)) {
        *addr = offset_to_addr(off);
        return 0;
      }
    }
    x = mix64(x);
    start = (uint32_t)(x % PROXY_DNS_SYNTH_USABLE);
  }
  rc = scan_free(t, start, &off);
  if (rc == 0)
    *addr = offset_to_addr(off);
  return rc;
}

/* ---- API ---- */

struct proxy_dns_table *proxy_dns_table_new(size_t max_entries, const char *key,
                                            uint64_t min_idle_ms)
{
  /* Fixed keys that turn the caller's key into the placement key. Changing them (or
   * the hash) moves every name to a new address after an upgrade. */
  static const uint64_t derive0[2] = { UINT64_C(0x6175746870726f78),
                                       UINT64_C(0x792d646e732d6b30) };
  static const uint64_t derive1[2] = { UINT64_C(0x6175746870726f78),
                                       UINT64_C(0x792d646e732d6b31) };
  struct proxy_dns_table *t = NULL;
  ssize_t n;
  int ret = 0;

  if (key == NULL || max_entries == 0 || max_entries > PROXY_DNS_SYNTH_USABLE) {
    ret = -EINVAL;
    goto out;
  }
  t = calloc(1, sizeof(*t));
  if (t == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  t->place_key[0] = proxy_siphash(derive0, key, strlen(key));
  t->place_key[1] = proxy_siphash(derive1, key, strlen(key));
  do
    n = getrandom(t->bucket_key, sizeof(t->bucket_key), 0);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof(t->bucket_key)) {
    ret = n < 0 ? -errno : -EIO;
    goto out;
  }
  t->nbuckets = MIN_BUCKETS;
  t->by_name = calloc(2 * t->nbuckets, sizeof(*t->by_name));
  if (t->by_name == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  t->by_addr = t->by_name + t->nbuckets;
  t->max_entries = max_entries;
  t->min_idle_ms = min_idle_ms;
out:
  if (ret != 0) {
    proxy_dns_table_free(t);
    t = NULL;
    errno = -ret;
  }
  return t;
}

void proxy_dns_table_free(struct proxy_dns_table *t)
{
  struct dns_entry *e, *next;

  if (t == NULL)
    return;
  for (e = t->oldest; e != NULL; e = next) {
    next = e->newer;
    free(e);
  }
  free(t->by_name);
  free(t->taken);
  free(t);
}

int proxy_dns_table_assign(struct proxy_dns_table *t, const char *name, uint64_t now_ms,
                           uint32_t *addr)
{
  struct dns_entry *e, *victim = NULL;
  size_t len = strnlen(name, NAME_MAX_LEN + 1);
  uint32_t hash;
  int rc;

  if (len == 0 || len > NAME_MAX_LEN)
    return -EINVAL;
  hash = (uint32_t)proxy_siphash(t->bucket_key, name, len);
  e = find_name(t, name, len, hash);
  if (e != NULL) {
    touch(t, e, now_ms);
    *addr = e->addr;
    return 0;
  }

  if (t->count >= t->max_entries) {
    victim = t->oldest;
    /* A clock that went backwards counts as "just used". */
    if (victim == NULL || now_ms < victim->last_use ||
        now_ms - victim->last_use < t->min_idle_ms)
      return -ENOSPC;
  }
  /* Allocate before dropping the victim so that -ENOMEM leaves the table as it was. */
  e = malloc(sizeof(*e) + len + 1);
  if (e == NULL)
    return -ENOMEM;
  if (victim != NULL) {
    index_remove(t, victim);
    lru_unlink(t, victim);
    free(victim);
    t->count--;
  }
  memcpy(e->name, name, len);
  e->name[len] = '\0';
  e->len = (uint8_t)len;
  e->name_hash = hash;
  rc = find_free(t, place_hash(t, name, len), &e->addr);
  if (rc != 0) {
    free(e); /* unreachable: count < max_entries <= the number of addresses */
    return rc;
  }
  index_insert(t, e);
  e->older = e->newer = NULL;
  e->last_use = now_ms;
  lru_append(t, e);
  t->count++;
  if (t->count > t->nbuckets && t->nbuckets < MAX_BUCKETS)
    grow(t);
  if (t->count >= BITMAP_MIN && t->taken == NULL)
    bitmap_create(t);
  *addr = e->addr;
  return 0;
}

int proxy_dns_table_claim(struct proxy_dns_table *t, const char *name, uint32_t addr,
                          uint64_t now_ms)
{
  size_t len = strnlen(name, NAME_MAX_LEN + 1);
  uint32_t got;
  int rc;

  if (len == 0 || len > NAME_MAX_LEN)
    return -EINVAL;
  if (!proxy_dns_is_synthetic(addr) || find_addr(t, addr) != NULL ||
      find_name(t, name, len, (uint32_t)proxy_siphash(t->bucket_key, name, len)) != NULL ||
      proxy_dns_table_home(t, name) != addr)
    return -ESRCH;
  /* The home address is free, so the name is placed there, as a query would place it. */
  rc = proxy_dns_table_assign(t, name, now_ms, &got);
  if (rc != 0)
    return rc;
  return got == addr ? 0 : -ESRCH;
}

const char *proxy_dns_table_lookup(struct proxy_dns_table *t, uint32_t addr,
                                   uint64_t now_ms)
{
  struct dns_entry *e;

  if (!proxy_dns_is_synthetic(addr))
    return NULL;
  e = find_addr(t, addr);
  if (e == NULL)
    return NULL;
  touch(t, e, now_ms);
  return e->name;
}

int proxy_dns_is_synthetic(uint32_t addr)
{
  return (addr >> PROXY_DNS_SYNTH_HOST_BITS) ==
         (PROXY_DNS_SYNTH_BASE >> PROXY_DNS_SYNTH_HOST_BITS);
}

size_t proxy_dns_table_count(const struct proxy_dns_table *t)
{
  return t->count;
}

uint32_t proxy_dns_table_home(const struct proxy_dns_table *t, const char *name)
{
  uint64_t h = place_hash(t, name, strlen(name));

  return offset_to_addr((uint32_t)(h % PROXY_DNS_SYNTH_USABLE));
}
