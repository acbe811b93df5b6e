/*
 * Decisions: per connection (deny, tunnel, intercept, bypass), per request (deny,
 * headers to inject, callback), and on the address the proxy resolved before it
 * dials. Runs on the event loop for every connection and request: no allocation, no
 * pattern parsing, bounded stack.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rules/rules_internal.h"

/* Longest request path (without the query) a request decision normalizes. */
#define DECIDE_PATH_MAX 8192

static void set_entry(char *entry, const char *list, size_t i)
{
  snprintf(entry, 64, "%s[%zu]", list, i);
}

static int restricted(const struct rules_egress *e)
{
  return e->npaths != 0 || e->nmethods != 0;
}

static int egress_hosts_match(const struct rules_egress *e, const struct rules_target *t)
{
  return rules_hostpats_match(e->hosts, e->nhosts, t) >= 0;
}

static void deny_conn(struct rules_decision *out, const char *reason, const char *list,
                      size_t i)
{
  out->action = RULES_DENY;
  out->reason = reason;
  if (list != NULL)
    set_entry(out->entry, list, i);
}

void rules_decide_conn(const struct rules_config *cfg, const struct rules_dest *dest,
                       struct rules_decision *out)
{
  struct rules_target t;
  const char *force_list = NULL;
  size_t i, force = 0;
  int full = 0, partial = -1, k;

  out->action = RULES_TUNNEL;
  out->reason = NULL;
  out->entry[0] = '\0';
  out->inspect = 0;
  if (rules_target_init(&t, dest) != 0) {
    deny_conn(out, "invalid_name", NULL, 0);
    return;
  }
  for (i = 0; i < cfg->ndeny; i++) {
    if (!restricted(&cfg->deny[i]) && egress_hosts_match(&cfg->deny[i], &t)) {
      deny_conn(out, "egress_deny", "egress.deny", i);
      return;
    }
  }
  if (cfg->default_deny) {
    for (i = 0; i < cfg->nallow && !full; i++) {
      if (!egress_hosts_match(&cfg->allow[i], &t))
        continue;
      if (!restricted(&cfg->allow[i]))
        full = 1;
      else if (partial < 0)
        partial = (int)i;
    }
    if (!full && partial < 0) {
      deny_conn(out, "egress_not_allowed", NULL, 0);
      return;
    }
    if (!full) {
      force_list = "egress.allow";
      force = (size_t)partial;
    }
  }
  /* Request-level denies need the request: they override no_proxy. */
  for (i = 0; i < cfg->ndeny && force_list == NULL; i++) {
    if (restricted(&cfg->deny[i]) && egress_hosts_match(&cfg->deny[i], &t)) {
      force_list = "egress.deny";
      force = i;
    }
  }
  if (force_list != NULL) {
    out->action = RULES_INTERCEPT;
    out->inspect = 1;
    set_entry(out->entry, force_list, force);
    return;
  }
  k = rules_hostpats_match(cfg->no_proxy, cfg->nno_proxy, &t);
  if (k >= 0) {
    out->action = RULES_BYPASS;
    set_entry(out->entry, "no_proxy", (size_t)k);
    return;
  }
  for (i = 0; i < cfg->nrules; i++) {
    const struct rules_rule *r = &cfg->rules[i];

    if (r->nhdrs != 0 && rules_hostpats_match(r->hosts, r->nhosts, &t) >= 0) {
      out->action = RULES_INTERCEPT;
      snprintf(out->entry, sizeof(out->entry), "%s", r->name);
      return;
    }
  }
  if (cfg->callback != NULL &&
      rules_hostpats_match(cfg->callback->hosts, cfg->callback->nhosts, &t) >= 0) {
    out->action = RULES_INTERCEPT;
    snprintf(out->entry, sizeof(out->entry), "callback");
    return;
  }
  for (i = 0; i < cfg->nallow; i++) {
    if (restricted(&cfg->allow[i]) && egress_hosts_match(&cfg->allow[i], &t)) {
      out->action = RULES_INTERCEPT;
      set_entry(out->entry, "egress.allow", i);
      return;
    }
  }
}

