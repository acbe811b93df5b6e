/*
 * Warnings for `config check`: parts of a valid config that can never do what they
 * say, because another part decides first (a rule for a host egress refuses or
 * no_proxy relays untouched, an allow entry a deny entry covers, an allow entry with
 * methods under default allow) or that open more than they seem to (a remap to the
 * host's loopback without a port). Only literal host names are judged: a glob's
 * overlap with another is not worked out, so nothing is warned about that is not so.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_internal.h"

/* At most this many warnings are reported, as for errors. */
#define WARN_MAX 100

/* The work the warnings may take, in host patterns compared (a connection decided
 * compares up to every one): a large config's names are not all judged, rather than
 * `config check` or the jail's start taking minutes. A name not judged is not
 * warned about. */
#define WARN_BUDGET (32u * 1000 * 1000)

struct ports {
  uint8_t named[65536 / 8]; /* the ports an egress or no_proxy entry names */
  uint16_t other;           /* a port no entry names: all such ports are decided alike */
  size_t npats;             /* host patterns in egress and no_proxy */
  size_t budget;            /* left of WARN_BUDGET */
};

static void add_pats(struct ports *p, const struct rules_hostpat *v, size_t n)
{
  size_t i;

  p->npats += n;
  for (i = 0; i < n; i++)
    p->named[v[i].port / 8] |= (uint8_t)(1u << (v[i].port % 8));
}

/* The ports at which a connection decision can differ. */
static void collect_ports(const struct rules_config *cfg, struct ports *p)
{
  size_t i;
  uint16_t port;

  memset(p, 0, sizeof(*p));
  add_pats(p, cfg->no_proxy, cfg->nno_proxy);
  for (i = 0; i < cfg->nallow; i++)
    add_pats(p, cfg->allow[i].hosts, cfg->allow[i].nhosts);
  for (i = 0; i < cfg->ndeny; i++)
    add_pats(p, cfg->deny[i].hosts, cfg->deny[i].nhosts);
  for (port = 443; port != 0 && (p->named[port / 8] & (1u << (port % 8)));
       port = port == 443 ? 1 : (uint16_t)(port + 1))
    ;
  p->other = port; /* 0 when every port is named: decided as unnamed as well */
  p->budget = WARN_BUDGET;
}

/* Takes the cost of n patterns compared from p's budget: 0 when it is spent. */
static int spend(struct ports *p, size_t n)
{
  if (p->budget < n) {
    p->budget = 0;
    return 0;
  }
  p->budget -= n;
  return 1;
}

/* Whether cfg denies (or, unless deny_only, relays) name at port; -1 when the
 * budget is spent. */
static int decided_away(const struct rules_config *cfg, struct ports *p, const char *name,
                        uint16_t port, int deny_only, struct rules_decision *out)
{
  struct rules_dest dest;

  if (!spend(p, p->npats + 1))
    return -1;
  memset(&dest, 0, sizeof(dest));
  dest.name = name;
  dest.port = port;
  rules_decide_conn(cfg, &dest, out);
  return out->action == RULES_DENY || (!deny_only && out->action == RULES_BYPASS);
}

/* 0 when a pattern of v with a port matches name at that port and the connection
 * there is not decided away, 1 when none is, -1 when the budget is spent. */
static int away_at_ports(const struct rules_config *cfg, struct ports *p, const char *name,
                         const struct rules_hostpat *v, size_t n, int deny_only)
{
  struct rules_decision d;
  struct rules_target t;
  struct rules_dest dest;
  size_t i;
  int r;

  if (!spend(p, n))
    return -1;
  memset(&dest, 0, sizeof(dest));
  dest.name = name;
  for (i = 0; i < n; i++) {
    if (v[i].port == 0)
      continue;
    dest.port = v[i].port;
    if (rules_target_init(&t, &dest) != 0 || !rules_hostpat_match(&v[i], &t))
      continue;
    r = decided_away(cfg, p, name, v[i].port, deny_only, &d);
    if (r <= 0)
      return r;
  }
  return 1;
}

/*
 * 1 when no connection to name reaches the rules: egress denies it or no_proxy
 * relays it on every port (only port, when nonzero). *out is the decision at port,
 * else at a port no entry names. A decision differs between ports only where an
 * entry that names a port matches name there, so those ports are the ones tried.
 * 0 as well when the budget is spent.
 */
static int never_reaches_rules(const struct rules_config *cfg, struct ports *p,
                               const char *name, uint16_t port, int deny_only,
                               struct rules_decision *out)
{
  size_t i;
  int r;

  r = decided_away(cfg, p, name, port ? port : p->other, deny_only, out);
  if (r <= 0 || port != 0)
    return r > 0;
  r = away_at_ports(cfg, p, name, cfg->no_proxy, cfg->nno_proxy, deny_only);
  for (i = 0; r > 0 && i < cfg->nallow; i++)
    r = away_at_ports(cfg, p, name, cfg->allow[i].hosts, cfg->allow[i].nhosts, deny_only);
  for (i = 0; r > 0 && i < cfg->ndeny; i++)
    r = away_at_ports(cfg, p, name, cfg->deny[i].hosts, cfg->deny[i].nhosts, deny_only);
  return r > 0;
}

