/*
 * The secret store and workspace_secret templates: files, in-memory values,
 * trimming, escapes, and every way resolution fails (always naming the key, never
 * printing the value).
 */
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_rules_helpers.h"

/* A one-header config whose value is the template tmpl (JSON-escaped by the caller). */
static void secret_json(char *buf, size_t size, const char *tmpl)
{
  snprintf(buf, size,
           "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
           "{\"name\":\"Authorization\",\"type\":\"workspace_secret\",\"value\":\"%s\"}]}]}",
           tmpl);
}

/* Resolves tmpl against s and returns the injected value (static buffer). */
static const char *resolve(const struct rules_secrets *s, const char *tmpl)
{
  static char value[RULES_MAX_VALUE_LEN + 1];
  struct rules_request_decision r;
  struct rules_config *cfg;
  char json[1024];

  secret_json(json, sizeof(json), tmpl);
  cfg = parse_ok(json, s);
  req_decide(cfg, "x.com", 443, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_EQ(r.headers[0].value_len, strlen(r.headers[0].value));
  snprintf(value, sizeof(value), "%s", r.headers[0].value);
  rules_config_unref(cfg);
  return value;
}

/* Expects resolution of tmpl to fail with fragment, and the message to hold no value. */
static void resolve_err(const struct rules_secrets *s, const char *tmpl, const char *fragment,
                        const char *never)
{
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  char json[1024];
  size_t i;
  int found = 0;

  secret_json(json, sizeof(json), tmpl);
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(json, strlen(json), "", s, &cfg, &d), -EINVAL);
  ASSERT_NULL(cfg);
  for (i = 0; i < d.count; i++) {
    if (strcmp(d.entries[i].path, "rules[0].headers[0].value") == 0 &&
        strstr(d.entries[i].message, fragment) != NULL)
      found = 1;
    if (never != NULL)
      ASSERT_NOT_CONTAINS(d.entries[i].message, never);
  }
  if (!found) {
    print_diag(&d);
    TEST_FAIL_("no error containing \"%s\" for template %s", fragment, tmpl);
  }
  rules_diag_free(&d);
}

static struct rules_secrets *tmp_store(void)
{
  struct rules_secrets *s = rules_secrets_new(test_tmpdir());

  ASSERT_NOT_NULL(s);
  return s;
}

TEST(resolves_from_directory)
{
  struct rules_secrets *s = test_secrets();

  ASSERT_STREQ(resolve(s, "Bearer {OPENAI_API_KEY}"), "Bearer sk-test-openai-0000");
  ASSERT_STREQ(resolve(s, "{INTERNAL_USER}:{INTERNAL_PASS}"), "internal-user:internal-pass-4444");
  ASSERT_STREQ(resolve(s, "no keys at all"), "no keys at all");
  rules_secrets_free(s);
}

TEST(brace_escapes)
{
  struct rules_secrets *s = tmp_store();

  test_write_file(test_tmpdir(), "K", "v\n", 2, 0600);
  ASSERT_STREQ(resolve(s, "{{K}}"), "{K}");
  ASSERT_STREQ(resolve(s, "{{{K}}}"), "{v}");
  ASSERT_STREQ(resolve(s, "a}}b{{c"), "a}b{c");
  ASSERT_STREQ(resolve(s, "{K}{K}"), "vv");
  resolve_err(s, "a{b", "lone '{' at byte 1; write {{ for a literal brace", NULL);
  resolve_err(s, "a}b", "lone '}' at byte 1; write }} for a literal brace", NULL);
  resolve_err(s, "{K", "lone '{' at byte 0", NULL);
  resolve_err(s, "{a{K}", "lone '{' at byte 0", NULL);
  resolve_err(s, "{K}}", "lone '}' at byte 3", NULL);
  resolve_err(s, "{}", "{} is not a valid secret key", NULL);
  rules_secrets_free(s);
}

TEST(invalid_keys_cannot_escape)
{
  struct rules_secrets *s = tmp_store();
  char *v = NULL, tmpl[302];
  size_t len = 0;

  /* A file outside the directory that a traversal would reach. */
  test_write_file(test_tmpdir(), "..x", "leak", 4, 0600);
  resolve_err(s, "{../etc}", "{../etc} is not a valid secret key", NULL);
  resolve_err(s, "{../etc/passwd}", "not a valid secret key", NULL);
  resolve_err(s, "{.hidden}", "do not start with a dot", NULL);
  resolve_err(s, "{..x}", "not a valid secret key", "leak");
  resolve_err(s, "{a/b}", "not a valid secret key", NULL);
  resolve_err(s, "{a b}", "not a valid secret key", NULL);
  /* Longer than a key may be (255 bytes) and than the buffer it is quoted from. */
  memset(tmpl, 'k', sizeof(tmpl));
  tmpl[0] = '{';
  tmpl[300] = '}';
  tmpl[301] = '\0';
  resolve_err(s, tmpl, "is not a valid secret key", NULL);
  ASSERT_EQ(rules_secrets_get(s, "../etc", &v, &len), -EINVAL);
  ASSERT_EQ(rules_secrets_get(s, "..x", &v, &len), -EINVAL);
  ASSERT_EQ(rules_secrets_get(s, "", &v, &len), -EINVAL);
  ASSERT_EQ(rules_secrets_get(s, "a/b", &v, &len), -EINVAL);
  ASSERT_NULL(v);
  rules_secrets_free(s);
}

