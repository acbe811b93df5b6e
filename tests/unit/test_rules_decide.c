/*
 * Decisions: the public examples, rule order and header precedence, egress tables
 * (default deny with allow objects, deny objects forcing interception, deny beating
 * no_proxy), the callback, checks on resolved addresses, and dns.remap.
 */
#include <sys/un.h>

#include "test_rules_helpers.h"

TEST(public_multi_decisions)
{
  struct rules_secrets *s = test_secrets();
  struct rules_config *cfg = load_config("config/public-multi.json", s);
  struct rules_request_decision r;
  struct rules_decision d;

  d = conn_decide(cfg, "api.openai.com", "198.18.0.5", 443);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_NULL(d.reason);
  ASSERT_STREQ(d.entry, "openai-api");
  req_decide(cfg, "api.openai.com", 443, "POST", "/v1/chat/completions", &r);
  ASSERT_EQ(r.deny, 0);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_STREQ(r.headers[0].name, "Authorization");
  ASSERT_STREQ(r.headers[0].value, "Bearer sk-test-openai-0000");
  ASSERT_EQ(r.headers[0].value_len, 26);
  ASSERT_STREQ(r.headers[0].rule, "openai-api");
  ASSERT_STREQ(r.entry, "openai-api");
  ASSERT_EQ(r.callback, 0);
  ASSERT_EQ(rules_request_injects(&r, "authorization", 13), 1);
  ASSERT_EQ(rules_request_injects(&r, "AUTHORIZATION", 13), 1);
  ASSERT_EQ(rules_request_injects(&r, "Authorizatio", 12), 0);
  ASSERT_EQ(rules_request_injects(&r, "x-api-key", 9), 0);

  req_decide(cfg, "api.anthropic.com", 443, "POST", "/v1/messages", &r);
  ASSERT_EQ(r.nheaders, 2);
  ASSERT_STREQ(r.headers[0].name, "x-api-key");
  ASSERT_STREQ(r.headers[0].value, "sk-ant-test-1111");
  ASSERT_STREQ(r.headers[1].name, "anthropic-version");
  ASSERT_STREQ(r.headers[1].value, "2023-06-01");

  /* GitHub: the host is intercepted; the token goes only to the listed paths. */
  ASSERT_EQ(conn_action(cfg, "api.github.com", 443), RULES_INTERCEPT);
  req_decide(cfg, "api.github.com", 443, "GET", "/repos/o/r/pulls?state=open", &r);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_STREQ(r.headers[0].value, "Bearer ghp_test2222");
  req_decide(cfg, "api.github.com", 443, "GET", "/user", &r);
  ASSERT_EQ(r.nheaders, 1);
  req_decide(cfg, "api.github.com", 443, "GET", "/orgs/x", &r);
  ASSERT_EQ(r.deny, 0);
  ASSERT_EQ(r.nheaders, 0);
  ASSERT_STREQ(r.entry, "");
  req_decide(cfg, "api.github.com", 443, "GET", "/repos/../admin", &r);
  ASSERT_EQ(r.nheaders, 0);

  /* no_proxy: relayed untouched, by name or by address. */
  d = conn_decide(cfg, "localhost", NULL, 8080);
  ASSERT_EQ(d.action, RULES_BYPASS);
  ASSERT_STREQ(d.entry, "no_proxy[0]");
  d = conn_decide(cfg, "127.0.0.1", NULL, 8080);
  ASSERT_EQ(d.action, RULES_BYPASS);
  ASSERT_STREQ(d.entry, "no_proxy[1]");
  d = conn_decide(cfg, NULL, "127.0.0.1", 5432);
  ASSERT_EQ(d.action, RULES_BYPASS);
  ASSERT_EQ(conn_action(cfg, "sub.localhost", 80), RULES_TUNNEL);

  /* Everything else is tunnelled. */
  d = conn_decide(cfg, "pypi.org", "198.18.0.9", 443);
  ASSERT_EQ(d.action, RULES_TUNNEL);
  ASSERT_STREQ(d.entry, "");
  ASSERT_EQ(conn_action(cfg, "openai.com", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, "api.openai.com.evil.com", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, NULL, 443), RULES_TUNNEL);
  rules_config_unref(cfg);
  rules_secrets_free(s);
}

TEST(public_single_decisions)
{
  struct rules_secrets *s = test_secrets();
  struct rules_config *cfg = load_config("config/public-single.json", s);
  struct rules_request_decision r;

  ASSERT_EQ(conn_action(cfg, "api.openai.com", 443), RULES_INTERCEPT);
  ASSERT_EQ(conn_action(cfg, "api.anthropic.com", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, "localhost", 80), RULES_TUNNEL);
  req_decide(cfg, "api.openai.com", 443, "GET", "/v1/models", &r);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_STREQ(r.headers[0].value, "Bearer sk-test-openai-0000");
  req_decide(cfg, "api.anthropic.com", 443, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 0);
  rules_config_unref(cfg);
  rules_secrets_free(s);
}