static int warn(struct rules_diag *out, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int warn(struct rules_diag *out, const char *path, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  if (out->count >= WARN_MAX)
    return 0;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return rules_diag_add(out, path, "%s", msg);
}

/* Warns at path when the literal name pattern hp is never past egress and no_proxy. */
static int check_name(const struct rules_config *cfg, struct ports *p,
                      const struct rules_hostpat *hp, const char *path, int deny_only,
                      const char *what, struct rules_diag *out)
{
  struct rules_decision d;

  /* Past the last warning reported, the ports are not scanned for more. */
  if (out->count >= WARN_MAX || hp->kind != RULES_HP_EXACT ||
      !never_reaches_rules(cfg, p, hp->glob, hp->port, deny_only, &d))
    return 0;
  if (d.action == RULES_BYPASS)
    return warn(out, path, "%s relays %s untouched, before any rule or the callback: %s",
                d.entry, hp->glob, what);
  if (d.entry[0] == '\0')
    return warn(out, path,
                "egress never lets the sandbox reach %s (egress.default is deny and no "
                "egress.allow entry covers it): %s",
                hp->glob, what);
  return warn(out, path, "%s denies %s, and deny wins: %s", d.entry, hp->glob, what);
}

/* A remap target only a remap may dial (loopback and the like) given without a port. */
static int check_remap(const struct rules_config *cfg, const struct ports *p,
                       const struct rules_remap_entry *e, struct rules_diag *out)
{
  struct rules_decision d;
  struct rules_dest dest;
  struct sockaddr_in6 sa6;
  struct sockaddr_in sa4;
  const struct sockaddr *sa = NULL;
  size_t len = strlen(e->host);
  char path[RULES_MAX_NAME_LEN + 16];

  if (e->port != 0)
    return 0;
  memset(&sa4, 0, sizeof(sa4));
  memset(&sa6, 0, sizeof(sa6));
  sa4.sin_family = AF_INET;
  sa6.sin6_family = AF_INET6;
  if (inet_pton(AF_INET, e->host, &sa4.sin_addr) == 1)
    sa = (const struct sockaddr *)&sa4;
  else if (inet_pton(AF_INET6, e->host, &sa6.sin6_addr) == 1)
    sa = (const struct sockaddr *)&sa6;
  else if (strcmp(e->host, "localhost") == 0 ||
           (len > 10 && strcmp(e->host + len - 10, ".localhost") == 0)) {
    sa4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa = (const struct sockaddr *)&sa4;
  } else {
    return 0;
  }
  /* Only an address the proxy would refuse but for the remap. */
  if (rules_check_resolved(cfg, sa, p->other, 0, &d))
    return 0;
  memset(&dest, 0, sizeof(dest));
  dest.name = e->name;
  dest.port = p->other;
  rules_decide_conn(cfg, &dest, &d);
  if (d.action == RULES_DENY)
    return 0; /* egress holds the name to the ports it names */
  snprintf(path, sizeof(path), "dns.remap[\"%s\"]", e->name);
  return warn(out, path,
              "the target has no port: the sandbox reaches every port of %s (services of "
              "the host itself included) through %s; give the target a port, e.g. "
              "\"%s:443\", or allow only the ports of %s in egress",
              e->target, e->name, e->target, e->name);
}

int rules_config_warnings(const struct rules_config *cfg, struct rules_diag *out)
{
  char path[96];
  struct ports p;
  size_t i, j;
  int ret = 0;

  collect_ports(cfg, &p);
  for (i = 0; i < cfg->nrules && ret == 0; i++) {
    const struct rules_rule *r = &cfg->rules[i];

    for (j = 0; r->nhdrs != 0 && j < r->nhosts && ret == 0; j++) {
      snprintf(path, sizeof(path), "rules[%zu].match_hosts[%zu]", i, j);
      ret = check_name(cfg, &p, &r->hosts[j], path, 0, "this rule never applies to it",
                       out);
    }
  }
  for (j = 0; cfg->callback != NULL && j < cfg->callback->nhosts && ret == 0; j++) {
    snprintf(path, sizeof(path), "callback.match_hosts[%zu]", j);
    ret = check_name(cfg, &p, &cfg->callback->hosts[j], path, 0,
                     "the callback is never asked for it", out);
  }
  for (i = 0; i < cfg->nallow && ret == 0; i++) {
    const struct rules_egress *e = &cfg->allow[i];

    if (!cfg->default_deny && (e->npaths != 0 || e->nmethods != 0)) {
      snprintf(path, sizeof(path), "egress.allow[%zu]", i);
      ret = warn(out, path,
                 "egress.default is allow, so this entry refuses nothing: requests to its "
                 "hosts with other %s are allowed too; set egress.default to deny (and "
                 "allow the other hosts), or list what to refuse in egress.deny",
                 e->nmethods != 0 && e->npaths != 0 ? "methods or paths"
                 : e->nmethods != 0                 ? "methods"
                                                    : "paths");
      continue;
    }
    for (j = 0; j < e->nhosts && ret == 0; j++) {
      if (e->object)
        snprintf(path, sizeof(path), "egress.allow[%zu].hosts[%zu]", i, j);
      else
        snprintf(path, sizeof(path), "egress.allow[%zu]", i);
      ret = check_name(cfg, &p, &e->hosts[j], path, 1, "this entry never applies", out);
    }
  }
  for (i = 0; i < cfg->nremap && ret == 0; i++)
    ret = check_remap(cfg, &p, &cfg->remap[i], out);
  return ret;
}