TEST(missing_key)
{
  struct rules_secrets *s = tmp_store();
  char expect[512];

  snprintf(expect, sizeof(expect),
           "secret OPENAI_API_KEY not found in %s (create the file, or push it with PUT "
           "/v1/secrets/OPENAI_API_KEY or `authproxy ctl secret-set OPENAI_API_KEY`)",
           test_tmpdir());
  resolve_err(s, "Bearer {OPENAI_API_KEY}", expect, NULL);
  rules_secrets_free(s);

  /* No store at all. */
  resolve_err(NULL, "Bearer {OPENAI_API_KEY}",
              "secret OPENAI_API_KEY cannot be resolved: no secret store is configured", NULL);
  /* A store without a directory. */
  s = rules_secrets_new(NULL);
  resolve_err(s, "{K}", "secret K not found (push it with PUT /v1/secrets/K or `authproxy ctl secret-set K`",
              NULL);
  rules_secrets_free(s);

  /* A store no API pushes to (the jail's) says how to provide the file instead. */
  s = tmp_store();
  rules_secrets_files_only(s);
  snprintf(expect, sizeof(expect), "secret K not found in %s (create the file %s/K)",
           test_tmpdir(), test_tmpdir());
  resolve_err(s, "{K}", expect, NULL);
  rules_secrets_free(s);
  s = rules_secrets_new(NULL);
  rules_secrets_files_only(s);
  resolve_err(s, "{K}", "secret K not found: no secrets directory was given (--secrets-dir DIR",
              NULL);
  rules_secrets_free(s);
}

TEST(every_missing_key_reported)
{
  struct rules_secrets *s = tmp_store();
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  char json[512];

  secret_json(json, sizeof(json), "{A}:{B}");
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(json, strlen(json), "", s, &cfg, &d), -EINVAL);
  ASSERT_EQ(d.count, 2);
  ASSERT_CONTAINS(d.entries[0].message, "secret A not found");
  ASSERT_CONTAINS(d.entries[1].message, "secret B not found");
  rules_diag_free(&d);
  rules_secrets_free(s);
}

TEST(trailing_newline_trimmed_once)
{
  struct rules_secrets *s = tmp_store();
  char *v = NULL;
  size_t len = 0;

  test_write_file(test_tmpdir(), "ONE", "abc\n", 4, 0600);
  test_write_file(test_tmpdir(), "TWO", "abc\n\n", 5, 0600);
  test_write_file(test_tmpdir(), "NONE", "abc", 3, 0600);
  ASSERT_EQ(rules_secrets_get(s, "ONE", &v, &len), 0);
  ASSERT_EQ(len, 3);
  ASSERT_STREQ(v, "abc");
  rules_secret_free(v, len);
  ASSERT_EQ(rules_secrets_get(s, "TWO", &v, &len), 0);
  ASSERT_EQ(len, 4);
  ASSERT_STREQ(v, "abc\n");
  rules_secret_free(v, len);
  ASSERT_EQ(rules_secrets_get(s, "NONE", &v, &len), 0);
  ASSERT_EQ(len, 3);
  rules_secret_free(v, len);
  ASSERT_STREQ(resolve(s, "{ONE}"), "abc");
  ASSERT_STREQ(resolve(s, "{NONE}"), "abc");
  /* The second newline is part of the value, and a header value is one line. */
  resolve_err(s, "{TWO}", "secret TWO in", "abc");
  rules_secrets_free(s);
}

TEST(control_characters_in_secret)
{
  struct rules_secrets *s = tmp_store();

  test_write_file(test_tmpdir(), "CRLF", "hunter2\r\n", 9, 0600);
  test_write_file(test_tmpdir(), "MID", "hunter2\r\nX-Evil: 1", 19, 0600);
  test_write_file(test_tmpdir(), "NUL", "hun\0ter2", 8, 0600);
  test_write_file(test_tmpdir(), "ESC", "hun\x1bter2", 8, 0600);
  resolve_err(s, "Bearer {CRLF}", "secret CRLF in", "hunter2");
  resolve_err(s, "Bearer {CRLF}", "it ends with CRLF", "hunter2");
  resolve_err(s, "Bearer {MID}", "contains a control character", "hunter2");
  resolve_err(s, "Bearer {NUL}", "secret NUL in", "hun");
  resolve_err(s, "{ESC}", "contains a control character", "hun");
  /* The CRLF hint is for a value that ends with CR, not for every control byte. */
  resolve_err(s, "Bearer {MID}", "contains a control character", "ends with CRLF");
  resolve_err(s, "{ESC}", "contains a control character", "ends with CRLF");
  rules_secrets_free(s);
}

