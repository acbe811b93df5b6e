/*
 * Request paths: normalization for matching (RFC 3986 6.2.2 and 5.2.4) and parsing
 * of path patterns (match_paths, egress paths) into the same normal form.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rules/rules_internal.h"

/* Longest path pattern accepted. */
#define PATHPAT_MAX_LEN 2048

int rules_hex_value(unsigned char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/*
 * 1 for a character whose percent-escape means the character itself to the servers
 * that route requests: the unreserved ones (RFC 3986 6.2.2.2) and, since servers
 * (Express, Flask, Go's net/http, Google's APIs) decode the whole path before they
 * route, the printable reserved ones too, so that "/models/x%3Agenerate" matches
 * "/models/x:generate". Kept encoded: '%' (a server that decodes twice reads
 * "%2561" as "a": decode() marks that ambiguous), '*' (a pattern's glob), '?' and
 * '#' (which would end the path), and the separators that make a path ambiguous
 * ('/', '\', ';', see decode()); so are space, controls and non-ASCII bytes, which
 * never appear unencoded.
 */
static int decodes_to_itself(unsigned char c)
{
  return c > 0x20 && c < 0x7f && strchr("%*?#/\\;", c) == NULL;
}

/*
 * Decodes the percent-escapes decodes_to_itself() accepts and uppercases the hex
 * digits of the others, writing to out (at most len bytes). Sets
 * RULES_PATH_AMBIGUOUS for an encoded '/', '\' or NUL, for a literal '\', for an
 * empty segment ("//"): nginx and Apache merge slashes before resolving
 * dot-segments, so "/repos//../x" is /x to them and /repos/x to RFC 3986, and
 * "//admin" is /admin to them but not to a pattern; for a ';': Java servlet
 * containers strip ";params" from every segment before mapping, so "/admin;x" and
 * "/repos/..;/admin" are /admin to them; and for an encoded '%' that starts another
 * escape ("%2561"), which a server that decodes twice reads as "a".
 * Returns the length or -EINVAL.
 */
static int decode(const char *in, size_t len, char *out, int *flags)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t i = 0, w = 0;

  while (i < len) {
    unsigned char c = (unsigned char)in[i];

    if (c <= 0x20 || c == 0x7f || c == '#')
      return -EINVAL;
    if (c == '\\' || c == ';' || (c == '/' && w > 0 && out[w - 1] == '/'))
      *flags |= RULES_PATH_AMBIGUOUS;
    if (c != '%') {
      out[w++] = (char)c;
      i++;
      continue;
    }
    if (len - i < 3 || rules_hex_value((unsigned char)in[i + 1]) < 0 ||
        rules_hex_value((unsigned char)in[i + 2]) < 0)
      return -EINVAL;
    c = (unsigned char)(rules_hex_value((unsigned char)in[i + 1]) * 16 +
                        rules_hex_value((unsigned char)in[i + 2]));
    i += 3;
    if (decodes_to_itself(c)) {
      out[w++] = (char)c;
      continue;
    }
    /* Servers disagree on whether these separate segments or end the path. */
    if (c == '/' || c == '\\' || c == 0)
      *flags |= RULES_PATH_AMBIGUOUS;
    out[w++] = '%';
    out[w++] = hex[c >> 4];
    out[w++] = hex[c & 15];
  }
  /* Every "%25" in out is an encoded '%'; the digits after it may have been encoded
   * too ("%25%36%31"). */
  for (i = 0; i + 5 <= w; i++) {
    if (memcmp(out + i, "%25", 3) == 0 &&
        rules_hex_value((unsigned char)out[i + 3]) >= 0 &&
        rules_hex_value((unsigned char)out[i + 4]) >= 0)
      *flags |= RULES_PATH_AMBIGUOUS;
  }
  return (int)w;
}

/*
 * Removes dot-segments in place (RFC 3986 5.2.4) from a path starting with '/', and
 * sets RULES_PATH_AMBIGUOUS if there was one (sent as is or percent-encoded): the
 * path is forwarded as sent, and servers that route before removing them (Express,
 * some Werkzeug routes) take "/admin/../health" for /admin/..., not /health. Clients
 * remove them before sending. Empty segments (duplicate slashes) and ";params" are
 * kept as sent; decode() has flagged both ambiguous, since servers disagree on what
 * they mean.
 */
