/*
 * The runtime adapters' pure parts: the control API client's answer parser and name
 * derivation (apiclient.c), the CNI plugin's configuration, results and environment
 * checks (cni_conf.c), and the OCI hook's state parser (ocihook.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proxy/apiclient.h"
#include "proxy/cni.h"
#include "proxy/ocihook.h"
#include "proxy/strbuf.h"
#include "proxy/utf8.h"
#include "rules/rules.h"
#include "test.h"

/* ---- apiclient ---- */

static int parse(const char *raw, struct proxy_api_answer *a)
{
  return proxy_api_parse_answer(raw, strlen(raw), a);
}

TEST(answer_with_content_length)
{
  struct proxy_api_answer a;

  ASSERT_EQ(parse("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                  "Content-Length: 11\r\nConnection: close\r\n\r\n{\"a\": true}trailing", &a),
            0);
  ASSERT_EQ(a.status, 201);
  ASSERT_EQ(a.body_len, 11);
  ASSERT_STREQ(a.body, "{\"a\": true}");
  proxy_api_answer_free(&a);
  ASSERT_NULL(a.body);
}

TEST(answer_to_end_of_connection)
{
  struct proxy_api_answer a;

  ASSERT_EQ(parse("HTTP/1.1 404 Not Found\r\n\r\nbody", &a), 0);
  ASSERT_EQ(a.status, 404);
  ASSERT_STREQ(a.body, "body");
  proxy_api_answer_free(&a);
  ASSERT_EQ(parse("HTTP/1.1 200\r\nContent-Length:   0  \r\n\r\n", &a), 0);
  ASSERT_EQ(a.status, 200);
  ASSERT_EQ(a.body_len, 0);
  proxy_api_answer_free(&a);
}

TEST(answer_malformed)
{
  static const char *const bad[] = {
    "",
    "HTTP/1.1 200 OK\r\n",                                      /* no end of head */
    "HTTP/1.0 200 OK\r\n\r\n",                                  /* not 1.1 */
    "HTTP/1.1 2000 OK\r\n\r\n",                                 /* four digits */
    "HTTP/1.1 099 OK\r\n\r\n",                                  /* out of range */
    "HTTP/1.1 20x OK\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",       /* cut short */
    "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",   /* too many digits */
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
    "HTTP/1.1 200 OK\nX: y\r\n\r\n",                           /* bare LF */
  };
  struct proxy_api_answer a;
  size_t i;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (parse(bad[i], &a) != -EPROTO)
      TEST_FAIL_("accepted: %s", bad[i]);
    ASSERT_NULL(a.body);
  }
  /* A NUL in the body would cut the JSON a caller parses. */
  ASSERT_EQ(proxy_api_parse_answer("HTTP/1.1 200 OK\r\n\r\na\0b", 22, &a), -EPROTO);
}

TEST(error_text_and_parse)
{
  struct proxy_api_answer a;
  const char *code, *msg;
  const cJSON *details;
  cJSON *root;
  char buf[256], small[40];

  ASSERT_EQ(parse("HTTP/1.1 422 Unprocessable\r\n\r\n{\"error\":{\"code\":\"invalid_config\","
                  "\"message\":\"rejected\",\"details\":[{\"path\":\"proxy_config.rules[0].name\","
                  "\"message\":\"must not be empty\"},{\"path\":\"proxy_config.x\","
                  "\"message\":\"unknown\"}]}}", &a), 0);
  ASSERT_EQ(proxy_api_error_parse(&a, &root, &code, &msg, &details), 0);
  ASSERT_NOT_NULL(root);
  ASSERT_STREQ(code, "invalid_config");
  ASSERT_STREQ(msg, "rejected");
  ASSERT_EQ(cJSON_GetArraySize(details), 2);
  cJSON_Delete(root);
  ASSERT_EQ(proxy_api_error_text(&a, buf, sizeof(buf)), 0);
  ASSERT_STREQ(buf, "invalid_config: rejected; proxy_config.rules[0].name: must not be empty; "
                    "proxy_config.x: unknown");
  ASSERT_EQ(proxy_api_error_text(&a, small, sizeof(small)), 0);
  ASSERT_EQ(strlen(small), sizeof(small) - 1);
  ASSERT_STREQ(small + sizeof(small) - 4, "...");
  proxy_api_answer_free(&a);

  ASSERT_EQ(parse("HTTP/1.1 502 Bad Gateway\r\n\r\nnot\njson", &a), 0);
  ASSERT_EQ(proxy_api_error_parse(&a, &root, &code, &msg, &details), -EBADMSG);
  ASSERT_NULL(root);
  ASSERT_EQ(proxy_api_body_parse(&a, &root), -EBADMSG);
  ASSERT_NULL(root);
  ASSERT_EQ(proxy_api_error_text(&a, buf, sizeof(buf)), 0);
  ASSERT_STREQ(buf, "HTTP 502: not json");
  proxy_api_answer_free(&a);

  /* JSON, but not an API error. */
  ASSERT_EQ(parse("HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"gone\"}", &a), 0);
  ASSERT_EQ(proxy_api_error_parse(&a, &root, &code, &msg, &details), -EBADMSG);
  ASSERT_NULL(root);
  ASSERT_EQ(proxy_api_body_parse(&a, &root), 0);
  ASSERT_NOT_NULL(root);
  cJSON_Delete(root);
  proxy_api_answer_free(&a);
}

