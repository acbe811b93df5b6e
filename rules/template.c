/*
 * workspace_secret templates: "Bearer {GITHUB_TOKEN}" resolved against the secret
 * store when a config is pushed. `{{` and `}}` are literal braces; a lone brace, a
 * malformed key, a missing, empty, oversized or multi-line secret are errors naming
 * the key, never the value.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_internal.h"

/* Where a secret was looked for, for messages. */
static void describe_place(const struct rules_secrets *s, int from_api, char *buf,
                           size_t size)
{
  const char *dir = rules_secrets_dir(s);

  if (from_api)
    snprintf(buf, size, "(set through the API)");
  else if (dir != NULL)
    snprintf(buf, size, "in %s", dir);
  else
    snprintf(buf, size, "in the secret store");
}

/* Reports why key could not be read. */
static void report_lookup(struct rules_pctx *c, const char *key, int err)
{
  const char *dir = rules_secrets_dir(c->secrets);

  if (c->secrets == NULL) {
    /* Only `authproxy config` parses without a store (the daemon always has one). */
    rules_perr(c,
               "secret %s cannot be resolved: no secret store is configured (--secrets-dir "
               "DIR, with the secret in the file DIR/%s)",
               key, key);
  } else if (err == -ENOENT && rules_secrets_is_files_only(c->secrets)) {
    /* No API takes values here (the jail, the config command): a file is the way. */
    if (dir != NULL)
      rules_perr(c, "secret %s not found in %s (create the file %s/%s)", key, dir, dir,
                 key);
    else
      rules_perr(c,
                 "secret %s not found: no secrets directory was given (--secrets-dir DIR, "
                 "with the secret in the file DIR/%s)",
                 key, key);
  } else if (err == -ENOENT && dir != NULL) {
    rules_perr(c,
               "secret %s not found in %s (create the file, or push it with PUT "
               "/v1/secrets/%s or `authproxy ctl secret-set %s`)",
               key, dir, key, key);
  } else if (err == -ENOENT) {
    rules_perr(c,
               "secret %s not found (push it with PUT /v1/secrets/%s or `authproxy ctl "
               "secret-set %s`, or configure a secrets directory)",
               key, key, key);
  } else if (err == -EFBIG) {
    rules_perr(c, "secret %s in %s is larger than %d bytes", key, dir ? dir : "?",
               RULES_MAX_SECRET_LEN);
  } else if (err == -EINVAL) {
    rules_perr(c, "secret %s in %s is not a regular file", key, dir ? dir : "?");
  } else if (err == -EPERM) {
    rules_perr(c,
               "secret %s in %s could have been written by another user (others may "
               "write it, or it or the symbolic link to it belongs to a user other than "
               "root, the daemon's user and the directory's owner, or others may write "
               "the directory and it lacks the sticky bit): make root its owner and "
               "remove others' write permission (chown -h root FILE; chmod o-w FILE "
               "DIR)",
               key, dir ? dir : "?");
  } else {
    rules_perr(c, "cannot read secret %s in %s: %s", key, dir ? dir : "?",
               strerror(-err));
  }
}

/*
 * A secret as one parse found it. A config may name the same secret in every header
 * of every rule, and a 1 MiB config holds over 300,000 {K}: looked up each time, the
 * secret file was read as often, on the daemon's event loop (seconds for one push).
 * Each secret is looked up once per parse and kept here, and a parse looks up at most
 * RULES_MAX_CONFIG_SECRETS distinct ones. Values longer than any header value may be
 * are not kept (a header naming one is too long whatever it holds), so the memo
 * holds at most RULES_MAX_CONFIG_SECRETS * RULES_MAX_VALUE_LEN bytes; it is wiped
 * when the parse ends (rules_template_memo_free).
 */
struct rules_secret_memo {
  char *key;
  char *value;  /* NULL when the lookup failed or the value is too long to use */
  size_t len;
  int err;      /* the lookup's result: 0 or a negative errno */
  int from_api;
  int valid;    /* the value is one line (rules_is_valid_value) */
};

void rules_template_memo_free(struct rules_pctx *c)
{
  size_t i;

  for (i = 0; i < c->nmemo; i++) {
    free(c->memo[i].key);
    rules_secret_free(c->memo[i].value, c->memo[i].len);
  }
  free(c->memo);
  c->memo = NULL;
  c->nmemo = 0;
}