TEST(empty_secret)
{
  struct rules_secrets *s = tmp_store(), *api = tmp_store();
  char want[600];

  test_write_file(test_tmpdir(), "EMPTY", "", 0, 0600);
  test_write_file(test_tmpdir(), "NL", "\n", 1, 0600);
  resolve_err(s, "Bearer {EMPTY}", "secret EMPTY in", NULL);
  resolve_err(s, "Bearer {NL}", "is empty", NULL);
  /* The message says where the secret came from: the directory, or the API. */
  snprintf(want, sizeof(want), "secret EMPTY in %s is empty", test_tmpdir());
  resolve_err(s, "{EMPTY}", want, NULL);
  ASSERT_EQ(rules_secrets_set(api, "EMPTY", "", 0), 0);
  resolve_err(api, "{EMPTY}", "secret EMPTY (set through the API) is empty", NULL);
  rules_secrets_free(api);
  rules_secrets_free(s);
}

TEST(symlinked_secret_file)
{
  struct rules_secrets *s = tmp_store();
  char dir[512], link[512];

  /* The layout of a Kubernetes secret volume: KEY -> ..data/KEY -> a timestamped dir. */
  snprintf(dir, sizeof(dir), "%s/..2024_01_01", test_tmpdir());
  ASSERT_EQ(mkdir(dir, 0700), 0);
  test_write_file(dir, "TOKEN", "tok-123\n", 8, 0600);
  snprintf(link, sizeof(link), "%s/..data", test_tmpdir());
  ASSERT_EQ(symlink("..2024_01_01", link), 0);
  snprintf(link, sizeof(link), "%s/TOKEN", test_tmpdir());
  ASSERT_EQ(symlink("..data/TOKEN", link), 0);
  ASSERT_STREQ(resolve(s, "Bearer {TOKEN}"), "Bearer tok-123");
  /* A dangling link is a missing secret. */
  snprintf(link, sizeof(link), "%s/GONE", test_tmpdir());
  ASSERT_EQ(symlink("..data/GONE", link), 0);
  resolve_err(s, "{GONE}", "secret GONE not found", NULL);
  rules_secrets_free(s);
}

TEST(oversized_secret)
{
  struct rules_secrets *s = tmp_store();
  char *big = malloc(RULES_MAX_SECRET_LEN + 1), *v = NULL;
  size_t len = 0;

  ASSERT_NOT_NULL(big);
  memset(big, 'a', RULES_MAX_SECRET_LEN + 1);
  test_write_file(test_tmpdir(), "BIG", big, RULES_MAX_SECRET_LEN + 1, 0600);
  test_write_file(test_tmpdir(), "MAX", big, RULES_MAX_SECRET_LEN, 0600);
  test_write_file(test_tmpdir(), "VALMAX", big, RULES_MAX_VALUE_LEN - 7, 0600);
  ASSERT_EQ(rules_secrets_get(s, "BIG", &v, &len), -EFBIG);
  ASSERT_NULL(v);
  ASSERT_EQ(rules_secrets_get(s, "MAX", &v, &len), 0);
  ASSERT_EQ(len, RULES_MAX_SECRET_LEN);
  rules_secret_free(v, len);
  resolve_err(s, "{BIG}", "secret BIG in", NULL);
  resolve_err(s, "{BIG}", "is larger than 65536 bytes", NULL);
  /* Within the file limit but over the header value limit. */
  resolve_err(s, "{MAX}", "is 65536 bytes after resolving secrets; the limit is 8192", NULL);
  /* "Bearer " and 8185 bytes: exactly the limit. */
  ASSERT_EQ(strlen(resolve(s, "Bearer {VALMAX}")), RULES_MAX_VALUE_LEN);
  resolve_err(s, "Bearer  {VALMAX}", "is 8193 bytes", NULL);
  free(big);
  rules_secrets_free(s);
}

/*
 * A secret exactly as long as a header value may be is injected whole, byte for byte;
 * one byte longer is refused. (The memo keeps only values that fit in a header value.)
 */
TEST(secret_exactly_the_value_limit)
{
  struct rules_secrets *s = tmp_store();
  char *big = malloc(RULES_MAX_VALUE_LEN + 1);
  size_t i;

  ASSERT_NOT_NULL(big);
  for (i = 0; i < RULES_MAX_VALUE_LEN + 1; i++)
    big[i] = (char)('a' + i % 26);
  test_write_file(test_tmpdir(), "EXACT", big, RULES_MAX_VALUE_LEN, 0600);
  test_write_file(test_tmpdir(), "OVER", big, RULES_MAX_VALUE_LEN + 1, 0600);
  ASSERT_EQ(strlen(resolve(s, "{EXACT}")), RULES_MAX_VALUE_LEN);
  ASSERT_MEMEQ(resolve(s, "{EXACT}"), big, RULES_MAX_VALUE_LEN);
  resolve_err(s, "{OVER}", "is 8193 bytes after resolving secrets; the limit is 8192", NULL);
  free(big);
  rules_secrets_free(s);
}

