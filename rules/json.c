/*
 * Strict JSON text intake for configs: cJSON's parser plus the checks it lacks
 * (trailing text, raw control characters, NUL, invalid \u escapes and invalid UTF-8 in
 * strings, control characters between tokens, a member name given twice in one object),
 * with errors located by line and column.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Whether the left bytes at p start with four hex digits. */
static int is_hex4(const char *p, size_t left)
{
  size_t i;

  if (left < 4)
    return 0;
  for (i = 0; i < 4; i++)
    if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f') ||
          (p[i] >= 'A' && p[i] <= 'F')))
      return 0;
  return 1;
}

/* Finds what cJSON accepts but a config must not hold; returns its offset or len. */
static size_t scan_strings(const char *json, size_t len, const char **what)
{
  size_t i;
  int in_str = 0;

  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)json[i];

    if (!in_str) {
      if (ch == '"') {
        in_str = 1;
      } else if (ch < 0x20 && !is_space((char)ch)) {
        /* cJSON skips every byte up to the space between tokens, NUL included;
         * RFC 8259 allows four, and other readers refuse the rest. */
        *what = "control character between tokens (only spaces, tabs, CR and LF may "
                "separate them)";
        return i;
      }
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
      if (json[i + 1] == 'u' && !is_hex4(json + i + 2, len - i - 2)) {
        /* cJSON decodes any four characters after \u, reading a non-hex one as 0:
         * "\uZZZZ" becomes NUL and cuts the string short. */
        *what = "invalid \\u escape (it takes four hex digits)";
        return i;
      }
      if (json[i + 1] == 'u' && memcmp(json + i + 2, "0000", 4) == 0) {
        *what = "\\u0000 (NUL) inside a string; no config value may contain NUL";
        return i;
      }
      i++;
    }
  }
  return len;
}

/* ---- member names given twice ---------------------------------------------------- */

/*
 * cJSON keeps both members of {"a": 1, "a": 2} and its lookups return the first, while
 * Python's json, jq and Go's encoding/json keep the last: a policy reviewed with one
 * of them would not be the policy enforced. Such objects are refused, at every depth, with
 * names compared as cJSON decoded them ("a" and "\u0061" are one name).
 *
 * The tree is walked with an explicit stack, one entry per level: cJSON refuses text
 * nested deeper than CJSON_NESTING_LIMIT containers, so the children of the innermost
 * one sit at index CJSON_NESTING_LIMIT at most. A cJSON built with a larger limit
 * meets the check below instead of overrunning the stack.
 */
#define MAX_DEPTH CJSON_NESTING_LIMIT

/* Objects with at most this many members are checked pair by pair; larger ones (a
 * map of thousands of secrets) through a sorted copy of their names. */
#define SMALL_OBJECT 8

struct member {
  const char *name;
  size_t idx; /* position in the object */
};

static const char *name_of(const cJSON *n)
{
  return n->string != NULL ? n->string : "";
}

