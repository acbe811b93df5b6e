/*
 * proxy_config -> struct rules_config: the top level and the rules list, the
 * reference count, and the JSON text entry point. The other sections are parsed in
 * callback.c, egress.c and dns.c; every error is collected with its JSON path.
 */
#include <errno.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

/* A rule name appears in logs and in rules_decision.entry (64 bytes with the NUL). */
#define RULE_NAME_MAX 63

static const char *const top_fields[] = { "rules", "no_proxy", "callback", "egress", "dns",
                                           NULL };
static const char *const rule_fields[] = { "name",    "match_hosts",      "match_paths",
                                           "headers", "allow_plain_http", NULL };

static const char *parse_rule_name(struct rules_pctx *c, const cJSON *obj, size_t index)
{
  const cJSON *v = rules_field(obj, "name");
  size_t old = rules_path_field(c, "name"), len, i;
  const char *name = NULL;
  char q[160];

  if (v == NULL) {
    rules_perr(c, "is required: a short name for logs, e.g. \"github-api\"");
    goto out;
  }
  if (rules_expect_string(c, v) != 0)
    goto out;
  len = strlen(v->valuestring);
  if (len == 0) {
    rules_perr(c, "must not be empty");
    goto out;
  }
  if (len > RULE_NAME_MAX) {
    rules_perr(c, "is longer than %d bytes", RULE_NAME_MAX);
    goto out;
  }
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)v->valuestring[i];

    if (ch < 0x20 || ch == 0x7f) {
      rules_perr(c, "has a control character at byte %zu", i);
      goto out;
    }
  }
  for (i = 0; i < index; i++) {
    if (c->cfg->rules[i].name != NULL && strcmp(c->cfg->rules[i].name, v->valuestring) == 0) {
      rules_perr(c, "%s is also the name of rules[%zu]; rule names must be unique",
                 rules_quote(v->valuestring, q, sizeof(q)), i);
      goto out;
    }
  }
  name = rules_arena_strndup(c->arena, v->valuestring, len);
  if (name == NULL)
    c->oom = 1;
out:
  rules_path_pop(c, old);
  return name;
}

static void parse_rule(struct rules_pctx *c, const cJSON *obj, size_t index,
                       struct rules_rule *r)
{
  const cJSON *v;
  size_t old, i;

  if (rules_check_object(c, obj, rule_fields) != 0)
    return;
  r->name = parse_rule_name(c, obj, index);
  old = rules_path_field(c, "match_hosts");
  rules_parse_hostpats(c, rules_field(obj, "match_hosts"), 0, 1, &r->hosts, &r->nhosts);
  rules_path_pop(c, old);
  old = rules_path_field(c, "match_paths");
  rules_parse_pathpats(c, rules_field(obj, "match_paths"), &r->paths, &r->npaths);
  rules_path_pop(c, old);
  old = rules_path_field(c, "headers");
  rules_parse_headers(c, rules_field(obj, "headers"), r->name ? r->name : "", 1, &r->hdrs,
                      &r->meta, &r->nhdrs);
  rules_path_pop(c, old);
  v = rules_field(obj, "allow_plain_http");
  if (v != NULL) {
    old = rules_path_field(c, "allow_plain_http");
    rules_expect_bool(c, v, &r->plain_http);
    rules_path_pop(c, old);
  }
  for (i = 0; r->hdrs != NULL && i < r->nhdrs; i++)
    r->hdrs[i].plain_http = r->plain_http;
}

static void parse_rules(struct rules_pctx *c, const cJSON *arr)
{
  struct rules_config *cfg = c->cfg;
  const cJSON *e;
  size_t i = 0, count;

  if (rules_expect_array(c, arr, RULES_MAX_RULES) != 0)
    return;
  count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0)
    return;
  cfg->rules = rules_arena_array(c->arena, count, sizeof(*cfg->rules));
  if (cfg->rules == NULL) {
    c->oom = 1;
    return;
  }
  /* Every slot is counted, valid or not, so indexes match the JSON paths; a config
   * with any error is discarded anyway. */
  cfg->nrules = (uint16_t)count;
  for (e = arr->child; e != NULL; e = e->next, i++) {
    size_t old = rules_path_index(c, i);

    parse_rule(c, e, i, &cfg->rules[i]);
    rules_path_pop(c, old);
  }
}

