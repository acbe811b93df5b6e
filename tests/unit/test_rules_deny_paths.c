/*
 * egress.deny paths against the spellings of a path that the common server
 * frameworks route to the same handler: Express (caseSensitive and strict routing
 * off by default), ASP.NET Core and IIS (case-insensitive), Spring MVC before 6
 * (trailing-slash match on). A deny must catch them; allow entries and match_paths,
 * which grant, stay exact.
 */
#include "test_rules_helpers.h"

static const char deny_cfg[] =
    "{\"egress\":{\"deny\":["
    "{\"hosts\":[\"h.example\"],\"paths\":[\"/admin\"]},"
    "{\"hosts\":[\"h.example\"],\"paths\":[\"/api/v1/keys/\"],\"methods\":[\"DELETE\"]},"
    "{\"hosts\":[\"h.example\"],\"paths\":[\"/*/git-receive-pack\"],\"methods\":[\"POST\"]},"
    "{\"hosts\":[\"h.example\"],\"paths\":[\"/internal/*\"]},"
    "{\"hosts\":[\"10.9.0.0/16\"],\"paths\":[\"/admin\"]}]},"
    "\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"h.example\"],\"match_paths\":[\"/user\"],"
    "\"headers\":[{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"t\"}]}]}";

TEST(deny_paths_case_and_trailing_slash)
{
  struct rules_config *cfg = parse_ok(deny_cfg, NULL);
  static const struct {
    const char *method, *path;
    int deny;
  } cases[] = {
    { "GET", "/admin", 1 },
    { "GET", "/admin/", 1 },
    { "GET", "/ADMIN", 1 },
    { "GET", "/Admin/", 1 },
    { "GET", "/%41dmin", 1 },
    { "GET", "/admin?x=1", 1 },
    /* An encoded '%' before two hex digits at the very end: "/admin" to a server that
     * decodes twice, so ambiguous, which every deny's paths cover. */
    { "GET", "/admi%256e", 1 },
    { "GET", "/x%2530", 1 },
    { "GET", "/admins", 0 },
    { "GET", "/administrator", 0 },
    { "GET", "/admin/x", 0 },
    { "GET", "/", 0 },
    { "DELETE", "/api/v1/keys/", 1 },
    { "DELETE", "/api/v1/keys", 1 },
    { "DELETE", "/API/V1/Keys", 1 },
    { "DELETE", "/api/v1/keysx", 0 },
    { "GET", "/api/v1/keys", 0 },
    { "POST", "/o/r.git/git-receive-pack", 1 },
    { "POST", "/o/r.git/git-receive-pack/", 1 },
    { "POST", "/O/R.git/GIT-RECEIVE-PACK", 1 },
    { "POST", "/o/r.git/git-upload-pack", 0 },
    { "GET", "/internal/x", 1 },
    { "GET", "/INTERNAL/x", 1 },
    { "GET", "/Internal/", 1 },
    /* The pattern ending in a star is written for what is under /internal/. */
    { "GET", "/internal", 0 },
    { "GET", "/internalx", 0 },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct rules_request_decision r;

    req_decide(cfg, "h.example", 443, cases[i].method, cases[i].path, &r);
    if (r.deny != cases[i].deny)
      TEST_FAIL_("%s %s: deny %d, expected %d", cases[i].method, cases[i].path, r.deny,
                 cases[i].deny);
    if (r.deny)
      ASSERT_STREQ(r.reason, "egress_deny");
  }
  rules_config_unref(cfg);
}

/* Globs with stars inside are matched in one pass for the three spellings (as is,
 * the path's trailing slash left out, the pattern's left out): the same verdicts as
 * three matches. */
