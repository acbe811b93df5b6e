/*
 * The control API's routes (proxy/api.c), called through daemon_api on a daemon whose
 * state directory is a temporary one: request bodies are refused before anything is
 * applied when they are not strict JSON.
 */
#include <errno.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "proxy/daemon.h"
#include "test.h"

struct answer {
  int status;
  char code[64];
  char message[1024];
};

/* A daemon with no sandbox and no loop running: enough for configs and secrets. */
static void daemon_setup(struct daemon *d)
{
  char dir[512];

  memset(d, 0, sizeof(*d));
  d->state_dir = test_tmpdir();
  snprintf(dir, sizeof(dir), "%s/configs", d->state_dir);
  ASSERT_EQ(mkdir(dir, 0700), 0);
  memset(d->key, 0x5a, sizeof(d->key));
  d->secrets = rules_secrets_new(NULL);
  ASSERT_NOT_NULL(d->secrets);
}

static void daemon_teardown(struct daemon *d)
{
  ASSERT_NULL(d->configs);
  ASSERT_NULL(d->sandboxes);
  /* The sandbox indexes outlive the last sandbox (daemon_run frees them at exit). */
  free(d->index);
  free(d->nsindex);
  rules_secrets_free(d->secrets);
}

/* Sends one request to the API; an error answer's code and message are kept. */
static void call(struct daemon *d, const char *method, const char *path, const char *body,
                 struct answer *a)
{
  struct proxy_control_request req = { method, path, body, strlen(body) };
  struct proxy_control_response resp;
  const cJSON *err, *code, *msg;
  cJSON *root;

  memset(&resp, 0, sizeof(resp));
  strbuf_init(&resp.body);
  memset(a, 0, sizeof(*a));
  daemon_api(d, &req, &resp);
  ASSERT(!resp.body.oom);
  a->status = resp.status;
  root = cJSON_ParseWithLength(resp.body.data, resp.body.len);
  if (root == NULL)
    TEST_FAIL_("%s %s: the answer is not JSON: %.*s", method, path, (int)resp.body.len,
               resp.body.data);
  err = cJSON_GetObjectItemCaseSensitive(root, "error");
  code = cJSON_GetObjectItemCaseSensitive(err, "code");
  msg = cJSON_GetObjectItemCaseSensitive(err, "message");
  if (cJSON_IsString(code))
    snprintf(a->code, sizeof(a->code), "%s", code->valuestring);
  if (cJSON_IsString(msg))
    snprintf(a->message, sizeof(a->message), "%s", msg->valuestring);
  cJSON_Delete(root);
  strbuf_free(&resp.body);
}

/* Expects a 400 invalid_json answer whose message holds fragment. */
static void refused(struct daemon *d, const char *method, const char *path, const char *body,
                    const char *fragment)
{
  struct answer a;

  call(d, method, path, body, &a);
  if (a.status != 400 || strcmp(a.code, "invalid_json") != 0 ||
      strstr(a.message, fragment) == NULL)
    TEST_FAIL_("%s %s %s: got %d %s \"%s\", expected 400 invalid_json with \"%s\"", method,
               path, body, a.status, a.code, a.message, fragment);
}

/* cJSON's allocator for json_oom_answer: every allocation fails, as malloc does. */
static void *failing_json_malloc(size_t n)
{
  (void)n;
  errno = ENOMEM;
  return NULL;
}

/*
 * A request body cJSON runs out of memory parsing is the daemon's failure, not the
 * client's: 500 out_of_memory, which a client retries. It used to be 400 invalid_json,
 * "invalid JSON at line 1, column 1: unexpected '{'", for a body that was valid (a
 * control plane told its config is malformed does not push it again).
 */
