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

/*
 * `*` matches any run of bytes, everything else itself (ASCII letters in either case
 * when icase). With `*` as the only wildcard, remembering the last star and retrying
 * from one byte further is complete (no other backtracking point can do better), so
 * this runs in O(plen * slen) at worst and O(plen + slen) for the usual patterns.
 */
static int glob_match(const char *pat, size_t plen, const char *s, size_t slen, int icase)
{
  size_t p = 0, i = 0, star = SIZE_MAX, mark = 0;

  while (i < slen) {
    if (p < plen && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (p < plen &&
               (pat[p] == s[i] ||
                (icase && fold((unsigned char)pat[p]) == fold((unsigned char)s[i])))) {
      p++;
      i++;
    } else if (star != SIZE_MAX) {
      p = star + 1;
      i = ++mark;
    } else {
      return 0;
    }
  }
  while (p < plen && pat[p] == '*')
    p++;
  return p == plen;
}

int rules_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
  return glob_match(pat, plen, s, slen, 0);
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
  size_t i;

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
    return glob_match(p->glob, plen, path, len, 1);
  }
}

int rules_pathpat_match_deny(const struct rules_pathpat *p, const char *path, size_t len)
{
  size_t plen = p->len;

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