/*
 * Out of memory decoding an answer is said, never taken for an answer of another
 * kind: ctl, the CNI plugin and the OCI hook read an error whose code they could not
 * decode as a different error (a sandbox already detached as a failure to detach it;
 * a daemon's answer as "not JSON"). Each of the decoding's cJSON allocations fails
 * in turn.
 */
TEST(decoding_out_of_memory)
{
  struct proxy_api_answer a;
  const char *code, *msg;
  const cJSON *details;
  cJSON *root;
  char buf[256];
  int n, r, done, oom;

  ASSERT_EQ(parse("HTTP/1.1 404 Not Found\r\n\r\n{\"error\":{\"code\":\"sandbox_not_found\","
                  "\"message\":\"no such sandbox\",\"details\":[{\"path\":\"p\","
                  "\"message\":\"m\"}]}}", &a), 0);
  for (int fn = 0; fn < 3; fn++) {
    for (n = 1, done = 0, oom = 0; n < 100 && !done; n++) {
      test_json_fail_at(n);
      if (fn == 0) {
        r = proxy_api_body_parse(&a, &root);
      } else if (fn == 1) {
        r = proxy_api_error_parse(&a, &root, &code, &msg, &details);
      } else {
        root = NULL;
        r = proxy_api_error_text(&a, buf, sizeof(buf));
      }
      test_json_plain();
      done = test_json_allocs() < n; /* no allocation failed: the whole answer */
      if (done) {
        ASSERT_EQ(r, 0);
        if (fn == 1)
          ASSERT_STREQ(code, "sandbox_not_found");
        if (fn == 2)
          ASSERT_STREQ(buf, "sandbox_not_found: no such sandbox; p: m");
      } else {
        ASSERT_EQ(r, -ENOMEM);
        ASSERT_NULL(root);
        oom++;
      }
      cJSON_Delete(root);
    }
    ASSERT(done);
    ASSERT_GT(oom, 5); /* the tree's items, its strings */
  }
  proxy_api_answer_free(&a);
}

TEST(derive_name)
{
  char name[PROXY_API_NAME_SIZE], other[PROXY_API_NAME_SIZE];
  char id64[65];

  ASSERT_EQ(proxy_api_derive_name("cni-", "abc_1.2-3", name, sizeof(name)), 0);
  ASSERT_STREQ(name, "cni-abc_1.2-3");
  /* A 64-hex id (containerd, podman) is longer than 60: cut and hashed. */
  memset(id64, 'a', 64);
  id64[64] = '\0';
  ASSERT_EQ(proxy_api_derive_name("oci-", id64, name, sizeof(name)), 0);
  ASSERT_EQ(strlen(name), 4 + 51 + 9);
  ASSERT_EQ(strncmp(name, "oci-aaaa", 8), 0);
  id64[63] = 'b'; /* differs after the cut: the hash tells them apart */
  ASSERT_EQ(proxy_api_derive_name("oci-", id64, other, sizeof(other)), 0);
  ASSERT_NE(strcmp(name, other), 0);
  /* Bytes outside the name alphabet are replaced, and the hash keeps "a/b" and "a_b"
   * apart. */
  ASSERT_EQ(proxy_api_derive_name("cni-", "a/b", name, sizeof(name)), 0);
  ASSERT_EQ(strncmp(name, "cni-a_b-", 8), 0);
  ASSERT_EQ(proxy_api_derive_name("cni-", "a_b", other, sizeof(other)), 0);
  ASSERT_STREQ(other, "cni-a_b");
  ASSERT_EQ(proxy_api_derive_name("cni-", "", name, sizeof(name)), -EINVAL);
  ASSERT_EQ(proxy_api_derive_name("-x", "a", name, sizeof(name)), -EINVAL);
  ASSERT_EQ(proxy_api_derive_name("cni-", "a", name, 10), -EINVAL);
}