TEST(first_rule_wins_per_header)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":["
      "{\"name\":\"narrow\",\"match_hosts\":[\"api.x.com\"],\"match_paths\":[\"/v2/*\"],"
      " \"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"v2\"}]},"
      "{\"name\":\"wide\",\"match_hosts\":[\"*.x.com\"],"
      " \"headers\":[{\"name\":\"authorization\",\"type\":\"plaintext\",\"value\":\"wide\"},"
      "              {\"name\":\"X-Team\",\"type\":\"plaintext\",\"value\":\"agents\"}]},"
      "{\"name\":\"last\",\"match_hosts\":[\"*\"],"
      " \"headers\":[{\"name\":\"X-TEAM\",\"type\":\"plaintext\",\"value\":\"other\"},"
      "              {\"name\":\"X-Trace\",\"type\":\"plaintext\",\"value\":\"1\"}]}]}",
      NULL);
  struct rules_request_decision r;
  struct rules_decision d;

  d = conn_decide(cfg, "api.x.com", NULL, 443);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_STREQ(d.entry, "narrow");
  req_decide(cfg, "api.x.com", 443, "GET", "/v2/items", &r);
  ASSERT_EQ(r.nheaders, 3);
  ASSERT_STREQ(r.headers[0].value, "v2");
  ASSERT_STREQ(r.headers[0].rule, "narrow");
  ASSERT_STREQ(r.headers[1].name, "X-Team");
  ASSERT_STREQ(r.headers[1].value, "agents");
  ASSERT_STREQ(r.headers[2].name, "X-Trace");
  ASSERT_STREQ(r.entry, "narrow");
  /* Outside /v2 the narrow rule does not apply: the wide one's value is used. */
  req_decide(cfg, "api.x.com", 443, "GET", "/v1/items", &r);
  ASSERT_EQ(r.nheaders, 3);
  ASSERT_STREQ(r.headers[0].value, "wide");
  ASSERT_STREQ(r.headers[0].rule, "wide");
  ASSERT_STREQ(r.entry, "wide");
  req_decide(cfg, "other.example", 443, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 2);
  ASSERT_STREQ(r.headers[0].value, "other");
  rules_config_unref(cfg);
}

/* A rule without headers does not intercept; match_paths do not matter per connection. */
TEST(intercept_conditions)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"empty\",\"match_hosts\":[\"a.com\"]},"
      "{\"name\":\"paths\",\"match_hosts\":[\"b.com\"],\"match_paths\":[\"/only\"],"
      "\"headers\":[{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"v\"}]},"
      "{\"name\":\"port\",\"match_hosts\":[\"c.com:8443\"],"
      "\"headers\":[{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"v\"}]}]}",
      NULL);
  struct rules_request_decision r;

  ASSERT_EQ(conn_action(cfg, "a.com", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, "b.com", 443), RULES_INTERCEPT);
  ASSERT_EQ(conn_action(cfg, "c.com", 8443), RULES_INTERCEPT);
  ASSERT_EQ(conn_action(cfg, "c.com", 443), RULES_TUNNEL);
  req_decide(cfg, "c.com", 443, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 0);
  req_decide(cfg, "c.com", 8443, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 1);
  rules_config_unref(cfg);
}

static const char egress_config[] =
    "{\"rules\":[{\"name\":\"gh\",\"match_hosts\":[\"api.github.com\",\"evil.example\"],"
    "  \"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"t\"}]}],"
    " \"no_proxy\":[\"github.com\",\"*.pastebin.com\",\"registry.npmjs.org\",\"blocked.example\"],"
    " \"egress\":{\"default\":\"deny\","
    "  \"allow\":[\"api.github.com\",\"github.com\",\"*.pastebin.com\",\"10.0.0.0/8\","
    "            {\"hosts\":[\"registry.npmjs.org\"],\"methods\":[\"GET\",\"HEAD\"]},"
    "            {\"hosts\":[\"docs.example\"],\"paths\":[\"/public/*\"]}],"
    "  \"deny\":[\"*.pastebin.com\",\"10.9.0.0/16\",\"smtp.example:25\","
    "           {\"hosts\":[\"github.com\"],\"paths\":[\"/*/git-receive-pack\"],\"methods\":[\"POST\"]},"
    "           {\"hosts\":[\"api.github.com\"],\"methods\":[\"DELETE\"]},"
    "           {\"hosts\":[\"blocked.example\"]}]}}";

TEST(egress_connection_table)
{
  static const struct {
    const char *name, *ip;
    uint16_t port;
    enum rules_action action;
    const char *reason, *entry;
  } cases[] = {
    /* deny wins over everything, no_proxy included */
    { "paste.pastebin.com", NULL, 443, RULES_DENY, "egress_deny", "egress.deny[0]" },
    { "blocked.example", NULL, 443, RULES_DENY, "egress_deny", "egress.deny[5]" },
    { NULL, "10.9.1.1", 443, RULES_DENY, "egress_deny", "egress.deny[1]" },
    /* Named flows are judged by name, whatever address the sandbox used: the proxy
     * dials the name (its resolved address is checked then, rules_check_resolved). */
    { "svc.internal", "10.9.1.1", 443, RULES_DENY, "egress_not_allowed", "" },
    /* An allowed range does not let a name in: SNI evil.example at 10.1.2.3 would be
     * dialed at evil.example. */
    { "exfil.example", "10.1.2.3", 443, RULES_DENY, "egress_not_allowed", "" },
    { "smtp.example", NULL, 25, RULES_DENY, "egress_deny", "egress.deny[2]" },
    /* default deny: only allowed hosts pass; rules' hosts do not allow */
    { "smtp.example", NULL, 587, RULES_DENY, "egress_not_allowed", "" },
    { "evil.example", NULL, 443, RULES_DENY, "egress_not_allowed", "" },
    { "pypi.org", NULL, 443, RULES_DENY, "egress_not_allowed", "" },
    { NULL, "192.0.2.1", 443, RULES_DENY, "egress_not_allowed", "" },
    { NULL, NULL, 443, RULES_DENY, "egress_not_allowed", "" },
    { NULL, "10.1.2.3", 22, RULES_TUNNEL, NULL, "" },
    /* a deny object with paths/methods needs the request: intercept, even over no_proxy */
    { "github.com", NULL, 443, RULES_INTERCEPT, NULL, "egress.deny[3]" },
    /* an allow object is the only way in: intercept to see the method */
    { "registry.npmjs.org", NULL, 443, RULES_INTERCEPT, NULL, "egress.allow[4]" },
    { "docs.example", NULL, 443, RULES_INTERCEPT, NULL, "egress.allow[5]" },
    /* api.github.com: header rule and a methods deny */
    { "api.github.com", NULL, 443, RULES_INTERCEPT, NULL, "egress.deny[4]" },
  };
  struct rules_config *cfg = parse_ok(egress_config, NULL);
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct rules_decision d = conn_decide(cfg, cases[i].name, cases[i].ip, cases[i].port);

    if (d.action != cases[i].action)
      TEST_FAIL_("case %zu (%s %s:%u): action %d, expected %d", i,
                 cases[i].name ? cases[i].name : "-", cases[i].ip ? cases[i].ip : "-",
                 cases[i].port, d.action, cases[i].action);
    if (cases[i].reason == NULL)
      ASSERT_NULL(d.reason);
    else
      ASSERT_STREQ(d.reason, cases[i].reason);
    ASSERT_STREQ(d.entry, cases[i].entry);
  }
  rules_config_unref(cfg);
}