static int cmp_member(const void *a, const void *b)
{
  const struct member *x = a, *y = b;
  int c = strcmp(x->name, y->name);

  if (c != 0)
    return c;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * Looks for two members of obj with one name; of all such pairs, takes the one whose
 * second member comes first, and its name's first member. *buf (of *cap entries) is
 * scratch space kept across calls. Returns 1 with *first < *second set, 0 when every
 * name is unique, or -ENOMEM.
 */
static int find_repeat(const cJSON *obj, struct member **buf, size_t *cap, size_t *first,
                       size_t *second)
{
  const cJSON *a, *b;
  size_t n = 0, i, j, run = 0, best = SIZE_MAX;

  for (a = obj->child; a != NULL; a = a->next)
    n++;
  if (n <= SMALL_OBJECT) {
    for (b = obj->child, j = 0; b != NULL; b = b->next, j++) {
      for (a = obj->child, i = 0; a != b; a = a->next, i++) {
        if (strcmp(name_of(a), name_of(b)) == 0) {
          *first = i;
          *second = j;
          return 1;
        }
      }
    }
    return 0;
  }
  if (n > *cap) {
    struct member *m = n <= SIZE_MAX / sizeof(*m) ? realloc(*buf, n * sizeof(*m)) : NULL;

    if (m == NULL)
      return -ENOMEM;
    *buf = m;
    *cap = n;
  }
  for (a = obj->child, i = 0; a != NULL; a = a->next, i++) {
    (*buf)[i].name = name_of(a);
    (*buf)[i].idx = i;
  }
  qsort(*buf, n, sizeof(**buf), cmp_member);
  /* Equal names end up side by side, in object order: in each run, the second entry
   * is the earliest repeat of that name. */
  for (i = 1; i < n; i++) {
    if (strcmp((*buf)[i - 1].name, (*buf)[i].name) != 0) {
      run = i;
      continue;
    }
    if (i == run + 1 && (*buf)[i].idx < best) {
      best = (*buf)[i].idx;
      *first = (*buf)[run].idx;
      *second = best;
    }
  }
  return best != SIZE_MAX;
}

/* Bytes cJSON skips between tokens: everything up to and including the space. */
static int is_gap(char c)
{
  return (unsigned char)c <= 0x20;
}

static size_t skip_gap(const char *json, size_t len, size_t off)
{
  while (off < len && is_gap(json[off]))
    off++;
  return off;
}

/* off is at a string's opening quote; returns the offset just past its closing one. */
static size_t skip_string(const char *json, size_t len, size_t off)
{
  for (off++; off < len; off++) {
    if (json[off] == '\\')
      off++;
    else if (json[off] == '"')
      return off + 1;
  }
  return len;
}

/* off is at a value; returns the offset just past it. */
static size_t skip_value(const char *json, size_t len, size_t off)
{
  size_t depth = 0;

  if (off < len && json[off] != '"' && json[off] != '{' && json[off] != '[') {
    /* A number or a literal: it ends where a delimiter or a gap starts. */
    while (off < len && json[off] != ',' && json[off] != '}' && json[off] != ']' &&
           !is_gap(json[off]))
      off++;
    return off;
  }
  while (off < len) {
    char ch = json[off];

    if (ch == '"') {
      off = skip_string(json, len, off);
    } else {
      if (ch == '{' || ch == '[')
        depth++;
      else if ((ch == '}' || ch == ']') && depth > 0)
        depth--;
      off++;
    }
    if (depth == 0)
      break;
  }
  return off;
}

/* off is at a member's name; returns the offset of its value. */
static size_t member_value(const char *json, size_t len, size_t off)
{
  off = skip_gap(json, len, skip_string(json, len, off));
  if (off < len && json[off] == ':')
    off++;
  return skip_gap(json, len, off);
}

/*
 * off is at the '{' or '[' of a container; returns the offset of its child idx (for
 * an object, of the member's name). The text is what cJSON just accepted, so the
 * walk needs no error handling; it only never steps past len.
 */
static size_t child_offset(const char *json, size_t len, size_t off, size_t idx,
                           int object)
{
  off = skip_gap(json, len, off + 1);
  for (; idx > 0 && off < len; idx--) {
    off = object ? member_value(json, len, off) : off;
    off = skip_gap(json, len, skip_value(json, len, off));
    if (off < len && json[off] == ',')
      off++;
    off = skip_gap(json, len, off);
  }
  return off;
}

static size_t index_in(const cJSON *parent, const cJSON *child)
{
  const cJSON *c;
  size_t i = 0;

  for (c = parent->child; c != NULL && c != child; c = c->next)
    i++;
  return i;
}

static const cJSON *child_at(const cJSON *parent, size_t idx)
{
  const cJSON *c = parent->child;

  for (; idx > 0 && c != NULL; idx--)
    c = c->next;
  return c;
}

/*
 * Reports that member second of the object stack[depth] repeats the name of member
 * first: its JSON path (from stack, the containers it lies in, the root first) and the
 * line and column of both, found by walking the text down the same path.
 */
static int report_repeat(struct rules_diag *diag, const char *json, size_t len,
                         const cJSON *const *stack, size_t depth, size_t first, size_t second)
{
  const cJSON *obj = stack[depth], *dup = child_at(obj, second);
  struct rules_pctx pc; /* for its path builder only */
  size_t off, i, l1, c1, l2, c2;
  char q[160];

  memset(&pc, 0, sizeof(pc));
  off = skip_gap(json, len, 0);
  /* cJSON skips a byte order mark at the start. */
  if (len >= 3 && memcmp(json, "\xef\xbb\xbf", 3) == 0)
    off = skip_gap(json, len, 3);
  for (i = 1; i <= depth; i++) {
    int object = cJSON_IsObject(stack[i - 1]);

    off = child_offset(json, len, off, index_in(stack[i - 1], stack[i]), object);
    if (object) {
      rules_path_field(&pc, name_of(stack[i]));
      off = member_value(json, len, off);
    } else {
      rules_path_index(&pc, index_in(stack[i - 1], stack[i]));
    }
  }
  rules_path_field(&pc, dup != NULL ? name_of(dup) : "");
  locate(json, child_offset(json, len, off, first, 1), &l1, &c1);
  locate(json, child_offset(json, len, off, second, 1), &l2, &c2);
  if (rules_diag_add(diag, "",
                     "duplicate member name %s at line %zu, column %zu ($%s%s; first given "
                     "at line %zu, column %zu): JSON readers disagree on which one counts, "
                     "so each name may appear only once per object",
                     rules_quote(dup != NULL ? name_of(dup) : "", q, sizeof(q)), l2, c2,
                     pc.path[0] == '[' ? "" : ".", pc.path, l1, c1) != 0)
    return -ENOMEM;
  return -EINVAL;
}

/* Refuses an object, at any depth of root, with a member name given twice. */
static int check_names(const char *json, size_t len, const cJSON *root,
                       struct rules_diag *diag)
{
  const cJSON **stack;
  struct member *buf = NULL;
  size_t depth = 0, cap = 0, first = 0, second = 0;
  int ret = 0, r;

  stack = malloc((MAX_DEPTH + 1) * sizeof(*stack));
  if (stack == NULL)
    return -ENOMEM;
  stack[0] = root;
  for (;;) {
    const cJSON *n = stack[depth];

    if (cJSON_IsObject(n)) {
      r = find_repeat(n, &buf, &cap, &first, &second);
      if (r < 0) {
        ret = r;
        goto out;
      }
      if (r > 0) {
        ret = report_repeat(diag, json, len, stack, depth, first, second);
        goto out;
      }
    }
    if ((cJSON_IsObject(n) || cJSON_IsArray(n)) && n->child != NULL) {
      if (depth == MAX_DEPTH) {
        ret = rules_diag_add(diag, "", "the JSON text nests more than %d levels deep",
                             MAX_DEPTH) != 0 ? -ENOMEM : -EINVAL;
        goto out;
      }
      stack[++depth] = n->child;
      continue;
    }
    /* Next sibling, or the next sibling of the nearest container with one. */
    while (depth > 0 && stack[depth]->next == NULL)
      depth--;
    if (depth == 0)
      break;
    stack[depth] = stack[depth]->next;
  }
out:
  free(buf);
  free(stack);
  return ret;
}

/* ---- intake ------------------------------------------------------------------------ */

/*
 * Whether the quote at q opens a string rather than closes one: cJSON read the text
 * before it, so the quotes not escaped before it pair up. A string just closed and
 * followed by a wrong byte (`{"rules": ["x"}`) is named by that byte, not taken for one
 * that runs to the end.
 */
static int opens_string(const char *json, size_t q)
{
  size_t i;
  int in = 0;

  for (i = 0; i < q; i++) {
    if (in && json[i] == '\\')
      i++;
    else if (json[i] == '"')
      in = !in;
  }
  return !in;
}

/*
 * Whether a text cJSON refused at off ran out there instead: the error named a byte
 * of the text ("unexpected '{'", "unexpected 'p'") for a text that merely ended (an
 * object, array or string not closed: a body cut short, or a Content-Length counted
 * in characters rather than bytes). cJSON reports a failure past the end of the text
 * at its last byte, and one inside a string never closed at the string's first byte.
 * Parsed again with a space after it, a text that ended fails past its own bytes;
 * one whose last byte is wrong (`[1,]`) still fails there.
 */
static int text_ends_early(const char *json, size_t len, size_t off)
{
  const char *end = NULL;
  char *padded;
  cJSON *root;
  size_t i;
  int r;

  if (off > 0 && off < len && json[off - 1] == '"' && opens_string(json, off - 1)) {
    for (i = off; i < len && json[i] != '"'; i++)
      if (json[i] == '\\')
        i++;
    if (i >= len)
      return 1;
  }
  if (len == 0 || off != len - 1)
    return 0;
  padded = malloc(len + 1);
  if (padded == NULL)
    return 0;
  memcpy(padded, json, len);
  padded[len] = ' ';
  root = cJSON_ParseWithLengthOpts(padded, len + 1, &end, 0);
  r = root == NULL && end != NULL && end >= padded + len;
  cJSON_Delete(root);
  /* The text may be a config with secrets in it. */
  explicit_bzero(padded, len + 1);
  free(padded);
  return r;
}

static unsigned long json_alloc_failures;

void rules_json_count_failure(void)
{
  __atomic_add_fetch(&json_alloc_failures, 1, __ATOMIC_RELAXED);
}

void *rules_json_malloc(size_t size)
{
  void *p = malloc(size);

  if (p == NULL)
    rules_json_count_failure();
  return p;
}

unsigned long rules_json_alloc_failures(void)
{
  return __atomic_load_n(&json_alloc_failures, __ATOMIC_RELAXED);
}

int rules_json_add(cJSON *obj, const char *name, cJSON *item)
{
  if (cJSON_AddItemToObject(obj, name, item))
    return 1;
  cJSON_Delete(item);
  return 0;
}

int rules_json_append(cJSON *arr, cJSON *item)
{
  if (cJSON_AddItemToArray(arr, item))
    return 1;
  cJSON_Delete(item);
  return 0;
}

const char *rules_json_error(int r, const struct rules_diag *diag, const char *otherwise)
{
  if (r == -ENOMEM)
    return "out of memory";
  if (r != 0 && diag->count > 0)
    return diag->entries[0].message;
  return otherwise;
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
  int ret;

  *out = NULL;
  if (len > max) {
    if (rules_diag_add(diag, "", "the config is %zu bytes; the limit is %zu", len, max) != 0)
      return -ENOMEM;
    return -EINVAL;
  }
  /* cJSON says where it stopped, not why: an allocation that failed there (malloc sets
   * errno) would be reported as a syntax error at that place, and a client told its
   * JSON is malformed does not try again. */
  errno = 0;
  root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (root == NULL && errno == ENOMEM)
    return -ENOMEM;
  if (root == NULL) {
    off = end != NULL && end >= json ? (size_t)(end - json) : 0;
    if (text_ends_early(json, len, off))
      off = len;
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
  ret = check_names(json, len, root, diag);
  if (ret != 0) {
    rules_json_free(root);
    return ret;
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