TEST(call_unreachable)
{
  struct proxy_api_answer a;
  char err[256], path[512];

  snprintf(path, sizeof(path), "%s/none.sock", test_tmpdir());
  ASSERT_EQ(proxy_api_call(path, "GET", "/healthz", NULL, 0, 1000, &a, err, sizeof(err)),
            -ENOENT);
  ASSERT(proxy_api_unreachable(-ENOENT));
  ASSERT_CONTAINS(err, "is `authproxy serve` running?");
  ASSERT_CONTAINS(err, path);
}

/* A daemon out of descriptors: libuv accepts a connection it cannot take and closes
 * it at once. The error must say that, not call the daemon a stranger. */
TEST(call_closed_unanswered)
{
  struct proxy_api_answer a;
  struct sockaddr_un sa;
  char err[256];
  pid_t pid;
  int fd, status;

  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/closed.sock", test_tmpdir());
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT(fd >= 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    int c = accept(fd, NULL, NULL);

    _exit(c >= 0 && close(c) == 0 ? 0 : 1);
  }
  ASSERT_EQ(proxy_api_call(sa.sun_path, "GET", "/healthz", NULL, 0, 5000, &a, err,
                           sizeof(err)),
            -ECONNRESET);
  ASSERT_CONTAINS(err, "closed the connection without an answer");
  ASSERT_CONTAINS(err, "out of file descriptors");
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fd);
}

/* A daemon stopping (SIGTERM) closes the connections it has not answered, those
 * waiting for a slot too, and removes its socket; one killed leaves the socket with
 * nothing listening. The error said "is the daemon out of file descriptors?", and a
 * CNI DEL or OCI poststop took it for a daemon that is up but failing. Now: the daemon
 * stopped, as when it was down before the call. */
TEST(call_closed_unanswered_daemon_stopped)
{
  struct proxy_api_answer a;
  struct sockaddr_un sa;
  char err[512];
  pid_t pid;
  int fd, status, unlink_it, r;

  for (unlink_it = 0; unlink_it < 2; unlink_it++) {
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/stopped%d.sock", test_tmpdir(),
             unlink_it);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      char buf[256];
      int c = accept(fd, NULL, NULL);

      /* The request arrives; the daemon stops before answering it. */
      if (c < 0 || read(c, buf, sizeof(buf)) <= 0)
        _exit(1);
      close(fd);
      if (unlink_it)
        unlink(sa.sun_path);
      _exit(close(c) == 0 ? 0 : 1);
    }
    close(fd);
    r = proxy_api_call(sa.sun_path, "DELETE", "/v1/sandboxes/a", NULL, 0, 5000, &a, err,
                       sizeof(err));
    ASSERT_EQ(r, unlink_it ? -ENOENT : -ECONNREFUSED);
    ASSERT(proxy_api_unreachable(r));
    ASSERT_CONTAINS(err, "closed the connection without an answer");
    ASSERT_CONTAINS(err, "the daemon stopped");
    ASSERT_NULL(strstr(err, "file descriptors"));
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
}

/* A daemon that takes the request in slowly (its loop is loaded): the client's
 * deadline covers the whole exchange, sending included, not each send on its own. */