TEST(egress_request_table)
{
  static const struct {
    const char *name, *method, *path;
    int deny;
    const char *reason, *entry;
  } cases[] = {
    { "github.com", "GET", "/o/r.git/info/refs?service=git-receive-pack", 0, NULL, "" },
    { "github.com", "POST", "/o/r.git/git-upload-pack", 0, NULL, "" },
    { "github.com", "POST", "/o/r.git/git-receive-pack", 1, "egress_deny", "egress.deny[3]" },
    /* method compared ignoring case: a lenient server would take "post" as POST */
    { "github.com", "post", "/o/r.git/git-receive-pack", 1, "egress_deny", "egress.deny[3]" },
    { "github.com", "POST", "/o/r.git/./git-receive-pack", 1, "egress_deny", "egress.deny[3]" },
    { "github.com", "POST", "/o/x/../r.git/git-receive-pack?x", 1, "egress_deny",
      "egress.deny[3]" },
    /* an ambiguous path may be the denied one: deny */
    { "github.com", "POST", "/o/r.git%2Fgit-receive-pack", 1, "egress_deny", "egress.deny[3]" },
    { "github.com", "GET", "/o/r.git%2Fgit-receive-pack", 0, NULL, "" },
    /* nginx and Apache merge slashes before resolving dot-segments */
    { "github.com", "POST", "/o/r.git//../r.git/x/../git-receive-pack", 1, "egress_deny",
      "egress.deny[3]" },
    { "github.com", "POST", "//o/r.git/git-receive-pack", 1, "egress_deny", "egress.deny[3]" },
    /* servlet containers strip ;params: /o/r.git/git-receive-pack */
    { "github.com", "POST", "/o/r.git/git-receive-pack;x=1", 1, "egress_deny",
      "egress.deny[3]" },
    { "api.github.com", "DELETE", "/repos/o/r", 1, "egress_deny", "egress.deny[4]" },
    { "api.github.com", "GET", "/repos/o/r", 0, NULL, "gh" },
    { "paste.pastebin.com", "GET", "/", 1, "egress_deny", "egress.deny[0]" },
    /* allow objects: only the listed methods and paths */
    { "registry.npmjs.org", "GET", "/left-pad", 0, NULL, "" },
    { "registry.npmjs.org", "HEAD", "/left-pad", 0, NULL, "" },
    { "registry.npmjs.org", "PUT", "/left-pad", 1, "egress_not_allowed", "" },
    { "docs.example", "GET", "/public/a.html", 0, NULL, "" },
    { "docs.example", "GET", "/private/a.html", 1, "egress_not_allowed", "" },
    { "docs.example", "GET", "/public/../private/a.html", 1, "egress_not_allowed", "" },
    { "docs.example", "GET", "/public/a%2F..%2F..%2Fprivate", 1, "egress_not_allowed", "" },
    { "pypi.org", "GET", "/simple/", 1, "egress_not_allowed", "" },
    { "github.com", "GET", "/o/r\r\n", 1, "invalid_path", "" },
  };
  struct rules_config *cfg = parse_ok(egress_config, NULL);
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct rules_request_decision r;

    req_decide(cfg, cases[i].name, 443, cases[i].method, cases[i].path, &r);
    if (r.deny != cases[i].deny)
      TEST_FAIL_("case %zu (%s %s %s): deny %d, expected %d", i, cases[i].method,
                 cases[i].name, cases[i].path, r.deny, cases[i].deny);
    if (cases[i].reason == NULL)
      ASSERT_NULL(r.reason);
    else
      ASSERT_STREQ(r.reason, cases[i].reason);
    ASSERT_STREQ(r.entry, cases[i].entry);
    if (r.deny)
      ASSERT_EQ(r.nheaders, 0);
  }
  rules_config_unref(cfg);
}

/*
 * An encoded '/' is read as "%2F" by servers that route before decoding and as '/' by
 * those that decode first: npm names scoped packages "/@scope%2fname", GitLab its
 * projects "group%2Fproject". Such a path matches a deny's paths if either reading
 * does, and a rule's or an allow's only if both do; every other ambiguity (a
 * dot-segment or "//" that decoding makes) still matches every deny and no rule.
 */
