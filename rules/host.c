/*
 * Host names and host patterns: normalization of destination names, and parsing of
 * the entries of match_hosts, no_proxy, egress and callback.match_hosts into
 * pre-parsed struct rules_hostpat (kind, normalized glob, address and prefix, port).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rules/rules_internal.h"

/* Longest pattern accepted: a full name or "[v6/128]:65535" with room to spare. */
#define HOSTPAT_MAX_LEN 300

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static int is_digit(unsigned char c)
{
  return c >= '0' && c <= '9';
}

int rules_parse_port(const char *s, size_t len, uint16_t *port)
{
  unsigned v = 0;
  size_t i;

  if (len == 0 || len > 5 || s[0] == '0')
    return -EINVAL;
  for (i = 0; i < len; i++) {
    if (!is_digit((unsigned char)s[i]))
      return -EINVAL;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v == 0 || v > 65535)
    return -EINVAL;
  *port = (uint16_t)v;
  return 0;
}

/* Writes the canonical text of an IPv6 literal (no brackets); length or -EINVAL. */
static int normalize_v6(const char *in, size_t len, char *out, size_t size)
{
  char tmp[INET6_ADDRSTRLEN];
  struct in6_addr a6;
  size_t n;

  if (len == 0 || len >= sizeof(tmp))
    return -EINVAL;
  memcpy(tmp, in, len);
  tmp[len] = '\0';
  if (inet_pton(AF_INET6, tmp, &a6) != 1)
    return -EINVAL;
  if (inet_ntop(AF_INET6, &a6, tmp, sizeof(tmp)) == NULL)
    return -EINVAL;
  n = strlen(tmp);
  if (n + 1 > size)
    return -ENOSPC;
  memcpy(out, tmp, n + 1);
  return (int)n;
}

/*
 * Lowercases a name or name glob into out, strips one trailing dot and checks labels.
 * Returns the new length, or -EINVAL with a message in err.
 */
static int normalize_name(const char *s, size_t len, int allow_star, char *out,
                          size_t size, char *err, size_t errsize)
{
  size_t i, label = 0;
  int label_star = 0;

  if (len > 0 && s[len - 1] == '.')
    len--;
  if (len == 0) {
    snprintf(err, errsize, "is empty");
    return -EINVAL;
  }
  if (len > RULES_MAX_NAME_LEN || len + 1 > size) {
    snprintf(err, errsize, "is longer than %d bytes", RULES_MAX_NAME_LEN);
    return -EINVAL;
  }
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];

    if (ch >= 'A' && ch <= 'Z')
      ch = (unsigned char)(ch - 'A' + 'a');
    out[i] = (char)ch;
    if (ch == '.') {
      if (label == 0) {
        snprintf(err, errsize, "has an empty label (\"..\" or a leading dot)");
        return -EINVAL;
      }
      label = 0;
      label_star = 0;
      continue;
    }
    if (ch == '*' && allow_star) {
      if (i > 0 && s[i - 1] == '*') {
        snprintf(err, errsize, "has \"**\"; one * already matches any run of characters");
        return -EINVAL;
      }
      label_star = 1;
    } else if (!((ch >= 'a' && ch <= 'z') || is_digit(ch) || ch == '-' || ch == '_')) {
      if (ch >= 0x80)
        snprintf(err, errsize,
                 "has non-ASCII bytes; write an internationalized name in its "
                 "punycode (xn--) form");
      else if (ch == '*')
        snprintf(err, errsize, "has a '*', which is not allowed here");
      else if (ch < 0x20 || ch == 0x7f)
        snprintf(err, errsize, "has a control character at byte %zu", i);
      else
        snprintf(err, errsize,
                 "has '%c' at byte %zu; host names are letters, digits, '-', '_' and "
                 "dots",
                 ch, i);
      return -EINVAL;
    }
    label++;
    if (label > 63 && !label_star) {
      snprintf(err, errsize, "has a label longer than 63 bytes");
      return -EINVAL;
    }
  }
  if (label == 0) {
    snprintf(err, errsize, "has an empty label");
    return -EINVAL;
  }
  out[len] = '\0';
  return (int)len;
}

/*
 * Rejects names that resolvers would read as addresses (127.1, 2130706433,
 * 0x7f000001) and name globs that are really address ranges (10.0.*): both would be
 * matched as text while the connection goes to an address.
 */