/*
 * A regular file whose size says little and whose content is more than a secret may
 * be (a /proc file says 0 bytes; so does a file still being written): the read stops
 * one byte past the limit and refuses it, not the size alone.
 */
TEST(oversized_secret_with_a_small_size)
{
  struct rules_secrets *s = tmp_store();
  char path[512], *v = NULL;
  struct stat st;
  size_t len = 0;

  ASSERT_EQ(stat("/proc/kallsyms", &st), 0);
  ASSERT(S_ISREG(st.st_mode));
  ASSERT_EQ(st.st_size, 0);
  snprintf(path, sizeof(path), "%s/PROC", test_tmpdir());
  ASSERT_EQ(symlink("/proc/kallsyms", path), 0);
  ASSERT_EQ(rules_secrets_get(s, "PROC", &v, &len), -EFBIG);
  ASSERT_NULL(v);
  resolve_err(s, "{PROC}", "is larger than 65536 bytes", NULL);
  rules_secrets_free(s);
}

/* A secrets directory that does not exist: every key is missing, named as such. */
TEST(missing_directory)
{
  struct rules_secrets *s;
  char dir[400], expect[512], *v = NULL;
  size_t len = 0;

  snprintf(dir, sizeof(dir), "%s/not-there", test_tmpdir());
  s = rules_secrets_new(dir);
  ASSERT_NOT_NULL(s);
  ASSERT_EQ(rules_secrets_get(s, "K", &v, &len), -ENOENT);
  ASSERT_NULL(v);
  snprintf(expect, sizeof(expect), "secret K not found in %s", dir);
  resolve_err(s, "{K}", expect, NULL);
  rules_secrets_free(s);
}

/* Pushed secrets are bounded in number: past the bound a new key is refused and the
 * store is unchanged, while a key already held may still be replaced or removed. */
TEST(pushed_keys_bounded)
{
  struct rules_secrets *s = rules_secrets_new(NULL);
  char key[32], *v = NULL;
  size_t len = 0;
  int i, n = 0;

  ASSERT_NOT_NULL(s);
  for (i = 0; i < 100000; i++) {
    snprintf(key, sizeof(key), "K%05d", i);
    if (rules_secrets_set(s, key, "v", 1) != 0)
      break;
    n++;
  }
  ASSERT_EQ(n, 4096);
  ASSERT_EQ(rules_secrets_set(s, key, "v", 1), -ENOSPC);
  ASSERT_EQ(rules_secrets_get(s, key, &v, &len), -ENOENT);
  ASSERT_EQ(rules_secrets_set(s, "K00007", "new", 3), 0);
  ASSERT_EQ(rules_secrets_get(s, "K00007", &v, &len), 0);
  ASSERT_EQ(len, 3);
  ASSERT_STREQ(v, "new");
  rules_secret_free(v, len);
  ASSERT_EQ(rules_secrets_unset(s, "K00007"), 0);
  ASSERT_EQ(rules_secrets_set(s, key, "v", 1), 0);
  rules_secrets_free(s);
}

TEST(not_a_regular_file)
{
  struct rules_secrets *s = tmp_store();
  char path[512], *v = NULL;
  size_t len = 0;

  /* A FIFO would block a reader forever: it must be refused, not opened blocking. */
  snprintf(path, sizeof(path), "%s/FIFO", test_tmpdir());
  ASSERT_EQ(mkfifo(path, 0600), 0);
  snprintf(path, sizeof(path), "%s/DIR", test_tmpdir());
  ASSERT_EQ(mkdir(path, 0700), 0);
  ASSERT_EQ(rules_secrets_get(s, "FIFO", &v, &len), -EINVAL);
  ASSERT_EQ(rules_secrets_get(s, "DIR", &v, &len), -EINVAL);
  resolve_err(s, "{FIFO}", "is not a regular file", NULL);
  resolve_err(s, "{DIR}", "is not a regular file", NULL);
  ASSERT_EQ(rules_secrets_get(s, "DEVNULL", &v, &len), -ENOENT);
  rules_secrets_free(s);
}

/* A value another user could have written is refused: a file others may write, or
 * one of a user other than root, the daemon's and the directory's owner (a missing
 * key planted in a world-writable sticky directory, as Kubernetes mounts them). */
