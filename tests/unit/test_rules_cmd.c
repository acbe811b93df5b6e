/*
 * `authproxy config check|show`: exit codes, the error lines on stderr, the summary
 * and the redacted output on stdout.
 */
#include <fcntl.h>
#include <unistd.h>

#include "proxy/commands.h"
#include "test_rules_helpers.h"

struct run {
  int status;
  char out[65536];
  char err[65536];
};

static void slurp(const char *path, char *buf, size_t size)
{
  FILE *f = fopen(path, "rb");
  size_t n;

  ASSERT_NOT_NULL(f);
  n = fread(buf, 1, size - 1, f);
  buf[n] = '\0';
  fclose(f);
}

/* Runs `authproxy config ARGS...` with stdin from the file `in` (may be NULL). */
static void run_config(struct run *r, const char *in, int argc, const char **args)
{
  char out[512], err[512], *argv[16];
  int saved[3], fd, i;

  ASSERT_LT(argc, 15);
  argv[0] = (char *)(uintptr_t) "config";
  for (i = 0; i < argc; i++)
    argv[i + 1] = (char *)(uintptr_t)args[i];
  argv[argc + 1] = NULL;
  snprintf(out, sizeof(out), "%s/stdout", test_tmpdir());
  snprintf(err, sizeof(err), "%s/stderr", test_tmpdir());
  fflush(NULL);
  for (i = 0; i < 3; i++)
    saved[i] = dup(i);
  fd = in ? open(in, O_RDONLY) : open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  dup2(fd, 0);
  close(fd);
  fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fd, 1);
  close(fd);
  fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fd, 2);
  close(fd);
  r->status = proxy_cmd_config(argc + 1, argv);
  fflush(NULL);
  for (i = 0; i < 3; i++) {
    dup2(saved[i], i);
    close(saved[i]);
  }
  slurp(out, r->out, sizeof(r->out));
  slurp(err, r->err, sizeof(r->err));
}

#define RUN(r, in, ...)                                                           \
  do {                                                                            \
    const char *args_[] = { __VA_ARGS__ };                                        \
    run_config((r), (in), (int)(sizeof(args_) / sizeof(args_[0])), args_);        \
  } while (0)

static struct run r;

TEST(check_public_examples)
{
  const char *dir = test_data_path("config/secrets");

  RUN(&r, NULL, "check", test_data_path("config/public-multi.json"), "--secrets-dir", dir);
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "public-multi.json: ok: 3 rules, 4 headers (3 from secrets");
  ASSERT_STREQ(r.err, "");
  RUN(&r, NULL, "check", "--secrets-dir", dir, test_data_path("config/public-single.json"));
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "ok: 1 rule, 1 header");
}

TEST(check_full_example)
{
  char arg[600];

  snprintf(arg, sizeof(arg), "--secrets-dir=%s", test_data_path("config/secrets"));
  RUN(&r, NULL, "check", test_data_path("../../examples/full.json"), arg);
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "unix callback");
}

/* Runs `config check` on text; the summary still says ok and the status is 0. */
static void check_text(const char *text)
{
  char path[512];

  test_write_file(test_tmpdir(), "w.json", text, strlen(text), 0600);
  snprintf(path, sizeof(path), "%s/w.json", test_tmpdir());
  RUN(&r, NULL, "check", path);
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "w.json: ok: ");
}

/* A config check passes for a config whose parts can never do what they say: it warns
 * for each (they used to pass without a word). */
