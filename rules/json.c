/*
 * Strict JSON text intake for configs: cJSON's parser plus the checks it lacks
 * (trailing text, raw control characters, NUL and invalid UTF-8 in strings), with
 * errors located by line and column.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rules/rules_internal.h"

static int is_space(char c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void locate(const char *json, size_t off, size_t *line, size_t *col)
{
  size_t i;

  *line = 1;
  *col = 1;
  for (i = 0; i < off; i++) {
    if (json[i] == '\n') {
      (*line)++;
      *col = 1;
    } else {
      (*col)++;
    }
  }
}

static int report(struct rules_diag *diag, const char *json, size_t len, size_t off,
                  const char *what)
{
  char q[32] = "";
  size_t line, col;

  if (what == NULL) {
    size_t i = off;

    /* Only whitespace left: the text ended too early. */
    while (i < len && is_space(json[i]))
      i++;
    if (i >= len)
      off = len;
    /* cJSON reports some failures just past the offending token: when it points at
     * whitespace, point back at the token instead. */
    while (off > 0 && off < len && is_space(json[off]))
      off--;
  }
  locate(json, off < len ? off : len, &line, &col);
  if (what == NULL) {
    if (off >= len) {
      what = "unexpected end of input";
    } else {
      unsigned char ch = (unsigned char)json[off];

      if (ch >= 0x21 && ch < 0x7f)
        snprintf(q, sizeof(q), "unexpected '%c'", ch);
      else
        snprintf(q, sizeof(q), "unexpected byte 0x%02x", ch);
      what = q;
    }
  }
  if (rules_diag_add(diag, "", "invalid JSON at line %zu, column %zu: %s", line, col,
                     what) != 0)
    return -ENOMEM;
  return -EINVAL;
}

/*
 * The length of the UTF-8 sequence at p (at most left bytes), or 0 if it is not one
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF).
 */
static size_t utf8_len(const unsigned char *p, size_t left)
{
  size_t n, i;
  uint32_t cp;

  if (p[0] < 0x80)
    return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) {
    n = 2;
    cp = p[0] & 0x1f;
  } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
    n = 3;
    cp = p[0] & 0x0f;
  } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    n = 4;
    cp = p[0] & 0x07;
  } else {
    return 0;
  }
  if (left < n)
    return 0;
  for (i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

/* Finds what cJSON accepts but a config must not hold; returns its offset or len. */
static size_t scan_strings(const char *json, size_t len, const char **what)
{
  size_t i;
  int in_str = 0;

  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)json[i];

    if (!in_str) {
      if (ch == '"')
        in_str = 1;
      continue;
    }
    if (ch == '"') {
      in_str = 0;
    } else if (ch < 0x20) {
      *what = "control character inside a string (escape it, e.g. \\n)";
      return i;
    } else if (ch >= 0x80) {
      /* JSON text is UTF-8 (RFC 8259): other bytes would come back from the API as
       * JSON that clients refuse, or change as they replace them. */
      size_t n = utf8_len((const unsigned char *)json + i, len - i);

      if (n == 0) {
        *what = "invalid UTF-8 inside a string (JSON text must be UTF-8)";
        return i;
      }
      i += n - 1;
    } else if (ch == '\\' && i + 1 < len) {
      if (json[i + 1] == 'u' && len - i >= 6 && memcmp(json + i + 2, "0000", 4) == 0) {
        *what = "\\u0000 (NUL) inside a string; no config value may contain NUL";
        return i;
      }
      i++;
    }
  }
  return len;
}

int rules_json_parse(const char *json, size_t len, cJSON **out, struct rules_diag *diag)
{
  return rules_json_parse_max(json, len, RULES_MAX_CONFIG_LEN, out, diag);
}

int rules_json_parse_max(const char *json, size_t len, size_t max, cJSON **out,
                         struct rules_diag *diag)
{
  const char *end = NULL, *what = NULL;
  cJSON *root;
  size_t off;

  *out = NULL;
  if (len > max) {
    if (rules_diag_add(diag, "", "the config is %zu bytes; the limit is %zu", len, max) != 0)
      return -ENOMEM;
    return -EINVAL;
  }
  root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (root == NULL) {
    off = end != NULL && end >= json ? (size_t)(end - json) : 0;
    return report(diag, json, len, off, NULL);
  }
  off = (size_t)(end - json);
  while (off < len && is_space(json[off]))
    off++;
  if (off < len) {
    cJSON_Delete(root);
    return report(diag, json, len, off, "unexpected text after the JSON value");
  }
  off = scan_strings(json, len, &what);
  if (off < len) {
    cJSON_Delete(root);
    return report(diag, json, len, off, what);
  }
  *out = root;
  return 0;
}

/* Wipes the strings of n, its children and its later siblings. Recursion follows
 * nesting only, which cJSON bounds (CJSON_NESTING_LIMIT). */
static void wipe(cJSON *n)
{
  for (; n != NULL; n = n->next) {
    /* A reference's string belongs to someone else and may be a constant. */
    if (n->valuestring != NULL && !(n->type & cJSON_IsReference))
      explicit_bzero(n->valuestring, strlen(n->valuestring));
    /* Keys of a tree built with cJSON_AddItemToObjectCS are constants. */
    if (n->string != NULL && !(n->type & cJSON_StringIsConst))
      explicit_bzero(n->string, strlen(n->string));
    wipe(n->child);
  }
}

void rules_json_free(cJSON *root)
{
  if (root == NULL)
    return;
  wipe(root->child);
  if (root->valuestring != NULL && !(root->type & cJSON_IsReference))
    explicit_bzero(root->valuestring, strlen(root->valuestring));
  cJSON_Delete(root);
}