static int check_numeric(const char *name, size_t len, char *err, size_t errsize)
{
  size_t i, start = 0;
  int all_numeric = 1, any_digit = 0, last_digits = 0, has_star = 0;
  struct in_addr a4;

  for (i = 0; i <= len; i++) {
    if (i == len || name[i] == '.') {
      size_t j;
      int digits = i > start, numeric = 1;

      for (j = start; j < i; j++) {
        if (!is_digit((unsigned char)name[j]))
          digits = 0;
        if (name[j] == '*')
          has_star = 1;
        else if (is_digit((unsigned char)name[j]))
          any_digit = 1;
        else
          numeric = 0;
      }
      if (!numeric)
        all_numeric = 0;
      last_digits = digits;
      start = i + 1;
    }
  }
  if (has_star && all_numeric && any_digit) {
    snprintf(err, errsize,
             "looks like an address range, but globs match names only; write a CIDR "
             "such as 10.0.0.0/8");
    return -EINVAL;
  }
  if (last_digits) {
    snprintf(err, errsize,
             "is neither a dotted-quad IPv4 address nor a host name (its last label is "
             "numeric)");
    return -EINVAL;
  }
  if (!has_star && inet_aton(name, &a4) != 0) {
    char buf[INET_ADDRSTRLEN];

    inet_ntop(AF_INET, &a4, buf, sizeof(buf));
    snprintf(err, errsize,
             "is a numeric form that resolvers read as the IPv4 address %s; write that "
             "address instead",
             buf);
    return -EINVAL;
  }
  return 0;
}

int rules_normalize_host(const char *in, size_t len, char *out, size_t size)
{
  struct in_addr a4;
  char err[160];
  int n;

  if (in == NULL || out == NULL || size == 0)
    return -EINVAL;
  if (len >= 2 && in[0] == '[') {
    if (in[len - 1] != ']')
      return -EINVAL;
    return normalize_v6(in + 1, len - 2, out, size);
  }
  /* A bare IPv6 literal is what this function returns for a bracketed one, so it
   * accepts it too: normalizing twice gives the same result. */
  if (memchr(in, ':', len) != NULL)
    return normalize_v6(in, len, out, size);
  n = normalize_name(in, len, 0, out, size, err, sizeof(err));
  if (n < 0)
    return n;
  if (inet_pton(AF_INET, out, &a4) == 1)
    return n;
  if (check_numeric(out, (size_t)n, err, sizeof(err)) != 0)
    return -EINVAL;
  return n;
}

/* Parses a decimal prefix length 0..max; -EINVAL otherwise. */
static int parse_prefix(const char *s, size_t len, unsigned max, unsigned *out)
{
  unsigned v = 0;
  size_t i;

  if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
    return -EINVAL;
  for (i = 0; i < len; i++) {
    if (!is_digit((unsigned char)s[i]))
      return -EINVAL;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > max)
    return -EINVAL;
  *out = v;
  return 0;
}

/*
 * Fills an address pattern from the text of an address and an optional prefix
 * ("10.0.0.0", "8"). v6 selects the family expected.
 */
static int parse_addr(const char *addr, size_t alen, const char *pfx, size_t plen, int v6,
                      struct rules_hostpat *out, char *err, size_t errsize)
{
  char tmp[INET6_ADDRSTRLEN], net[INET6_ADDRSTRLEN], q[64];
  uint8_t masked[16];
  unsigned prefix, max = v6 ? 128 : 32, i;
  struct in6_addr a6;
  struct in_addr a4;

  if (alen == 0 || alen >= sizeof(tmp)) {
    snprintf(err, errsize, "is not a valid IP address");
    return -EINVAL;
  }
  memcpy(tmp, addr, alen);
  tmp[alen] = '\0';
  if (v6) {
    if (inet_pton(AF_INET6, tmp, &a6) != 1) {
      snprintf(err, errsize, "has %s, which is not a valid IPv6 address",
               rules_quote(tmp, q, sizeof(q)));
      return -EINVAL;
    }
    memcpy(out->addr, &a6, 16);
  } else {
    if (inet_pton(AF_INET, tmp, &a4) != 1) {
      snprintf(err, errsize, "has %s, which is not a valid dotted-quad IPv4 address",
               rules_quote(tmp, q, sizeof(q)));
      return -EINVAL;
    }
    memcpy(out->addr, v4_mapped_prefix, 12);
    memcpy(out->addr + 12, &a4, 4);
  }
  prefix = max;
  if (pfx != NULL && parse_prefix(pfx, plen, max, &prefix) != 0) {
    snprintf(err, errsize, "has an invalid prefix length (expected 0 to %u)", max);
    return -EINVAL;
  }
  if (!v6)
    prefix += 96;
  /* Host bits set usually mean a typo in the address or the prefix: refuse to guess. */
  memset(masked, 0, sizeof(masked));
  for (i = 0; i < 128; i++)
    if (i < prefix && (out->addr[i / 8] & (0x80 >> (i % 8))))
      masked[i / 8] |= (uint8_t)(0x80 >> (i % 8));
  if (memcmp(masked, out->addr, 16) != 0) {
    if (!v6)
      inet_ntop(AF_INET, masked + 12, net, sizeof(net));
    else
      inet_ntop(AF_INET6, masked, net, sizeof(net));
    snprintf(err, errsize, "has host bits set beyond /%u; did you mean %s/%u?",
             v6 ? prefix : prefix - 96, net, v6 ? prefix : prefix - 96);
    return -EINVAL;
  }
  out->kind = RULES_HP_ADDR;
  out->prefix = (uint8_t)prefix;
  out->v4 = !v6;
  /* A v4-mapped IPv6 range is an IPv4 range: addresses are compared that way too. */
  if (v6 && prefix >= 96 && memcmp(out->addr, v4_mapped_prefix, 12) == 0)
    out->v4 = 1;
  return 0;
}