TEST(encoded_slash_readings)
{
  static const struct {
    const char *method, *path;
    int deny;
    const char *entry;
    size_t nheaders;
  } cases[] = {
    /* npm's scoped packages: not the denied login paths, and under the rule's */
    { "GET", "/repository/npm/@types%2fnode", 0, "nexus", 1 },
    { "GET", "/repository/npm/@corp%2Fthing/-/thing-1.0.0.tgz", 0, "nexus", 1 },
    { "PUT", "/repository/npm/@corp%2fthing", 0, "nexus", 1 },
    { "GET", "/@types%2fnode", 0, "", 0 },
    /* the denied paths under either reading */
    { "GET", "/-%2Fuser/org.couchdb.user:x", 1, "egress.deny[0]", 0 },
    { "PUT", "/-/user%2forg.couchdb.user:x", 1, "egress.deny[0]", 0 },
    /* a rule's paths under one reading only: "/repository/npm" alone, decoded */
    { "GET", "/repository%2Fnpm/x", 0, "", 0 },
    /* decoding makes a dot-segment or an empty segment: ambiguous as before */
    { "GET", "/repository/npm/..%2F..%2F-%2Fuser/x", 1, "egress.deny[0]", 0 },
    { "GET", "/repository/npm/a%2F%2Fb", 1, "egress.deny[0]", 0 },
    { "GET", "/repository/npm/%2E%2E%2Fx", 1, "egress.deny[0]", 0 },
    /* another ambiguity beside it */
    { "GET", "/repository/npm/@a%2fb;x", 1, "egress.deny[0]", 0 },
    { "GET", "/repository/npm/@a%2fb%5Cc", 1, "egress.deny[0]", 0 },
    { "GET", "/repository/npm/@a%252fb", 1, "egress.deny[0]", 0 },
  };
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"nexus\",\"match_hosts\":[\"npm.corp.example\"],"
      "  \"match_paths\":[\"/repository/npm/*\"],"
      "  \"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"t\"}]}],"
      " \"egress\":{\"deny\":[{\"hosts\":[\"npm.corp.example\"],"
      "                       \"paths\":[\"/-/user/*\",\"/-/npm/v1/tokens*\"]}]}}",
      NULL);
  struct test_addr a;
  struct rules_decision d;
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct rules_request_decision r;

    req_decide(cfg, "npm.corp.example", 443, cases[i].method, cases[i].path, &r);
    if (r.deny != cases[i].deny || r.nheaders != cases[i].nheaders)
      TEST_FAIL_("case %zu (%s %s): deny %d, %zu headers; expected %d, %zu", i,
                 cases[i].method, cases[i].path, r.deny, r.nheaders, cases[i].deny,
                 cases[i].nheaders);
    ASSERT_STREQ(r.entry, cases[i].entry);
  }
  rules_config_unref(cfg);

  /* The same for a deny entry by address. */
  cfg = parse_ok("{\"egress\":{\"deny\":[{\"hosts\":[\"203.0.113.0/24\"],"
                 "\"paths\":[\"/admin/*\"]}]}}",
                 NULL);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "GET",
                                        "/@types%2fnode", 14, &d), 1);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "GET",
                                        "/admin%2fx", 10, &d), 0);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "GET",
                                        "/x/..%2fadmin", 13, &d), 0);
  rules_config_unref(cfg);
}

TEST(default_allow_egress)
{
  struct rules_config *cfg = parse_ok(
      "{\"no_proxy\":[\"*.corp\"],"
      " \"egress\":{\"deny\":[\"*.pastebin.com\",\"bad.corp\"],"
      "  \"allow\":[{\"hosts\":[\"api.example\"],\"methods\":[\"GET\"]}]}}",
      NULL);
  struct rules_request_decision r;

  ASSERT_EQ(conn_action(cfg, "pypi.org", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, "x.pastebin.com", 443), RULES_DENY);
  ASSERT_EQ(conn_action(cfg, "pastebin.com", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, "git.corp", 443), RULES_BYPASS);
  /* no_proxy does not override a deny */
  ASSERT_EQ(conn_action(cfg, "bad.corp", 443), RULES_DENY);
  /* an allow object under default allow still forces interception */
  ASSERT_EQ(conn_action(cfg, "api.example", 443), RULES_INTERCEPT);
  req_decide(cfg, "api.example", 443, "POST", "/", &r);
  ASSERT_EQ(r.deny, 0);
  rules_config_unref(cfg);
}

/* Under default deny, no_proxy alone does not open a host. */
TEST(no_proxy_is_not_an_allow)
{
  struct rules_config *cfg = parse_ok(
      "{\"no_proxy\":[\"localhost\",\".internal.example\"],"
      " \"egress\":{\"default\":\"deny\",\"allow\":[\"svc.internal.example\"]}}",
      NULL);

  ASSERT_STREQ(conn_decide(cfg, "localhost", NULL, 80).reason, "egress_not_allowed");
  ASSERT_EQ(conn_action(cfg, "svc.internal.example", 443), RULES_BYPASS);
  ASSERT_EQ(conn_action(cfg, "other.internal.example", 443), RULES_DENY);
  rules_config_unref(cfg);
}

TEST(no_proxy_domain_form)
{
  struct rules_config *cfg = parse_ok("{\"no_proxy\":[\".example.com\"]}", NULL);

  ASSERT_EQ(conn_action(cfg, "example.com", 443), RULES_BYPASS);
  ASSERT_EQ(conn_action(cfg, "a.example.com", 443), RULES_BYPASS);
  ASSERT_EQ(conn_action(cfg, "a.b.example.com", 443), RULES_BYPASS);
  ASSERT_EQ(conn_action(cfg, "badexample.com", 443), RULES_TUNNEL);
  ASSERT_EQ(conn_action(cfg, "example.com.evil", 443), RULES_TUNNEL);
  rules_config_unref(cfg);
}

TEST(callback_decisions)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"a.corp.example\"],"
      "  \"headers\":[{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"v\"}]}],"
      " \"callback\":{\"url\":\"http://127.0.0.1:9000/creds\",\"match_hosts\":[\"*.corp.example\"],"
      "  \"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"Bearer cb\"}]}}",
      NULL);
  const struct rules_callback *cb = rules_config_callback(cfg);
  struct rules_request_decision r;
  struct rules_decision d;

  ASSERT_NOT_NULL(cb);
  ASSERT_EQ(cb->kind, RULES_CB_HTTP);
  ASSERT_STREQ(cb->url, "http://127.0.0.1:9000/creds");
  ASSERT_STREQ(cb->host, "127.0.0.1");
  ASSERT_EQ(cb->port, 9000);
  ASSERT_STREQ(cb->path, "/creds");
  ASSERT_NULL(cb->socket);
  ASSERT_EQ(cb->ttl_seconds, 300);
  ASSERT_EQ(cb->timeout_ms, 3000);
  ASSERT_EQ(cb->nheaders, 1);
  ASSERT_STREQ(cb->headers[0].name, "Authorization");
  ASSERT_STREQ(cb->headers[0].value, "Bearer cb");
  ASSERT_STREQ(cb->headers[0].rule, "callback");

  d = conn_decide(cfg, "b.corp.example", NULL, 443);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_STREQ(d.entry, "callback");
  ASSERT_STREQ(conn_decide(cfg, "a.corp.example", NULL, 443).entry, "r");
  ASSERT_EQ(conn_action(cfg, "corp.example", 443), RULES_TUNNEL);
  req_decide(cfg, "b.corp.example", 443, "GET", "/", &r);
  ASSERT_EQ(r.callback, 1);
  ASSERT_EQ(r.nheaders, 0);
  req_decide(cfg, "a.corp.example", 443, "GET", "/", &r);
  ASSERT_EQ(r.callback, 1);
  ASSERT_EQ(r.nheaders, 1);
  req_decide(cfg, "other.example", 443, "GET", "/", &r);
  ASSERT_EQ(r.callback, 0);
  rules_config_unref(cfg);
}

