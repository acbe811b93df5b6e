/*
 * The parse context's tools: JSON paths of errors, reporting, object field checks
 * (unknown and repeated fields, with a suggestion for typos), type checks, and the
 * lists of host and path patterns every section shares.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

void rules_perr(struct rules_pctx *c, const char *fmt, ...)
{
  char msg[1024], path[RULES_PATH_MAX];
  size_t plen = c->plen;
  va_list ap;

  c->errors++;
  if (c->errors > RULES_MAX_ERRORS)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  /* At the root, the caller's prefix ("proxy_config.") names the object itself. */
  if (plen > 0 && c->path[plen - 1] == '.')
    plen--;
  memcpy(path, c->path, plen);
  path[plen] = '\0';
  if (rules_diag_add(c->diag, path, "%s", msg) != 0)
    c->oom = 1;
}

static size_t path_append(struct rules_pctx *c, const char *s, size_t len)
{
  size_t old = c->plen, room = sizeof(c->path) - 1 - c->plen;

  if (len > room)
    len = room;
  memcpy(c->path + c->plen, s, len);
  c->plen += len;
  c->path[c->plen] = '\0';
  return old;
}

static int is_ident(const char *s)
{
  size_t i;

  if (s[0] == '\0')
    return 0;
  for (i = 0; s[i] != '\0'; i++) {
    unsigned char ch = (unsigned char)s[i];

    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

size_t rules_path_key(struct rules_pctx *c, const char *key)
{
  char buf[160];
  size_t old = c->plen;

  rules_quote(key, buf, sizeof(buf));
  path_append(c, "[", 1);
  path_append(c, buf, strlen(buf));
  path_append(c, "]", 1);
  return old;
}

size_t rules_path_field(struct rules_pctx *c, const char *name)
{
  size_t old = c->plen;

  if (!is_ident(name))
    return rules_path_key(c, name);
  if (c->plen > c->root)
    path_append(c, ".", 1);
  path_append(c, name, strlen(name));
  return old;
}

size_t rules_path_index(struct rules_pctx *c, size_t i)
{
  char buf[32];
  int n = snprintf(buf, sizeof(buf), "[%zu]", i);

  return path_append(c, buf, (size_t)n);
}

void rules_path_pop(struct rules_pctx *c, size_t len)
{
  c->plen = len;
  c->path[len] = '\0';
}

const char *rules_quote(const char *s, char *buf, size_t size)
{
  static const char hex[] = "0123456789abcdef";
  size_t i, w = 0, max = 64;

  if (size < 16) {
    if (size > 0)
      buf[0] = '\0';
    return buf;
  }
  buf[w++] = '"';
  for (i = 0; s[i] != '\0'; i++) {
    unsigned char ch = (unsigned char)s[i];

    /* Leave room for an escape, "...", the quote and the NUL. */
    if (i == max || w + 10 > size) {
      memcpy(buf + w, "...", 3);
      w += 3;
      break;
    }
    if (ch == '"' || ch == '\\') {
      buf[w++] = '\\';
      buf[w++] = (char)ch;
    } else if (ch < 0x20 || ch >= 0x7f) {
      /* Terminals interpret control bytes; show them, never send them. */
      buf[w++] = '\\';
      buf[w++] = 'x';
      buf[w++] = hex[ch >> 4];
      buf[w++] = hex[ch & 15];
    } else {
      buf[w++] = (char)ch;
    }
  }
  buf[w++] = '"';
  buf[w] = '\0';
  return buf;
}

static const char *type_name(const cJSON *v)
{
  if (cJSON_IsObject(v))
    return "an object";
  if (cJSON_IsArray(v))
    return "an array";
  if (cJSON_IsString(v))
    return "a string";
  if (cJSON_IsNumber(v))
    return "a number";
  if (cJSON_IsBool(v))
    return "a boolean";
  if (cJSON_IsNull(v))
    return "null";
  return "an invalid value";
}

/* Edit distance of two short strings (for "did you mean"). */
static size_t distance(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b), i, j, prev[33], cur[33];

  if (la > 32 || lb > 32)
    return SIZE_MAX;
  for (j = 0; j <= lb; j++)
    prev[j] = j;
  for (i = 1; i <= la; i++) {
    cur[0] = i;
    for (j = 1; j <= lb; j++) {
      size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      size_t del = prev[j] + 1, ins = cur[j - 1] + 1;

      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, sizeof(prev));
  }
  return prev[lb];
}

int rules_check_object(struct rules_pctx *c, const cJSON *obj, const char *const *allowed)
{
  const cJSON *f;
  unsigned seen = 0;
  size_t i;

  if (!cJSON_IsObject(obj)) {
    rules_perr(c, "must be an object (got %s)", type_name(obj));
    return -EINVAL;
  }
  for (f = obj->child; f != NULL; f = f->next) {
    const char *name = f->string ? f->string : "";
    size_t old;

    for (i = 0; allowed[i] != NULL; i++)
      if (strcmp(name, allowed[i]) == 0)
        break;
    old = rules_path_field(c, name);
    if (allowed[i] != NULL) {
      /* Parsers disagree on which of two equal keys wins: refuse both. */
      if (seen & (1u << i))
        rules_perr(c, "is given more than once");
      seen |= 1u << i;
    } else {
      char list[256], hint[96] = "";
      size_t w = 0, best = SIZE_MAX, d, k;

      for (k = 0; allowed[k] != NULL; k++) {
        w += (size_t)snprintf(list + w, sizeof(list) - w, "%s%s", k ? ", " : "",
                              allowed[k]);
        if (w >= sizeof(list))
          w = sizeof(list) - 1;
        d = distance(name, allowed[k]);
        if (d < best && d <= 2 && d < strlen(allowed[k])) {
          best = d;
          snprintf(hint, sizeof(hint), " (did you mean %s?)", allowed[k]);
        }
      }
      rules_perr(c, "unknown field%s; allowed fields: %s", hint, list);
    }
    rules_path_pop(c, old);
  }
  return 0;
}

const cJSON *rules_field(const cJSON *obj, const char *name)
{
  const cJSON *f;

  for (f = obj->child; f != NULL; f = f->next)
    if (f->string != NULL && strcmp(f->string, name) == 0)
      return cJSON_IsNull(f) ? NULL : f;
  return NULL;
}

int rules_expect_string(struct rules_pctx *c, const cJSON *v)
{
  if (cJSON_IsString(v) && v->valuestring != NULL)
    return 0;
  rules_perr(c, "must be a string (got %s)", type_name(v));
  return -EINVAL;
}

int rules_expect_bool(struct rules_pctx *c, const cJSON *v, uint8_t *out)
{
  if (cJSON_IsBool(v)) {
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
  }
  rules_perr(c, "must be true or false (got %s)", type_name(v));
  return -EINVAL;
}

int rules_expect_array(struct rules_pctx *c, const cJSON *v, size_t max)
{
  int n;

  if (!cJSON_IsArray(v)) {
    rules_perr(c, "must be an array (got %s)", type_name(v));
    return -EINVAL;
  }
  n = cJSON_GetArraySize(v);
  if (n < 0 || (size_t)n > max) {
    rules_perr(c, "has %d entries; the limit is %zu", n, max);
    return -EINVAL;
  }
  return 0;
}

int rules_expect_uint(struct rules_pctx *c, const cJSON *v, uint32_t min, uint32_t max,
                      uint32_t *out)
{
  double d;

  if (!cJSON_IsNumber(v)) {
    rules_perr(c, "must be a number (got %s)", type_name(v));
    return -EINVAL;
  }
  d = v->valuedouble;
  if (!(d >= (double)min && d <= (double)max) || (double)(uint32_t)d != d) {
    rules_perr(c, "must be a whole number from %u to %u (got %g)", min, max, d);
    return -EINVAL;
  }
  *out = (uint32_t)d;
  return 0;
}

/* Counts one more glob with text between two stars (which may be compared with the
 * whole subject on every decision) in *count, refusing the one past max. */
static void count_scanning(struct rules_pctx *c, const char *glob, size_t len,
                           const char *text, size_t *count, size_t max, const char *what,
                           const char *subject)
{
  char q[160];

  if (!rules_glob_scans(glob, len))
    return;
  if (++*count == max + 1)
    rules_perr(c, "%s is %s pattern number %zu with text between two '*' in this config; "
                  "at most %zu are allowed (each may be compared with the whole %s)",
               rules_quote(text, q, sizeof(q)), what, max + 1, max, subject);
}

void rules_count_hostpat(struct rules_pctx *c, const struct rules_hostpat *p)
{
  if (p->kind == RULES_HP_GLOB)
    count_scanning(c, p->glob, p->len, p->text, &c->scan_hosts, RULES_MAX_SCAN_HOSTS,
                   "host", "name on every connection");
}

void rules_count_pathpat(struct rules_pctx *c, const struct rules_pathpat *p)
{
  if (p->kind == RULES_PP_GLOB)
    count_scanning(c, p->glob, p->len, p->text, &c->scan_paths, RULES_MAX_SCAN_PATHS,
                   "path", "path of every request");
}

int rules_parse_hostpats(struct rules_pctx *c, const cJSON *arr, int allow_domain,
                         int required, struct rules_hostpat **out, uint16_t *n)
{
  const cJSON *e;
  size_t i = 0, count;
  char err[256], q[160];

  *out = NULL;
  *n = 0;
  if (arr == NULL) {
    if (required)
      rules_perr(c, "is required: list the host names, globs (*.example.com), IPs or "
                    "CIDRs it applies to");
    return 0;
  }
  if (rules_expect_array(c, arr, RULES_MAX_PATTERNS) != 0)
    return -EINVAL;
  count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0) {
    if (required)
      rules_perr(c, "must list at least one host");
    return 0;
  }
  *out = rules_arena_array(c->arena, count, sizeof(**out));
  if (*out == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  for (e = arr->child; e != NULL; e = e->next, i++) {
    size_t old = rules_path_index(c, i);
    int ret;

    if (rules_expect_string(c, e) == 0) {
      ret = rules_hostpat_parse(c->arena, e->valuestring, allow_domain, &(*out)[*n], err,
                                sizeof(err));
      if (ret == -ENOMEM)
        c->oom = 1;
      else if (ret != 0)
        rules_perr(c, "%s %s", rules_quote(e->valuestring, q, sizeof(q)), err);
      else
        rules_count_hostpat(c, &(*out)[(*n)++]);
    }
    rules_path_pop(c, old);
  }
  return 0;
}

int rules_parse_pathpats(struct rules_pctx *c, const cJSON *arr, struct rules_pathpat **out,
                         uint16_t *n)
{
  const cJSON *e;
  size_t i = 0, count;
  char err[256], q[160];

  *out = NULL;
  *n = 0;
  if (arr == NULL)
    return 0;
  if (rules_expect_array(c, arr, RULES_MAX_PATTERNS) != 0)
    return -EINVAL;
  count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0)
    return 0;
  *out = rules_arena_array(c->arena, count, sizeof(**out));
  if (*out == NULL) {
    c->oom = 1;
    return -ENOMEM;
  }
  for (e = arr->child; e != NULL; e = e->next, i++) {
    size_t old = rules_path_index(c, i);
    int ret;

    if (rules_expect_string(c, e) == 0) {
      ret = rules_pathpat_parse(c->arena, e->valuestring, &(*out)[*n], err, sizeof(err));
      if (ret == -ENOMEM)
        c->oom = 1;
      else if (ret != 0)
        rules_perr(c, "%s %s", rules_quote(e->valuestring, q, sizeof(q)), err);
      else
        rules_count_pathpat(c, &(*out)[(*n)++]);
    }
    rules_path_pop(c, old);
  }
  return 0;
}