TEST(call_deadline_covers_sending)
{
  struct proxy_api_answer a;
  struct sockaddr_un sa;
  struct timespec t0, t1;
  size_t body_len = 1u << 20;
  char err[256], *body;
  double elapsed;
  pid_t pid;
  int fd, r;

  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/slow.sock", test_tmpdir());
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT(fd >= 0);
  ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    /* 8 KiB every 100 ms, for at most 30 s: 1 MiB would take 13 s. */
    char buf[8192];
    int c = accept(fd, NULL, NULL), i;

    for (i = 0; c >= 0 && i < 300; i++) {
      if (read(c, buf, sizeof(buf)) <= 0)
        break;
      usleep(100 * 1000);
    }
    _exit(0);
  }
  close(fd);
  body = malloc(body_len);
  ASSERT_NOT_NULL(body);
  memset(body, ' ', body_len);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  r = proxy_api_call(sa.sun_path, "PUT", "/v1/sandboxes/x", body, body_len, 1000, &a, err,
                     sizeof(err));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, NULL, 0), pid);
  free(body);
  ASSERT_EQ(r, -ETIMEDOUT);
  ASSERT_LT(elapsed, 2.5);
  ASSERT_CONTAINS(err, sa.sun_path);
}

/* ---- CNI ---- */

static int conf(const char *json, struct proxy_cni_conf *c, struct proxy_cni_error *e)
{
  memset(e, 0, sizeof(*e));
  return proxy_cni_parse_conf(json, strlen(json), c, e);
}

TEST(cni_conf_sources)
{
  struct proxy_cni_error e;
  struct proxy_cni_conf c;

  ASSERT_EQ(conf("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"authproxy-cni\","
                 "\"proxy_config_name\":\"agents\",\"runtimeConfig\":{},\"args\":{}}", &c, &e), 0);
  ASSERT_STREQ(c.version, "1.0.0");
  ASSERT_STREQ(c.control, PROXY_API_DEFAULT_CONTROL);
  ASSERT_STREQ(c.proxy_config_name, "agents");
  ASSERT_NULL(c.proxy_config);
  ASSERT_NULL(c.prev_result);
  proxy_cni_conf_free(&c);
  ASSERT_EQ(conf("{\"cniVersion\":\"0.4.0\",\"name\":\"n\",\"type\":\"t\",\"control\":\"/s\","
                 "\"proxy_config\":{\"rules\":[]},\"prevResult\":{\"ips\":[]}}", &c, &e), 0);
  ASSERT_STREQ(c.control, "/s");
  ASSERT(cJSON_IsObject(c.proxy_config));
  ASSERT(cJSON_IsObject(c.prev_result));
  proxy_cni_conf_free(&c);
  ASSERT_EQ(conf("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\","
                 "\"proxy_config_file\":\"/etc/authproxy/x.json\"}", &c, &e), 0);
  ASSERT_STREQ(c.proxy_config_file, "/etc/authproxy/x.json");
  proxy_cni_conf_free(&c);
}

