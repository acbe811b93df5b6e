/*
 * Serialization: REDACTED output never holds a secret or opaque value; PERSIST
 * output re-parses to the same config; the summary line; the memory a config takes.
 */
#include <cjson/cJSON.h>

#include "rules/rules_internal.h"
#include "test_rules_helpers.h"

/* Values that must never appear in redacted output. */
static const char *const secret_values[] = {
  "sk-test-openai-0000", "ghp_test2222", "internal-user", "internal-pass-4444",
  "corp-callback-token-3333", "opaque-example-5555",
};

static const char many_secrets[] =
    "{\"rules\":["
    "{\"name\":\"a\",\"match_hosts\":[\"a.com\"],\"headers\":["
    " {\"name\":\"Authorization\",\"type\":\"workspace_secret\",\"value\":\"Bearer {OPENAI_API_KEY}\"},"
    " {\"name\":\"X-Opaque-1\",\"type\":\"opaque\",\"value\":\"op-value-one-777\"},"
    " {\"name\":\"X-Both\",\"type\":\"workspace_secret\",\"value\":\"{INTERNAL_USER}/{INTERNAL_PASS}\"}]},"
    "{\"name\":\"b\",\"match_hosts\":[\"b.com\"],\"headers\":["
    " {\"name\":\"X-Opaque-2\",\"type\":\"opaque\",\"value\":\"op \\\"quoted\\\" \\\\ value-888\"},"
    " {\"name\":\"X-Gh\",\"type\":\"workspace_secret\",\"value\":\"token {GITHUB_TOKEN}\"}]}],"
    "\"callback\":{\"url\":\"https://cb.internal/creds\",\"match_hosts\":[\"*.corp\"],"
    " \"headers\":[{\"name\":\"Authorization\",\"type\":\"workspace_secret\",\"value\":\"Bearer {CALLBACK_TOKEN}\"},"
    "              {\"name\":\"X-Cb-Opaque\",\"type\":\"opaque\",\"value\":\"cb-opaque-999\"}]}}";

static const char *const opaque_values[] = { "op-value-one-777", "value-888", "cb-opaque-999" };

static void check_redacted(const char *out)
{
  size_t i;

  ASSERT_NOT_NULL(out);
  for (i = 0; i < sizeof(secret_values) / sizeof(secret_values[0]); i++)
    ASSERT_NOT_CONTAINS(out, secret_values[i]);
  for (i = 0; i < sizeof(opaque_values) / sizeof(opaque_values[0]); i++)
    ASSERT_NOT_CONTAINS(out, opaque_values[i]);
}

TEST(redacted_never_leaks)
{
  struct rules_secrets *s = test_secrets();
  struct rules_config *cfg = parse_ok(many_secrets, s);
  struct rules_config *full = load_config("../../examples/full.json", s);
  struct rules_request_decision r;
  char *out;
  int pretty;

  /* The values are really there to leak: the decision injects them. */
  req_decide(cfg, "a.com", 443, "GET", "/", &r);
  ASSERT_STREQ(req_header(&r, "Authorization"), "Bearer sk-test-openai-0000");
  ASSERT_STREQ(req_header(&r, "X-Opaque-1"), "op-value-one-777");
  ASSERT_STREQ(req_header(&r, "X-Both"), "internal-user/internal-pass-4444");

  for (pretty = 0; pretty <= 1; pretty++) {
    out = rules_config_to_json(cfg, RULES_SER_REDACTED, pretty);
    check_redacted(out);
    ASSERT_CONTAINS(out, "Bearer {OPENAI_API_KEY}");
    ASSERT_CONTAINS(out, "{INTERNAL_USER}/{INTERNAL_PASS}");
    ASSERT_CONTAINS(out, "Bearer {CALLBACK_TOKEN}");
    ASSERT_CONTAINS(out, "X-Opaque-2");
    free(out);
    out = rules_config_to_json(full, RULES_SER_REDACTED, pretty);
    check_redacted(out);
    ASSERT_CONTAINS(out, "{{literal braces}} for {INTERNAL_USER}");
    free(out);
  }
  rules_config_unref(cfg);
  rules_config_unref(full);
  rules_secrets_free(s);
}

TEST(redacted_opaque_has_no_value_field)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
      "{\"name\":\"X-Key\",\"type\":\"opaque\",\"value\":\"v\"}]}]}",
      NULL);
  char *out = rules_config_to_json(cfg, RULES_SER_REDACTED, 0);

  ASSERT_STREQ(out, "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
                    "{\"name\":\"X-Key\",\"type\":\"opaque\"}]}]}");
  free(out);
  out = rules_config_to_json(cfg, RULES_SER_PERSIST, 0);
  ASSERT_STREQ(out, "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
                    "{\"name\":\"X-Key\",\"type\":\"opaque\",\"value\":\"v\"}]}]}");
  free(out);
  rules_config_unref(cfg);
}