TEST(json_oom_answer)
{
  static const char body[] = "{\"value\": \"v\"}";
  struct proxy_control_request req = { "PUT", "/v1/secrets/K", body, sizeof(body) - 1 };
  cJSON_Hooks failing = { failing_json_malloc, free }, plain = { malloc, free };
  struct proxy_control_response resp;
  struct rules_diag diag;
  struct daemon d;
  cJSON *root = NULL;

  daemon_setup(&d);
  memset(&resp, 0, sizeof(resp));
  strbuf_init(&resp.body);
  rules_diag_init(&diag);
  cJSON_InitHooks(&failing);
  ASSERT_EQ(rules_json_parse(body, sizeof(body) - 1, &root, &diag), -ENOMEM);
  daemon_api(&d, &req, &resp);
  cJSON_InitHooks(&plain);
  ASSERT_NULL(root);
  ASSERT_EQ(diag.count, 0);
  rules_diag_free(&diag);
  ASSERT(!resp.body.oom);
  if (resp.status != 500 || strstr(resp.body.data, "\"out_of_memory\"") == NULL)
    TEST_FAIL_("got %d %.*s, expected 500 out_of_memory", resp.status, (int)resp.body.len,
               resp.body.data);
  strbuf_free(&resp.body);
  daemon_teardown(&d);
}

/*
 * An answer cJSON could build only in part (a member left out when its allocation
 * failed) is not sent as it is: the request was carried out, and the control layer
 * answers 500 saying so. A 201 to an attach without its ca_certificate used to go
 * out, and `ctl attach` printed an empty CA and exited 0.
 */
TEST(partial_answer_is_oom)
{
  struct proxy_control_request req = { "GET", "/healthz", "", 0 };
  struct proxy_control_response resp;
  struct daemon d;

  daemon_setup(&d);
  memset(&resp, 0, sizeof(resp));
  strbuf_init(&resp.body);
  test_json_fail_at(2);
  daemon_api(&d, &req, &resp);
  test_json_plain();
  ASSERT_GE(test_json_allocs(), 3);
  /* Not {"sandboxes":0,...} without its "status". */
  if (resp.status != 200 || !resp.body.oom)
    TEST_FAIL_("got %d (body oom %d) %.*s, expected 200 with the body out of memory",
               resp.status, resp.body.oom, (int)resp.body.len,
               resp.body.data ? resp.body.data : "");
  strbuf_free(&resp.body);
  daemon_teardown(&d);
}

TEST(duplicate_member_names_get_400)
{
  struct daemon d;
  struct answer a;
  struct stat st;
  char path[512];

  daemon_setup(&d);
  /* The same requests without a repeated name are applied: the refusals below are
   * the check's, not the setup's. */
  call(&d, "PUT", "/v1/configs/agents",
       "{\"proxy_config\": {\"egress\": {\"default\": \"deny\"}}}", &a);
  ASSERT_EQ(a.status, 200);
  call(&d, "PUT", "/v1/secrets/K", "{\"value\": \"v\"}", &a);
  ASSERT_EQ(a.status, 200);

  /* A reviewer's tool reads the second proxy_config (allow); cJSON the first. */
  refused(&d, "PUT", "/v1/configs/other",
          "{\"proxy_config\": {\"egress\": {\"default\": \"deny\"}},\n"
          " \"proxy_config\": {\"egress\": {\"default\": \"allow\"}}}",
          "duplicate member name \"proxy_config\" at line 2, column 2 ($.proxy_config; "
          "first given at line 1, column 2)");
  refused(&d, "PUT", "/v1/configs/other",
          "{\"proxy_config\": {\"egress\": {\"default\": \"deny\", \"default\": \"allow\"}}}",
          "duplicate member name \"default\" at line 1, column 49 "
          "($.proxy_config.egress.default;");
  refused(&d, "PUT", "/v1/sandboxes/box",
          "{\"netns\": \"/nonexistent/a\", \"netns\": \"/nonexistent/b\", \"proxy_config\": {}}",
          "duplicate member name \"netns\"");
  refused(&d, "PUT", "/v1/sandboxes/box",
          "{\"netns\": \"/nonexistent/a\", \"proxy_config\": {\"rules\": [{\"name\": \"r\", "
          "\"match_hosts\": [\"a.com\"], \"headers\": [{\"name\": \"X-K\", \"type\": "
          "\"plaintext\", \"value\": \"a\", \"v\\u0061lue\": \"b\"}]}]}}",
          "($.proxy_config.rules[0].headers[0].value;");
  refused(&d, "PUT", "/v1/secrets/K", "{\"value\": \"a\", \"value\": \"b\"}",
          "duplicate member name \"value\"");
  snprintf(path, sizeof(path), "%s/configs/other.sealed", d.state_dir);
  ASSERT_EQ(stat(path, &st), -1);
  ASSERT_EQ(errno, ENOENT);

  /* A stored config is read back from what the daemon wrote (daemon_json_parse_own):
   * the attach gets as far as the namespace. */
  call(&d, "PUT", "/v1/sandboxes/box",
       "{\"netns\": \"/nonexistent/a\", \"proxy_config_name\": \"agents\"}", &a);
  ASSERT_EQ(a.status, 400);
  ASSERT_STREQ(a.code, "netns_not_found");
  call(&d, "DELETE", "/v1/configs/agents", "", &a);
  ASSERT_EQ(a.status, 200);
  daemon_teardown(&d);
}