TEST(cni_conf_errors)
{
  static const struct {
    const char *json;
    int code;
    const char *details;
  } cases[] = {
    { "{\"cniVersion\":\"1.0.0\"", PROXY_CNI_ERR_DECODE, "not JSON" },
    { "[]", PROXY_CNI_ERR_DECODE, "JSON object" },
    { "{\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{}}", PROXY_CNI_ERR_CONFIG, "cniVersion" },
    { "{\"cniVersion\":\"0.2.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{}}",
      PROXY_CNI_ERR_VERSION, "0.2.0" },
    { "{\"cniVersion\":\"1.0.0\",\"type\":\"t\",\"proxy_config\":{}}", PROXY_CNI_ERR_CONFIG,
      "\"name\"" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"proxy_config\":{}}", PROXY_CNI_ERR_CONFIG,
      "\"type\"" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\"}", PROXY_CNI_ERR_CONFIG,
      "give one of" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{},"
      "\"proxy_config_name\":\"a\"}", PROXY_CNI_ERR_CONFIG, "give only one" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":[]}",
      PROXY_CNI_ERR_CONFIG, "must be an object" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config_file\":\"x.json\"}",
      PROXY_CNI_ERR_CONFIG, "absolute path" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config_name\":\"../x\"}",
      PROXY_CNI_ERR_CONFIG, "stored config" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{},"
      "\"control\":5}", PROXY_CNI_ERR_CONFIG, "\"control\"" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{},"
      "\"prevResult\":\"x\"}", PROXY_CNI_ERR_CONFIG, "prevResult" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{},"
      "\"contol\":\"/x\"}", PROXY_CNI_ERR_FIELD, "unknown key \"contol\" with value \"/x\"" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_confg\":{\"rules\":[]}}",
      PROXY_CNI_ERR_FIELD, "unknown key \"proxy_confg\" with an object value" },
    /* A name given twice: the runtime (Go: the last) and cJSON (the first) would read
     * different values. Refused at any depth, however the name is spelled. */
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config_name\":\"a\","
      "\"proxy_config_name\":\"b\"}", PROXY_CNI_ERR_DECODE,
      "duplicate member name \"proxy_config_name\" at line 1, column 69 ($.proxy_config_name;" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":"
      "{\"egress\":{\"default\":\"deny\",\"def\\u0061ult\":\"allow\"}}}", PROXY_CNI_ERR_DECODE,
      "duplicate member name \"default\" at line 1, column 88 ($.proxy_config.egress.default;" },
    { "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"control\":\"/a\",\"control\":\"/b\","
      "\"proxy_config_name\":\"a\"}", PROXY_CNI_ERR_DECODE, "($.control;" },
  };
  struct proxy_cni_error e;
  struct proxy_cni_conf c;
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (conf(cases[i].json, &c, &e) != -EINVAL)
      TEST_FAIL_("accepted: %s", cases[i].json);
    ASSERT_NULL(c.root);
    if (e.code != cases[i].code)
      TEST_FAIL_("%s: code %d, expected %d (%s)", cases[i].json, e.code, cases[i].code,
                 e.details);
    ASSERT_CONTAINS(e.details, cases[i].details);
  }
  /* A misspelled inline proxy_config: its opaque values must not reach the error,
   * which runtimes log and show (kubectl describe pod). */
  ASSERT_EQ(conf("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config_name\":"
                 "\"a\",\"proxyconfig\":{\"rules\":[{\"name\":\"r\",\"headers\":[{\"name\":"
                 "\"X-Key\",\"type\":\"opaque\",\"value\":\"sk-opaque-1\"}]}]}}", &c, &e),
            -EINVAL);
  ASSERT_EQ(e.code, PROXY_CNI_ERR_FIELD);
  ASSERT_CONTAINS(e.details, "unknown key \"proxyconfig\"");
  ASSERT_NOT_CONTAINS(e.details, "sk-opaque-1");
}

/* 1 if s is well-formed UTF-8 (RFC 3629), as JSON text must be (RFC 8259 8.1). */
static int utf8_ok(const char *s)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), i = 0, k;
  uint32_t cp;

  while (i < n) {
    k = proxy_utf8_seq(p + i, n - i, &cp);
    if (k == 0)
      return 0;
    i += k;
  }
  return 1;
}

/* The error document is JSON, so UTF-8, whatever its text holds: an unknown key's
 * value cut short for the message split a character, and the runtime got bytes no
 * strict JSON reader takes (Python's json, Rust's serde_json) in place of the error. */
TEST(cni_error_json_is_utf8)
{
  struct strbuf in;
  struct proxy_cni_error e;
  struct proxy_cni_conf c;
  cJSON *doc;
  char *text;
  int i;

  strbuf_init(&in);
  strbuf_adds(&in, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\","
                   "\"proxy_config_name\":\"a\",\"bogus\":\"");
  for (i = 0; i < 100; i++)
    strbuf_adds(&in, "\xc3\xa9"); /* U+00E9, two bytes */
  strbuf_adds(&in, "\"}");
  ASSERT(!in.oom);
  memset(&e, 0, sizeof(e));
  ASSERT_EQ(proxy_cni_parse_conf(in.data, in.len, &c, &e), -EINVAL);
  ASSERT_EQ(e.code, PROXY_CNI_ERR_FIELD);
  ASSERT_CONTAINS(e.details, "unknown key \"bogus\"");
  text = proxy_cni_error_json("1.0.0", &e);
  ASSERT_NOT_NULL(text);
  if (!utf8_ok(text))
    TEST_FAIL_("the error document is not UTF-8: %s", text);
  doc = cJSON_Parse(text);
  ASSERT_NOT_NULL(doc);
  ASSERT_EQ(cJSON_GetObjectItem(doc, "code")->valueint, PROXY_CNI_ERR_FIELD);
  ASSERT_CONTAINS(cJSON_GetObjectItem(doc, "details")->valuestring, "\xc3\xa9\xc3\xa9");
  cJSON_Delete(doc);
  free(text);
  /* Any text: a byte that begins no character comes out as U+FFFD. */
  snprintf(e.msg, sizeof(e.msg), "cut \xe2\x82");
  snprintf(e.details, sizeof(e.details), "bad \xff byte, \"quoted\"\n");
  text = proxy_cni_error_json("0.4.0", &e);
  ASSERT_NOT_NULL(text);
  if (!utf8_ok(text))
    TEST_FAIL_("the error document is not UTF-8: %s", text);
  doc = cJSON_Parse(text);
  ASSERT_NOT_NULL(doc);
  ASSERT_STREQ(cJSON_GetObjectItem(doc, "cniVersion")->valuestring, "0.4.0");
  ASSERT_STREQ(cJSON_GetObjectItem(doc, "msg")->valuestring, "cut \xef\xbf\xbd\xef\xbf\xbd");
  ASSERT_STREQ(cJSON_GetObjectItem(doc, "details")->valuestring,
               "bad \xef\xbf\xbd byte, \"quoted\"\n");
  cJSON_Delete(doc);
  free(text);
  strbuf_free(&in);
}