static size_t remove_dot_segments(char *buf, size_t n, int *flags)
{
  size_t r = 0, w = 0;

  while (r < n) {
    size_t seg = r + 1, end = seg, slen;

    while (end < n && buf[end] != '/')
      end++;
    slen = end - seg;
    if ((slen == 1 && buf[seg] == '.') || (slen == 2 && buf[seg] == '.' && buf[seg + 1] == '.'))
      *flags |= RULES_PATH_AMBIGUOUS;
    if (slen == 1 && buf[seg] == '.') {
      r = end;
      if (r == n)
        buf[w++] = '/';
      continue;
    }
    if (slen == 2 && buf[seg] == '.' && buf[seg + 1] == '.') {
      /* Drop the last output segment and its '/'. */
      while (w > 0 && buf[w - 1] != '/')
        w--;
      if (w > 0)
        w--;
      r = end;
      if (r == n)
        buf[w++] = '/';
      continue;
    }
    memmove(buf + w, buf + r, end - r);
    w += end - r;
    r = end;
  }
  return w;
}

int rules_normalize_path(const char *in, size_t len, char *out, size_t size, int *flags)
{
  const char *q;
  int f = 0, n;

  if (flags != NULL)
    *flags = 0;
  if (in == NULL || out == NULL)
    return -EINVAL;
  q = memchr(in, '?', len);
  if (q != NULL)
    len = (size_t)(q - in);
  if (len == 0 || in[0] != '/')
    return -EINVAL;
  if (len >= size || len > INT32_MAX)
    return -ENOSPC;
  n = decode(in, len, out, &f);
  if (n < 0)
    return n;
  n = (int)remove_dot_segments(out, (size_t)n, &f);
  out[n] = '\0';
  if (flags != NULL)
    *flags = f;
  return n;
}

int rules_pathpat_parse(struct rules_arena *a, const char *s, struct rules_pathpat *out,
                        char *err, size_t errsize)
{
  char norm[PATHPAT_MAX_LEN + 1];
  size_t len = strlen(s), i, seg;
  int flags = 0, n;
  const char *star;

  memset(out, 0, sizeof(*out));
  if (len == 0) {
    snprintf(err, errsize, "must not be empty (leave match_paths out to match every path)");
    return -EINVAL;
  }
  if (len > PATHPAT_MAX_LEN) {
    snprintf(err, errsize, "is longer than %d bytes", PATHPAT_MAX_LEN);
    return -EINVAL;
  }
  if (s[0] != '/' && s[0] != '*') {
    snprintf(err, errsize, "must start with '/' (or '*')");
    return -EINVAL;
  }
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];

    if (c == '?' || c == '#') {
      snprintf(err, errsize,
               "has '%c'; patterns match the path only (the query is never matched)", c);
      return -EINVAL;
    }
    if (c <= 0x20 || c >= 0x7f) {
      snprintf(err, errsize,
               "has a space, control or non-ASCII byte at byte %zu; percent-encode it", i);
      return -EINVAL;
    }
  }
  n = decode(s, len, norm, &flags);
  if (n < 0) {
    snprintf(err, errsize, "has a malformed percent-encoding (expected %%XX, hex digits)");
    return -EINVAL;
  }
  norm[n] = '\0';
  if (flags & RULES_PATH_AMBIGUOUS) {
    snprintf(err, errsize,
             "has %%2F, %%5C, %%00, '\\', ';', '//' or %%25 before hex digits, which "
             "make a path ambiguous; a pattern cannot have them (a '*' covers the "
             "encoded '/' of a request path, which is matched both as %%2F and as '/')");
    return -EINVAL;
  }
  /* A dot-segment is removed from every request path, so it could never match. */
  for (seg = 0; seg <= (size_t)n; seg++) {
    if (seg != 0 && norm[seg - 1] != '/')
      continue;
    if ((norm[seg] == '.' && (norm[seg + 1] == '/' || norm[seg + 1] == '\0')) ||
        (norm[seg] == '.' && norm[seg + 1] == '.' &&
         (norm[seg + 2] == '/' || norm[seg + 2] == '\0'))) {
      snprintf(err, errsize,
               "has a \".\" or \"..\" segment; request paths are normalized first, so it "
               "would never match");
      return -EINVAL;
    }
  }
  out->text = rules_arena_strndup(a, s, len);
  if (out->text == NULL)
    return -ENOMEM;
  if ((size_t)n == len && memcmp(norm, s, len) == 0)
    out->glob = out->text;
  else
    out->glob = rules_arena_strndup(a, norm, (size_t)n);
  if (out->glob == NULL)
    return -ENOMEM;
  out->len = (uint16_t)n;
  star = memchr(norm, '*', (size_t)n);
  if (star == NULL)
    out->kind = RULES_PP_EXACT;
  else if (star == norm + n - 1) {
    out->kind = RULES_PP_PREFIX;
    out->len = (uint16_t)(n - 1);
  } else
    out->kind = RULES_PP_GLOB;
  return 0;
}