/* Host glob part of a pattern: sets kind, glob and len. */
static int parse_glob(struct rules_arena *a, const char *s, size_t len, int allow_domain,
                      struct rules_hostpat *out, char *err, size_t errsize)
{
  char norm[RULES_MAX_NAME_LEN + 2], q[160];
  int domain = 0, n;

  if (len > 0 && s[0] == '.') {
    if (!allow_domain) {
      /* Quoted for safety (it is user text), shown without the quotes. */
      n = (int)(len - 1 < sizeof(norm) - 1 ? len - 1 : sizeof(norm) - 1);
      memcpy(norm, s + 1, (size_t)n);
      norm[n] = '\0';
      rules_quote(norm, q, sizeof(q));
      snprintf(err, errsize,
               "starts with a dot; write *.%.*s for its subdomains (no_proxy alone "
               "accepts the .domain form)",
               (int)(strlen(q) - 2), q + 1);
      return -EINVAL;
    }
    domain = 1;
    s++;
    len--;
  }
  n = normalize_name(s, len, !domain, norm, sizeof(norm), err, errsize);
  if (n < 0)
    return n;
  if (!domain) {
    struct in_addr a4;

    /* "10.0.0.1." is an address written with a trailing dot. */
    if (inet_pton(AF_INET, norm, &a4) == 1)
      return parse_addr(norm, (size_t)n, NULL, 0, 0, out, err, errsize);
  }
  if (check_numeric(norm, (size_t)n, err, errsize) != 0)
    return -EINVAL;
  if (domain) {
    out->kind = RULES_HP_DOMAIN;
  } else if (n == 1 && norm[0] == '*') {
    out->kind = RULES_HP_ANY;
  } else if (memchr(norm, '*', (size_t)n) == NULL) {
    out->kind = RULES_HP_EXACT;
  } else if (n > 2 && norm[0] == '*' && norm[1] == '.' &&
             memchr(norm + 1, '*', (size_t)n - 1) == NULL) {
    out->kind = RULES_HP_SUFFIX;
  } else {
    out->kind = RULES_HP_GLOB;
  }
  if (out->kind == RULES_HP_SUFFIX) {
    out->glob = rules_arena_strndup(a, norm + 1, (size_t)n - 1);
    out->len = (uint16_t)(n - 1);
  } else {
    out->glob = rules_arena_strndup(a, norm, (size_t)n);
    out->len = (uint16_t)n;
  }
  return out->glob == NULL ? -ENOMEM : 0;
}

int rules_url_hint(const char *s, char *err, size_t errsize)
{
  const char *sep = strstr(s, "://"), *auth, *end, *at;
  char host[HOSTPAT_MAX_LEN + 1], q[160];
  size_t i, n;

  if (sep == NULL || sep == s)
    return 0;
  /* A scheme (RFC 3986 3.1): a letter, then letters, digits, '+', '-' or '.'. */
  for (i = 0; s + i < sep; i++) {
    unsigned char ch = (unsigned char)s[i];

    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (i > 0 && (is_digit(ch) || ch == '+' || ch == '-' || ch == '.'))))
      return 0;
  }
  auth = sep + 3;
  end = auth + strcspn(auth, "/?#");
  /* user:password@ is not part of the host. */
  for (at = end; at > auth && at[-1] != '@'; at--)
    ;
  if (at > auth)
    auth = at;
  n = (size_t)(end - auth);
  if (n == 0 || n >= sizeof(host)) {
    snprintf(err, errsize, "is a URL; write the host name alone, without a scheme or path");
    return 1;
  }
  memcpy(host, auth, n);
  host[n] = '\0';
  snprintf(err, errsize, "is a URL; write the host alone: %s",
           rules_quote(host, q, sizeof(q)));
  return 1;
}