TEST(check_warns_dead_parts)
{
  /* A rule under default deny for a host no allow entry covers never applies: egress
   * refuses the host first. A rule whose host is allowed is not warned about. */
  check_text("{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"api.openai.com\","
             "\"api.anthropic.com\"],\"headers\":[{\"name\":\"X-K\",\"type\":\"plaintext\","
             "\"value\":\"v\"}]}],\"egress\":{\"default\":\"deny\",\"allow\":"
             "[\"api.openai.com\"]}}");
  ASSERT_CONTAINS(r.err, "config: rules[0].match_hosts[1]: warning: egress never lets the "
                         "sandbox reach api.anthropic.com (egress.default is deny and no "
                         "egress.allow entry covers it)");
  ASSERT_NOT_CONTAINS(r.err, "match_hosts[0]");
  /* no_proxy relays its hosts untouched: a rule and the callback never apply there. */
  check_text("{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"artifacts.internal:8443\"],"
             "\"headers\":[{\"name\":\"X-K\",\"type\":\"plaintext\",\"value\":\"v\"}]}],"
             "\"no_proxy\":[\".internal\"],\"callback\":{\"url\":\"http://127.0.0.1:9/\","
             "\"match_hosts\":[\"api.corp.example\",\"*.corp.example\"]},"
             "\"egress\":{\"deny\":[\"api.corp.example\"]}}");
  ASSERT_CONTAINS(r.err, "config: rules[0].match_hosts[0]: warning: no_proxy[0] relays "
                         "artifacts.internal untouched");
  ASSERT_CONTAINS(r.err, "config: callback.match_hosts[0]: warning: egress.deny[0] denies "
                         "api.corp.example");
  ASSERT_NOT_CONTAINS(r.err, "match_hosts[1]");
  /* An allow entry with methods under default allow denies nothing. */
  check_text("{\"egress\":{\"default\":\"allow\",\"allow\":[{\"hosts\":[\"github.com\"],"
             "\"methods\":[\"GET\",\"HEAD\"]}]}}");
  ASSERT_CONTAINS(r.err, "config: egress.allow[0]: warning: egress.default is allow, so "
                         "this entry refuses nothing");
  /* Deny wins: an allow entry a deny entry covers on every port never applies. */
  check_text("{\"egress\":{\"allow\":[\"pypi.org\",{\"hosts\":[\"github.com:443\"]}],"
             "\"deny\":[\"*\"]}}");
  ASSERT_CONTAINS(r.err, "config: egress.allow[0]: warning: egress.deny[0] denies pypi.org");
  ASSERT_CONTAINS(r.err, "config: egress.allow[1].hosts[0]: warning: egress.deny[0] denies "
                         "github.com");
  /* A remap to the host's loopback without a port opens every local port to the
   * sandbox, unless egress holds the name to its ports. */
  check_text("{\"dns\":{\"remap\":{\"pypi.org\":\"127.0.0.1\",\"npm.example\":\"localhost\","
             "\"a.example\":\"127.0.0.1:8080\",\"b.example\":\"mirror.internal\"}}}");
  ASSERT_CONTAINS(r.err, "config: dns.remap[\"pypi.org\"]: warning: the target has no port: "
                         "the sandbox reaches every port of 127.0.0.1");
  ASSERT_CONTAINS(r.err, "config: dns.remap[\"npm.example\"]: warning: ");
  ASSERT_NOT_CONTAINS(r.err, "a.example");
  ASSERT_NOT_CONTAINS(r.err, "b.example");
  check_text("{\"dns\":{\"remap\":{\"pypi.org\":\"127.0.0.1\"}},\"egress\":{\"default\":"
             "\"deny\",\"allow\":[\"pypi.org:443\",\"pypi.org:80\"]}}");
  ASSERT_STREQ(r.err, "");
}

/* A large config is judged in bounded time: each name used to be decided at every
 * port any entry names, each decision comparing every entry (names x ports x entries),
 * and this config (8k ports, 20k names) kept `config check`, and the jail's start,
 * busy for hours. A name that can never be reached is still warned about. */