TEST(file_others_could_write)
{
  struct rules_secrets *s = tmp_store();
  char path[512], *v = NULL;
  size_t len = 0;

  test_write_file(test_tmpdir(), "OPEN", "x", 1, 0600);
  snprintf(path, sizeof(path), "%s/OPEN", test_tmpdir());
  ASSERT_EQ(chmod(path, 0646), 0);
  ASSERT_EQ(rules_secrets_get(s, "OPEN", &v, &len), -EPERM);
  ASSERT_NULL(v);
  resolve_err(s, "{OPEN}", "secret OPEN in", NULL);
  resolve_err(s, "{OPEN}", "could have been written by another user", NULL);
  /* Group write is the owner's choice (Kubernetes' fsGroup): accepted. */
  ASSERT_EQ(chmod(path, 0660), 0);
  ASSERT_EQ(rules_secrets_get(s, "OPEN", &v, &len), 0);
  rules_secret_free(v, len);
  v = NULL;
  if (geteuid() == 0) {
    /* root: a file of another user, in root's directory, is refused; the same file
     * in a directory that user owns is that user's to give. */
    test_write_file(test_tmpdir(), "PLANTED", "x", 1, 0600);
    snprintf(path, sizeof(path), "%s/PLANTED", test_tmpdir());
    ASSERT_EQ(chown(path, 65534, 65534), 0);
    ASSERT_EQ(rules_secrets_get(s, "PLANTED", &v, &len), -EPERM);
    ASSERT_EQ(chown(test_tmpdir(), 65534, 65534), 0);
    ASSERT_EQ(rules_secrets_get(s, "PLANTED", &v, &len), 0);
    rules_secret_free(v, len);
    ASSERT_EQ(chown(test_tmpdir(), 0, 0), 0);
  }
  rules_secrets_free(s);
}

/* A symbolic link is its maker's word: one planted by another user is refused even
 * when it points at a file root owns (any file root owns: the daemon's own key), while
 * Kubernetes' layout (KEY -> ..data/KEY, ..data -> ..TIMESTAMP, all root's, in a
 * sticky world-writable directory) still reads. Opening follows the link, so the
 * file's owner alone says nothing about who chose it. Needs root (lchown). */
TEST(symlink_others_planted)
{
  struct rules_secrets *s = tmp_store();
  char path[512], target[512], *v = NULL;
  size_t len = 0;

  if (geteuid() != 0)
    return;
  snprintf(target, sizeof(target), "%s/root-only", test_tmpdir());
  ASSERT_EQ(mkdir(target, 0700), 0);
  test_write_file(target, "TARGET", "root-value", 10, 0600);
  snprintf(target, sizeof(target), "%s/root-only/TARGET", test_tmpdir());
  snprintf(path, sizeof(path), "%s/LINKED", test_tmpdir());
  ASSERT_EQ(symlink(target, path), 0);
  ASSERT_EQ(lchown(path, 65534, 65534), 0);
  ASSERT_EQ(rules_secrets_get(s, "LINKED", &v, &len), -EPERM);
  ASSERT_NULL(v);
  resolve_err(s, "{LINKED}", "could have been written by another user", "root-value");
  /* The same link made by root (or the directory's owner) is theirs to make. */
  ASSERT_EQ(lchown(path, 0, 0), 0);
  ASSERT_EQ(rules_secrets_get(s, "LINKED", &v, &len), 0);
  ASSERT_MEMEQ(v, "root-value", 10);
  rules_secret_free(v, len);
  v = NULL;

  /* Kubernetes' secret volume: root's links in a 1777 directory. */
  snprintf(path, sizeof(path), "%s/..2024_01_01", test_tmpdir());
  ASSERT_EQ(mkdir(path, 0755), 0);
  test_write_file(path, "K8S", "k8s-value", 9, 0644);
  snprintf(path, sizeof(path), "%s/..data", test_tmpdir());
  ASSERT_EQ(symlink("..2024_01_01", path), 0);
  snprintf(path, sizeof(path), "%s/K8S", test_tmpdir());
  ASSERT_EQ(symlink("..data/K8S", path), 0);
  ASSERT_EQ(chmod(test_tmpdir(), 01777), 0);
  ASSERT_EQ(rules_secrets_get(s, "K8S", &v, &len), 0);
  ASSERT_MEMEQ(v, "k8s-value", 9);
  rules_secret_free(v, len);
  ASSERT_EQ(chmod(test_tmpdir(), 0700), 0);
  rules_secrets_free(s);
}

/* A directory the daemon may search but not list (0711) still gives its files: the
 * lookup opens the directory for searching only. Needs root (to become another user). */
/* A directory others may write without the sticky bit: any user may replace root's
 * entries, so nothing in it is read. With the bit (Kubernetes' 1777), root's are. */