TEST(deny_paths_glob_forms)
{
  static const char cfg_json[] =
      "{\"egress\":{\"deny\":["
      "{\"hosts\":[\"h.example\"],\"paths\":[\"*x/*/\"]},"
      "{\"hosts\":[\"h.example\"],\"paths\":[\"*a/*\"]},"
      "{\"hosts\":[\"h.example\"],\"paths\":[\"/v*/keys/\"]},"
      "{\"hosts\":[\"h.example\"],\"paths\":[\"/q*/list\"]}]}}";
  struct rules_config *cfg = parse_ok(cfg_json, NULL);
  static const struct {
    const char *path;
    int deny;
  } cases[] = {
    /* The first pattern shortened covers it; as written it needs one more slash. */
    { "/ax/", 1 },
    { "/aX/b", 1 },
    { "/ax", 0 },
    /* The second as written: its last star takes nothing. */
    { "/xa/", 1 },
    { "/xA/y/", 1 },
    { "/xa", 0 },
    { "/v1/keys", 1 },
    { "/V1/Keys/", 1 },
    { "/v1/keysx", 0 },
    { "/v1/keys/x", 0 },
    { "/q1/list", 1 },
    { "/q1/LIST/", 1 },
    { "/q1/list/x", 0 },
    { "/q1/lis", 0 },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct rules_request_decision r;

    req_decide(cfg, "h.example", 443, "GET", cases[i].path, &r);
    if (r.deny != cases[i].deny)
      TEST_FAIL_("GET %s: deny %d, expected %d", cases[i].path, r.deny, cases[i].deny);
  }
  rules_config_unref(cfg);
}

/* The same for deny entries on addresses, decided on the address being dialed. */
TEST(deny_paths_case_and_trailing_slash_by_address)
{
  struct rules_config *cfg = parse_ok(deny_cfg, NULL);
  struct rules_decision d;
  struct test_addr a;
  static const char *const denied[] = { "/admin", "/admin/", "/ADMIN", "/aDmIn/" };
  size_t i;

  for (i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
    const char *p = denied[i];

    if (rules_check_request_address(cfg, test_sa_port(&a, "10.9.1.2", 80), "GET", p,
                                    strlen(p), &d) != 0)
      TEST_FAIL_("GET %s to 10.9.1.2 allowed", p);
    ASSERT_STREQ(d.reason, "egress_deny");
    ASSERT_STREQ(d.entry, "egress.deny[4]");
  }
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "10.9.1.2", 80), "GET",
                                        "/admins", 7, &d),
            1);
  ASSERT_EQ(rules_check_request_address(cfg, test_sa_port(&a, "10.8.1.2", 80), "GET",
                                        "/admin", 6, &d),
            1);
  rules_config_unref(cfg);
}

/* Granting entries stay exact: a credential goes to the path written, as written. */
TEST(grant_paths_stay_exact)
{
  struct rules_config *cfg = parse_ok(deny_cfg, NULL);
  struct rules_config *allow = parse_ok(
      "{\"egress\":{\"default\":\"deny\",\"allow\":["
      "{\"hosts\":[\"h.example\"],\"paths\":[\"/public\"]}]}}",
      NULL);
  struct rules_request_decision r;

  req_decide(cfg, "h.example", 443, "GET", "/user", &r);
  ASSERT_EQ(r.deny, 0);
  ASSERT_EQ(r.nheaders, 1);
  req_decide(cfg, "h.example", 443, "GET", "/User", &r);
  ASSERT_EQ(r.nheaders, 0);
  req_decide(cfg, "h.example", 443, "GET", "/user/", &r);
  ASSERT_EQ(r.nheaders, 0);
  req_decide(allow, "h.example", 443, "GET", "/public", &r);
  ASSERT_EQ(r.deny, 0);
  req_decide(allow, "h.example", 443, "GET", "/PUBLIC", &r);
  ASSERT_EQ(r.deny, 1);
  req_decide(allow, "h.example", 443, "GET", "/public/", &r);
  ASSERT_EQ(r.deny, 1);
  rules_config_unref(allow);
  rules_config_unref(cfg);
}
