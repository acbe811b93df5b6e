/*
 * Matching at decision time: globs, host patterns against a destination, path
 * patterns against a normalized path. This is the per-connection and per-request hot
 * path: it never allocates and never parses a pattern (that happened at push time).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "rules/rules_internal.h"

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static unsigned char fold(unsigned char c)
{
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Longest segment (the text between two stars) the search below keeps a table for:
 * a path pattern is at most 2048 bytes (rules/path.c), a host pattern 253. */
#define GLOB_SEG_MAX 2048

static inline int glob_eq(unsigned char a, unsigned char b, int icase, size_t *steps)
{
  (*steps)++;
  return a == b || (icase && fold(a) == fold(b));
}

static inline unsigned char glob_key(unsigned char c, int icase)
{
  return icase ? fold(c) : c;
}

/* Room for seg_find: the segment (folded when matching in either case) and its
 * Knuth-Morris-Pratt table. */
struct glob_scratch {
  unsigned char seg[GLOB_SEG_MAX];
  uint16_t fail[GLOB_SEG_MAX];
};

/*
 * Leftmost start of seg (m bytes, m >= 1) in s[from, end), or SIZE_MAX. Knuth-Morris-
 * Pratt: at most 2m + 2(end - from) comparisons, whatever the bytes, where retrying
 * the segment at each start would take m for every start. A segment longer than
 * GLOB_SEG_MAX (only the exported helpers can pass one) is searched naively.
 */
static size_t seg_find(const char *seg, size_t m, const char *s, size_t from, size_t end,
                       int icase, struct glob_scratch *w, size_t *steps)
{
  const unsigned char *f = w->seg;
  size_t q, k, i, n = 0, at = SIZE_MAX;

  if (end < from || end - from < m)
    return SIZE_MAX;
  if (m > GLOB_SEG_MAX) {
    for (i = from; i + m <= end; i++) {
      for (k = 0; k < m && glob_eq((unsigned char)seg[k], (unsigned char)s[i + k], icase,
                                   &n);
           k++)
        ;
      if (k == m) {
        at = i;
        break;
      }
    }
    *steps += n;
    return at;
  }
  for (q = 0; q < m; q++)
    w->seg[q] = glob_key((unsigned char)seg[q], icase);
  w->fail[0] = 0;
  for (q = 1, k = 0; q < m; q++) {
    for (n++; k > 0 && f[q] != f[k]; n++)
      k = w->fail[k - 1];
    if (f[q] == f[k])
      k++;
    w->fail[q] = (uint16_t)k;
  }
  for (i = from, k = 0; i < end; i++) {
    unsigned char c = glob_key((unsigned char)s[i], icase);

    for (n++; k > 0 && c != f[k]; n++)
      k = w->fail[k - 1];
    if (c == f[k] && ++k == m) {
      at = i + 1 - m;
      break;
    }
  }
  *steps += n;
  return at;
}

/*
 * `*` matches any run of bytes, everything else itself (ASCII letters in either case
 * when icase). The text before the first star must begin the subject and the text
 * after the last star end it; each segment between stars is then taken at its
 * leftmost place after the previous one, which is complete with `*` the only
 * wildcard (a later place leaves less room for the rest, never more). Each subject
 * byte is compared a bounded number of times, so this is O(plen + slen) whatever the
 * pattern: the subject (a request path up to 8 KiB, a host name) is the sandbox's, and
 * retrying from the last star one byte further, as this did before, cost plen * slen
 * (12 million comparisons for one 2 KiB pattern against an 8 KiB path). *steps counts
 * comparisons.
 */
static int glob_match(const char *pat, size_t plen, const char *s, size_t slen, int icase,
                      size_t *steps)
{
  struct glob_scratch w;
  size_t p = 0, i = 0, last, tlen, end, q;

  while (p < plen && pat[p] != '*') {
    if (i == slen || !glob_eq((unsigned char)pat[p], (unsigned char)s[i], icase, steps))
      return 0;
    p++;
    i++;
  }
  if (p == plen)
    return i == slen;
  for (last = plen - 1; pat[last] != '*'; last--)
    ;
  tlen = plen - last - 1;
  if (slen - i < tlen)
    return 0;
  end = slen - tlen;
  for (q = 0; q < tlen; q++)
    if (!glob_eq((unsigned char)pat[last + 1 + q], (unsigned char)s[end + q], icase, steps))
      return 0;
  while (p < last) {
    size_t seg, m, at;

    while (p < last && pat[p] == '*')
      p++;
    for (seg = p; p < last && pat[p] != '*'; p++)
      ;
    m = p - seg;
    if (m == 0)
      continue;
    at = seg_find(pat + seg, m, s, i, end, icase, &w, steps);
    if (at == SIZE_MAX)
      return 0;
    i = at + m;
  }
  return 1;
}