static int method_listed(const struct rules_egress *e, const char *method)
{
  size_t i;

  if (e->nmethods == 0)
    return 1;
  if (method == NULL)
    return 0;
  for (i = 0; i < e->nmethods; i++)
    if (strcasecmp(e->methods[i], method) == 0)
      return 1;
  return 0;
}

static int path_listed(const struct rules_pathpat *v, size_t n, const char *path,
                       size_t len)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (rules_pathpat_match(&v[i], path, len))
      return 1;
  return 0;
}

/* path_listed for the paths of a deny entry (see rules_pathpat_match_deny). */
static int deny_path_listed(const struct rules_egress *e, const char *path, size_t len)
{
  size_t i;

  for (i = 0; i < e->npaths; i++)
    if (rules_pathpat_match_deny(&e->paths[i], path, len))
      return 1;
  return 0;
}

/*
 * A request path as the servers behind the proxy may read it. A path with an encoded
 * '/' ("%2F") has two readings: servers that route before decoding see "%2F" inside
 * a segment, those that decode first see '/'. npm names every scoped package so
 * ("/@types%2fnode"), and GitLab its projects ("/projects/group%2Fproject"), so
 * both readings are kept (text[0] as normalized, text[1] decoded): a deny's paths
 * match if either does, a rule's or an allow's only if both do. Any other
 * ambiguity, including a dot-segment or an empty segment that decoding makes
 * ("..%2F", "%2F%2F"), leaves the path ambiguous: it matches every deny's paths and
 * no rule's or allow's.
 */
struct path_view {
  char text[2][DECIDE_PATH_MAX + 1];
  size_t len[2];
  size_t n;      /* readings in text: 1 or 2 */
  int ambiguous;
};

/* Writes path (len bytes, without its query) to out with every "%2F" replaced by c. */
static size_t replace_encoded_slash(const char *path, size_t len, char c, char *out)
{
  size_t i = 0, w = 0;

  while (i < len) {
    if (path[i] == '%' && len - i >= 3 && path[i + 1] == '2' &&
        (path[i + 2] == 'F' || path[i + 2] == 'f')) {
      out[w++] = c;
      i += 3;
      continue;
    }
    out[w++] = path[i++];
  }
  return w;
}

/* 0, or the negative errno of rules_normalize_path. */
static int path_view_init(struct path_view *v, const char *path, size_t path_len)
{
  char raw[DECIDE_PATH_MAX + 1];
  const char *q;
  size_t len;
  int flags = 0, n;

  n = rules_normalize_path(path, path_len, v->text[0], sizeof(v->text[0]), &flags);
  if (n < 0)
    return n;
  v->len[0] = (size_t)n;
  v->n = 1;
  v->ambiguous = (flags & RULES_PATH_AMBIGUOUS) != 0;
  /* The common path is not ambiguous: it pays for nothing below. */
  if (!v->ambiguous || !memmem(v->text[0], v->len[0], "%2F", 3))
    return 0;
  q = memchr(path, '?', path_len);
  len = q != NULL ? (size_t)(q - path) : path_len;
  if (len > DECIDE_PATH_MAX)
    return 0;
  /* Ambiguous only for its encoded '/'? Then "%2F" as an ordinary character ('_'
   * makes no dot-segment, empty segment or escape) leaves it unambiguous... */
  n = rules_normalize_path(raw, replace_encoded_slash(path, len, '_', raw), v->text[1],
                           sizeof(v->text[1]), &flags);
  if (n < 0 || (flags & RULES_PATH_AMBIGUOUS))
    return 0;
  /* ...and so does the decoded reading. */
  n = rules_normalize_path(raw, replace_encoded_slash(path, len, '/', raw), v->text[1],
                           sizeof(v->text[1]), &flags);
  if (n < 0 || (flags & RULES_PATH_AMBIGUOUS))
    return 0;
  v->len[1] = (size_t)n;
  v->n = 2;
  v->ambiguous = 0;
  return 0;
}

/* A deny entry's paths cover the request: an ambiguous path, or either reading. */
static int deny_covers(const struct rules_egress *e, const struct path_view *v)
{
  size_t i;

  if (e->npaths == 0 || v->ambiguous)
    return 1;
  for (i = 0; i < v->n; i++)
    if (deny_path_listed(e, v->text[i], v->len[i]))
      return 1;
  return 0;
}