TEST(directory_others_may_replace)
{
  struct rules_secrets *s = tmp_store();
  char *v = NULL;
  size_t len = 0;

  test_write_file(test_tmpdir(), "KEY", "v", 1, 0600);
  ASSERT_EQ(chmod(test_tmpdir(), 0777), 0);
  ASSERT_EQ(rules_secrets_get(s, "KEY", &v, &len), -EPERM);
  resolve_err(s, "{KEY}", "could have been written by another user", NULL);
  ASSERT_EQ(chmod(test_tmpdir(), 01777), 0);
  ASSERT_EQ(rules_secrets_get(s, "KEY", &v, &len), 0);
  rules_secret_free(v, len);
  ASSERT_EQ(chmod(test_tmpdir(), 0700), 0);
  rules_secrets_free(s);
}

TEST(search_only_directory)
{
  struct rules_secrets *s;
  char dir[512], path[600], *v = NULL;
  size_t len = 0;

  if (geteuid() != 0)
    return;
  snprintf(dir, sizeof(dir), "%s/x-only", test_tmpdir());
  ASSERT_EQ(mkdir(dir, 0711), 0);
  test_write_file(dir, "KEY", "v", 1, 0400);
  snprintf(path, sizeof(path), "%s/KEY", dir);
  ASSERT_EQ(chown(path, 65534, 65534), 0);
  ASSERT_EQ(chmod(test_tmpdir(), 0711), 0);
  s = rules_secrets_new(dir);
  ASSERT_NOT_NULL(s);
  ASSERT_EQ(seteuid(65534), 0);
  ASSERT_EQ(rules_secrets_get(s, "KEY", &v, &len), 0);
  ASSERT_EQ(seteuid(0), 0);
  ASSERT_MEMEQ(v, "v", 1);
  rules_secret_free(v, len);
  rules_secrets_free(s);
  ASSERT_EQ(chmod(test_tmpdir(), 0700), 0);
}

TEST(unreadable_file)
{
  struct rules_secrets *s = tmp_store();

  if (geteuid() == 0) {
    /* root reads mode 000 files; nothing to test. */
    rules_secrets_free(s);
    return;
  }
  test_write_file(test_tmpdir(), "LOCKED", "x", 1, 0000);
  resolve_err(s, "{LOCKED}", "cannot read secret LOCKED in", NULL);
  resolve_err(s, "{LOCKED}", "Permission denied", NULL);
  rules_secrets_free(s);
}

static void collect(const char *key, void *arg)
{
  char *buf = arg;

  strcat(buf, key);
  strcat(buf, ";");
}

/* Secrets that each fit in a header value but together do not: the template is
 * refused with its length, and nothing is written past the value being built. */
TEST(secrets_together_too_long)
{
  struct rules_secrets *s = tmp_store();
  char *big = malloc(5000);

  ASSERT_NOT_NULL(big);
  memset(big, 'x', 5000);
  ASSERT_EQ(rules_secrets_set(s, "BIG", big, 5000), 0);
  ASSERT_EQ(strlen(resolve(s, "{BIG}")), 5000);
  resolve_err(s, "{BIG}{BIG}{BIG}", "is 15000 bytes after resolving secrets; the limit is 8192",
              "xxxx");
  free(big);
  rules_secrets_free(s);
}

TEST(in_memory_values)
{
  struct rules_secrets *s = tmp_store();
  char list[256] = "", *v = NULL;
  size_t len = 0;

  test_write_file(test_tmpdir(), "K", "from-file\n", 10, 0600);
  ASSERT_STREQ(rules_secrets_dir(s), test_tmpdir());
  ASSERT_STREQ(resolve(s, "{K}"), "from-file");
  ASSERT_EQ(rules_secrets_set(s, "K", "from-api", 8), 0);
  ASSERT_STREQ(resolve(s, "{K}"), "from-api");
  ASSERT_EQ(rules_secrets_set(s, "K", "again", 5), 0);
  ASSERT_STREQ(resolve(s, "{K}"), "again");
  ASSERT_EQ(rules_secrets_set(s, "B", "b", 1), 0);
  ASSERT_EQ(rules_secrets_set(s, "A", "a\n", 2), 0);
  rules_secrets_list(s, collect, list);
  ASSERT_STREQ(list, "A;B;K;");
  /* API values are taken as given: no newline trimming, still validated. */
  ASSERT_EQ(rules_secrets_get(s, "A", &v, &len), 0);
  ASSERT_EQ(len, 2);
  rules_secret_free(v, len);
  resolve_err(s, "{A}", "secret A (set through the API) contains a control character", NULL);
  ASSERT_EQ(rules_secrets_unset(s, "K"), 0);
  ASSERT_EQ(rules_secrets_unset(s, "K"), -ENOENT);
  ASSERT_STREQ(resolve(s, "{K}"), "from-file");
  ASSERT_EQ(rules_secrets_set(s, "../x", "v", 1), -EINVAL);
  ASSERT_EQ(rules_secrets_set(s, ".x", "v", 1), -EINVAL);
  ASSERT_EQ(rules_secrets_set(s, "big", "v", RULES_MAX_SECRET_LEN + 1), -EFBIG);
  /* The limit itself is allowed; keys may be lowercase. */
  {
    char *max = calloc(1, RULES_MAX_SECRET_LEN);

    ASSERT_NOT_NULL(max);
    ASSERT_EQ(rules_secrets_set(s, "max", max, RULES_MAX_SECRET_LEN), 0);
    free(max);
  }
  ASSERT_EQ(rules_secrets_set(s, "api_key", "k", 1), 0);
  ASSERT_STREQ(resolve(s, "{api_key}"), "k");
  ASSERT_EQ(rules_secrets_set(s, "E", "", 0), 0);
  resolve_err(s, "{E}", "secret E (set through the API) is empty", NULL);
  rules_secrets_free(s);
  rules_secrets_free(NULL);
  rules_secret_free(NULL, 0);
}