/* What GET and `config show` print, pushed back as it is (the read-edit-write round a
 * user makes), is refused where an opaque value was left out, and the error says why
 * and what to do rather than only that a value is required. */
TEST(redacted_pushed_back)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
      "{\"name\":\"X-Plain\",\"type\":\"plaintext\",\"value\":\"p\"},"
      "{\"name\":\"X-Key\",\"type\":\"opaque\",\"value\":\"v\"}]}],"
      "\"callback\":{\"url\":\"http://127.0.0.1:9/\",\"match_hosts\":[\"*.corp\"],"
      "\"headers\":[{\"name\":\"X-Cb\",\"type\":\"opaque\",\"value\":\"w\"}]}}",
      NULL);
  char *out = rules_config_to_json(cfg, RULES_SER_REDACTED, 1);
  size_t n;

  ASSERT_NOT_NULL(out);
  n = parse_err(out, NULL, "rules[0].headers[1].value",
                "opaque values are never shown back; give this one again");
  ASSERT_EQ(n, 2);
  parse_err(out, NULL, "callback.headers[0].value", "give this one again");
  free(out);
  rules_config_unref(cfg);
  /* Other missing values keep the plain message. */
  parse_err("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
            "{\"name\":\"X\",\"type\":\"plaintext\"}]}]}",
            NULL, "rules[0].headers[0].value", "is required");
}

/* PERSIST keeps templates and opaque values, never a resolved secret. */
TEST(persist_round_trip)
{
  struct rules_secrets *s = test_secrets();
  const char *files[] = { "config/public-single.json", "config/public-multi.json",
                          "../../examples/full.json" };
  size_t i;

  for (i = 0; i < 4; i++) {
    struct rules_config *a = i < 3 ? load_config(files[i], s) : parse_ok(many_secrets, s);
    char *p1 = rules_config_to_json(a, RULES_SER_PERSIST, i % 2);
    struct rules_config *b = parse_ok(p1, s);
    char *p2 = rules_config_to_json(b, RULES_SER_PERSIST, i % 2);

    ASSERT_STREQ(p1, p2);
    ASSERT_NOT_CONTAINS(p1, "sk-test-openai-0000");
    ASSERT_NOT_CONTAINS(p1, "internal-pass-4444");
    if (i == 3) {
      ASSERT_CONTAINS(p1, "op-value-one-777");
      ASSERT_CONTAINS(p1, "op \\\"quoted\\\" \\\\ value-888");
      ASSERT_CONTAINS(p1, "cb-opaque-999");
    }
    free(p1);
    free(p2);
    rules_config_unref(a);
    rules_config_unref(b);
  }
  rules_secrets_free(s);
}