TEST(callback_url_forms)
{
  static const struct {
    const char *url;
    enum rules_callback_kind kind;
    const char *host, *path, *socket;
    uint16_t port;
  } cases[] = {
    { "http://127.0.0.1:9000/creds", RULES_CB_HTTP, "127.0.0.1", "/creds", NULL, 9000 },
    { "http://creds.internal", RULES_CB_HTTP, "creds.internal", "/", NULL, 80 },
    { "https://Creds.Internal/v1/x?a=b", RULES_CB_HTTPS, "creds.internal", "/v1/x?a=b", NULL,
      443 },
    { "HTTPS://creds.internal:8443", RULES_CB_HTTPS, "creds.internal", "/", NULL, 8443 },
    { "http://[::1]:9000/c", RULES_CB_HTTP, "::1", "/c", NULL, 9000 },
    { "http://[2001:db8::1]/c", RULES_CB_HTTP, "2001:db8::1", "/c", NULL, 80 },
    { "unix:/run/creds.sock", RULES_CB_UNIX, NULL, "/", "/run/creds.sock", 0 },
    { "unix:/run/creds.sock:/v1/creds", RULES_CB_UNIX, NULL, "/v1/creds", "/run/creds.sock", 0 },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char json[512];
    struct rules_config *cfg;
    const struct rules_callback *cb;

    snprintf(json, sizeof(json),
             "{\"callback\":{\"url\":\"%s\",\"match_hosts\":[\"x.com\"],\"ttl_seconds\":0,"
             "\"timeout_ms\":250}}",
             cases[i].url);
    cfg = parse_ok(json, NULL);
    cb = rules_config_callback(cfg);
    ASSERT_NOT_NULL(cb);
    ASSERT_EQ(cb->kind, cases[i].kind);
    ASSERT_STREQ(cb->url, cases[i].url);
    if (cases[i].host)
      ASSERT_STREQ(cb->host, cases[i].host);
    else
      ASSERT_NULL(cb->host);
    if (cases[i].socket)
      ASSERT_STREQ(cb->socket, cases[i].socket);
    else
      ASSERT_NULL(cb->socket);
    ASSERT_STREQ(cb->path, cases[i].path);
    ASSERT_EQ(cb->port, cases[i].port);
    ASSERT_EQ(cb->ttl_seconds, 0);
    ASSERT_EQ(cb->timeout_ms, 250);
    ASSERT_EQ(cb->nheaders, 0);
    rules_config_unref(cfg);
  }
  {
    struct rules_config *cfg = parse_ok("{}", NULL);

    ASSERT_NULL(rules_config_callback(cfg));
    rules_config_unref(cfg);
  }
}

TEST(ip_literal_names)
{
  struct rules_config *cfg = parse_ok(
      "{\"egress\":{\"deny\":[\"10.0.0.0/8\",\"fd00::/8\"]},\"no_proxy\":[\"192.168.1.1\"]}", NULL);

  ASSERT_STREQ(conn_decide(cfg, "10.1.1.1", NULL, 80).reason, "egress_deny");
  ASSERT_STREQ(conn_decide(cfg, "::ffff:10.1.1.1", NULL, 80).reason, "egress_deny");
  ASSERT_STREQ(conn_decide(cfg, "fd00::1", NULL, 80).reason, "egress_deny");
  ASSERT_STREQ(conn_decide(cfg, NULL, "::ffff:10.1.1.1", 80).reason, "egress_deny");
  ASSERT_EQ(conn_action(cfg, "192.168.1.1", 80), RULES_BYPASS);
  ASSERT_EQ(conn_action(cfg, "11.0.0.1", 80), RULES_TUNNEL);
  rules_config_unref(cfg);
}

/* A rule naming an address credentials requests that name that address, never a
 * named flow the sandbox sent to it: curl --resolve evil.example:443:10.20.0.5 would
 * have the credential sent to evil.example, which is what gets dialed. */
TEST(ip_rules_credential_ip_names_only)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"ip\",\"match_hosts\":[\"10.20.0.5\"],"
      "  \"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"t\"}]}]}",
      NULL);

  ASSERT_EQ(conn_decide(cfg, "10.20.0.5", NULL, 443).action, RULES_INTERCEPT);
  ASSERT_EQ(conn_decide(cfg, "10.20.0.5", "192.0.2.7", 443).action, RULES_INTERCEPT);
  ASSERT_EQ(conn_decide(cfg, "evil.example", "10.20.0.5", 443).action, RULES_TUNNEL);
  rules_config_unref(cfg);
}

