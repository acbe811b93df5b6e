/*
 * Header objects of rules and of the callback: {name, type, value}. Names must be
 * RFC 9110 tokens that may be injected (not hop-by-hop or framing); values must be
 * one line, after secret resolution too. Values never appear in error messages.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

/* Longest header name accepted. */
#define HEADER_NAME_MAX 256

static const char *const header_fields[] = { "name", "type", "value", NULL };

/* Index of the lowercase name among the distinct rule header names; -1 when full. */
static int intern(struct rules_pctx *c, const char *name)
{
  struct rules_config *cfg = c->cfg;
  size_t i, len = strlen(name);
  char *lower;

  for (i = 0; i < cfg->nnames; i++)
    if (strcasecmp(c->names[i], name) == 0)
      return (int)i;
  if (cfg->nnames == RULES_MAX_INJECT)
    return -1;
  lower = rules_arena_strndup(c->arena, name, len);
  if (lower == NULL) {
    c->oom = 1;
    return -1;
  }
  for (i = 0; i < len; i++)
    if (lower[i] >= 'A' && lower[i] <= 'Z')
      lower[i] = (char)(lower[i] - 'A' + 'a');
  c->names[cfg->nnames] = lower;
  return cfg->nnames++;
}

/* Validates the name field; returns it or NULL (reported). */
static const char *parse_name(struct rules_pctx *c, const cJSON *obj,
                              const struct rules_header *done, size_t ndone)
{
  const cJSON *v = rules_field(obj, "name");
  size_t old = rules_path_field(c, "name"), len, i;
  const char *name = NULL;
  char q[160];

  if (v == NULL) {
    rules_perr(c, "is required: the header name, e.g. \"Authorization\"");
    goto out;
  }
  if (rules_expect_string(c, v) != 0)
    goto out;
  len = strlen(v->valuestring);
  if (len > HEADER_NAME_MAX) {
    rules_perr(c, "is longer than %d bytes", HEADER_NAME_MAX);
    goto out;
  }
  if (!rules_is_token(v->valuestring, len)) {
    rules_perr(c,
               "%s is not an HTTP header token (letters, digits and !#$%%&'*+-.^_`|~; "
               "no spaces or colons)",
               rules_quote(v->valuestring, q, sizeof(q)));
    goto out;
  }
  if (rules_is_reserved_header(v->valuestring, len)) {
    rules_perr(c,
               "%s is a hop-by-hop or framing header the proxy manages; it cannot be "
               "injected",
               rules_quote(v->valuestring, q, sizeof(q)));
    goto out;
  }
  for (i = 0; i < ndone; i++) {
    if (done[i].name != NULL && strcasecmp(done[i].name, v->valuestring) == 0) {
      rules_perr(c, "%s is set twice in this list (header names are case-insensitive)",
                 rules_quote(v->valuestring, q, sizeof(q)));
      goto out;
    }
  }
  name = v->valuestring;
out:
  rules_path_pop(c, old);
  return name;
}

/* Validates the type field; returns the type or -1 (reported). */
static int parse_type(struct rules_pctx *c, const cJSON *obj)
{
  const cJSON *v = rules_field(obj, "type");
  size_t old = rules_path_field(c, "type");
  int type = -1;
  char q[160];

  if (v == NULL)
    rules_perr(c, "is required: \"workspace_secret\", \"plaintext\" or \"opaque\"");
  else if (rules_expect_string(c, v) != 0)
    ;
  else if (strcmp(v->valuestring, "workspace_secret") == 0)
    type = RULES_HDR_SECRET;
  else if (strcmp(v->valuestring, "plaintext") == 0)
    type = RULES_HDR_PLAIN;
  else if (strcmp(v->valuestring, "opaque") == 0)
    type = RULES_HDR_OPAQUE;
  else
    rules_perr(c, "%s is not a header type; use \"workspace_secret\", \"plaintext\" or "
                  "\"opaque\"",
               rules_quote(v->valuestring, q, sizeof(q)));
  rules_path_pop(c, old);
  return type;
}

/*
 * Validates and resolves the value field into h and m. type < 0 (unknown) still
 * checks the JSON type. Returns 0 or -EINVAL (reported) or -ENOMEM.
 */