/* Paths of an allow entry or a rule cover the request: every reading of a path that
 * is not ambiguous. */
static int paths_cover(const struct rules_pathpat *p, size_t np, const struct path_view *v)
{
  size_t i;

  if (np == 0)
    return 1;
  if (v->ambiguous)
    return 0;
  for (i = 0; i < v->n; i++)
    if (!path_listed(p, np, v->text[i], v->len[i]))
      return 0;
  return 1;
}

static void deny_req(struct rules_request_decision *out, const char *reason,
                     const char *list, size_t i)
{
  out->deny = 1;
  out->reason = reason;
  if (list != NULL)
    set_entry(out->entry, list, i);
}

void rules_decide_request(const struct rules_config *cfg, const struct rules_dest *dest,
                          const char *method, const char *path, size_t path_len,
                          struct rules_request_decision *out)
{
  struct path_view v;
  uint16_t used[RULES_MAX_INJECT];
  struct rules_target t;
  size_t i, j, k;
  int n;

  out->deny = 0;
  out->reason = NULL;
  out->entry[0] = '\0';
  out->nheaders = 0;
  out->callback = 0;
  if (rules_target_init(&t, dest) != 0) {
    deny_req(out, "invalid_name", NULL, 0);
    return;
  }
  n = path ? path_view_init(&v, path, path_len) : -EINVAL;
  if (n < 0) {
    deny_req(out, n == -ENOSPC ? "path_too_long" : "invalid_path", NULL, 0);
    return;
  }

  /* An ambiguous path may reach a denied resource on the server: it matches every
   * deny entry's paths. */
  for (i = 0; i < cfg->ndeny; i++) {
    const struct rules_egress *e = &cfg->deny[i];

    if (egress_hosts_match(e, &t) && deny_covers(e, &v) && method_listed(e, method)) {
      deny_req(out, "egress_deny", "egress.deny", i);
      return;
    }
  }
  if (cfg->default_deny) {
    int allowed = 0;

    for (i = 0; i < cfg->nallow && !allowed; i++) {
      const struct rules_egress *e = &cfg->allow[i];

      allowed = egress_hosts_match(e, &t) && paths_cover(e->paths, e->npaths, &v) &&
                method_listed(e, method);
    }
    if (!allowed) {
      deny_req(out, "egress_not_allowed", NULL, 0);
      return;
    }
  }
  for (i = 0; i < cfg->nrules; i++) {
    const struct rules_rule *r = &cfg->rules[i];

    if (r->nhdrs == 0 || rules_hostpats_match(r->hosts, r->nhosts, &t) < 0)
      continue;
    if (!paths_cover(r->paths, r->npaths, &v))
      continue;
    if (out->entry[0] == '\0')
      snprintf(out->entry, sizeof(out->entry), "%s", r->name);
    for (j = 0; j < r->nhdrs; j++) {
      uint16_t id = r->meta[j].name_id;

      /* The first rule to set a name wins; names were interned case-insensitively. */
      for (k = 0; k < out->nheaders && used[k] != id; k++)
        ;
      if (k < out->nheaders || out->nheaders == RULES_MAX_INJECT)
        continue;
      used[out->nheaders] = id;
      out->headers[out->nheaders++] = r->hdrs[j];
    }
  }
  if (cfg->callback != NULL &&
      rules_hostpats_match(cfg->callback->hosts, cfg->callback->nhosts, &t) >= 0)
    out->callback = 1;
}

const char *rules_request_needs_tls(const struct rules_config *cfg,
                                    const struct rules_request_decision *d)
{
  size_t i;

  for (i = 0; i < d->nheaders; i++)
    if (d->headers[i].secret && !d->headers[i].plain_http)
      return d->headers[i].rule;
  if (d->callback && cfg->callback != NULL && !cfg->callback->pub.plain_http)
    return "callback";
  return NULL;
}