TEST(request_path_limits)
{
  struct rules_config *cfg = parse_ok("{}", NULL);
  struct rules_request_decision r;
  struct rules_dest dest = { "x.com", NULL, 443 };
  char *long_path = malloc(9000);

  ASSERT_NOT_NULL(long_path);
  memset(long_path, 'a', 9000);
  long_path[0] = '/';
  rules_decide_request(cfg, &dest, "GET", long_path, 9000, &r);
  ASSERT_EQ(r.deny, 1);
  ASSERT_STREQ(r.reason, "path_too_long");
  /* A long query is excluded before the limit applies. */
  long_path[5] = '?';
  rules_decide_request(cfg, &dest, "GET", long_path, 9000, &r);
  ASSERT_EQ(r.deny, 0);
  rules_decide_request(cfg, &dest, "GET", NULL, 0, &r);
  ASSERT_STREQ(r.reason, "invalid_path");
  rules_decide_request(cfg, &dest, NULL, "/", 1, &r);
  ASSERT_EQ(r.deny, 0);
  /* The path is path_len bytes: an escape cut short by it is malformed, whatever
   * bytes follow in the buffer. */
  rules_decide_request(cfg, &dest, "GET", "/x%41", 4, &r);
  ASSERT_EQ(r.deny, 1);
  ASSERT_STREQ(r.reason, "invalid_path");
  rules_config_unref(cfg);

  /* The longest path (8192 bytes without its query) is read both ways when it has an
   * encoded '/', as a shorter one is: under a rule's paths in both, it gets the
   * rule's header. */
  cfg = parse_ok("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],"
                 "\"match_paths\":[\"/repo/*\"],"
                 "\"headers\":[{\"name\":\"X-T\",\"type\":\"plaintext\",\"value\":\"v\"}]}]}",
                 NULL);
  memset(long_path, 'a', 9000);
  memcpy(long_path, "/repo/x%2F", 10);
  long_path[8192] = '?';
  rules_decide_request(cfg, &dest, "GET", long_path, 9000, &r);
  ASSERT_EQ(r.deny, 0);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_STREQ(r.entry, "r");
  /* One byte more is too long. */
  long_path[8192] = 'a';
  long_path[8193] = '?';
  rules_decide_request(cfg, &dest, "GET", long_path, 9000, &r);
  ASSERT_EQ(r.deny, 1);
  ASSERT_STREQ(r.reason, "path_too_long");
  free(long_path);
  rules_config_unref(cfg);
}

struct resolved_case {
  const char *ip;
  uint16_t port;
  unsigned flags; /* RULES_RESOLVED_* */
  int allowed;
  const char *reason;
};

static void check_resolved_table(const struct rules_config *cfg,
                                 const struct resolved_case *cases, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    struct rules_decision d;
    struct test_addr a;
    int ok;

    memset(&d, 0, sizeof(d));
    d.action = RULES_INTERCEPT;
    snprintf(d.entry, sizeof(d.entry), "conn");
    ok = rules_check_resolved(cfg, test_sa(&a, cases[i].ip), cases[i].port,
                              cases[i].flags, &d);
    if (ok != cases[i].allowed)
      TEST_FAIL_("%s port %u flags %u: allowed %d, expected %d", cases[i].ip,
                 cases[i].port, cases[i].flags, ok, cases[i].allowed);
    if (ok) {
      /* Untouched: the connection's own decision stays. */
      ASSERT_EQ(d.action, RULES_INTERCEPT);
      ASSERT_STREQ(d.entry, "conn");
      ASSERT_NULL(d.reason);
    } else {
      ASSERT_EQ(d.action, RULES_DENY);
      ASSERT_STREQ(d.reason, cases[i].reason);
    }
  }
}

TEST(resolved_addresses_blocked_ranges)
{
  static const struct resolved_case cases[] = {
    { "8.8.8.8", 443, 0, 1, NULL },
    { "10.0.0.1", 443, 0, 1, NULL },
    { "2001:db8::1", 443, 0, 1, NULL },
    { "0.0.0.0", 443, 0, 0, "blocked_address" },
    { "0.1.2.3", 443, 0, 0, "blocked_address" },
    { "127.0.0.1", 443, 0, 0, "blocked_address" },
    { "127.255.255.254", 443, 0, 0, "blocked_address" },
    { "169.254.169.254", 80, 0, 0, "blocked_address" },
    { "169.254.0.1", 80, 0, 0, "blocked_address" },
    { "169.255.0.1", 80, 0, 1, NULL },
    { "224.0.0.1", 443, 0, 0, "blocked_address" },
    { "239.255.255.250", 443, 0, 0, "blocked_address" },
    { "240.0.0.1", 443, 0, 0, "blocked_address" },
    { "255.255.255.255", 443, 0, 0, "blocked_address" },
    { "198.18.0.1", 443, 0, 0, "blocked_address" },
    { "198.19.255.255", 443, 0, 0, "blocked_address" },
    { "198.17.255.255", 443, 0, 1, NULL },
    { "198.20.0.0", 443, 0, 1, NULL },
    { "::", 443, 0, 0, "blocked_address" },
    { "::1", 443, 0, 0, "blocked_address" },
    { "::2", 443, 0, 1, NULL },
    { "fe80::1", 443, 0, 0, "blocked_address" },
    { "febf::1", 443, 0, 0, "blocked_address" },
    { "fec0::1", 443, 0, 1, NULL },
    { "ff02::1", 443, 0, 0, "blocked_address" },
    { "fd00:ec2::254", 80, 0, 0, "blocked_address" },
    { "fd00:ec2::253", 80, 0, 1, NULL },
    { "::ffff:127.0.0.1", 443, 0, 0, "blocked_address" },
    { "::ffff:169.254.169.254", 80, 0, 0, "blocked_address" },
    { "::ffff:0.0.0.0", 443, 0, 0, "blocked_address" },
    { "::ffff:198.18.1.1", 443, 0, 0, "blocked_address" },
    { "::ffff:8.8.8.8", 443, 0, 1, NULL },
    /* the operator chose the target with dns.remap */
    { "127.0.0.1", 8443, RULES_RESOLVED_REMAPPED, 1, NULL },
    { "::1", 8443, RULES_RESOLVED_REMAPPED, 1, NULL },
  };
  struct rules_config *cfg = parse_ok("{}", NULL);

  check_resolved_table(cfg, cases, sizeof(cases) / sizeof(cases[0]));
  rules_config_unref(cfg);
}

