/*
 * Strict HTTP/1.x request head parsing and rewriting (RFC 9110, RFC 9112).
 *
 * This runs before llhttp 8.1.0, which predates several request-smuggling fixes, and
 * refuses every shape that two HTTP implementations could frame differently: bare CR
 * or LF, obs-fold, whitespace before the colon, CL+TE, duplicate or list-valued
 * Content-Length, any Transfer-Encoding but a single `chunked`. It is deliberately
 * stricter than the RFC in places (documented where it happens): a sandbox talks to
 * real servers through ordinary clients, none of which send these shapes.
 *
 * Decisions the RFC leaves open:
 * - Empty lines before the request line (RFC 9112 2.2 allows ignoring one) are
 *   refused ("leading_empty_line"): the head then always starts at buf[0], and a
 *   stray CRLF after a body is more likely a framing disagreement than a courtesy.
 * - A fragment ('#') in the target is refused: it is not part of any request-target
 *   form and servers disagree on whether it belongs to the path.
 * - An absolute-form target must name the same authority as the Host field when one
 *   is present ("host_mismatch"): the rewrite turns it into origin-form, after which
 *   upstream routes by Host alone.
 * - Methods are limited to the ones llhttp knows (its HTTP method table, without
 *   CONNECT and PRI); any other token is 501 "unsupported_method" because llhttp
 *   would refuse the request after us anyway.
 * - Connection may not name Content-Length, Transfer-Encoding or Host: the rewrite
 *   drops every field a Connection option names, and dropping a framing field would
 *   make upstream frame the body differently from us.
 * - `Content_Length` and `Transfer_Encoding` are refused: servers behind a CGI-style
 *   gateway fold '_' and '-' together.
 * - A tab anywhere in a Content-Length, Transfer-Encoding or Connection value is
 *   refused: llhttp 8.1.0 reads "chunked\t" as a coding other than chunked.
 *
 * The rewrite writes one canonical Connection field ("close" or "keep-alive", then
 * "upgrade") where the sandbox's first one was, without the "close" of an HTTP/1.1
 * request that is not an upgrade (Connection is hop-by-hop: the sandbox's connection
 * closes after the response, the upstream one goes back to the pool); it drops
 * HTTP2-Settings always (h2c is never forwarded), and treats '_' and '-' alike when
 * removing the sandbox's copies of injected headers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "proxy/httphead.h"

/* JavaScript's Number.MAX_SAFE_INTEGER + 1: no legitimate body is larger, and every
 * implementation on the path can represent it exactly. */
#define MAX_CONTENT_LENGTH ((int64_t)1 << 53)

/* Slack for the rewritten Connection field, which is re-serialized and may be a few
 * bytes longer than the original ("Connection:close" -> "Connection: close"). */
#define CONNECTION_SLACK 64

/* Methods llhttp 8.1.0 accepts with HTTP/1.x (its HTTP_METHOD_MAP), minus CONNECT
 * (refused with its own reason) and PRI (only meaningful as the HTTP/2 preface).
 * Methods are case-sensitive (RFC 9110 9.1). */
static const char *const known_methods[] = {
  "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "COPY",
  "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND",
  "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE",
  "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK",
  "UNLINK", "SOURCE",
};

/* What the field lines say, collected while parsing and checked at the end. */
struct head_scan {
  int host_count;
  int cl_seen;
  int te_seen;
  int conn_close;
  int conn_keep_alive;
  int conn_upgrade;
  int upgrade_fields;
  int upgrade_websocket;
  int conn_names_expect; /* the rewrite drops Expect */
};

static int is_ows(char c)
{
  return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
  return c >= '0' && c <= '9';
}

