/*
 * The egress section: default allow|deny and the allow/deny lists. An entry is a
 * host pattern string, or an object {hosts, paths, methods} for request-level policy
 * (GitHub reads but not pushes). Every entry is stored in the object form so the
 * decisions treat both alike.
 */
#include <errno.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

#define METHOD_MAX 32

static const char *const egress_fields[] = { "default", "allow", "deny", NULL };
static const char *const entry_fields[] = { "hosts", "paths", "methods", NULL };

static void parse_methods(struct rules_pctx *c, const cJSON *arr, struct rules_egress *e)
{
  const cJSON *m;
  size_t i = 0, count, len, k;
  char q[160];

  if (arr == NULL || rules_expect_array(c, arr, RULES_MAX_PATTERNS) != 0)
    return;
  count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0) {
    rules_perr(c, "must list at least one method (leave it out to match every method)");
    return;
  }
  e->methods = rules_arena_array(c->arena, count, sizeof(*e->methods));
  if (e->methods == NULL) {
    c->oom = 1;
    return;
  }
  for (m = arr->child; m != NULL; m = m->next, i++) {
    size_t old = rules_path_index(c, i);
    int upper = 1;

    if (rules_expect_string(c, m) != 0)
      goto next;
    len = strlen(m->valuestring);
    for (k = 0; k < len; k++)
      if (m->valuestring[k] >= 'a' && m->valuestring[k] <= 'z')
        upper = 0;
    if (len > METHOD_MAX || !rules_is_token(m->valuestring, len)) {
      rules_perr(c, "%s is not an HTTP method (a token such as GET or POST)",
                 rules_quote(m->valuestring, q, sizeof(q)));
    } else if (!upper) {
      rules_perr(c, "%s must be written in uppercase (methods are case-sensitive "
                    "tokens: GET, POST, ...)",
                 rules_quote(m->valuestring, q, sizeof(q)));
    } else {
      e->methods[e->nmethods] = rules_arena_strndup(c->arena, m->valuestring, len);
      if (e->methods[e->nmethods] == NULL)
        c->oom = 1;
      else
        e->nmethods++;
    }
  next:
    rules_path_pop(c, old);
  }
}

static void parse_entry(struct rules_pctx *c, const cJSON *v, struct rules_egress *e)
{
  const cJSON *f;
  size_t old;

  if (cJSON_IsString(v)) {
    char err[256], q[160];
    int ret;

    e->hosts = rules_arena_alloc(c->arena, sizeof(*e->hosts));
    if (e->hosts == NULL) {
      c->oom = 1;
      return;
    }
    ret = rules_hostpat_parse(c->arena, v->valuestring, 0, e->hosts, err, sizeof(err));
    if (ret == -ENOMEM)
      c->oom = 1;
    else if (ret != 0)
      rules_perr(c, "%s %s", rules_quote(v->valuestring, q, sizeof(q)), err);
    else
      rules_count_hostpat(c, &e->hosts[e->nhosts++]);
    return;
  }
  if (!cJSON_IsObject(v)) {
    rules_perr(c, "must be a host pattern string or an object {\"hosts\": [...], "
                  "\"paths\": [...], \"methods\": [...]}");
    return;
  }
  e->object = 1;
  if (rules_check_object(c, v, entry_fields) != 0)
    return;
  old = rules_path_field(c, "hosts");
  rules_parse_hostpats(c, rules_field(v, "hosts"), 0, 1, &e->hosts, &e->nhosts);
  rules_path_pop(c, old);
  f = rules_field(v, "paths");
  old = rules_path_field(c, "paths");
  if (f != NULL && cJSON_IsArray(f) && cJSON_GetArraySize(f) == 0)
    rules_perr(c, "must list at least one path (leave it out to match every path)");
  else
    rules_parse_pathpats(c, f, &e->paths, &e->npaths);
  rules_path_pop(c, old);
  old = rules_path_field(c, "methods");
  parse_methods(c, rules_field(v, "methods"), e);
  rules_path_pop(c, old);
}

static void parse_list(struct rules_pctx *c, const cJSON *arr, struct rules_egress **out,
                       uint16_t *n)
{
  const cJSON *v;
  size_t i = 0, count;

  if (arr == NULL || rules_expect_array(c, arr, RULES_MAX_PATTERNS) != 0)
    return;
  count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0)
    return;
  *out = rules_arena_array(c->arena, count, sizeof(**out));
  if (*out == NULL) {
    c->oom = 1;
    return;
  }
  /* Slots keep their JSON index: decisions name "egress.deny[i]". */
  *n = (uint16_t)count;
  for (v = arr->child; v != NULL; v = v->next, i++) {
    size_t old = rules_path_index(c, i);

    parse_entry(c, v, &(*out)[i]);
    rules_path_pop(c, old);
  }
}

void rules_parse_egress(struct rules_pctx *c, const cJSON *obj)
{
  struct rules_config *cfg = c->cfg;
  const cJSON *v;
  size_t old, i, j;
  char q[160];

  if (rules_check_object(c, obj, egress_fields) != 0)
    return;
  v = rules_field(obj, "default");
  if (v != NULL) {
    old = rules_path_field(c, "default");
    if (rules_expect_string(c, v) != 0)
      ;
    else if (strcmp(v->valuestring, "deny") == 0)
      cfg->default_deny = 1;
    else if (strcmp(v->valuestring, "allow") != 0)
      rules_perr(c, "%s must be \"allow\" or \"deny\"",
                 rules_quote(v->valuestring, q, sizeof(q)));
    rules_path_pop(c, old);
  }
  old = rules_path_field(c, "allow");
  parse_list(c, rules_field(obj, "allow"), &cfg->allow, &cfg->nallow);
  rules_path_pop(c, old);
  old = rules_path_field(c, "deny");
  parse_list(c, rules_field(obj, "deny"), &cfg->deny, &cfg->ndeny);
  rules_path_pop(c, old);
  /* Known once here rather than asked for on every request. */
  for (i = 0; i < cfg->ndeny; i++) {
    const struct rules_egress *e = &cfg->deny[i];

    if (e->npaths == 0 && e->nmethods == 0)
      continue;
    for (j = 0; j < e->nhosts; j++)
      if (e->hosts[j].kind == RULES_HP_ADDR)
        cfg->address_requests = 1;
  }
}