/* Index of key in the memo, or where it goes (*found = 0). */
static size_t memo_find(const struct rules_pctx *c, const char *key, int *found)
{
  size_t lo = 0, hi = c->nmemo;

  *found = 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int d = strcmp(key, c->memo[mid].key);

    if (d == 0) {
      *found = 1;
      return mid;
    }
    if (d < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* The memo entry for key, looked up now if it is not there yet. NULL: out of memory
 * (c->oom set) or too many distinct secrets (reported once per parse). */
static const struct rules_secret_memo *memo_get(struct rules_pctx *c, const char *key)
{
  struct rules_secret_memo m, *v;
  size_t i;
  int found;

  i = memo_find(c, key, &found);
  if (found)
    return &c->memo[i];
  if (c->nmemo == RULES_MAX_CONFIG_SECRETS) {
    if (!c->memo_full)
      rules_perr(c, "secret %s: the config names more than %d distinct secrets; the "
                    "limit is %d", key, RULES_MAX_CONFIG_SECRETS, RULES_MAX_CONFIG_SECRETS);
    c->memo_full = 1;
    return NULL;
  }
  if (c->memo == NULL) {
    c->memo = calloc(RULES_MAX_CONFIG_SECRETS, sizeof(*c->memo));
    if (c->memo == NULL) {
      c->oom = 1;
      return NULL;
    }
  }
  memset(&m, 0, sizeof(m));
  m.key = strdup(key);
  if (m.key == NULL) {
    c->oom = 1;
    return NULL;
  }
  m.err = rules_secrets_lookup(c->secrets, key, &m.value, &m.len, &m.from_api);
  if (m.err == -ENOMEM) {
    free(m.key);
    c->oom = 1;
    return NULL;
  }
  if (m.err == 0) {
    m.valid = rules_is_valid_value(m.value, m.len);
    if (m.len > RULES_MAX_VALUE_LEN) {
      rules_secret_free(m.value, m.len);
      m.value = NULL;
    }
  }
  v = c->memo;
  memmove(&v[i + 1], &v[i], (c->nmemo - i) * sizeof(v[0]));
  v[i] = m;
  c->nmemo++;
  return &v[i];
}

/* Looks key up and appends its value; returns 0, -EINVAL (reported) or -ENOMEM. */
static int append_secret(struct rules_pctx *c, const char *key, char *out, size_t size,
                         size_t *total)
{
  const struct rules_secret_memo *m = memo_get(c, key);
  char place[PATH_MAX + 32];

  if (m == NULL)
    return c->oom ? -ENOMEM : -EINVAL;
  if (m->err != 0) {
    report_lookup(c, key, m->err);
    return -EINVAL;
  }
  describe_place(c->secrets, m->from_api, place, sizeof(place));
  if (m->len == 0) {
    rules_perr(c, "secret %s %s is empty", key, place);
    return -EINVAL;
  }
  if (!m->valid) {
    /* Name the key and where the bad byte is, never the value itself. */
    int crlf = m->value != NULL && m->value[m->len - 1] == '\r';

    rules_perr(c,
               "secret %s %s contains a control character (CR, LF, NUL or another byte "
               "below 0x20); a header value is one line%s",
               key, place,
               crlf ? " (it ends with CRLF: save it with a plain LF ending, which is "
                      "trimmed)"
                    : "");
    return -EINVAL;
  }
  /* A value not kept is longer than size: the header is reported too long below. */
  if (m->value != NULL && *total + m->len < size)
    memcpy(out + *total, m->value, m->len);
  *total += m->len;
  return 0;
}

int rules_template_resolve(struct rules_pctx *c, const char *tmpl, char *out, size_t size)
{
  size_t len = strlen(tmpl), i = 0, total = 0, j;
  int bad = 0, ret;
  char key[256], q[160];

  if (!rules_is_valid_value(tmpl, len)) {
    rules_perr(c, "contains a control character (CR, LF, NUL or another byte below "
                  "0x20); a header value is one line");
    return -EINVAL;
  }
  while (i < len) {
    char ch = tmpl[i];

    if (ch == '{' && tmpl[i + 1] == '{') {
      ch = '{';
      i += 2;
    } else if (ch == '}' && tmpl[i + 1] == '}') {
      ch = '}';
      i += 2;
    } else if (ch == '}') {
      rules_perr(c, "has a lone '}' at byte %zu; write }} for a literal brace", i);
      bad = 1;
      i++;
      continue;
    } else if (ch == '{') {
      for (j = i + 1; j < len && tmpl[j] != '}' && tmpl[j] != '{'; j++)
        ;
      if (j == len || tmpl[j] == '{') {
        rules_perr(c,
                   "has a lone '{' at byte %zu; write {{ for a literal brace, or close "
                   "the secret key with }",
                   i);
        bad = 1;
        i++;
        continue;
      }
      if (!rules_secret_key_valid(tmpl + i + 1, j - i - 1)) {
        size_t klen = j - i - 1 < sizeof(key) - 1 ? j - i - 1 : sizeof(key) - 1;

        memcpy(key, tmpl + i + 1, klen);
        key[klen] = '\0';
        /* The key quoted for safety, shown without the quotes inside its braces. */
        rules_quote(key, q, sizeof(q));
        rules_perr(c,
                   "{%.*s} is not a valid secret key: keys are letters, digits, '_', '.' "
                   "and '-', and do not start with a dot",
                   (int)(strlen(q) - 2), q + 1);
        bad = 1;
      } else {
        memcpy(key, tmpl + i + 1, j - i - 1);
        key[j - i - 1] = '\0';
        ret = append_secret(c, key, out, size, &total);
        if (ret == -ENOMEM)
          return ret;
        if (ret != 0)
          bad = 1;
      }
      i = j + 1;
      continue;
    } else {
      i++;
    }
    if (total + 1 < size)
      out[total] = ch;
    total++;
  }
  if (bad)
    return -EINVAL;
  if (total > RULES_MAX_VALUE_LEN || total >= size) {
    rules_perr(c, "is %zu bytes after resolving secrets; the limit is %d", total,
               RULES_MAX_VALUE_LEN);
    return -EINVAL;
  }
  out[total] = '\0';
  return (int)total;
}
