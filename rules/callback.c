/*
 * The callback section: where dynamic credentials come from. The URL is parsed once
 * here (http, https, or a unix socket with an optional request path) so the callback
 * client never parses configuration text.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

#define CALLBACK_URL_MAX 2048
#define TTL_DEFAULT 300
#define TTL_MAX 86400
#define TIMEOUT_DEFAULT 3000
#define TIMEOUT_MAX 60000

static const char *const callback_fields[] = { "url",        "match_hosts", "ttl_seconds",
                                               "timeout_ms", "headers",     "allow_plain_http",
                                               NULL };

/* A request path for the callback: '/' then visible ASCII, no fragment. */
static int valid_request_path(const char *p)
{
  size_t i;

  if (p[0] != '/')
    return 0;
  for (i = 0; p[i] != '\0'; i++) {
    unsigned char ch = (unsigned char)p[i];

    if (ch <= 0x20 || ch >= 0x7f || ch == '#')
      return 0;
  }
  return 1;
}

/* http(s)://host[:port][/path]; fills cb and reports errors. */
static int parse_http(struct rules_pctx *c, const char *url, size_t skip,
                      struct rules_callback *cb)
{
  const char *auth = url + skip, *slash, *port = NULL, *hostp = auth;
  char host[RULES_MAX_NAME_LEN + 2];
  size_t alen, hlen;
  int n;