/* The public examples come back as written (no opaque values to drop). */
TEST(redacted_matches_input)
{
  struct rules_secrets *s = test_secrets();
  const char *files[] = { "config/public-single.json", "config/public-multi.json" };
  char buf[8192];
  size_t i, n;

  for (i = 0; i < 2; i++) {
    FILE *f = fopen(test_data_path(files[i]), "rb");
    struct rules_config *cfg;
    cJSON *in, *out;
    char *json;

    ASSERT_NOT_NULL(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cfg = parse_ok(buf, s);
    json = rules_config_to_json(cfg, RULES_SER_REDACTED, 1);
    in = cJSON_Parse(buf);
    out = cJSON_Parse(json);
    ASSERT_NOT_NULL(out);
    ASSERT(cJSON_Compare(in, out, 1));
    cJSON_Delete(in);
    cJSON_Delete(out);
    free(json);
    rules_config_unref(cfg);
  }
  rules_secrets_free(s);
}

TEST(serialization_forms)
{
  struct rules_config *cfg = parse_ok(
      "{\"no_proxy\":[\"Local.Example.\"],"
      "\"callback\":{\"url\":\"unix:/run/c.sock\",\"match_hosts\":[\"*.corp\"]},"
      "\"egress\":{\"deny\":[\"a.com\",{\"hosts\":[\"b.com\"]},"
      "{\"hosts\":[\"c.com\"],\"paths\":[\"/%7Ex\"],\"methods\":[\"POST\",\"PUT\"]}]},"
      "\"dns\":{\"remap\":{\"z.com\":\"m1\",\"A.com\":\"m2:81\"}},"
      "\"rules\":[{\"name\":\"q\\\"\\\\\",\"match_hosts\":[\"x.com\"],\"match_paths\":[]}]}",
      NULL);
  char *out = rules_config_to_json(cfg, RULES_SER_REDACTED, 0);

  /* Patterns as written, defaults explicit, object entries kept as objects, remap keys
   * normalized and sorted, strings escaped. */
  ASSERT_STREQ(out,
               "{\"rules\":[{\"name\":\"q\\\"\\\\\",\"match_hosts\":[\"x.com\"]}],"
               "\"no_proxy\":[\"Local.Example.\"],"
               "\"callback\":{\"url\":\"unix:/run/c.sock\",\"match_hosts\":[\"*.corp\"],"
               "\"ttl_seconds\":300,\"timeout_ms\":3000},"
               "\"egress\":{\"default\":\"allow\",\"allow\":[],\"deny\":[\"a.com\","
               "{\"hosts\":[\"b.com\"]},{\"hosts\":[\"c.com\"],\"paths\":[\"/%7Ex\"],"
               "\"methods\":[\"POST\",\"PUT\"]}]},"
               "\"dns\":{\"remap\":{\"a.com\":\"m2:81\",\"z.com\":\"m1\"}}}");
  free(out);
  out = rules_config_to_json(cfg, RULES_SER_REDACTED, 1);
  ASSERT_CONTAINS(out, "{\n  \"rules\": [\n    {\n      \"name\": \"q\\\"\\\\\",\n");
  ASSERT_CONTAINS(out, "\"methods\": [\"POST\", \"PUT\"]");
  ASSERT_EQ(out[strlen(out) - 1], '\n');
  free(out);
  rules_config_unref(cfg);

  cfg = parse_ok("{}", NULL);
  out = rules_config_to_json(cfg, RULES_SER_PERSIST, 0);
  ASSERT_STREQ(out, "{}");
  free(out);
  out = rules_config_to_json(cfg, RULES_SER_PERSIST, 1);
  ASSERT_STREQ(out, "{}\n");
  free(out);
  rules_config_unref(cfg);
}

TEST(summary)
{
  struct rules_secrets *s = test_secrets();
  struct rules_config *cfg = load_config("config/public-multi.json", s);
  char buf[256], tiny[8];

  rules_config_summary(cfg, buf, sizeof(buf));
  ASSERT_STREQ(buf, "3 rules, 4 headers (3 from secrets, 0 opaque), 2 no_proxy entries, "
                    "egress default allow (0 allow, 0 deny), no callback, 0 dns remaps");
  rules_config_summary(cfg, tiny, sizeof(tiny));
  ASSERT_STREQ(tiny, "3 rules");
  rules_config_unref(cfg);
  cfg = load_config("../../examples/full.json", s);
  rules_config_summary(cfg, buf, sizeof(buf));
  ASSERT_STREQ(buf, "3 rules, 6 headers (4 from secrets, 1 opaque), 5 no_proxy entries, "
                    "egress default deny (8 allow, 3 deny), unix callback for 1 host pattern, "
                    "3 dns remaps");
  rules_config_unref(cfg);
  rules_secrets_free(s);
}

/* A daemon holds thousands of configs: a typical one takes a few KiB. */
TEST(config_is_compact)
{
  struct rules_secrets *s = test_secrets();
  struct rules_config *cfg = load_config("config/public-multi.json", s);

  ASSERT_LE(rules_config_bytes(cfg), 2048);
  rules_config_unref(cfg);
  cfg = load_config("../../examples/full.json", s);
  ASSERT_LE(rules_config_bytes(cfg), 4096);
  rules_config_unref(cfg);
  rules_secrets_free(s);
}

/* allow_plain_http survives every serialization, and so a restart or a GET-edit-PUT;
 * absent, it is left out. It survives the compact copy too. */
TEST(allow_plain_http_kept)
{
  static const char json[] =
      "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":["
      "{\"name\":\"X-Key\",\"type\":\"opaque\",\"value\":\"v\"}],\"allow_plain_http\":true},"
      "{\"name\":\"s\",\"match_hosts\":[\"y.com\"],\"headers\":["
      "{\"name\":\"X-Key\",\"type\":\"opaque\",\"value\":\"w\"}]}],"
      "\"callback\":{\"url\":\"http://127.0.0.1:9/\",\"match_hosts\":[\"z.com\"],"
      "\"ttl_seconds\":300,\"timeout_ms\":3000,\"allow_plain_http\":true}}";
  struct rules_config *cfg = parse_ok(json, NULL), *again;
  struct rules_request_decision r;
  struct rules_dest dest;
  char *out = rules_config_to_json(cfg, RULES_SER_PERSIST, 0);

  ASSERT_STREQ(out, json);
  again = parse_ok(out, NULL);
  memset(&dest, 0, sizeof(dest));
  dest.name = "x.com";
  dest.port = 80;
  rules_decide_request(again, &dest, "GET", "/", 1, &r);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_EQ(r.headers[0].plain_http, 1);
  ASSERT_NULL(rules_request_needs_tls(again, &r));
  dest.name = "y.com";
  rules_decide_request(again, &dest, "GET", "/", 1, &r);
  ASSERT_STREQ(rules_request_needs_tls(again, &r), "s");
  free(out);
  out = rules_config_to_json(cfg, RULES_SER_REDACTED, 0);
  ASSERT_CONTAINS(out, "}],\"allow_plain_http\":true},{\"name\":\"s\"");
  ASSERT_CONTAINS(out, "\"timeout_ms\":3000,\"allow_plain_http\":true}");
  free(out);
  rules_config_unref(again);
  rules_config_unref(cfg);
}