int rules_hostpat_parse(struct rules_arena *a, const char *s, int allow_domain,
                        struct rules_hostpat *out, char *err, size_t errsize)
{
  size_t len = strlen(s), hlen, plen = 0, alen;
  const char *host = s, *port = NULL, *colon, *slash, *pfx = NULL;
  int ret;

  memset(out, 0, sizeof(*out));
  if (len == 0) {
    snprintf(err, errsize, "must not be empty");
    return -EINVAL;
  }
  /* Read as host:port, "https://x" would be reported as a bad port. */
  if (rules_url_hint(s, err, errsize))
    return -EINVAL;
  if (len > HOSTPAT_MAX_LEN) {
    snprintf(err, errsize, "is longer than %d bytes", HOSTPAT_MAX_LEN);
    return -EINVAL;
  }
  out->text = rules_arena_strndup(a, s, len);
  if (out->text == NULL)
    return -ENOMEM;

  if (s[0] == '[') {
    /* [v6], [v6]:port, [v6/len]:port or [v6]/len:port */
    const char *close = memchr(s, ']', len), *rest;
    size_t inner;

    if (close == NULL) {
      snprintf(err, errsize, "has '[' without a closing ']'");
      return -EINVAL;
    }
    inner = (size_t)(close - s - 1);
    slash = memchr(s + 1, '/', inner);
    alen = slash ? (size_t)(slash - s - 1) : inner;
    if (slash != NULL) {
      pfx = slash + 1;
      plen = inner - alen - 1;
    }
    rest = close + 1;
    if (*rest == '/' && pfx == NULL) {
      pfx = rest + 1;
      plen = strcspn(pfx, ":");
      rest = pfx + plen;
    }
    if (*rest == ':') {
      port = rest + 1;
    } else if (*rest != '\0') {
      snprintf(err, errsize, "has unexpected text after ']'; the form is [ADDRESS]:PORT");
      return -EINVAL;
    }
    ret = parse_addr(s + 1, alen, pfx, plen, 1, out, err, errsize);
    if (ret != 0)
      return ret;
  } else {
    colon = memchr(s, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) != NULL) {
      /* Two colons or more: a bare IPv6 address or range, which cannot carry a port. */
      slash = memchr(s, '/', len);
      alen = slash ? (size_t)(slash - s) : len;
      if (slash != NULL) {
        pfx = slash + 1;
        plen = len - alen - 1;
      }
      ret = parse_addr(s, alen, pfx, plen, 1, out, err, errsize);
      if (ret == -EINVAL && strlen(err) + 64 < errsize)
        strcat(err, " (an IPv6 address with a port is written [ADDRESS]:PORT)");
      if (ret != 0)
        return ret;
    } else {
      hlen = colon ? (size_t)(colon - s) : len;
      if (colon != NULL)
        port = colon + 1;
      slash = memchr(host, '/', hlen);
      if (slash != NULL && strspn(host, "0123456789.") != (size_t)(slash - host)) {
        snprintf(err, errsize,
                 "is neither a host name nor a CIDR (an address range is written "
                 "10.0.0.0/8)");
        ret = -EINVAL;
      } else if (slash != NULL) {
        alen = (size_t)(slash - host);
        ret = parse_addr(host, alen, slash + 1, hlen - alen - 1, 0, out, err, errsize);
      } else {
        char tmp[INET_ADDRSTRLEN];
        struct in_addr a4;
        int is_v4 = 0;

        if (hlen < sizeof(tmp)) {
          memcpy(tmp, host, hlen);
          tmp[hlen] = '\0';
          is_v4 = inet_pton(AF_INET, tmp, &a4) == 1;
        }
        if (is_v4)
          ret = parse_addr(host, hlen, NULL, 0, 0, out, err, errsize);
        else
          ret = parse_glob(a, host, hlen, allow_domain, out, err, errsize);
      }
      if (ret != 0)
        return ret;
    }
  }
  if (port != NULL && rules_parse_port(port, strlen(port), &out->port) != 0) {
    snprintf(err, errsize, "has an invalid port (expected 1 to 65535)");
    return -EINVAL;
  }
  return 0;
}