int rules_request_injects(const struct rules_request_decision *d, const char *name,
                          size_t len)
{
  size_t i;

  for (i = 0; i < d->nheaders; i++)
    if (strlen(d->headers[i].name) == len && strncasecmp(d->headers[i].name, name, len) == 0)
      return 1;
  return 0;
}

/* Ranges the proxy must not dial from the host unless the operator chose them. */
struct blocked {
  uint8_t addr[16];
  uint8_t prefix;
};

#define V4(a, b, c, d, len)                                                          \
  { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d }, (uint8_t)(96 + (len)) }

static const struct blocked blocked_v4[] = {
  V4(0, 0, 0, 0, 8),      /* "this network", 0.0.0.0 reaches the host itself */
  V4(127, 0, 0, 0, 8),    /* loopback */
  V4(169, 254, 0, 0, 16), /* link-local, cloud metadata 169.254.169.254 */
  V4(224, 0, 0, 0, 4),    /* multicast */
  V4(240, 0, 0, 0, 4),    /* reserved, broadcast */
  V4(198, 18, 0, 0, 15),  /* the responder's synthetic addresses */
  /* Instance metadata and platform endpoints outside link-local: a host on that cloud
   * answers them to whoever asks (credentials, keys, user data). */
  V4(100, 100, 100, 200, 32), /* Alibaba Cloud ECS metadata */
  V4(168, 63, 129, 16, 32),   /* Azure platform endpoint (WireServer) */
};

static const struct blocked blocked_v6[] = {
  { { 0 }, 128 },                                                   /* :: */
  { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 128 },      /* ::1 */
  { { 0xfe, 0x80 }, 10 },                                           /* link-local */
  { { 0xff }, 8 },                                                  /* multicast */
  { { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54 }, 128 }, /* EC2 IMDS */
  { { 0xfd, 0x20, 0x00, 0xce, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54 }, 128 }, /* GCE metadata */
};

static int is_blocked(const uint8_t addr[16], int v4)
{
  size_t i;

  if (v4) {
    for (i = 0; i < sizeof(blocked_v4) / sizeof(blocked_v4[0]); i++)
      if (rules_prefix_equal(blocked_v4[i].addr, addr, blocked_v4[i].prefix))
        return 1;
    return 0;
  }
  for (i = 0; i < sizeof(blocked_v6) / sizeof(blocked_v6[0]); i++)
    if (rules_prefix_equal(blocked_v6[i].addr, addr, blocked_v6[i].prefix))
      return 1;
  return 0;
}

/*
 * RFC 6052's well-known NAT64 prefix, 64:ff9b::/96. Behind a NAT64 gateway (DNS64
 * gives such addresses to names with only A records) 64:ff9b::a9fe:a9fe reaches
 * 169.254.169.254, so an address in it is checked as the IPv4 address it embeds as
 * well as itself. Sets *v4 and returns it, or NULL if t is not such an address.
 */
static const uint8_t nat64_prefix[12] = { 0x00, 0x64, 0xff, 0x9b };

static const struct rules_target *nat64_embedded(const struct rules_target *t,
                                                 struct rules_target *v4)
{
  if (t->addr_v4 || memcmp(t->addr, nat64_prefix, sizeof(nat64_prefix)) != 0)
    return NULL;
  *v4 = *t;
  memset(v4->addr, 0, 10);
  v4->addr[10] = v4->addr[11] = 0xff;
  v4->addr_v4 = 1;
  return v4;
}

int rules_nat64_ipv4(const struct sockaddr *sa, struct sockaddr_in *out)
{
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;

  if (sa->sa_family != AF_INET6 ||
      memcmp(s6->sin6_addr.s6_addr, nat64_prefix, sizeof(nat64_prefix)) != 0)
    return 0;
  memset(out, 0, sizeof(*out));
  out->sin_family = AF_INET;
  memcpy(&out->sin_addr, s6->sin6_addr.s6_addr + 12, 4);
  return 1;
}

/* 1 if an IP/CIDR host pattern of e covers the address t, or the IPv4 address t4
 * it embeds (NULL if none). */