static void parse_top(struct rules_pctx *c, const cJSON *obj)
{
  struct rules_config *cfg = c->cfg;
  const cJSON *v;
  size_t old;

  if (rules_check_object(c, obj, top_fields) != 0)
    return;
  v = rules_field(obj, "rules");
  if (v != NULL) {
    cfg->have |= RULES_HAVE_RULES;
    old = rules_path_field(c, "rules");
    parse_rules(c, v);
    rules_path_pop(c, old);
  }
  v = rules_field(obj, "no_proxy");
  if (v != NULL) {
    cfg->have |= RULES_HAVE_NO_PROXY;
    old = rules_path_field(c, "no_proxy");
    rules_parse_hostpats(c, v, 1, 0, &cfg->no_proxy, &cfg->nno_proxy);
    rules_path_pop(c, old);
  }
  v = rules_field(obj, "callback");
  if (v != NULL) {
    cfg->have |= RULES_HAVE_CALLBACK;
    old = rules_path_field(c, "callback");
    rules_parse_callback(c, v);
    rules_path_pop(c, old);
  }
  v = rules_field(obj, "egress");
  if (v != NULL) {
    cfg->have |= RULES_HAVE_EGRESS;
    old = rules_path_field(c, "egress");
    rules_parse_egress(c, v);
    rules_path_pop(c, old);
  }
  v = rules_field(obj, "dns");
  if (v != NULL) {
    cfg->have |= RULES_HAVE_DNS;
    old = rules_path_field(c, "dns");
    rules_parse_dns(c, v);
    rules_path_pop(c, old);
  }
}

int rules_config_from_cjson(const cJSON *obj, const char *path_prefix,
                            const struct rules_secrets *secrets, struct rules_config **out,
                            struct rules_diag *diag)
{
  struct rules_arena arena = { 0 };
  struct rules_pctx c;
  struct rules_config *cfg;
  size_t plen = path_prefix ? strlen(path_prefix) : 0;
  int ret;

  *out = NULL;
  memset(&c, 0, sizeof(c));
  cfg = rules_arena_alloc(&arena, sizeof(*cfg));
  if (cfg == NULL)
    return -ENOMEM;
  c.diag = diag;
  c.secrets = secrets;
  c.arena = &arena;
  c.cfg = cfg;
  if (plen > sizeof(c.path) / 2)
    plen = sizeof(c.path) / 2;
  memcpy(c.path, path_prefix ? path_prefix : "", plen);
  c.path[plen] = '\0';
  c.plen = c.root = plen;

  if (obj == NULL || !cJSON_IsObject(obj))
    rules_perr(&c, "must be a JSON object holding the proxy_config");
  else
    parse_top(&c, obj);
  rules_template_memo_free(&c);

  if (c.errors > RULES_MAX_ERRORS && !c.oom) {
    c.plen = 0;
    c.path[0] = '\0';
    if (rules_diag_add(diag, "", "%zu more errors not shown; fix the ones above first",
                       c.errors - RULES_MAX_ERRORS) != 0)
      c.oom = 1;
  }
  if (c.oom) {
    ret = -ENOMEM;
    goto fail;
  }
  if (c.errors != 0) {
    ret = -EINVAL;
    goto fail;
  }
  cfg->arena = arena;
  ret = rules_config_compact(cfg, out);
  rules_arena_free(&arena);
  if (ret != 0)
    return ret;
  (*out)->refs = 1;
  return 0;
fail:
  rules_arena_free(&arena);
  return ret;
}

int rules_config_parse(const char *json, size_t len, const char *path_prefix,
                       const struct rules_secrets *secrets, struct rules_config **out,
                       struct rules_diag *diag)
{
  cJSON *root;
  int ret;

  *out = NULL;
  ret = rules_json_parse(json, len, &root, diag);
  if (ret != 0)
    return ret;
  ret = rules_config_from_cjson(root, path_prefix, secrets, out, diag);
  rules_json_free(root);
  return ret;
}

struct rules_config *rules_config_ref(struct rules_config *cfg)
{
  cfg->refs++;
  return cfg;
}

void rules_config_unref(struct rules_config *cfg)
{
  struct rules_arena arena;

  if (cfg == NULL || --cfg->refs > 0)
    return;
  /* The arena holds cfg itself: copy it out before wiping. */
  arena = cfg->arena;
  rules_arena_free(&arena);
}

size_t rules_config_bytes(const struct rules_config *cfg)
{
  return cfg->arena.bytes;
}

const struct rules_callback *rules_config_callback(const struct rules_config *cfg)
{
  return cfg->callback ? &cfg->callback->pub : NULL;
}
