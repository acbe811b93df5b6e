/*
 * workspace_secret templates: "Bearer {GITHUB_TOKEN}" resolved against the secret
 * store when a config is pushed. `{{` and `}}` are literal braces; a lone brace, a
 * malformed key, a missing, empty, oversized or multi-line secret are errors naming
 * the key, never the value.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
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
    rules_perr(c,
               "secret %s cannot be resolved: no secret store is configured (give a "
               "secrets directory, or push it with PUT /v1/secrets/%s)",
               key, key);
  } else if (err == -ENOENT && dir != NULL) {
    rules_perr(c,
               "secret %s not found in %s (create the file, or push it with PUT "
               "/v1/secrets/%s)",
               key, dir, key);
  } else if (err == -ENOENT) {
    rules_perr(c,
               "secret %s not found (push it with PUT /v1/secrets/%s, or configure a "
               "secrets directory)",
               key, key);
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

/* Looks key up and appends its value; returns 0, -EINVAL (reported) or -ENOMEM. */
static int append_secret(struct rules_pctx *c, const char *key, char *out, size_t size,
                         size_t *total)
{
  char *value = NULL, place[PATH_MAX + 32];
  size_t len = 0;
  int from_api = 0, ret;

  ret = rules_secrets_lookup(c->secrets, key, &value, &len, &from_api);
  if (ret == -ENOMEM) {
    c->oom = 1;
    return ret;
  }
  if (ret != 0) {
    report_lookup(c, key, ret);
    return -EINVAL;
  }
  describe_place(c->secrets, from_api, place, sizeof(place));
  if (len == 0) {
    rules_perr(c, "secret %s %s is empty", key, place);
    ret = -EINVAL;
  } else if (!rules_is_valid_value(value, len)) {
    /* Name the key and where the bad byte is, never the value itself. */
    int crlf = len >= 1 && value[len - 1] == '\r';

    rules_perr(c,
               "secret %s %s contains a control character (CR, LF, NUL or another byte "
               "below 0x20); a header value is one line%s",
               key, place,
               crlf ? " (it ends with CRLF: save it with a plain LF ending, which is "
                      "trimmed)"
                    : "");
    ret = -EINVAL;
  } else {
    if (*total + len < size)
      memcpy(out + *total, value, len);
    *total += len;
    ret = 0;
  }
  rules_secret_free(value, len);
  return ret;
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