size_t rules_glob_steps(const char *pat, size_t plen, const char *s, size_t slen, int icase,
                        int *match)
{
  size_t steps = 0;

  *match = glob_match(pat, plen, s, slen, icase, &steps);
  return steps;
}

int rules_glob_scans(const char *glob, size_t len)
{
  const char *first = memchr(glob, '*', len), *last = memrchr(glob, '*', len);
  const char *q;

  if (first == NULL)
    return 0;
  for (q = first; q < last; q++)
    if (*q != '*')
      return 1;
  return 0;
}

int rules_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
  size_t steps = 0;

  return glob_match(pat, plen, s, slen, 0, &steps);
}

int rules_host_glob_match(const char *pattern, const char *host)
{
  return rules_glob_match(pattern, strlen(pattern), host, strlen(host));
}

int rules_path_glob_match(const char *pattern, const char *path)
{
  return rules_glob_match(pattern, strlen(pattern), path, strlen(path));
}

int rules_prefix_equal(const uint8_t a[16], const uint8_t b[16], unsigned prefix)
{
  unsigned bytes = prefix / 8, bits = prefix % 8;
  uint8_t mask;

  if (prefix > 128)
    return 0;
  if (memcmp(a, b, bytes) != 0)
    return 0;
  if (bits == 0)
    return 1;
  mask = (uint8_t)(0xff << (8 - bits));
  return (a[bytes] & mask) == (b[bytes] & mask);
}

int rules_addr_from_sockaddr(const struct sockaddr *sa, uint8_t out[16], int *v4)
{
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

    memcpy(out, v4_mapped_prefix, 12);
    memcpy(out + 12, &sin->sin_addr, 4);
    *v4 = 1;
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;

    memcpy(out, &sin6->sin6_addr, 16);
    /* A v4-mapped IPv6 address reaches the IPv4 host: compare it as one. */
    *v4 = memcmp(out, v4_mapped_prefix, 12) == 0;
    return 0;
  }
  return -EAFNOSUPPORT;
}

/* Validates a normalized DNS name without copying it (see rules_normalize_host). */
static int name_is_normalized(const char *name, size_t len)
{
  size_t i, label = 0;
  int last_digits = 1;
  struct in_addr a4;

  if (len == 0 || len > RULES_MAX_NAME_LEN)
    return 0;
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)name[i];

    if (ch == '.') {
      if (label == 0)
        return 0;
      label = 0;
      last_digits = 1;
      continue;
    }
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
      return 0;
    if (ch < '0' || ch > '9')
      last_digits = 0;
    if (++label > 63)
      return 0;
  }
  if (label == 0)
    return 0;
  /* A numeric last label is no DNS name: either a dotted quad (handled by the caller)
   * or a form like 127.1 that resolvers would read as an address. */
  if (last_digits)
    return 0;
  /* Forms like 0x7f000001 that inet_aton (and so getaddrinfo) reads as addresses. */
  if (inet_aton(name, &a4) != 0)
    return 0;
  return 1;
}

int rules_target_init(struct rules_target *t, const struct rules_dest *dest)
{
  struct in_addr a4;
  struct in6_addr a6;
  size_t len;

  memset(t, 0, sizeof(*t));
  t->port = dest->port;
  if (dest->addr != NULL) {
    int v4 = 0;

    if (rules_addr_from_sockaddr(dest->addr, t->addr, &v4) == 0) {
      t->has_addr = 1;
      t->addr_v4 = (uint8_t)v4;
    }
  }
  if (dest->name == NULL)
    return 0;
  len = strnlen(dest->name, RULES_MAX_NAME_LEN + 1);
  if (len > RULES_MAX_NAME_LEN)
    return -EINVAL;
  if (inet_pton(AF_INET, dest->name, &a4) == 1) {
    memcpy(t->ip, v4_mapped_prefix, 12);
    memcpy(t->ip + 12, &a4, 4);
    t->has_ip = 1;
    t->ip_v4 = 1;
    return 0;
  }
  if (memchr(dest->name, ':', len) != NULL) {
    if (inet_pton(AF_INET6, dest->name, &a6) != 1)
      return -EINVAL;
    memcpy(t->ip, &a6, 16);
    t->has_ip = 1;
    t->ip_v4 = memcmp(t->ip, v4_mapped_prefix, 12) == 0;
    return 0;
  }
  if (!name_is_normalized(dest->name, len))
    return -EINVAL;
  t->name = dest->name;
  t->name_len = len;
  return 0;
}

static int addr_match(const struct rules_hostpat *p, const uint8_t addr[16], int v4)
{
  return p->v4 == v4 && rules_prefix_equal(p->addr, addr, p->prefix);
}