TEST(check_large_config_is_bounded)
{
  size_t cap = 1 << 20, n = 0, i, j;
  char *t = malloc(cap);

  ASSERT_NOT_NULL(t);
  n += (size_t)snprintf(t + n, cap - n, "{\"egress\":{\"default\":\"deny\",\"allow\":[");
  for (i = 0; i < 8; i++) {
    n += (size_t)snprintf(t + n, cap - n, "{\"hosts\":[");
    for (j = 0; j < 1024; j++)
      n += (size_t)snprintf(t + n, cap - n, "%s\"z%zu.x:%zu\"", j ? "," : "", j,
                            1000 + i * 1024 + j);
    n += (size_t)snprintf(t + n, cap - n, "]},");
  }
  n += (size_t)snprintf(t + n, cap - n, "\"*.y:9999\"]},\"rules\":[");
  for (i = 0; i < 200; i++) {
    n += (size_t)snprintf(t + n, cap - n, "%s{\"name\":\"r%zu\",\"match_hosts\":[%s", i ? "," : "",
                          i, i == 0 ? "\"dead.z\"," : "");
    for (j = 0; j < 100; j++)
      n += (size_t)snprintf(t + n, cap - n, "%s\"a%zu-%zu.y\"", j ? "," : "", i, j);
    n += (size_t)snprintf(t + n, cap - n,
                          "],\"headers\":[{\"name\":\"X-K\",\"type\":\"plaintext\","
                          "\"value\":\"v\"}]}");
  }
  n += (size_t)snprintf(t + n, cap - n, "]}");
  ASSERT_LT(n, cap);
  check_text(t);
  free(t);
  ASSERT_CONTAINS(r.err, "config: rules[0].match_hosts[0]: warning: egress never lets the "
                         "sandbox reach dead.z");
  ASSERT_NOT_CONTAINS(r.err, ".y ");
}

/* The shipped examples are legitimate configs: no warning. */
TEST(check_examples_do_not_warn)
{
  const char *dir = test_data_path("config/secrets");

  RUN(&r, NULL, "check", test_data_path("../../examples/full.json"), "--secrets-dir", dir);
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.err, "");
  RUN(&r, NULL, "check", test_data_path("config/public-multi.json"), "--secrets-dir", dir);
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.err, "");
}

TEST(check_reports_every_error)
{
  static const char bad[] =
      "{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"x.com\"],\"headers\":["
      "{\"name\":\"X Bad\",\"type\":\"plaintext\",\"value\":\"v\"}]},"
      "{\"name\":\"b\",\"match_hosts\":[\"y.com\"],\"headers\":["
      "{\"name\":\"Authorization\",\"type\":\"workspace_secret\",\"value\":\"Bearer {NOPE}\"}]}]}";
  char expect[512];

  test_write_file(test_tmpdir(), "bad.json", bad, sizeof(bad) - 1, 0600);
  snprintf(expect, sizeof(expect), "%s/bad.json", test_tmpdir());
  RUN(&r, NULL, "check", expect, "--secrets-dir", test_data_path("config/secrets"));
  ASSERT_EQ(r.status, 1);
  ASSERT_STREQ(r.out, "");
  snprintf(expect, sizeof(expect),
           "config: rules[0].headers[0].name: \"X Bad\" is not an HTTP header token");
  ASSERT_CONTAINS(r.err, expect);
  snprintf(expect, sizeof(expect),
           "config: rules[1].headers[0].value: secret NOPE not found in %s (create the file "
           "%s/NOPE)\n",
           test_data_path("config/secrets"), test_data_path("config/secrets"));
  ASSERT_CONTAINS(r.err, expect);
  /* Nothing serves an API to push it to here (it used to say to PUT it). */
  ASSERT_NOT_CONTAINS(r.err, "PUT");
}

TEST(check_without_secrets_dir)
{
  RUN(&r, NULL, "check", test_data_path("config/public-single.json"));
  ASSERT_EQ(r.status, 1);
  ASSERT_CONTAINS(r.err, "config: rules[0].headers[0].value: secret OPENAI_API_KEY cannot be "
                         "resolved: no secret store is configured (--secrets-dir DIR");
  ASSERT_NOT_CONTAINS(r.err, "PUT");
  /* show reads the config as a push would too (README: both take --secrets-dir). */
  RUN(&r, NULL, "show", test_data_path("config/public-single.json"));
  ASSERT_EQ(r.status, 1);
  ASSERT_STREQ(r.out, "");
  ASSERT_CONTAINS(r.err, "secret OPENAI_API_KEY cannot be resolved");
}