/* A config keeps the values it resolved: later changes apply at the next push. */
TEST(values_resolved_at_push)
{
  struct rules_secrets *s = tmp_store();
  struct rules_request_decision r;
  struct rules_config *cfg;
  char json[512];

  test_write_file(test_tmpdir(), "K", "v1", 2, 0600);
  secret_json(json, sizeof(json), "{K}");
  cfg = parse_ok(json, s);
  test_write_file(test_tmpdir(), "K", "v2", 2, 0600);
  req_decide(cfg, "x.com", 443, "GET", "/", &r);
  ASSERT_STREQ(r.headers[0].value, "v1");
  rules_config_unref(cfg);
  ASSERT_STREQ(resolve(s, "{K}"), "v2");
  rules_secrets_free(s);
}

/* Opens of files in dir, read from an inotify descriptor watching it (IN_OPEN). */
static size_t count_opens(int ifd)
{
  char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  size_t opens = 0;
  ssize_t n, off;

  for (;;) {
    n = read(ifd, buf, sizeof(buf));
    if (n <= 0)
      break;
    for (off = 0; off < n;) {
      const struct inotify_event *e = (const struct inotify_event *)(buf + off);

      ASSERT((e->mask & IN_Q_OVERFLOW) == 0);
      if (e->mask & IN_OPEN)
        opens++;
      off += (ssize_t)(sizeof(*e) + e->len);
    }
  }
  return opens;
}

/*
 * A config may name the same secret in many places (a 1 MiB config holds over 300,000
 * {K}), and every {K} used to be a read of the secret file: 7 s of the daemon's only
 * loop, stalling every sandbox, for one valid push. Each secret is read once per
 * config, and a config naming more distinct secrets than RULES_MAX_CONFIG_SECRETS is
 * refused (one error) without looking the others up.
 */
TEST(secret_read_once_per_config)
{
  struct rules_secrets *s = tmp_store();
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  char *json, *p;
  size_t i, len = 256 * 1024;
  int ifd;

  test_write_file(test_tmpdir(), "K", "v\n", 2, 0600);
  test_write_file(test_tmpdir(), "L", "w\n", 2, 0600);
  ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT(ifd >= 0);
  ASSERT(inotify_add_watch(ifd, test_tmpdir(), IN_OPEN) >= 0);
  json = malloc(len);
  ASSERT_NOT_NULL(json);
  /* Two headers, each {K}{L} 1,000 times: 4,000 references to 2 secrets. */
  p = json + sprintf(json, "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],"
                           "\"headers\":[");
  for (i = 0; i < 2; i++) {
    size_t j;

    p += sprintf(p, "%s{\"name\":\"X-%zu\",\"type\":\"workspace_secret\",\"value\":\"",
                 i ? "," : "", i);
    for (j = 0; j < 1000; j++)
      p += sprintf(p, "{K}{L}");
    p += sprintf(p, "\"}");
  }
  sprintf(p, "]}]}");
  cfg = parse_ok(json, s);
  ASSERT_EQ(count_opens(ifd), 2);
  rules_config_unref(cfg);

  /* Distinct secrets beyond the limit, each of them pushed: refused. */
  for (i = 0; i < RULES_MAX_CONFIG_SECRETS + 100; i++) {
    char key[32];

    snprintf(key, sizeof(key), "K%zu", i);
    ASSERT_EQ(rules_secrets_set(s, key, "v", 1), 0);
  }
  p = json + sprintf(json, "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
                           "{\"name\":\"X\",\"type\":\"workspace_secret\",\"value\":\"");
  for (i = 0; i < RULES_MAX_CONFIG_SECRETS + 100; i++)
    p += sprintf(p, "{K%zu}", i);
  sprintf(p, "\"}]}]}");
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(json, strlen(json), "", s, &cfg, &d), -EINVAL);
  ASSERT_NULL(cfg);
  if (d.count != 1 || strstr(d.entries[0].message, "names more than 256 distinct secrets") ==
                          NULL) {
    print_diag(&d);
    TEST_FAIL_("no error about the number of distinct secrets");
  }
  rules_diag_free(&d);
  free(json);
  close(ifd);
  rules_secrets_free(s);
}