  slash = strchr(auth, '/');
  alen = slash ? (size_t)(slash - auth) : strlen(auth);
  if (memchr(auth, '@', alen) != NULL) {
    rules_perr(c, "must not carry credentials (user@host); send them with "
                  "callback.headers instead");
    return -EINVAL;
  }
  if (memchr(auth, '?', alen) != NULL) {
    rules_perr(c, "has a query but no path; write http://host/path?query");
    return -EINVAL;
  }
  if (alen > 0 && auth[0] == '[') {
    const char *close = memchr(auth, ']', alen);

    if (close == NULL) {
      rules_perr(c, "has '[' without a closing ']'");
      return -EINVAL;
    }
    hlen = (size_t)(close - auth) + 1;
    if (hlen < alen) {
      if (close[1] != ':') {
        rules_perr(c, "has unexpected text after ']'; the form is http://[ADDRESS]:PORT/");
        return -EINVAL;
      }
      port = close + 2;
    }
  } else {
    const char *colon = memchr(auth, ':', alen);

    hlen = colon ? (size_t)(colon - auth) : alen;
    if (colon != NULL)
      port = colon + 1;
  }
  if (hlen == 0) {
    rules_perr(c, "has no host");
    return -EINVAL;
  }
  n = rules_normalize_host(hostp, hlen, host, sizeof(host));
  if (n < 0) {
    rules_perr(c, "has an invalid host (a host name, an IPv4 address or [IPv6])");
    return -EINVAL;
  }
  cb->port = cb->kind == RULES_CB_HTTPS ? 443 : 80;
  if (port != NULL &&
      rules_parse_port(port, (size_t)(auth + alen - port), &cb->port) != 0) {
    rules_perr(c, "has an invalid port (expected 1 to 65535)");
    return -EINVAL;
  }
  if (slash != NULL && !valid_request_path(slash)) {
    rules_perr(c, "has a path with a space, control, non-ASCII byte or '#'; "
                  "percent-encode it");
    return -EINVAL;
  }
  cb->host = rules_arena_strndup(c->arena, host, (size_t)n);
  cb->path = rules_arena_strndup(c->arena, slash ? slash : "/", slash ? strlen(slash) : 1);
  if (cb->host == NULL || cb->path == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  return 0;
}

/* unix:/abs/path.sock[:/request/path]; the first ":/" after the socket path splits. */
static int parse_unix(struct rules_pctx *c, const char *url, struct rules_callback *cb)
{
  const char *sock = url + 5, *sep;
  size_t slen;

  if (sock[0] != '/') {
    rules_perr(c, "needs an absolute socket path: unix:/run/creds.sock or "
                  "unix:/run/creds.sock:/request/path");
    return -EINVAL;
  }
  sep = strstr(sock, ":/");
  slen = sep ? (size_t)(sep - sock) : strlen(sock);
  if (slen >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    rules_perr(c, "has a socket path of %zu bytes; the limit is %zu", slen,
               sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    return -EINVAL;
  }
  if (sep != NULL && !valid_request_path(sep + 1)) {
    rules_perr(c, "has a request path with a space, control, non-ASCII byte or '#'; "
                  "percent-encode it");
    return -EINVAL;
  }
  cb->kind = RULES_CB_UNIX;
  cb->socket = rules_arena_strndup(c->arena, sock, slen);
  cb->path = rules_arena_strndup(c->arena, sep ? sep + 1 : "/", sep ? strlen(sep + 1) : 1);
  if (cb->socket == NULL || cb->path == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  return 0;
}

static void parse_url(struct rules_pctx *c, const cJSON *v, struct rules_callback *cb)
{
  size_t old = rules_path_field(c, "url"), len, i;
  const char *url;
  char q[160];

  if (v == NULL) {
    rules_perr(c, "is required: http://host[:port]/path, https://... or "
                  "unix:/path.sock[:/request/path]");
    goto out;
  }
  if (rules_expect_string(c, v) != 0)
    goto out;
  url = v->valuestring;
  len = strlen(url);
  if (len > CALLBACK_URL_MAX) {
    rules_perr(c, "is longer than %d bytes", CALLBACK_URL_MAX);
    goto out;
  }
  for (i = 0; i < len; i++) {
    if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] == 0x7f) {
      rules_perr(c, "has a space or control character at byte %zu", i);
      goto out;
    }
  }
  cb->url = rules_arena_strndup(c->arena, url, len);
  if (cb->url == NULL) {
    c->oom = 1;
    goto out;
  }
  if (strncasecmp(url, "http://", 7) == 0) {
    cb->kind = RULES_CB_HTTP;
    parse_http(c, url, 7, cb);
  } else if (strncasecmp(url, "https://", 8) == 0) {
    cb->kind = RULES_CB_HTTPS;
    parse_http(c, url, 8, cb);
  } else if (strncasecmp(url, "unix:", 5) == 0) {
    parse_unix(c, url, cb);
  } else {
    rules_perr(c, "%s is not an http://, https:// or unix: URL",
               rules_quote(url, q, sizeof(q)));
  }
out:
  rules_path_pop(c, old);
}

void rules_parse_callback(struct rules_pctx *c, const cJSON *obj)
{
  struct rules_cb *cb;
  const cJSON *v;
  uint16_t nhdrs = 0;
  size_t old;

  if (rules_check_object(c, obj, callback_fields) != 0)
    return;
  cb = rules_arena_alloc(c->arena, sizeof(*cb));
  if (cb == NULL) {
    c->oom = 1;
    return;
  }
  c->cfg->callback = cb;
  cb->pub.ttl_seconds = TTL_DEFAULT;
  cb->pub.timeout_ms = TIMEOUT_DEFAULT;
  parse_url(c, rules_field(obj, "url"), &cb->pub);

  old = rules_path_field(c, "match_hosts");
  rules_parse_hostpats(c, rules_field(obj, "match_hosts"), 0, 1, &cb->hosts, &cb->nhosts);
  rules_path_pop(c, old);

  v = rules_field(obj, "ttl_seconds");
  if (v != NULL) {
    old = rules_path_field(c, "ttl_seconds");
    rules_expect_uint(c, v, 0, TTL_MAX, &cb->pub.ttl_seconds);
    rules_path_pop(c, old);
  }
  v = rules_field(obj, "timeout_ms");
  if (v != NULL) {
    old = rules_path_field(c, "timeout_ms");
    rules_expect_uint(c, v, 1, TIMEOUT_MAX, &cb->pub.timeout_ms);
    rules_path_pop(c, old);
  }
  old = rules_path_field(c, "headers");
  rules_parse_headers(c, rules_field(obj, "headers"), "callback", 0, &cb->hdrs, &cb->meta,
                      &nhdrs);
  rules_path_pop(c, old);
  cb->pub.headers = cb->hdrs;
  cb->pub.nheaders = nhdrs;
  v = rules_field(obj, "allow_plain_http");
  if (v != NULL) {
    uint8_t b = 0;

    old = rules_path_field(c, "allow_plain_http");
    if (rules_expect_bool(c, v, &b) == 0)
      cb->pub.plain_http = b;
    rules_path_pop(c, old);
  }
}