int rules_hostpat_match(const struct rules_hostpat *p, const struct rules_target *t)
{
  if (p->port != 0 && p->port != t->port)
    return 0;
  switch (p->kind) {
  case RULES_HP_ANY:
    return 1;
  case RULES_HP_ADDR:
    /* IP entries apply to a name that is itself an address, and to the original
     * destination of a flow that has no name. A named flow is dialed by its name,
     * not at the address the sandbox chose: matching that address would let a
     * sandbox connect to an allowed or credentialed address with the SNI or Host of
     * any server it likes, and have it dialed (with the credential) there. */
    if (t->has_ip)
      return addr_match(p, t->ip, t->ip_v4);
    return t->name == NULL && t->has_addr && addr_match(p, t->addr, t->addr_v4);
  default:
    break;
  }
  /* Host globs apply to DNS names only. */
  if (t->name == NULL)
    return 0;
  switch (p->kind) {
  case RULES_HP_EXACT:
    return t->name_len == p->len && memcmp(t->name, p->glob, p->len) == 0;
  case RULES_HP_SUFFIX:
    /* glob is ".example.com"; the '*' before it needs at least one byte (a name has
     * no empty label, so that byte is a whole label). */
    return t->name_len > p->len &&
           memcmp(t->name + t->name_len - p->len, p->glob, p->len) == 0;
  case RULES_HP_DOMAIN:
    if (t->name_len == p->len)
      return memcmp(t->name, p->glob, p->len) == 0;
    return t->name_len > p->len && t->name[t->name_len - p->len - 1] == '.' &&
           memcmp(t->name + t->name_len - p->len, p->glob, p->len) == 0;
  case RULES_HP_GLOB:
    return rules_glob_match(p->glob, p->len, t->name, t->name_len);
  default:
    return 0;
  }
}

int rules_hostpats_match(const struct rules_hostpat *v, size_t n,
                         const struct rules_target *t)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (rules_hostpat_match(&v[i], t))
      return (int)i;
  return -1;
}

int rules_pathpat_match(const struct rules_pathpat *p, const char *path, size_t len)
{
  switch (p->kind) {
  case RULES_PP_EXACT:
    return len == p->len && memcmp(path, p->glob, len) == 0;
  case RULES_PP_PREFIX:
    return len >= p->len && memcmp(path, p->glob, p->len) == 0;
  default:
    return rules_glob_match(p->glob, p->len, path, len);
  }
}

/* rules_pathpat_match over explicit lengths, ASCII letters in either case. */
static int pathpat_match_icase(const struct rules_pathpat *p, size_t plen, const char *path,
                               size_t len)
{
  size_t i, steps = 0;

  switch (p->kind) {
  case RULES_PP_EXACT:
  case RULES_PP_PREFIX:
    if (len < plen || (p->kind == RULES_PP_EXACT && len != plen))
      return 0;
    for (i = 0; i < plen; i++)
      if (fold((unsigned char)path[i]) != fold((unsigned char)p->glob[i]))
        return 0;
    return 1;
  default:
    return glob_match(p->glob, plen, path, len, 1, &steps);
  }
}

int rules_pathpat_match_deny(const struct rules_pathpat *p, const char *path, size_t len)
{
  size_t plen = p->len;

  if (p->kind == RULES_PP_GLOB) {
    /* The three forms below in one glob match, since a glob may scan the whole path.
     * Neither the path nor the pattern holds "//", so each ends in at most one slash.
     * A pattern that ends in a star already covers the path with one slash more. One
     * that ends in star and slash, shortened, covers all its form with the slash
     * covers. Otherwise the pattern's last byte is a fixed one: with a slash, the
     * pattern and path can meet only both shortened; without, only with the path's
     * slash (if any) left out. */
    if (plen > 1 && p->glob[plen - 1] == '/') {
      plen--;
      if (p->glob[plen - 1] == '*')
        return pathpat_match_icase(p, plen, path, len);
    } else if (p->glob[plen - 1] == '*') {
      return pathpat_match_icase(p, plen, path, len);
    }
    if (len > 1 && path[len - 1] == '/')
      len--;
    return pathpat_match_icase(p, plen, path, len);
  }
  if (pathpat_match_icase(p, plen, path, len))
    return 1;
  /* "/admin/" for "/admin": the path's one trailing slash, unless it is the root. */
  if (len > 1 && path[len - 1] == '/' && pathpat_match_icase(p, plen, path, len - 1))
    return 1;
  /* "/admin" for "/admin/". Not for a prefix pattern: "/internal/" shortened would
   * cover "/internalx", and Express does not route "/internal" to a route that
   * ends in "/internal/" and a star. */
  if (p->kind != RULES_PP_PREFIX && plen > 1 && p->glob[plen - 1] == '/' &&
      pathpat_match_icase(p, plen - 1, path, len))
    return 1;
  return 0;
}
