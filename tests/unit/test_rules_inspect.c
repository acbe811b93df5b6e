/*
 * rules_decision.inspect: set exactly when request-level egress policy decides the
 * connection's fate, so the proxy never relays such a connection as opaque bytes
 * (found by tests/adversarial/test_request_policy_evasion.sh).
 */
#include "test_rules_helpers.h"

TEST(inspect_set_by_request_level_deny)
{
  struct rules_config *cfg = parse_ok(
      "{\"rules\":[{\"name\":\"gh\",\"match_hosts\":[\"github.com\",\"api.example.com\"],"
      "\"headers\":[{\"name\":\"X-K\",\"type\":\"plaintext\",\"value\":\"v\"}]}],"
      "\"no_proxy\":[\"git.example.com\"],"
      "\"egress\":{\"default\":\"allow\",\"deny\":[\"bad.example.com\","
      "{\"hosts\":[\"github.com\",\"git.example.com\"],\"paths\":[\"/*/git-receive-pack\"],"
      "\"methods\":[\"POST\"]}]}}",
      NULL);
  struct rules_decision d;

  /* The deny object forces interception, also over the rule and over no_proxy. */
  d = conn_decide(cfg, "github.com", NULL, 443);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_EQ(d.inspect, 1);
  d = conn_decide(cfg, "git.example.com", NULL, 80);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_EQ(d.inspect, 1);
  /* Interception for injection only: nothing is lost by relaying other protocols. */
  d = conn_decide(cfg, "api.example.com", NULL, 22);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_EQ(d.inspect, 0);
  d = conn_decide(cfg, "other.example.com", NULL, 443);
  ASSERT_EQ(d.action, RULES_TUNNEL);
  ASSERT_EQ(d.inspect, 0);
  d = conn_decide(cfg, "bad.example.com", NULL, 443);
  ASSERT_EQ(d.action, RULES_DENY);
  ASSERT_EQ(d.inspect, 0);
  d = conn_decide(cfg, "Not A Name", NULL, 443);
  ASSERT_EQ(d.action, RULES_DENY);
  ASSERT_EQ(d.inspect, 0);
  rules_config_unref(cfg);
}

TEST(inspect_set_by_restricted_allow_under_default_deny)
{
  struct rules_config *cfg = parse_ok(
      "{\"egress\":{\"default\":\"deny\",\"allow\":[\"full.example.com\","
      "{\"hosts\":[\"ro.example.com\"],\"methods\":[\"GET\"]}]}}",
      NULL);
  struct rules_decision d;

  d = conn_decide(cfg, "ro.example.com", NULL, 80);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_EQ(d.inspect, 1);
  d = conn_decide(cfg, "full.example.com", NULL, 80);
  ASSERT_EQ(d.action, RULES_TUNNEL);
  ASSERT_EQ(d.inspect, 0);
  d = conn_decide(cfg, "elsewhere.example.com", NULL, 80);
  ASSERT_EQ(d.action, RULES_DENY);
  ASSERT_EQ(d.inspect, 0);
  rules_config_unref(cfg);
}

TEST(inspect_not_set_by_restricted_allow_under_default_allow)
{
  /* Under default allow an allow object restricts nothing: requests that miss it
   * are allowed anyway, so a blind relay bypasses no policy. */
  struct rules_config *cfg = parse_ok(
      "{\"egress\":{\"default\":\"allow\",\"allow\":["
      "{\"hosts\":[\"ro.example.com\"],\"methods\":[\"GET\"]}]}}",
      NULL);
  struct rules_decision d;

  d = conn_decide(cfg, "ro.example.com", NULL, 80);
  ASSERT_EQ(d.action, RULES_INTERCEPT);
  ASSERT_EQ(d.inspect, 0);
  rules_config_unref(cfg);
}