TEST(cni_add_result)
{
  struct proxy_cni_error e;
  struct proxy_cni_conf c;
  char *r;

  ASSERT_EQ(conf("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{},"
                 "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"lo\"}],"
                 "\"dns\":{\"nameservers\":[\"10.0.0.1\"],\"search\":[\"x\"]}}}", &c, &e), 0);
  r = proxy_cni_add_result(&c);
  ASSERT_STREQ(r, "{\"interfaces\":[{\"name\":\"lo\"}],\"dns\":{\"search\":[\"x\"],"
                  "\"nameservers\":[\"127.0.0.53\"]},\"cniVersion\":\"1.0.0\"}");
  free(r);
  proxy_cni_conf_free(&c);
  ASSERT_EQ(conf("{\"cniVersion\":\"0.3.1\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{},"
                 "\"prevResult\":{\"ips\":[],\"dns\":\"bogus\"}}", &c, &e), 0);
  r = proxy_cni_add_result(&c);
  ASSERT_STREQ(r, "{\"ips\":[],\"cniVersion\":\"0.3.1\",\"dns\":{\"nameservers\":[\"127.0.0.53\"]}}");
  free(r);
  proxy_cni_conf_free(&c);
  ASSERT_EQ(conf("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"proxy_config\":{}}",
                 &c, &e), 0);
  r = proxy_cni_add_result(&c);
  ASSERT_STREQ(r, "{\"cniVersion\":\"1.0.0\",\"dns\":{\"nameservers\":[\"127.0.0.53\"]}}");
  free(r);
  proxy_cni_conf_free(&c);
}

TEST(cni_documents)
{
  struct proxy_cni_error e;
  char *doc;

  memset(&e, 0, sizeof(e));
  proxy_cni_fail(&e, PROXY_CNI_ERR_REJECTED, "proxy_config rejected", "a \"quoted\"\nline");
  doc = proxy_cni_error_json("0.4.0", &e);
  ASSERT_STREQ(doc, "{\"cniVersion\":\"0.4.0\",\"code\":101,\"msg\":\"proxy_config rejected\","
                    "\"details\":\"a \\\"quoted\\\"\\u000aline\"}");
  free(doc);
  doc = proxy_cni_version_json(NULL);
  ASSERT_STREQ(doc, "{\"cniVersion\":\"1.0.0\",\"supportedVersions\":"
                    "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}");
  free(doc);
  ASSERT(proxy_cni_version_supported("0.3.0"));
  ASSERT(!proxy_cni_version_supported("1.1.0"));
}

static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
  size_t i, n = strlen(name);

  for (i = 0; fake_env[i] != NULL; i++)
    if (strncmp(fake_env[i], name, n) == 0 && fake_env[i][n] == '=')
      return fake_env[i] + n + 1;
  return NULL;
}