static int is_hex(char c)
{
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_alpha(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Case-insensitive comparison of s[0..len) with a NUL-terminated literal. */
static int equals_ci(const char *s, size_t len, const char *lit)
{
  return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

static void trim_ows(const char **s, size_t *len)
{
  while (*len > 0 && is_ows(**s)) {
    (*s)++;
    (*len)--;
  }
  while (*len > 0 && is_ows((*s)[*len - 1]))
    (*len)--;
}

/*
 * Iterates a comma-separated list: returns 1 with the next element (OWS trimmed,
 * possibly empty) in *item and *item_len and advances *p past it and its comma, or 0 at
 * the end. An empty value yields one empty element.
 */
static int next_list_item(const char **p, const char *end, int *done, const char **item,
                          size_t *item_len)
{
  const char *comma;

  if (*done)
    return 0;
  comma = memchr(*p, ',', (size_t)(end - *p));
  *item = *p;
  if (comma == NULL) {
    *item_len = (size_t)(end - *p);
    *p = end;
    *done = 1;
  } else {
    *item_len = (size_t)(comma - *p);
    *p = comma + 1;
  }
  trim_ows(item, item_len);
  return 1;
}

/*
 * Finds the end of the line starting at buf[start]: on OK, *eol is the index of its
 * CR (the line is buf[start..*eol), the next one starts at *eol + 2). Refuses NUL,
 * CR not followed by LF and LF not preceded by CR wherever they appear, also in a
 * line that is not complete yet, so that garbage is refused without waiting for more.
 */
static enum proxy_http_status next_line(const char *buf, size_t avail, size_t start,
                                        size_t *eol, const char **why)
{
  size_t i;

  for (i = start; i < avail; i++) {
    char c = buf[i];

    if (c == '\0') {
      *why = "nul_byte";
      return PROXY_HTTP_BAD;
    }
    if (c == '\n') {
      *why = "bare_lf";
      return PROXY_HTTP_BAD;
    }
    if (c == '\r') {
      if (i + 1 == avail)
        return PROXY_HTTP_NEED_MORE;
      if (buf[i + 1] != '\n') {
        *why = "bare_cr";
        return PROXY_HTTP_BAD;
      }
      *eol = i;
      return PROXY_HTTP_OK;
    }
  }
  return PROXY_HTTP_NEED_MORE;
}

/* RFC 3986 reg-name: unreserved / pct-encoded / sub-delims. */
static int valid_reg_name(const char *s, size_t len)
{
  size_t i;

  if (len == 0)
    return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];

    if (c == '%') {
      if (i + 2 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
        return 0;
      i += 2;
      continue;
    }
    if (is_alpha(c) || is_digit(c) || strchr("-._~!$&'()*+,;=", c) != NULL)
      continue;
    return 0;
  }
  return 1;
}

/* A port: 1 to 5 digits, 1..65535. */
static int valid_port(const char *s, size_t len)
{
  unsigned long v = 0;
  size_t i;

  if (len == 0 || len > 5)
    return 0;
  for (i = 0; i < len; i++) {
    if (!is_digit(s[i]))
      return 0;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

/*
 * host[:port] as in a Host field or an absolute-form target: a reg-name or IPv4
 * address, or an IPv6 address in brackets (no zone, no IPvFuture). Userinfo is
 * refused by construction: '@' is not a reg-name character.
 */
static int valid_authority(const char *s, size_t len)
{
  const char *colon;
  char addr[INET6_ADDRSTRLEN];
  struct in6_addr in6;
  size_t host_len;

  if (len == 0)
    return 0;
  if (s[0] == '[') {
    const char *close = memchr(s, ']', len);

    if (close == NULL)
      return 0;
    host_len = (size_t)(close - s) - 1;
    if (host_len == 0 || host_len >= sizeof(addr))
      return 0;
    memcpy(addr, s + 1, host_len);
    addr[host_len] = '\0';
    if (inet_pton(AF_INET6, addr, &in6) != 1)
      return 0;
    host_len += 2;
    if (host_len == len)
      return 1;
    return s[host_len] == ':' && valid_port(s + host_len + 1, len - host_len - 1);
  }
  colon = memchr(s, ':', len);
  host_len = colon != NULL ? (size_t)(colon - s) : len;
  if (!valid_reg_name(s, host_len))
    return 0;
  if (colon == NULL)
    return 1;
  return valid_port(colon + 1, len - host_len - 1);
}

static int known_method(const char *m, size_t len)
{
  size_t i;

  for (i = 0; i < sizeof(known_methods) / sizeof(known_methods[0]); i++)
    if (strlen(known_methods[i]) == len && memcmp(known_methods[i], m, len) == 0)
      return 1;
  return 0;
}

/*
 * Classifies the request target (every byte already checked to be visible ASCII)
 * and fills form, path and authority.
 */
static enum proxy_http_status parse_target(struct proxy_http_request *req,
                                           const char **why)
{
  const char *t = req->target;
  size_t len = req->target_len, i, auth_end;

  if (t[0] == '/') {
    req->form = PROXY_TARGET_ORIGIN;
    req->path = t;
    req->path_len = len;
    return PROXY_HTTP_OK;
  }
  if (len == 1 && t[0] == '*') {
    if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7) != 0) {
      *why = "asterisk_not_options";
      return PROXY_HTTP_BAD;
    }
    req->form = PROXY_TARGET_ASTERISK;
    req->path = t;
    req->path_len = 1;
    return PROXY_HTTP_OK;
  }
  /* absolute-form: scheme "://" authority [path-abempty] ["?" query] */
  i = 0;
  if (!is_alpha(t[0])) {
    *why = "invalid_target";
    return PROXY_HTTP_BAD;
  }
  while (i < len && (is_alpha(t[i]) || is_digit(t[i]) || t[i] == '+' || t[i] == '-' ||
                     t[i] == '.'))
    i++;
  if (len - i < 3 || memcmp(t + i, "://", 3) != 0) {
    *why = "invalid_target";
    return PROXY_HTTP_BAD;
  }
  if (!equals_ci(t, i, "http") && !equals_ci(t, i, "https")) {
    *why = "unsupported_scheme";
    return PROXY_HTTP_BAD;
  }
  i += 3;
  auth_end = i;
  while (auth_end < len && t[auth_end] != '/' && t[auth_end] != '?')
    auth_end++;
  if (memchr(t + i, '@', auth_end - i) != NULL) {
    *why = "userinfo_in_target";
    return PROXY_HTTP_BAD;
  }
  if (!valid_authority(t + i, auth_end - i)) {
    *why = "invalid_target_authority";
    return PROXY_HTTP_BAD;
  }
  /* "http://h?q" would need a "/" inserted before the query; no client sends it. */
  if (auth_end < len && t[auth_end] == '?') {
    *why = "invalid_target";
    return PROXY_HTTP_BAD;
  }
  req->form = PROXY_TARGET_ABSOLUTE;
  req->authority = t + i;
  req->authority_len = auth_end - i;
  if (auth_end == len) {
    req->path = "/";
    req->path_len = 1;
  } else {
    req->path = t + auth_end;
    req->path_len = len - auth_end;
  }
  return PROXY_HTTP_OK;
}

/* METHOD SP request-target SP HTTP/1.x, with exactly one space between parts. */
static enum proxy_http_status parse_request_line(const char *line, size_t len,
                                                 struct proxy_http_request *req,
                                                 const char **why)
{
  const char *sp1, *sp2, *version;
  size_t version_len, i;

  /* Checked first: the whole preface never passes the checks below. */
  if (len == 14 && memcmp(line, "PRI * HTTP/2.0", 14) == 0) {
    *why = "http2_preface";
    return PROXY_HTTP_NOT_IMPL;
  }
  sp1 = memchr(line, ' ', len);
  if (sp1 == NULL || sp1 == line) {
    *why = "invalid_request_line";
    return PROXY_HTTP_BAD;
  }
  req->method = line;
  req->method_len = (size_t)(sp1 - line);
  if (!rules_is_token(req->method, req->method_len)) {
    *why = "invalid_method";
    return PROXY_HTTP_BAD;
  }
  sp2 = memchr(sp1 + 1, ' ', len - req->method_len - 1);
  if (sp2 == NULL) {
    /* "GET /" is an HTTP/0.9 request; its response would have no head. */
    *why = "missing_version";
    return PROXY_HTTP_BAD;
  }
  req->target = sp1 + 1;
  req->target_len = (size_t)(sp2 - req->target);
  version = sp2 + 1;
  version_len = len - (size_t)(version - line);
  if (req->target_len == 0 || memchr(version, ' ', version_len) != NULL) {
    *why = "invalid_request_line";
    return PROXY_HTTP_BAD;
  }
  if (version_len != 8 || memcmp(version, "HTTP/1.", 7) != 0 ||
      (version[7] != '0' && version[7] != '1')) {
    *why = "invalid_version";
    return PROXY_HTTP_BAD;
  }
  req->version_minor = version[7] - '0';
  if (req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0) {
    /* The proxy is transparent: a sandbox never talks to it as a forward proxy. */
    *why = "connect_not_allowed";
    return PROXY_HTTP_BAD;
  }
  if (!known_method(req->method, req->method_len)) {
    *why = "unsupported_method";
    return PROXY_HTTP_NOT_IMPL;
  }
  for (i = 0; i < req->target_len; i++) {
    unsigned char c = (unsigned char)req->target[i];

    if (c < 0x21 || c > 0x7e || c == '#') {
      *why = "invalid_target";
      return PROXY_HTTP_BAD;
    }
  }
  return parse_target(req, why);
}

/* 1*DIGIT, at most MAX_CONTENT_LENGTH. */
static int parse_content_length(const char *v, size_t len, int64_t *out)
{
  int64_t n = 0;
  size_t i;

  if (len == 0)
    return -EINVAL;
  for (i = 0; i < len; i++) {
    if (!is_digit(v[i]))
      return -EINVAL;
    n = n * 10 + (v[i] - '0');
    if (n > MAX_CONTENT_LENGTH)
      return -EINVAL;
  }
  *out = n;
  return 0;
}

/*
 * Transfer-Encoding: only a single `chunked` (any case) is accepted. Syntax errors
 * and `chunked` applied twice are 400; a well-formed list naming any other coding is
 * 501, since the message is valid HTTP this proxy does not implement.
 */
static enum proxy_http_status check_transfer_encoding(const char *v, size_t len,
                                                      const char **why)
{
  const char *p = v, *item;
  size_t item_len;
  int done = 0, chunked = 0, other = 0;

  while (next_list_item(&p, v + len, &done, &item, &item_len)) {
    if (!rules_is_token(item, item_len)) {
      /* Empty elements, parameters (";q=1"), quoted strings. */
      *why = "invalid_transfer_encoding";
      return PROXY_HTTP_BAD;
    }
    if (equals_ci(item, item_len, "chunked"))
      chunked++;
    else
      other++;
  }
  if (chunked > 1) {
    *why = "invalid_transfer_encoding";
    return PROXY_HTTP_BAD;
  }
  if (other > 0) {
    *why = "unsupported_transfer_encoding";
    return PROXY_HTTP_NOT_IMPL;
  }
  return PROXY_HTTP_OK;
}

/* Connection options; those naming a field the rewrite must keep are refused. */
static enum proxy_http_status check_connection(const char *v, size_t len,
                                               struct head_scan *scan, const char **why)
{
  const char *p = v, *item;
  size_t item_len;
  int done = 0;

  while (next_list_item(&p, v + len, &done, &item, &item_len)) {
    if (item_len == 0)
      continue; /* RFC 9110 5.6.1: empty list elements are ignored */
    if (!rules_is_token(item, item_len)) {
      *why = "invalid_connection";
      return PROXY_HTTP_BAD;
    }
    if (equals_ci(item, item_len, "close")) {
      scan->conn_close = 1;
    } else if (equals_ci(item, item_len, "keep-alive")) {
      scan->conn_keep_alive = 1;
    } else if (equals_ci(item, item_len, "upgrade")) {
      scan->conn_upgrade = 1;
    } else if (equals_ci(item, item_len, "expect")) {
      scan->conn_names_expect = 1;
    } else if (equals_ci(item, item_len, "content-length") ||
               equals_ci(item, item_len, "transfer-encoding") ||
               equals_ci(item, item_len, "host")) {
      *why = "invalid_connection_option";
      return PROXY_HTTP_BAD;
    }
  }
  return PROXY_HTTP_OK;
}

/*
 * The semantics of one (syntactically valid) field. has_htab: the value, OWS
 * included, contains a tab. llhttp 8.1.0 takes a tab after a Content-Length,
 * Transfer-Encoding or Connection token as part of the token ("chunked\t" is not
 * chunked to it, "upgrade\t" not upgrade), so tabs are refused in those three.
 */
static enum proxy_http_status check_field(struct proxy_http_request *req,
                                          const struct proxy_http_field *f, int has_htab,
                                          struct head_scan *scan, const char **why)
{
  enum proxy_http_status st;
  int64_t cl;

  if (equals_ci(f->name, f->name_len, "host")) {
    if (++scan->host_count > 1) {
      *why = "duplicate_host";
      return PROXY_HTTP_BAD;
    }
    if (!valid_authority(f->value, f->value_len)) {
      *why = "invalid_host";
      return PROXY_HTTP_BAD;
    }
    req->host_field = (int)req->nfields;
  } else if (equals_ci(f->name, f->name_len, "content-length")) {
    if (scan->cl_seen) {
      *why = "duplicate_content_length";
      return PROXY_HTTP_BAD;
    }
    if (scan->te_seen) {
      *why = "cl_and_te";
      return PROXY_HTTP_BAD;
    }
    scan->cl_seen = 1;
    if (has_htab) {
      *why = "invalid_content_length";
      return PROXY_HTTP_BAD;
    }
    /* "5, 5" is allowed by RFC 9110 8.6 when the values agree; not here. */
    if (memchr(f->value, ',', f->value_len) != NULL) {
      *why = "duplicate_content_length";
      return PROXY_HTTP_BAD;
    }
    if (parse_content_length(f->value, f->value_len, &cl) != 0) {
      *why = "invalid_content_length";
      return PROXY_HTTP_BAD;
    }
    req->content_length = cl;
  } else if (equals_ci(f->name, f->name_len, "transfer-encoding")) {
    if (scan->te_seen) {
      *why = "duplicate_transfer_encoding";
      return PROXY_HTTP_BAD;
    }
    if (scan->cl_seen) {
      *why = "cl_and_te";
      return PROXY_HTTP_BAD;
    }
    scan->te_seen = 1;
    if (req->version_minor == 0) {
      /* RFC 9112 6.1: an HTTP/1.0 recipient may not understand it; ambiguous. */
      *why = "transfer_encoding_http10";
      return PROXY_HTTP_BAD;
    }
    if (has_htab) {
      *why = "invalid_transfer_encoding";
      return PROXY_HTTP_BAD;
    }
    st = check_transfer_encoding(f->value, f->value_len, why);
    if (st != PROXY_HTTP_OK)
      return st;
    req->chunked = 1;
  } else if (equals_ci(f->name, f->name_len, "content_length") ||
             equals_ci(f->name, f->name_len, "transfer_encoding")) {
    *why = "ambiguous_field_name";
    return PROXY_HTTP_BAD;
  } else if (equals_ci(f->name, f->name_len, "connection")) {
    if (has_htab) {
      *why = "invalid_connection";
      return PROXY_HTTP_BAD;
    }
    return check_connection(f->value, f->value_len, scan, why);
  } else if (equals_ci(f->name, f->name_len, "upgrade")) {
    scan->upgrade_fields++;
    if (equals_ci(f->value, f->value_len, "websocket"))
      scan->upgrade_websocket = 1;
  } else if (equals_ci(f->name, f->name_len, "expect")) {
    if (equals_ci(f->value, f->value_len, "100-continue"))
      req->expect_continue = 1;
  }
  return PROXY_HTTP_OK;
}

/* One field line (without its CRLF): syntax, then semantics; appends it to req. */
static enum proxy_http_status parse_field_line(const char *line, size_t len,
                                               struct proxy_http_request *req,
                                               struct head_scan *scan, const char **why)
{
  struct proxy_http_field *f = &req->fields[req->nfields];
  const char *colon;
  enum proxy_http_status st;
  int has_htab;
  size_t i;

  if (is_ows(line[0])) {
    /* obs-fold; also whitespace right after the request line (RFC 9112 2.2). */
    *why = "obs_fold";
    return PROXY_HTTP_BAD;
  }
  colon = memchr(line, ':', len);
  if (colon == NULL) {
    *why = "missing_colon";
    return PROXY_HTTP_BAD;
  }
  f->name = line;
  f->name_len = (size_t)(colon - line);
  if (f->name_len == 0) {
    *why = "empty_field_name";
    return PROXY_HTTP_BAD;
  }
  if (is_ows(line[f->name_len - 1])) {
    *why = "space_before_colon";
    return PROXY_HTTP_BAD;
  }
  if (!rules_is_token(f->name, f->name_len)) {
    *why = "invalid_field_name";
    return PROXY_HTTP_BAD;
  }
  f->value = colon + 1;
  f->value_len = len - f->name_len - 1;
  has_htab = memchr(f->value, '\t', f->value_len) != NULL;
  trim_ows(&f->value, &f->value_len);
  for (i = 0; i < f->value_len; i++) {
    unsigned char c = (unsigned char)f->value[i];

    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      *why = "invalid_field_value";
      return PROXY_HTTP_BAD;
    }
  }
  st = check_field(req, f, has_htab, scan, why);
  if (st != PROXY_HTTP_OK)
    return st;
  req->nfields++;
  return PROXY_HTTP_OK;
}

/* Checks that need every field, once the head is complete. */
static enum proxy_http_status finish_head(struct proxy_http_request *req,
                                          const struct head_scan *scan, const char **why)
{
  if (scan->host_count == 0 && req->version_minor == 1) {
    *why = "missing_host";
    return PROXY_HTTP_BAD;
  }
  if (req->form == PROXY_TARGET_ABSOLUTE && scan->host_count > 0) {
    const struct proxy_http_field *h = &req->fields[req->host_field];

    if (h->value_len != req->authority_len ||
        strncasecmp(h->value, req->authority, h->value_len) != 0) {
      *why = "host_mismatch";
      return PROXY_HTTP_BAD;
    }
  }
  if (req->version_minor == 1)
    req->keep_alive = !scan->conn_close;
  else
    req->keep_alive = scan->conn_keep_alive && !scan->conn_close;
  /* RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored. Exactly one Upgrade
   * field naming only websocket; h2c and everything else is stripped instead. */
  req->upgrade = req->version_minor == 1 && scan->conn_upgrade &&
                 scan->upgrade_fields == 1 && scan->upgrade_websocket;
  /* Describe what upstream will see: "Connection: expect" makes Expect hop-by-hop. */
  if (scan->conn_names_expect)
    req->expect_continue = 0;
  return PROXY_HTTP_OK;
}

enum proxy_http_status proxy_http_parse_request(const char *buf, size_t len,
                                                size_t max_head,
                                                struct proxy_http_request *req,
                                                const char **reason)
{
  struct head_scan scan;
  enum proxy_http_status st;
  const char *why = NULL;
  size_t avail = len < max_head ? len : max_head;
  size_t pos, eol = 0;

  memset(req, 0, sizeof(*req));
  memset(&scan, 0, sizeof(scan));
  req->host_field = -1;
  req->content_length = -1;

  st = next_line(buf, avail, 0, &eol, &why);
  if (st != PROXY_HTTP_OK)
    goto out;
  if (eol == 0) {
    why = "leading_empty_line";
    st = PROXY_HTTP_BAD;
    goto out;
  }
  st = parse_request_line(buf, eol, req, &why);
  if (st != PROXY_HTTP_OK)
    goto out;
  pos = eol + 2;
  for (;;) {
    st = next_line(buf, avail, pos, &eol, &why);
    if (st != PROXY_HTTP_OK)
      goto out;
    if (eol == pos)
      break;
    if (req->nfields == PROXY_HTTP_MAX_FIELDS) {
      why = "too_many_fields";
      st = PROXY_HTTP_TOO_LARGE;
      goto out;
    }
    st = parse_field_line(buf + pos, eol - pos, req, &scan, &why);
    if (st != PROXY_HTTP_OK)
      goto out;
    pos = eol + 2;
  }
  req->head = buf;
  req->head_len = eol + 2;
  st = finish_head(req, &scan, &why);
out:
  if (st == PROXY_HTTP_NEED_MORE && len >= max_head) {
    /* The head does not end within max_head bytes: more data cannot help. */
    why = "head_too_large";
    st = PROXY_HTTP_TOO_LARGE;
  }
  if (reason != NULL)
    *reason = st == PROXY_HTTP_OK || st == PROXY_HTTP_NEED_MORE ? NULL : why;
  return st;
}

int proxy_http_find(const struct proxy_http_request *req, const char *name)
{
  size_t i;

  for (i = 0; i < req->nfields; i++)
    if (equals_ci(req->fields[i].name, req->fields[i].name_len, name))
      return (int)i;
  return -1;
}

static char fold_name_char(char c)
{
  if (c >= 'A' && c <= 'Z')
    return (char)(c - 'A' + 'a');
  return c == '_' ? '-' : c;
}

/*
 * Field names equal for the purpose of replacing injected headers: case-insensitive,
 * with '_' and '-' alike, because CGI-style gateways map both to the same variable
 * and a sandbox's `X_Api_Key` would otherwise reach upstream next to `X-Api-Key`.
 */
static int same_header_name(const char *a, size_t a_len, const char *b, size_t b_len)
{
  size_t i;

  if (a_len != b_len)
    return 0;
  for (i = 0; i < a_len; i++)
    if (fold_name_char(a[i]) != fold_name_char(b[i]))
      return 0;
  return 1;
}

/*
 * Whether the decision injects a header of this name. A local stand-in for
 * rules_request_injects (rules/ implements it in parallel) that also folds '_'.
 */
static int decision_injects(const struct rules_request_decision *d, const char *name,
                            size_t len)
{
  size_t i;

  if (d == NULL)
    return 0;
  for (i = 0; i < d->nheaders; i++)
    if (same_header_name(d->headers[i].name, strlen(d->headers[i].name), name, len))
      return 1;
  return 0;
}

/*
 * The injected headers are written verbatim into the head, so a decision that could
 * split the head or change its framing is refused here even though rules/ validates
 * configs: this is the last point before the bytes reach upstream.
 */
static int check_decision(const struct rules_request_decision *d)
{
  size_t i, j;

  if (d == NULL)
    return 0;
  if (d->nheaders > RULES_MAX_INJECT)
    return -EINVAL;
  for (i = 0; i < d->nheaders; i++) {
    const struct rules_header *h = &d->headers[i];
    size_t name_len;

    if (h->name == NULL || (h->value == NULL && h->value_len > 0))
      return -EINVAL;
    name_len = strlen(h->name);
    if (!rules_is_token(h->name, name_len) || rules_is_reserved_header(h->name, name_len) ||
        !rules_is_valid_value(h->value, h->value_len))
      return -EINVAL;
    /* Upstream must see exactly one copy of each injected header (invariant I6). */
    for (j = 0; j < i; j++)
      if (same_header_name(d->headers[j].name, strlen(d->headers[j].name), h->name,
                           name_len))
        return -EINVAL;
  }
  return 0;
}

struct writer {
  char *out;
  size_t size;
  size_t len;
  int overflow;
};

static void put(struct writer *w, const char *p, size_t n)
{
  if (w->overflow || n > w->size - w->len) {
    w->overflow = 1;
    return;
  }
  if (n > 0)
    memcpy(w->out + w->len, p, n);
  w->len += n;
}

static void put_str(struct writer *w, const char *s)
{
  put(w, s, strlen(s));
}

/* The length of field f's whole line in the head, without its CRLF. */
static size_t field_line_len(const struct proxy_http_request *req,
                             const struct proxy_http_field *f)
{
  const char *head_end = req->head + req->head_len;
  const char *value_end = f->value + f->value_len;
  const char *cr = memchr(value_end, '\r', (size_t)(head_end - value_end));

  return (size_t)(cr - f->name);
}

/* Hop-by-hop fields dropped whatever the Connection field says. */
static int always_dropped(const struct proxy_http_request *req,
                          const struct proxy_http_field *f)
{
  if (equals_ci(f->name, f->name_len, "proxy-connection") ||
      equals_ci(f->name, f->name_len, "proxy-authorization") ||
      equals_ci(f->name, f->name_len, "keep-alive") ||
      equals_ci(f->name, f->name_len, "http2-settings"))
    return 1;
  return !req->upgrade && equals_ci(f->name, f->name_len, "upgrade");
}

/*
 * Walks every Connection option: marks in drop[] each field an option names (other
 * than close, keep-alive and upgrade) and records which of those three appeared.
 */
static void scan_connection_options(const struct proxy_http_request *req,
                                    unsigned char *drop, int *has_close, int *has_ka)
{
  size_t i, j;

  for (i = 0; i < req->nfields; i++) {
    const struct proxy_http_field *c = &req->fields[i];
    const char *p = c->value, *item;
    size_t item_len;
    int done = 0;

    if (!equals_ci(c->name, c->name_len, "connection"))
      continue;
    while (next_list_item(&p, c->value + c->value_len, &done, &item, &item_len)) {
      if (item_len == 0 || equals_ci(item, item_len, "upgrade"))
        continue;
      if (equals_ci(item, item_len, "close")) {
        *has_close = 1;
        continue;
      }
      if (equals_ci(item, item_len, "keep-alive")) {
        *has_ka = 1;
        continue;
      }
      for (j = 0; j < req->nfields; j++)
        if (req->fields[j].name_len == item_len &&
            strncasecmp(req->fields[j].name, item, item_len) == 0)
          drop[j] = 1;
    }
  }
}

/* The Connection field upstream sees, in place of the first one the sandbox sent. */
static void put_connection(struct writer *w, const struct proxy_http_field *first,
                           int has_close, int has_ka, int upgrade)
{
  const char *tokens[2];
  size_t n = 0, i;

  if (has_close)
    tokens[n++] = "close";
  else if (has_ka)
    tokens[n++] = "keep-alive";
  if (upgrade)
    tokens[n++] = "upgrade";
  if (n == 0)
    return;
  put(w, first->name, first->name_len);
  put_str(w, ": ");
  for (i = 0; i < n; i++) {
    if (i > 0)
      put_str(w, ", ");
    put_str(w, tokens[i]);
  }
  put_str(w, "\r\n");
}

int proxy_http_upstream_keep_alive(const struct proxy_http_request *req)
{
  return req->version_minor == 1 && !req->upgrade ? 1 : req->keep_alive;
}

int proxy_http_rewrite(const struct proxy_http_request *req,
                       const struct rules_request_decision *d, char *out, size_t size)
{
  unsigned char drop[PROXY_HTTP_MAX_FIELDS];
  struct writer w = { out, size, 0, 0 };
  int has_close = 0, has_ka = 0, conn_written = 0, ret;
  size_t i;

  ret = check_decision(d);
  if (ret != 0)
    return ret;
  if (req->head == NULL || req->nfields > PROXY_HTTP_MAX_FIELDS)
    return -EINVAL;
  memset(drop, 0, sizeof(drop));
  scan_connection_options(req, drop, &has_close, &has_ka);

  put(&w, req->method, req->method_len);
  put_str(&w, " ");
  put(&w, req->path, req->path_len);
  put_str(&w, req->version_minor == 1 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
  for (i = 0; i < req->nfields; i++) {
    const struct proxy_http_field *f = &req->fields[i];

    if (equals_ci(f->name, f->name_len, "connection")) {
      if (!conn_written)
        put_connection(&w, f, has_close && !proxy_http_upstream_keep_alive(req), has_ka,
                       req->upgrade);
      conn_written = 1;
      continue;
    }
    if (drop[i] || always_dropped(req, f) || decision_injects(d, f->name, f->name_len))
      continue;
    put(&w, f->name, field_line_len(req, f));
    put_str(&w, "\r\n");
  }
  for (i = 0; d != NULL && i < d->nheaders; i++) {
    put_str(&w, d->headers[i].name);
    put_str(&w, ": ");
    put(&w, d->headers[i].value, d->headers[i].value_len);
    put_str(&w, "\r\n");
  }
  put_str(&w, "\r\n");
  if (w.overflow)
    return -ENOSPC;
  if (w.len > INT_MAX)
    return -EOVERFLOW;
  return (int)w.len;
}

size_t proxy_http_rewrite_bound(const struct proxy_http_request *req,
                                const struct rules_request_decision *d)
{
  /* The request line only shrinks (origin-form is a suffix of the target, or the
   * static "/" or "*"), dropped fields only shrink, and the Connection field grows by
   * at most a few bytes: the original head plus slack plus the injected lines. */
  size_t bound = req->head_len + CONNECTION_SLACK;
  size_t i, n;

  if (d == NULL)
    return bound;
  n = d->nheaders < RULES_MAX_INJECT ? d->nheaders : RULES_MAX_INJECT;
  for (i = 0; i < n; i++)
    if (d->headers[i].name != NULL)
      bound += strlen(d->headers[i].name) + 2 + d->headers[i].value_len + 2;
  return bound;
}