/*
 * A stored config is validated with placeholders for the secrets it names that exist
 * nowhere yet. The names were gathered without a bound, each checked against all
 * gathered before (quadratic: 60,000 names held the event loop 5 s) and given a
 * placeholder until the store was full, answered as 500 "out of memory". A config
 * naming more secrets than one may is refused as invalid, naming the limit.
 */
TEST(stored_config_naming_too_many_secrets_is_invalid)
{
  size_t i, size = 128 * 1024;
  char *body, *p;
  struct daemon d;
  struct answer a;

  daemon_setup(&d);
  body = malloc(size);
  ASSERT_NOT_NULL(body);
  p = body + sprintf(body, "{\"proxy_config\": {\"rules\": [{\"name\": \"r\", \"match_hosts\": "
                           "[\"x.com\"], \"headers\": [{\"name\": \"X\", \"type\": "
                           "\"workspace_secret\", \"value\": \"");
  for (i = 0; i < 5000; i++)
    p += sprintf(p, "{k%zu}", i);
  sprintf(p, "\"}]}]}}");
  call(&d, "PUT", "/v1/configs/many", body, &a);
  free(body);
  ASSERT_EQ(a.status, 422);
  ASSERT_STREQ(a.code, "invalid_config");
  ASSERT_NULL(d.configs);
  daemon_teardown(&d);
}

/*
 * A config stored while cJSON runs out of memory is refused as out of memory, never as
 * invalid: a secret name cJSON could not gather (validation_store) was missing from the
 * store the config is checked against, and the config was refused 422 invalid_config,
 * "secret K not found (push it ...)" of a secret pushed, or of one that was to be
 * listed as unresolved; a control plane told its config is invalid does not retry.
 * Each of the request's cJSON allocations fails in turn.
 */
/*
 * Sends METHOD PATH with BODY once for each of its cJSON allocations, that one failing.
 * The answer must be a 500, or a 200 whose body is marked out of memory (the request
 * was carried out, its answer not built); with none failing, the whole 200.
 */
static void each_allocation_failing(struct daemon *d, const char *method, const char *path,
                                    const char *body)
{
  int n, done = 0;

  for (n = 1; n < 1000 && !done; n++) {
    struct proxy_control_request req = { method, path, body, strlen(body) };
    struct proxy_control_response resp;

    memset(&resp, 0, sizeof(resp));
    strbuf_init(&resp.body);
    test_json_fail_at(n);
    daemon_api(d, &req, &resp);
    test_json_plain();
    /* No allocation failed: the whole answer. */
    done = test_json_allocs() < n;
    if (done ? resp.status != 200 || resp.body.oom
             : resp.status != 500 && !(resp.status == 200 && resp.body.oom))
      TEST_FAIL_("%s %s, allocation %d of %d failing: %d %.*s", method, path, n,
                 test_json_allocs(), resp.status, (int)resp.body.len,
                 resp.body.data ? resp.body.data : "");
    strbuf_free(&resp.body);
  }
  ASSERT(done);
}