static int parse_value(struct rules_pctx *c, const cJSON *obj, int type,
                       struct rules_header *h, struct rules_hdrmeta *m)
{
  const cJSON *v = rules_field(obj, "value");
  size_t old = rules_path_field(c, "value"), len;
  char buf[RULES_MAX_VALUE_LEN + 1];
  int ret = -EINVAL, n;

  if (v == NULL && type == RULES_HDR_OPAQUE) {
    /* What GET and `config show` print has none: a config read back and pushed again
     * lands here. */
    rules_perr(c, "is required: opaque values are never shown back; give this one again "
                  "(or use a workspace_secret template, which is)");
    goto out;
  }
  if (v == NULL) {
    rules_perr(c, "is required");
    goto out;
  }
  if (rules_expect_string(c, v) != 0 || type < 0)
    goto out;
  len = strlen(v->valuestring);
  if (type == RULES_HDR_SECRET) {
    n = rules_template_resolve(c, v->valuestring, buf, sizeof(buf));
    if (n < 0) {
      ret = n;
      goto out;
    }
    m->pushed = rules_arena_strndup(c->arena, v->valuestring, len);
    h->value = rules_arena_strndup(c->arena, buf, (size_t)n);
    h->value_len = (size_t)n;
  } else {
    /* Plaintext and opaque values are not templates: braces are literal. The value
     * itself is never quoted back: an opaque one is a secret. */
    if (len > RULES_MAX_VALUE_LEN) {
      rules_perr(c, "is %zu bytes; the limit is %d", len, RULES_MAX_VALUE_LEN);
      goto out;
    }
    if (!rules_is_valid_value(v->valuestring, len)) {
      rules_perr(c, "contains a control character (CR, LF, NUL or another byte below "
                    "0x20); a header value is one line");
      goto out;
    }
    h->value = rules_arena_strndup(c->arena, v->valuestring, len);
    h->value_len = len;
    m->pushed = h->value;
  }
  if (h->value == NULL || m->pushed == NULL) {
    c->oom = 1;
    ret = -ENOMEM;
    goto out;
  }
  m->type = (uint8_t)type;
  h->secret = type != RULES_HDR_PLAIN;
  ret = 0;
out:
  explicit_bzero(buf, sizeof(buf));
  rules_path_pop(c, old);
  return ret;
}

int rules_parse_headers(struct rules_pctx *c, const cJSON *arr, const char *owner,
                        int intern_names, struct rules_header **hdrs,
                        struct rules_hdrmeta **meta, uint16_t *n)
{
  const cJSON *e;
  size_t i = 0, count;

  *hdrs = NULL;
  *meta = NULL;
  *n = 0;
  if (arr == NULL)
    return 0;
  if (rules_expect_array(c, arr, RULES_MAX_HEADERS_PER_RULE) != 0)
    return -EINVAL;
  count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0)
    return 0;
  *hdrs = rules_arena_array(c->arena, count, sizeof(**hdrs));
  *meta = rules_arena_array(c->arena, count, sizeof(**meta));
  if (*hdrs == NULL || *meta == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  for (e = arr->child; e != NULL; e = e->next, i++) {
    struct rules_header *h = &(*hdrs)[*n];
    struct rules_hdrmeta *m = &(*meta)[*n];
    size_t old = rules_path_index(c, i);
    const char *name;
    int type, id = 0;

    if (rules_check_object(c, e, header_fields) != 0) {
      rules_path_pop(c, old);
      continue;
    }
    name = parse_name(c, e, *hdrs, *n);
    type = parse_type(c, e);
    if (parse_value(c, e, type, h, m) == 0 && name != NULL) {
      if (intern_names) {
        id = intern(c, name);
        if (id < 0 && !c->oom) {
          size_t o2 = rules_path_field(c, "name");

          rules_perr(c,
                     "is one header name too many: rules may inject at most %d distinct "
                     "header names",
                     RULES_MAX_INJECT);
          rules_path_pop(c, o2);
        }
      }
      h->name = rules_arena_strndup(c->arena, name, strlen(name));
      if (h->name == NULL)
        c->oom = 1;
      h->rule = owner;
      m->name_id = (uint16_t)(id < 0 ? 0 : id);
      if (id >= 0 && h->name != NULL)
        (*n)++;
    }
    rules_path_pop(c, old);
  }
  return 0;
}