TEST(resolved_addresses_egress)
{
  static const struct resolved_case cases[] = {
    { "127.0.0.1", 8080, 0, 1, NULL },
    { "::ffff:127.0.0.1", 8080, 0, 1, NULL },
    { "127.0.0.1", 8081, 0, 0, "blocked_address" },
    { "169.254.169.254", 80, 0, 1, NULL },
    { "169.254.169.253", 80, 0, 0, "blocked_address" },
    { "8.8.8.8", 53, 0, 0, "egress_deny" },
    { "8.8.4.4", 443, 0, 1, NULL },
    { "1.1.1.1", 443, 0, 0, "egress_deny" },
    { "1.1.1.1", 80, 0, 1, NULL },
    /* a deny entry applies even to a remapped target */
    { "8.8.8.8", 53, RULES_RESOLVED_REMAPPED, 0, "egress_deny" },
    { "2001:db8::5", 443, 0, 0, "egress_deny" },
    /* entries with paths or methods decide per request on a connection whose
     * requests are read, and refuse one relayed as opaque bytes */
    { "203.0.113.7", 443, RULES_RESOLVED_INSPECTED, 1, NULL },
    { "203.0.113.7", 443, RULES_RESOLVED_INSPECTED | RULES_RESOLVED_REMAPPED, 1, NULL },
    { "203.0.113.7", 443, 0, 0, "egress_deny" },
    { "203.0.114.7", 443, 0, 1, NULL },
    { "8.8.8.8", 53, RULES_RESOLVED_INSPECTED, 0, "egress_deny" },
  };
  struct rules_config *cfg = parse_ok(
      "{\"egress\":{\"allow\":[\"127.0.0.1:8080\",{\"hosts\":[\"169.254.169.254/32\"]}],"
      " \"deny\":[\"8.8.8.0/24\",\"1.1.1.1:443\",\"[2001:db8::/32]\",\"*.pastebin.com\","
      "  {\"hosts\":[\"203.0.113.0/24\"],\"methods\":[\"POST\"]}]}}",
      NULL);
  struct rules_decision d;
  struct sockaddr_un un;

  check_resolved_table(cfg, cases, sizeof(cases) / sizeof(cases[0]));
  {
    struct test_addr a;

    memset(&d, 0, sizeof(d));
    ASSERT_EQ(rules_check_resolved(cfg, test_sa(&a, "8.8.8.8"), 53, 0, &d), 0);
    ASSERT_STREQ(d.entry, "egress.deny[0]");
  }
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  ASSERT_EQ(rules_check_resolved(cfg, (const struct sockaddr *)&un, 80, 0, &d), 0);
  ASSERT_STREQ(d.reason, "blocked_address");
  ASSERT_EQ(rules_check_resolved(cfg, NULL, 80, 0, &d), 0);
  rules_config_unref(cfg);
}

TEST(request_address)
{
  struct rules_config *cfg = parse_ok(
      "{\"egress\":{\"deny\":[\"8.8.8.0/24\","
      "  {\"hosts\":[\"203.0.113.0/24\", \"internal.example\"],\"methods\":[\"POST\"]},"
      "  {\"hosts\":[\"[2001:db8::/32]:8443\"],\"paths\":[\"/admin/*\"]}]}}",
      NULL);
  struct rules_config *plain = parse_ok(
      "{\"egress\":{\"deny\":[\"10.0.0.0/8\", {\"hosts\":[\"x.example\"],"
      "\"paths\":[\"/a\"]}]}}",
      NULL);
  struct rules_decision d;
  struct test_addr a;

  ASSERT_EQ(rules_has_address_requests(cfg), 1);
  /* Entries on addresses without paths or methods, or on names only, are decided
   * before the dial. */
  ASSERT_EQ(rules_has_address_requests(plain), 0);

  memset(&d, 0, sizeof(d));
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "POST",
                                        "/x", 2, &d), 0);
  ASSERT_STREQ(d.reason, "egress_deny");
  ASSERT_STREQ(d.entry, "egress.deny[1]");
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "post",
                                        "/x", 2, &d), 0);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "GET",
                                        "/x", 2, &d), 1);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.114.9", 443), "POST",
                                        "/x", 2, &d), 1);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "::ffff:203.0.113.9", 80),
                                        "POST", "/", 1, &d), 0);
  /* A NAT64 address (64:ff9b::/96) is the IPv4 address it embeds. */
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "64:ff9b::cb00:7109", 443),
                                        "POST", "/", 1, &d), 0);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "64:ff9b::cb00:7209", 443),
                                        "POST", "/", 1, &d), 1);
  /* Paths: normalized, ambiguous ones match every deny; the entry's port counts. */
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "2001:db8::1", 8443), "GET",
                                        "/admin/x?q=1", 12, &d), 0);
  ASSERT_STREQ(d.entry, "egress.deny[2]");
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "2001:db8::1", 8443), "GET",
                                        "/%61dmin/x", 10, &d), 0);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "2001:db8::1", 8443), "GET",
                                        "/public/../admin/x", 18, &d), 0);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "2001:db8::1", 8443), "GET",
                                        "/public/x", 9, &d), 1);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "2001:db8::1", 443), "GET",
                                        "/admin/x", 8, &d), 1);
  /* The connection-level entry (no methods) is not this check's: it refused the
   * address before the dial. */
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "8.8.8.8", 443), "GET", "/",
                                        1, &d), 1);
  ASSERT_EQ(rules_check_request_address(cfg, NULL, "GET", "/", 1, &d), 0);
  ASSERT_STREQ(d.reason, "blocked_address");
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "203.0.113.9", 443), "GET",
                                        "x", 1, &d), 0);
  ASSERT_STREQ(d.reason, "invalid_path");
  rules_config_unref(plain);
  rules_config_unref(cfg);
}