TEST(invalid_json_has_line_and_column)
{
  static const char text[] = "{\n  \"rules\": [\n    {\"name\": \"a\",}\n  ]\n}\n";
  char path[512];

  test_write_file(test_tmpdir(), "syntax.json", text, sizeof(text) - 1, 0600);
  snprintf(path, sizeof(path), "%s/syntax.json", test_tmpdir());
  RUN(&r, NULL, "check", path);
  ASSERT_EQ(r.status, 1);
  ASSERT_CONTAINS(r.err, "syntax.json: invalid JSON at line 3, column ");
}

TEST(unreadable_input)
{
  char path[512];

  snprintf(path, sizeof(path), "%s/missing.json", test_tmpdir());
  RUN(&r, NULL, "check", path);
  ASSERT_EQ(r.status, 1);
  ASSERT_CONTAINS(r.err, "config: cannot read ");
  ASSERT_CONTAINS(r.err, "missing.json: No such file or directory");
  RUN(&r, NULL, "check", test_tmpdir());
  ASSERT_EQ(r.status, 1);
  ASSERT_CONTAINS(r.err, "Is a directory");
  RUN(&r, NULL, "check", test_data_path("config/public-single.json"), "--secrets-dir", path);
  ASSERT_EQ(r.status, 1);
  ASSERT_CONTAINS(r.err, "--secrets-dir ");
  ASSERT_CONTAINS(r.err, "No such file or directory");
}

TEST(stdin_input)
{
  static const char text[] = "{\"no_proxy\":[\"localhost\"]}";
  char path[512];

  test_write_file(test_tmpdir(), "in.json", text, sizeof(text) - 1, 0600);
  snprintf(path, sizeof(path), "%s/in.json", test_tmpdir());
  RUN(&r, path, "check", "-");
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "<stdin>: ok: 0 rules");
  RUN(&r, path, "show", "-");
  ASSERT_EQ(r.status, 0);
  ASSERT_STREQ(r.out, "{\n  \"no_proxy\": [\"localhost\"]\n}\n");
}

TEST(show_is_redacted)
{
  RUN(&r, NULL, "show", test_data_path("../../examples/full.json"), "--secrets-dir",
      test_data_path("config/secrets"));
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "\"value\": \"Bearer {OPENAI_API_KEY}\"");
  ASSERT_NOT_CONTAINS(r.out, "sk-test-openai-0000");
  ASSERT_NOT_CONTAINS(r.out, "opaque-example-5555");
  ASSERT_NOT_CONTAINS(r.out, "internal-pass-4444");
  ASSERT_CONTAINS(r.out, "\"name\": \"X-Api-Key\",\n          \"type\": \"opaque\"\n");
}

TEST(usage)
{
  RUN(&r, NULL, "--help");
  ASSERT_EQ(r.status, 0);
  ASSERT_CONTAINS(r.out, "usage: authproxy config check FILE [--secrets-dir DIR]");
  RUN(&r, NULL, "check", "-h");
  ASSERT_EQ(r.status, 0);
  RUN(&r, NULL, "lint", "x.json");
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, "unknown subcommand lint");
  RUN(&r, NULL, "check");
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, "check needs a FILE");
  RUN(&r, NULL, "check", "a.json", "b.json");
  ASSERT_EQ(r.status, 2);
  RUN(&r, NULL, "check", "a.json", "--secrets-dir");
  ASSERT_EQ(r.status, 2);
  RUN(&r, NULL, "check", "a.json", "--bogus");
  ASSERT_EQ(r.status, 2);
  ASSERT_CONTAINS(r.err, "unknown option --bogus");
}