static int addr_entry_covers(const struct rules_egress *e, const struct rules_target *t,
                             const struct rules_target *t4)
{
  size_t i;

  for (i = 0; i < e->nhosts; i++)
    if (e->hosts[i].kind == RULES_HP_ADDR &&
        (rules_hostpat_match(&e->hosts[i], t) ||
         (t4 != NULL && rules_hostpat_match(&e->hosts[i], t4))))
      return 1;
  return 0;
}

/* 1 for an address that reaches the host itself: loopback or unspecified. */
static int is_local(const uint8_t addr[16], int v4)
{
  static const uint8_t v6_loopback[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
  static const uint8_t v6_any[16] = { 0 };

  if (v4)
    return addr[12] == 127 || (addr[12] == 0 && addr[13] == 0 && addr[14] == 0 &&
                               addr[15] == 0);
  return memcmp(addr, v6_loopback, 16) == 0 || memcmp(addr, v6_any, 16) == 0;
}

/*
 * 1 if t (an address and port the proxy would dial for the sandbox) is the config's
 * credential callback. The callback hands out the credentials of whichever sandbox
 * its request names, so the sandbox must never reach it, not even where dns.remap or
 * an egress.allow entry opens its address (a remap without a port opens every port).
 * A callback on loopback ("127.0.0.1", "::1", "localhost") is refused on every
 * loopback address at its port, and on every address of the host's own (host_local:
 * RULES_RESOLVED_HOST_LOCAL), since a service bound to 0.0.0.0 or [::] answers on all
 * of them. A callback named by another host name is not resolved here; the proxy
 * refuses to dial that name (conn.c).
 */
/*
 * The address a callback's URL gives (v4-mapped for IPv4) in addr, and *local when it
 * is loopback, localhost or unspecified (reached on any such address at its port).
 * 0 when its host is another name, which is not resolved here.
 */
static int callback_address(const struct rules_callback *cb, uint8_t addr[16], int *local)
{
  size_t len;

  if (cb == NULL || cb->kind == RULES_CB_UNIX || cb->host == NULL)
    return 0;
  memset(addr, 0, 16);
  len = strlen(cb->host);
  if (inet_pton(AF_INET, cb->host, addr + 12) == 1) {
    addr[10] = addr[11] = 0xff;
    *local = is_local(addr, 1);
  } else if (inet_pton(AF_INET6, cb->host, addr) == 1) {
    *local = is_local(addr, 0);
  } else {
    if (!(strcasecmp(cb->host, "localhost") == 0 ||
          (len > 10 && strcasecmp(cb->host + len - 10, ".localhost") == 0)))
      return 0;
    *local = 1;
  }
  return 1;
}

int rules_callback_has_address(const struct rules_callback *cb)
{
  uint8_t addr[16];
  int local;

  return callback_address(cb, addr, &local);
}

static int is_callback_endpoint(const struct rules_callback *cb, const struct rules_target *t,
                                int host_local)
{
  uint8_t addr[16];
  int local = 0;

  if (cb == NULL || cb->port != t->port || !callback_address(cb, addr, &local))
    return 0;
  if (local)
    return is_local(t->addr, t->addr_v4) || host_local;
  return memcmp(addr, t->addr, sizeof(addr)) == 0;
}

/* 1 if t (or the IPv4 address t4 it embeds, if not NULL) is callback cb's endpoint. */
static int reaches_callback(const struct rules_callback *cb, const struct rules_target *t,
                            const struct rules_target *t4, unsigned flags)
{
  int host_local = (flags & RULES_RESOLVED_HOST_LOCAL) != 0;

  return is_callback_endpoint(cb, t, host_local) ||
         (t4 != NULL && is_callback_endpoint(cb, t4, host_local));
}

int rules_callback_reached(const struct rules_callback *cb, const struct sockaddr *addr,
                           uint16_t port, unsigned flags)
{
  struct rules_target t, embedded;
  int v4 = 0;

  memset(&t, 0, sizeof(t));
  t.port = port;
  if (addr == NULL || rules_addr_from_sockaddr(addr, t.addr, &v4) != 0)
    return 1; /* not an address it could be told from */
  t.has_addr = 1;
  t.addr_v4 = (uint8_t)v4;
  return reaches_callback(cb, &t, nat64_embedded(&t, &embedded), flags);
}

int rules_check_resolved(const struct rules_config *cfg, const struct sockaddr *addr,
                         uint16_t port, unsigned flags, struct rules_decision *out)
{
  struct rules_target t, embedded;
  const struct rules_target *t4;
  int v4 = 0;
  size_t i;

  memset(&t, 0, sizeof(t));
  t.port = port;
  if (addr == NULL || rules_addr_from_sockaddr(addr, t.addr, &v4) != 0) {
    out->action = RULES_DENY;
    out->reason = "blocked_address";
    out->entry[0] = '\0';
    return 0;
  }
  t.has_addr = 1;
  t.addr_v4 = (uint8_t)v4;
  t4 = nat64_embedded(&t, &embedded);
  if (reaches_callback(rules_config_callback(cfg), &t, t4, flags)) {
    out->action = RULES_DENY;
    out->reason = "callback_endpoint";
    out->entry[0] = '\0';
    return 0;
  }
  for (i = 0; i < cfg->ndeny; i++) {
    if ((!restricted(&cfg->deny[i]) || !(flags & RULES_RESOLVED_INSPECTED)) &&
        addr_entry_covers(&cfg->deny[i], &t, t4)) {
      out->action = RULES_DENY;
      out->reason = "egress_deny";
      set_entry(out->entry, "egress.deny", i);
      return 0;
    }
  }
  if ((!is_blocked(t.addr, v4) && (t4 == NULL || !is_blocked(t4->addr, 1)) &&
       !(flags & RULES_RESOLVED_HOST_LOCAL)) ||
      (flags & RULES_RESOLVED_REMAPPED))
    return 1;
  for (i = 0; i < cfg->nallow; i++)
    if (addr_entry_covers(&cfg->allow[i], &t, t4))
      return 1;
  out->action = RULES_DENY;
  out->reason = "blocked_address";
  out->entry[0] = '\0';
  return 0;
}

int rules_has_address_requests(const struct rules_config *cfg)
{
  return cfg->address_requests;
}

int rules_check_request_address(const struct rules_config *cfg, const struct sockaddr *addr,
                                const char *method, const char *path, size_t path_len,
                                struct rules_decision *out)
{
  struct path_view v;
  struct rules_target t, embedded;
  const struct rules_target *t4;
  int v4 = 0, n;
  size_t i;

  memset(&t, 0, sizeof(t));
  out->action = RULES_DENY;
  out->entry[0] = '\0';
  if (addr == NULL || rules_addr_from_sockaddr(addr, t.addr, &v4) != 0) {
    out->reason = "blocked_address";
    return 0;
  }
  t.has_addr = 1;
  t.addr_v4 = (uint8_t)v4;
  t.port = ntohs(addr->sa_family == AF_INET
                     ? ((const struct sockaddr_in *)(const void *)addr)->sin_port
                     : ((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
  t4 = nat64_embedded(&t, &embedded);
  n = path ? path_view_init(&v, path, path_len) : -EINVAL;
  if (n < 0) {
    out->reason = n == -ENOSPC ? "path_too_long" : "invalid_path";
    return 0;
  }
  for (i = 0; i < cfg->ndeny; i++) {
    const struct rules_egress *e = &cfg->deny[i];

    if (restricted(e) && addr_entry_covers(e, &t, t4) && deny_covers(e, &v) &&
        method_listed(e, method)) {
      out->reason = "egress_deny";
      set_entry(out->entry, "egress.deny", i);
      return 0;
    }
  }
  return 1;
}

int rules_remap(const struct rules_config *cfg, const char *name, uint16_t port,
                char *host, size_t size, uint16_t *out_port)
{
  size_t lo = 0, hi = cfg->nremap, len;

  if (name == NULL)
    return 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, cfg->remap[mid].name);

    if (c == 0) {
      len = strlen(cfg->remap[mid].host);
      if (len + 1 > size)
        return -ENOSPC;
      memcpy(host, cfg->remap[mid].host, len + 1);
      *out_port = cfg->remap[mid].port ? cfg->remap[mid].port : port;
      return 1;
    }
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return 0;
}