TEST(remap)
{
  struct rules_config *cfg = parse_ok(
      "{\"dns\":{\"remap\":{\"pypi.org\":\"pypi-mirror.internal\",\"api.github.com\":\"127.0.0.1:8443\","
      "\"Files.PythonHosted.org.\":\"[::1]:9000\",\"v6.example\":\"[2001:DB8::1]\","
      "\"mirror.example\":\"Mirror.Internal:8080\"}}}",
      NULL);
  char host[RULES_MAX_NAME_LEN + 1], small[4];
  uint16_t port = 0;

  ASSERT_EQ(rules_remap(cfg, "pypi.org", 443, host, sizeof(host), &port), 1);
  ASSERT_STREQ(host, "pypi-mirror.internal");
  ASSERT_EQ(port, 443);
  ASSERT_EQ(rules_remap(cfg, "api.github.com", 443, host, sizeof(host), &port), 1);
  ASSERT_STREQ(host, "127.0.0.1");
  ASSERT_EQ(port, 8443);
  ASSERT_EQ(rules_remap(cfg, "files.pythonhosted.org", 443, host, sizeof(host), &port), 1);
  ASSERT_STREQ(host, "::1");
  ASSERT_EQ(port, 9000);
  ASSERT_EQ(rules_remap(cfg, "v6.example", 80, host, sizeof(host), &port), 1);
  ASSERT_STREQ(host, "2001:db8::1");
  ASSERT_EQ(port, 80);
  ASSERT_EQ(rules_remap(cfg, "mirror.example", 80, host, sizeof(host), &port), 1);
  ASSERT_STREQ(host, "mirror.internal");
  ASSERT_EQ(port, 8080);
  ASSERT_EQ(rules_remap(cfg, "github.com", 443, host, sizeof(host), &port), 0);
  ASSERT_EQ(rules_remap(cfg, "org", 443, host, sizeof(host), &port), 0);
  ASSERT_EQ(rules_remap(cfg, "zzz.example", 443, host, sizeof(host), &port), 0);
  ASSERT_EQ(rules_remap(cfg, NULL, 443, host, sizeof(host), &port), 0);
  ASSERT_EQ(rules_remap(cfg, "pypi.org", 443, small, sizeof(small), &port), -ENOSPC);
  /* Room for the name and its NUL is enough. */
  ASSERT_EQ(rules_remap(cfg, "pypi.org", 443, host, strlen("pypi-mirror.internal") + 1, &port),
            1);
  ASSERT_STREQ(host, "pypi-mirror.internal");
  rules_config_unref(cfg);

  cfg = parse_ok("{}", NULL);
  ASSERT_EQ(rules_remap(cfg, "pypi.org", 443, host, sizeof(host), &port), 0);
  rules_config_unref(cfg);
}

/*
 * A secret header (workspace_secret, opaque) or a callback's credentials go over plain
 * HTTP only where the rule or the callback has allow_plain_http; a plaintext header
 * always may. rules_request_needs_tls names what refuses the cleartext request.
 */
TEST(plain_http_needs_opt_in)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":["
      "{\"name\":\"tls-only\",\"match_hosts\":[\"api.x.com\"],\"match_paths\":[\"/v1/*\"],"
      " \"headers\":[{\"name\":\"Authorization\",\"type\":\"opaque\",\"value\":\"k1\"}]},"
      "{\"name\":\"mirror\",\"match_hosts\":[\"mirror.internal\", \"api.x.com\"],"
      " \"allow_plain_http\":true,"
      " \"headers\":[{\"name\":\"X-Mirror-Key\",\"type\":\"opaque\",\"value\":\"k2\"}]},"
      "{\"name\":\"tag\",\"match_hosts\":[\"*\"],"
      " \"headers\":[{\"name\":\"X-Team\",\"type\":\"plaintext\",\"value\":\"agents\"}]}],"
      " \"callback\":{\"url\":\"http://127.0.0.1:9000/\",\"match_hosts\":[\"*.cb.example\"]}}",
      NULL);
  struct rules_config *cb_plain = parse_ok(
      "{\"callback\":{\"url\":\"http://127.0.0.1:9000/\",\"match_hosts\":[\"*.cb.example\"],"
      " \"allow_plain_http\":false}}", NULL);
  struct rules_config *cb_open = parse_ok(
      "{\"callback\":{\"url\":\"http://127.0.0.1:9000/\",\"match_hosts\":[\"*.cb.example\"],"
      " \"allow_plain_http\":true}}", NULL);
  struct rules_request_decision r;

  req_decide(cfg, "api.x.com", 80, "GET", "/v1/models", &r);
  ASSERT_EQ(r.nheaders, 3);
  ASSERT_STREQ(rules_request_needs_tls(cfg, &r), "tls-only");
  /* Outside /v1 only the opted-in rule's secret and the plaintext header apply. */
  req_decide(cfg, "api.x.com", 80, "GET", "/v2/models", &r);
  ASSERT_EQ(r.nheaders, 2);
  ASSERT_NULL(rules_request_needs_tls(cfg, &r));
  req_decide(cfg, "mirror.internal", 80, "GET", "/simple/", &r);
  ASSERT_NULL(rules_request_needs_tls(cfg, &r));
  req_decide(cfg, "other.example", 80, "GET", "/", &r);
  ASSERT_EQ(r.nheaders, 1);
  ASSERT_NULL(rules_request_needs_tls(cfg, &r));
  req_decide(cfg, "a.cb.example", 80, "GET", "/", &r);
  ASSERT_STREQ(rules_request_needs_tls(cfg, &r), "callback");
  req_decide(cb_plain, "a.cb.example", 80, "GET", "/", &r);
  ASSERT_STREQ(rules_request_needs_tls(cb_plain, &r), "callback");
  req_decide(cb_open, "a.cb.example", 80, "GET", "/", &r);
  ASSERT_NULL(rules_request_needs_tls(cb_open, &r));
  rules_config_unref(cfg);
  rules_config_unref(cb_plain);
  rules_config_unref(cb_open);

  parse_err("{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"x\"],\"allow_plain_http\":1}]}",
            NULL, "rules[0].allow_plain_http", "must be true or false");
  parse_err("{\"callback\":{\"url\":\"http://127.0.0.1/\",\"match_hosts\":[\"x\"],"
            "\"allow_plain_http\":\"yes\"}}",
            NULL, "callback.allow_plain_http", "must be true or false");
}