/*
 * As many distinct secrets as a config may name, each named twice and in an order
 * unlike their sorted one: accepted, and each file read once. (A memo that did not
 * find a secret it holds would read it again, and count it twice towards the limit.)
 */
TEST(distinct_secrets_up_to_the_limit_each_read_once)
{
  struct rules_secrets *s = tmp_store();
  struct rules_request_decision r;
  struct rules_config *cfg;
  size_t i, len = 64 * 1024;
  char *json, *p;
  int ifd;

  for (i = 0; i < RULES_MAX_CONFIG_SECRETS; i++) {
    char key[32];

    snprintf(key, sizeof(key), "K%03zu", i);
    test_write_file(test_tmpdir(), key, "v", 1, 0600);
  }
  ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT(ifd >= 0);
  ASSERT(inotify_add_watch(ifd, test_tmpdir(), IN_OPEN) >= 0);
  json = malloc(len);
  ASSERT_NOT_NULL(json);
  /* K255 .. K000, then K000 .. K255: 512 references to 256 secrets. */
  p = json + sprintf(json, "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],"
                           "\"headers\":[{\"name\":\"X\",\"type\":\"workspace_secret\","
                           "\"value\":\"");
  for (i = 0; i < RULES_MAX_CONFIG_SECRETS; i++)
    p += sprintf(p, "{K%03zu}", RULES_MAX_CONFIG_SECRETS - 1 - i);
  for (i = 0; i < RULES_MAX_CONFIG_SECRETS; i++)
    p += sprintf(p, "{K%03zu}", i);
  sprintf(p, "\"}]}]}");
  cfg = parse_ok(json, s);
  ASSERT_EQ(count_opens(ifd), RULES_MAX_CONFIG_SECRETS);
  req_decide(cfg, "x.com", 443, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_EQ(r.headers[0].value_len, 2 * RULES_MAX_CONFIG_SECRETS);
  rules_config_unref(cfg);
  free(json);
  close(ifd);
  rules_secrets_free(s);
}

/* Reading a secret file closes what it opened, whether the read succeeds or the file
 * is refused: the daemon reads them on every config push. */
TEST(secret_reads_leave_no_descriptor_open)
{
  struct rules_secrets *s = tmp_store();
  static const char *const keys[] = { "OK", "MISSING", "DIR", "BIG", "OPEN" };
  char *big = malloc(RULES_MAX_SECRET_LEN + 1), *v = NULL, dir[512];
  size_t len = 0, i;
  int before;

  ASSERT_NOT_NULL(big);
  memset(big, 'a', RULES_MAX_SECRET_LEN + 1);
  test_write_file(test_tmpdir(), "OK", "v\n", 2, 0600);
  test_write_file(test_tmpdir(), "BIG", big, RULES_MAX_SECRET_LEN + 1, 0600);
  test_write_file(test_tmpdir(), "OPEN", "v", 1, 0602);
  snprintf(dir, sizeof(dir), "%s/DIR", test_tmpdir());
  ASSERT_EQ(mkdir(dir, 0700), 0);
  before = test_open_fds();
  for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    int r = rules_secrets_get(s, keys[i], &v, &len);

    ASSERT_EQ(r, i == 0 ? 0 : i == 1 ? -ENOENT : i == 2 ? -EINVAL : i == 3 ? -EFBIG : -EPERM);
    rules_secret_free(v, len);
    v = NULL;
    if (test_open_fds() != before)
      TEST_FAIL_("reading %s left %d descriptors open", keys[i], test_open_fds() - before);
  }
  free(big);
  rules_secrets_free(s);
}

/* Appends key and a comma to the list in arg (a char[256]). */
static void list_cb(const char *key, void *arg)
{
  char *out = arg;
  size_t n = strlen(out);

  snprintf(out + n, 256 - n, "%s,", key);
}

/* Unsetting the first of as many values as the table has room for (8 before it first
 * grows) keeps the others, in order. */
TEST(unset_from_a_full_table)
{
  struct rules_secrets *s = rules_secrets_new(NULL);
  char key[8], list[256] = "", *v = NULL;
  size_t len = 0;
  int i;

  ASSERT_NOT_NULL(s);
  for (i = 0; i < 8; i++) {
    snprintf(key, sizeof(key), "K%d", i);
    ASSERT_EQ(rules_secrets_set(s, key, key, strlen(key)), 0);
  }
  ASSERT_EQ(rules_secrets_unset(s, "K0"), 0);
  ASSERT_EQ(rules_secrets_unset(s, "K0"), -ENOENT);
  rules_secrets_list(s, list_cb, list);
  ASSERT_STREQ(list, "K1,K2,K3,K4,K5,K6,K7,");
  ASSERT_EQ(rules_secrets_get(s, "K7", &v, &len), 0);
  ASSERT_STREQ(v, "K7");
  rules_secret_free(v, len);
  rules_secrets_free(s);
}