TEST(cni_env)
{
  static const char *const good[] = { "CNI_CONTAINERID=abc", "CNI_IFNAME=eth0",
                                      "CNI_NETNS=/var/run/netns/x", NULL };
  static const char *const del[] = { "CNI_CONTAINERID=abc", "CNI_IFNAME=eth0", NULL };
  static const char *const bad[] = { "CNI_CONTAINERID=-abc", "CNI_IFNAME=a:b",
                                     "CNI_NETNS=relative", NULL };
  static const char *const longif[] = { "CNI_CONTAINERID=a", "CNI_IFNAME=0123456789abcdef",
                                        "CNI_NETNS=/x", NULL };
  struct proxy_cni_error e;

  memset(&e, 0, sizeof(e));
  fake_env = good;
  ASSERT_EQ(proxy_cni_check_env("ADD", fake_getenv, &e), 0);
  fake_env = del;
  ASSERT_EQ(proxy_cni_check_env("DEL", fake_getenv, &e), 0);
  ASSERT_EQ(proxy_cni_check_env("CHECK", fake_getenv, &e), -EINVAL);
  ASSERT_CONTAINS(e.details, "CNI_NETNS");
  fake_env = bad;
  ASSERT_EQ(proxy_cni_check_env("ADD", fake_getenv, &e), -EINVAL);
  ASSERT_EQ(e.code, PROXY_CNI_ERR_ENV);
  ASSERT_CONTAINS(e.details, "invalid or missing: CNI_CONTAINERID CNI_IFNAME CNI_NETNS");
  fake_env = longif;
  ASSERT_EQ(proxy_cni_check_env("ADD", fake_getenv, &e), -EINVAL);
  ASSERT_CONTAINS(e.details, "missing: CNI_IFNAME (");
}

/* ---- OCI hook ---- */

static int state(const char *json, int need_pid, struct proxy_oci_state *st, char *err)
{
  return proxy_oci_parse_state(json, strlen(json), need_pid, st, err, 512);
}

TEST(oci_state)
{
  struct proxy_oci_state st;
  char err[512];

  ASSERT_EQ(state("{\"ociVersion\":\"1.0.2\",\"id\":\"c1\",\"status\":\"creating\",\"pid\":42,"
                  "\"bundle\":\"/b\",\"annotations\":{\"io.authproxy.config\":\"agents\","
                  "\"other\":\"x\"}}", 1, &st, err), 0);
  ASSERT_STREQ(st.id, "c1");
  ASSERT_EQ(st.pid, 42);
  ASSERT_STREQ(st.config_name, "agents");
  ASSERT_NULL(st.config_file);
  proxy_oci_state_free(&st);
  ASSERT_EQ(state("{\"ociVersion\":\"1.0.2\",\"id\":\"c1\",\"status\":\"stopped\"}", 0, &st,
                  err), 0);
  ASSERT_EQ(st.pid, 0);
  proxy_oci_state_free(&st);
}

TEST(oci_state_errors)
{
  static const struct {
    const char *json;
    const char *err;
  } cases[] = {
    { "{", "not JSON" },
    { "{\"id\":\"c\",\"pid\":1}", "OCI container state" },
    { "{\"ociVersion\":\"1\",\"id\":\"\",\"pid\":1}", "OCI container state" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\"}", "no \"pid\"" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":1.5}", "not a process id" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":-3}", "not a process id" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":\"7\"}", "not a process id" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":[]}", "not an object" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":"
      "{\"io.authproxy.config-file\":\"../etc/shadow\"}}", "not a path" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":"
      "{\"io.authproxy.config-file\":\"/etc/x.json\"}}", "not a path" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":"
      "{\"io.authproxy.config-file\":\".hidden\"}}", "not a path" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":"
      "{\"io.authproxy.config\":\"a b\"}}", "stored config" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":"
      "{\"io.authproxy.config\":\"a\",\"io.authproxy.config-file\":\"b\"}}", "not both" },
    /* Which stored config would the sandbox get? Refused, not guessed. */
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"annotations\":"
      "{\"io.authproxy.config\":\"open\",\"io.authproxy.config\":\"strict\"}}",
      "duplicate member name \"io.authproxy.config\" at line 1, column 80 "
      "($.annotations[\"io.authproxy.config\"];" },
    { "{\"ociVersion\":\"1\",\"id\":\"c\",\"pid\":7,\"pid\":8}", "($.pid;" },
  };
  struct proxy_oci_state st;
  char err[512];
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (state(cases[i].json, 1, &st, err) != -EINVAL)
      TEST_FAIL_("accepted: %s", cases[i].json);
    ASSERT_NULL(st.root);
    ASSERT_CONTAINS(err, cases[i].err);
  }
  ASSERT(proxy_oci_file_name_ok("agents.json"));
  ASSERT(proxy_oci_file_name_ok("a..b"));
  ASSERT(!proxy_oci_file_name_ok(".."));
  ASSERT(!proxy_oci_file_name_ok("a/b"));
  ASSERT(!proxy_oci_file_name_ok(""));
}