TEST(stored_config_oom_is_not_invalid)
{
  static const char body[] =
      "{\"proxy_config\": {\"rules\": [{\"name\": \"r\", \"match_hosts\": [\"x.com\"], "
      "\"headers\": [{\"name\": \"X\", \"type\": \"workspace_secret\", "
      "\"value\": \"{K} {NOTYET}\"}]}]}}";
  struct daemon d;
  struct answer a;

  daemon_setup(&d);
  call(&d, "PUT", "/v1/secrets/K", "{\"value\": \"v\"}", &a);
  ASSERT_EQ(a.status, 200);
  each_allocation_failing(&d, "PUT", "/v1/configs/c", body);
  ASSERT_NOT_NULL(daemon_config_find(&d, "c"));
  call(&d, "DELETE", "/v1/configs/c", "", &a);
  ASSERT_EQ(a.status, 200);
  daemon_teardown(&d);
}

/*
 * The listings answered while cJSON runs out of memory, each allocation failing in
 * turn: a member cJSON could not add to its object or array (the container's own
 * allocation failed, or the copy of the member's name) was lost with its contents.
 * Under AUTHPROXY_SANITIZE the runner's leak check fails this test on such a loss.
 */
TEST(listings_oom_lose_nothing)
{
  static const char *const paths[] = {
    "/v1/sandboxes", "/v1/configs", "/v1/configs/c", "/v1/configs/d", "/v1/secrets",
  };
  static const char cfg[] =
      "{\"proxy_config\": {\"rules\": [{\"name\": \"r\", \"match_hosts\": [\"x.com\"], "
      "\"headers\": [{\"name\": \"X\", \"type\": \"workspace_secret\", "
      "\"value\": \"{K}\"}]}]}}";
  char netns[] = "/run/netns/gone", why[] = "namespace gone";
  struct daemon_lost lost[2] = {
    { &lost[1], "gone", netns, why },
    { NULL, "late", NULL, NULL },
  };
  struct daemon d;
  struct answer a;
  size_t i;

  daemon_setup(&d);
  call(&d, "PUT", "/v1/secrets/K", "{\"value\": \"v\"}", &a);
  ASSERT_EQ(a.status, 200);
  call(&d, "PUT", "/v1/secrets/L", "{\"value\": \"w\"}", &a);
  ASSERT_EQ(a.status, 200);
  call(&d, "PUT", "/v1/configs/c", cfg, &a);
  ASSERT_EQ(a.status, 200);
  call(&d, "PUT", "/v1/configs/d", cfg, &a);
  ASSERT_EQ(a.status, 200);
  d.lost = lost;
  for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
    each_allocation_failing(&d, "GET", paths[i], "");
  d.lost = NULL;
  call(&d, "DELETE", "/v1/configs/c", "", &a);
  ASSERT_EQ(a.status, 200);
  call(&d, "DELETE", "/v1/configs/d", "", &a);
  ASSERT_EQ(a.status, 200);
  daemon_teardown(&d);
}

/*
 * HEAD is GET without the body (RFC 9110 9.3.2, which every general-purpose server
 * supports); the transport leaves the body out (test_control). The router took it for
 * an unknown method: `curl -I` on /healthz, or a probe asking HEAD, was told "no route
 * for HEAD /healthz" (404), as if the daemon had no health endpoint, and HEAD on a
 * sandbox 405. Each HEAD gets the status and Content-Type the GET gets.
 */
TEST(head_is_routed_as_get)
{
  static const char *const paths[] = {
    "/healthz", "/v1/secrets", "/v1/configs", "/v1/configs/agents", "/v1/configs/none",
    "/v1/sandboxes/none", "/v1/sandboxes/none/ca.pem", "/v1/nothing",
  };
  struct answer get, head;
  struct daemon d;
  size_t i;

  daemon_setup(&d);
  call(&d, "PUT", "/v1/configs/agents", "{\"proxy_config\": {}}", &get);
  ASSERT_EQ(get.status, 200);
  for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    call(&d, "GET", paths[i], "", &get);
    call(&d, "HEAD", paths[i], "", &head);
    if (head.status != get.status || strcmp(head.code, get.code) != 0)
      TEST_FAIL_("HEAD %s: %d %s \"%s\"; GET: %d %s", paths[i], head.status, head.code,
                 head.message, get.status, get.code);
  }
  call(&d, "HEAD", "/healthz", "", &head);
  ASSERT_EQ(head.status, 200);
  call(&d, "DELETE", "/v1/configs/agents", "", &get);
  ASSERT_EQ(get.status, 200);
  daemon_teardown(&d);
}
