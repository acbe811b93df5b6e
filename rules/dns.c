/*
 * The dns section: dns.remap sends a name to another host or address (a mirror, or
 * a fake upstream in tests). Keys are exact names; entries are kept sorted so a
 * lookup per connection is a binary search.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

static const char *const dns_fields[] = { "remap", NULL };

/* Parses a remap target: host, host:port, IPv4[:port], [IPv6][:port]. */
static int parse_target(struct rules_pctx *c, const char *s, struct rules_remap_entry *e)
{
  char host[RULES_MAX_NAME_LEN + 2], q[160];
  const char *port = NULL, *colon;
  size_t len = strlen(s), hlen;
  char err[256];
  int n;

  if (rules_url_hint(s, err, sizeof(err))) {
    rules_perr(c, "%s %s", rules_quote(s, q, sizeof(q)), err);
    return -EINVAL;
  }
  if (len > 0 && s[0] == '[') {
    const char *close = strchr(s, ']');

    if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
      rules_perr(c, "%s is not a valid target; write [IPv6] or [IPv6]:port",
                 rules_quote(s, q, sizeof(q)));
      return -EINVAL;
    }
    hlen = (size_t)(close - s) + 1;
    if (close[1] == ':')
      port = close + 2;
  } else {
    colon = strchr(s, ':');
    if (colon != NULL && strchr(colon + 1, ':') != NULL) {
      rules_perr(c, "%s: write an IPv6 target in brackets, [2001:db8::1] or "
                    "[2001:db8::1]:443",
                 rules_quote(s, q, sizeof(q)));
      return -EINVAL;
    }
    hlen = colon ? (size_t)(colon - s) : len;
    if (colon != NULL)
      port = colon + 1;
  }
  if (hlen == 0 || memchr(s, '*', hlen) != NULL) {
    rules_perr(c, "%s is not a valid target; write a host name, host:port, an IP "
                  "address or [IPv6]:port",
               rules_quote(s, q, sizeof(q)));
    return -EINVAL;
  }
  n = rules_normalize_host(s, hlen, host, sizeof(host));
  if (n < 0) {
    rules_perr(c, "%s does not name a valid host or address",
               rules_quote(s, q, sizeof(q)));
    return -EINVAL;
  }
  if (port != NULL && rules_parse_port(port, strlen(port), &e->port) != 0) {
    rules_perr(c, "%s has an invalid port (expected 1 to 65535)",
               rules_quote(s, q, sizeof(q)));
    return -EINVAL;
  }
  e->target = rules_arena_strndup(c->arena, s, len);
  e->host = rules_arena_strndup(c->arena, host, (size_t)n);
  if (e->target == NULL || e->host == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  return 0;
}

/* Parses a remap key: an exact, normalized DNS name. */
static int parse_key(struct rules_pctx *c, const char *key, struct rules_remap_entry *e)
{
  char name[RULES_MAX_NAME_LEN + 2], q[160], err[256];
  size_t len = strlen(key);
  const char *colon = memchr(key, ':', len);
  int n;

  if (rules_url_hint(key, err, sizeof(err))) {
    rules_perr(c, "%s %s", rules_quote(key, q, sizeof(q)), err);
    return -EINVAL;
  }
  if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - key) - 1) == NULL) {
    rules_perr(c, "%s: remap keys carry no port; a key applies to every port of its "
                  "name (give the target one instead, e.g. \"mirror.internal:8443\")",
               rules_quote(key, q, sizeof(q)));
    return -EINVAL;
  }
  if (memchr(key, '*', len) != NULL) {
    rules_perr(c, "remap keys are exact host names, not globs");
    return -EINVAL;
  }
  n = rules_normalize_host(key, len, name, sizeof(name));
  if (n < 0 || memchr(name, ':', (size_t)n) != NULL ||
      strspn(name, "0123456789.") == (size_t)n) {
    rules_perr(c, "%s is not a host name (remap keys are names; an address needs no "
                  "lookup)",
               rules_quote(key, q, sizeof(q)));
    return -EINVAL;
  }
  e->name = rules_arena_strndup(c->arena, name, (size_t)n);
  if (e->name == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  return 0;
}

struct keyed {
  struct rules_remap_entry *e;
  const char *key; /* as written, for error paths */
};

static int cmp_keyed(const void *a, const void *b)
{
  const struct keyed *x = a, *y = b;

  return strcmp(x->e->name, y->e->name);
}

static int cmp_entry(const void *a, const void *b)
{
  const struct rules_remap_entry *x = a, *y = b;

  return strcmp(x->name, y->name);
}

static void parse_remap(struct rules_pctx *c, const cJSON *obj)
{
  struct rules_config *cfg = c->cfg;
  struct keyed *order = NULL;
  const cJSON *v;
  size_t count, n = 0, i;
  int size;

  if (!cJSON_IsObject(obj)) {
    rules_perr(c, "must be an object mapping host names to targets, e.g. {\"pypi.org\": "
                  "\"pypi-mirror.internal\"}");
    return;
  }
  size = cJSON_GetArraySize(obj);
  if (size < 0 || size > RULES_MAX_PATTERNS) {
    rules_perr(c, "has %d entries; the limit is %d", size, RULES_MAX_PATTERNS);
    return;
  }
  count = (size_t)size;
  if (count == 0)
    return;
  cfg->remap = rules_arena_array(c->arena, count, sizeof(*cfg->remap));
  order = calloc(count, sizeof(*order));
  if (cfg->remap == NULL || order == NULL) {
    c->oom = 1;
    goto out;
  }
  for (v = obj->child; v != NULL; v = v->next) {
    struct rules_remap_entry *e = &cfg->remap[n];
    size_t old = rules_path_key(c, v->string ? v->string : "");

    if (parse_key(c, v->string ? v->string : "", e) == 0 && rules_expect_string(c, v) == 0 &&
        parse_target(c, v->valuestring, e) == 0) {
      order[n].e = e;
      order[n].key = v->string;
      n++;
    }
    rules_path_pop(c, old);
  }
  /* Two keys for one name ("PyPI.org" and "pypi.org", or a repeated key): refuse. */
  qsort(order, n, sizeof(*order), cmp_keyed);
  for (i = 1; i < n; i++) {
    if (strcmp(order[i - 1].e->name, order[i].e->name) == 0) {
      size_t old = rules_path_key(c, order[i].key);

      rules_perr(c, "names the same host as another dns.remap key");
      rules_path_pop(c, old);
    }
  }
  qsort(cfg->remap, n, sizeof(*cfg->remap), cmp_entry);
  cfg->nremap = (uint16_t)n;
out:
  free(order);
}

void rules_parse_dns(struct rules_pctx *c, const cJSON *obj)
{
  const cJSON *v;
  size_t old;

  if (rules_check_object(c, obj, dns_fields) != 0)
    return;
  v = rules_field(obj, "remap");
  if (v != NULL) {
    c->cfg->have |= RULES_HAVE_REMAP;
    old = rules_path_field(c, "remap");
    parse_remap(c, v);
    rules_path_pop(c, old);
  }
}
