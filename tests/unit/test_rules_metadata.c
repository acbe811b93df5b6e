/*
 * Cloud metadata and platform endpoints outside the link-local range are refused as
 * resolved addresses like 169.254.169.254 is: Alibaba Cloud's instance metadata
 * (100.100.100.200), Azure's platform endpoint (WireServer, 168.63.129.16), and
 * Google Cloud's IPv6 metadata server (fd20:ce::254), next to EC2's fd00:ec2::254.
 * An egress.allow entry or dns.remap naming one still opens it.
 */
#include "test_rules_helpers.h"

static int resolved(const struct rules_config *cfg, const char *ip, uint16_t port,
                    unsigned flags, struct rules_decision *d)
{
  struct test_addr a;

  memset(d, 0x5a, sizeof(*d));
  return rules_check_resolved(cfg, test_sa_port(&a, ip, port), port, flags, d);
}

/* Every address of blocked[] is refused as blocked_address, every one of open[] may be
 * dialed, under cfg. */
static void check_addresses(const struct rules_config *cfg, const char *const *blocked,
                            size_t nblocked, const char *const *open, size_t nopen)
{
  struct rules_decision d;
  size_t i;

  for (i = 0; i < nblocked; i++) {
    if (resolved(cfg, blocked[i], 80, 0, &d) != 0)
      TEST_FAIL_("%s may be dialed", blocked[i]);
    ASSERT_STREQ(d.reason, "blocked_address");
  }
  for (i = 0; i < nopen; i++)
    if (resolved(cfg, open[i], 80, 0, &d) != 1)
      TEST_FAIL_("%s refused", open[i]);
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

TEST(metadata_endpoints_blocked)
{
  static const char *const blocked[] = { "100.100.100.200", "::ffff:100.100.100.200",
                                         "168.63.129.16", "fd20:ce::254" };
  static const char *const open[] = { "100.100.100.199", "100.100.100.201",
                                      "100.64.0.1", "168.63.129.17", "fd20:ce::253" };
  struct rules_config *cfg = parse_ok("{}", NULL);

  check_addresses(cfg, blocked, COUNT(blocked), open, COUNT(open));
  rules_config_unref(cfg);
}

TEST(metadata_endpoints_open_when_chosen)
{
  struct rules_config *cfg =
      parse_ok("{\"egress\":{\"allow\":[\"100.100.100.200/32\", \"[fd20:ce::254]:80\"]}}",
               NULL);
  struct rules_decision d;

  ASSERT_EQ(resolved(cfg, "100.100.100.200", 80, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "fd20:ce::254", 80, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "fd20:ce::254", 443, 0, &d), 0);
  ASSERT_EQ(resolved(cfg, "168.63.129.16", 80, 0, &d), 0);
  ASSERT_EQ(resolved(cfg, "168.63.129.16", 80, RULES_RESOLVED_REMAPPED, &d), 1);
  rules_config_unref(cfg);
}

/* 64:ff9b::/96 (RFC 6052) reaches the IPv4 address in its last 32 bits through a
 * NAT64 gateway: each address is refused, denied and allowed as that IPv4 address too. */
TEST(nat64_addresses_checked_as_embedded_ipv4)
{
  static const char *const blocked[] = { "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
                                         "64:ff9b::6464:64c8", "64:ff9b::c612:1" };
  static const char *const open[] = { "64:ff9b::5db8:d822", "64:ff9a::7f00:1",
                                      "64:ff9b:1::7f00:1", "::ffff:93.184.216.34" };
  struct rules_config *cfg = parse_ok("{}", NULL);
  struct rules_decision d;

  check_addresses(cfg, blocked, COUNT(blocked), open, COUNT(open));
  rules_config_unref(cfg);

  cfg = parse_ok("{\"egress\":{\"deny\":[\"10.0.0.0/8\"],"
                 "\"allow\":[\"169.254.169.254/32\"]}}",
                 NULL);
  ASSERT_EQ(resolved(cfg, "64:ff9b::a01:203", 443, 0, &d), 0);
  ASSERT_STREQ(d.reason, "egress_deny");
  ASSERT_EQ(resolved(cfg, "64:ff9b::b01:203", 443, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "64:ff9b::a9fe:a9fe", 80, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "64:ff9b::a9fe:a9fd", 80, 0, &d), 0);
  rules_config_unref(cfg);
}

/* The credential callback is never dialed for the sandbox, even where dns.remap or an
 * egress.allow entry opens its address; a loopback one on no loopback address. */
TEST(callback_endpoint_never_dialed)
{
  struct rules_config *cfg = parse_ok(
      "{\"callback\":{\"url\":\"http://127.0.0.1:9000/creds\",\"match_hosts\":[\"*.corp\"]},"
      "\"egress\":{\"allow\":[\"10.0.0.0/8\"]}}",
      NULL);
  struct rules_decision d;

  ASSERT_EQ(resolved(cfg, "127.0.0.1", 9000, RULES_RESOLVED_REMAPPED, &d), 0);
  ASSERT_STREQ(d.reason, "callback_endpoint");
  ASSERT_EQ(resolved(cfg, "127.0.0.2", 9000, RULES_RESOLVED_REMAPPED, &d), 0);
  ASSERT_EQ(resolved(cfg, "::1", 9000, RULES_RESOLVED_REMAPPED, &d), 0);
  ASSERT_EQ(resolved(cfg, "::ffff:127.0.0.1", 9000, RULES_RESOLVED_REMAPPED, &d), 0);
  ASSERT_EQ(resolved(cfg, "0.0.0.0", 9000, RULES_RESOLVED_REMAPPED, &d), 0);
  ASSERT_EQ(resolved(cfg, "127.0.0.1", 9001, RULES_RESOLVED_REMAPPED, &d), 1);
  ASSERT_EQ(resolved(cfg, "10.1.2.3", 9000, 0, &d), 1);
  /* Only loopback and unspecified addresses are loopback's: not one whose last bytes
   * are zero, not any other IPv6 address. */
  ASSERT_EQ(resolved(cfg, "10.1.0.0", 9000, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "2001:db8::1", 9000, 0, &d), 1);
  rules_config_unref(cfg);

  cfg = parse_ok(
      "{\"callback\":{\"url\":\"https://10.1.2.3:8443/creds\",\"match_hosts\":[\"*.corp\"]},"
      "\"egress\":{\"allow\":[\"10.0.0.0/8\"]}}",
      NULL);
  ASSERT_EQ(resolved(cfg, "10.1.2.3", 8443, 0, &d), 0);
  ASSERT_STREQ(d.reason, "callback_endpoint");
  ASSERT_EQ(resolved(cfg, "10.1.2.4", 8443, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "127.0.0.1", 8443, RULES_RESOLVED_REMAPPED, &d), 1);
  rules_config_unref(cfg);
}

/* An address of the host's own (the caller asked its kernel) is refused like
 * loopback, unless the operator chose it: a remap naming it, an allow entry covering
 * it. A loopback callback is refused there at its port whatever opens it. */
TEST(host_own_address_blocked)
{
  struct rules_config *cfg = parse_ok("{}", NULL);
  struct rules_decision d;

  ASSERT_EQ(resolved(cfg, "192.0.2.10", 5432, 0, &d), 1);
  ASSERT_EQ(resolved(cfg, "192.0.2.10", 5432, RULES_RESOLVED_HOST_LOCAL, &d), 0);
  ASSERT_STREQ(d.reason, "blocked_address");
  ASSERT_EQ(resolved(cfg, "2001:db8::10", 5432, RULES_RESOLVED_HOST_LOCAL, &d), 0);
  ASSERT_EQ(resolved(cfg, "192.0.2.10", 5432,
                     RULES_RESOLVED_HOST_LOCAL | RULES_RESOLVED_REMAPPED, &d), 1);
  rules_config_unref(cfg);

  cfg = parse_ok(
      "{\"callback\":{\"url\":\"http://localhost:9000/creds\",\"match_hosts\":[\"*.corp\"]},"
      "\"egress\":{\"allow\":[\"192.0.2.10\"]}}",
      NULL);
  ASSERT_EQ(resolved(cfg, "192.0.2.10", 8080, RULES_RESOLVED_HOST_LOCAL, &d), 1);
  ASSERT_EQ(resolved(cfg, "192.0.2.10", 9000, RULES_RESOLVED_HOST_LOCAL, &d), 0);
  ASSERT_STREQ(d.reason, "callback_endpoint");
  ASSERT_EQ(resolved(cfg, "192.0.2.10", 9000, 0, &d), 1);
  rules_config_unref(cfg);
}

/* Which callbacks can be found at an address (their URL gives one, or localhost):
 * the others are reached by name only, and the proxy skips them per dial. */
TEST(callback_has_address)
{
  static const char *const hosts[][2] = {
    { "http://127.0.0.1:9000/c", "1" }, { "http://[::1]:9000/c", "1" },
    { "https://10.1.2.3:8443/c", "1" }, { "http://localhost:9000/c", "1" },
    { "http://creds.localhost:9000/c", "1" }, { "https://creds.internal/c", "0" },
    { "unix:/run/creds.sock", "0" },
  };
  size_t i;

  for (i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
    char json[256];
    struct rules_config *cfg;

    snprintf(json, sizeof(json), "{\"callback\":{\"url\":\"%s\",\"match_hosts\":[\"*.corp\"]}}",
             hosts[i][0]);
    cfg = parse_ok(json, NULL);
    ASSERT_EQ(rules_callback_has_address(rules_config_callback(cfg)), hosts[i][1][0] - '0');
    rules_config_unref(cfg);
  }
  ASSERT_EQ(rules_callback_has_address(NULL), 0);
}

/* The helpers the proxy uses for the callbacks of every config it serves and for the
 * host's own addresses behind NAT64. */
TEST(callback_reached_and_nat64_helpers)
{
  struct rules_callback cb;
  struct sockaddr_in s4;
  struct test_addr a;
  char text[INET_ADDRSTRLEN];

  memset(&cb, 0, sizeof(cb));
  cb.kind = RULES_CB_HTTP;
  cb.host = "127.0.0.1";
  cb.port = 9000;
  ASSERT_EQ(rules_callback_reached(&cb, test_sa(&a, "127.0.0.5"), 9000, 0), 1);
  ASSERT_EQ(rules_callback_reached(&cb, test_sa(&a, "64:ff9b::7f00:1"), 9000, 0), 1);
  ASSERT_EQ(rules_callback_reached(&cb, test_sa(&a, "10.0.0.1"), 9000, 0), 0);
  ASSERT_EQ(rules_callback_reached(&cb, test_sa(&a, "10.0.0.1"), 9000,
                                   RULES_RESOLVED_HOST_LOCAL), 1);
  ASSERT_EQ(rules_callback_reached(&cb, test_sa(&a, "127.0.0.1"), 9001, 0), 0);
  ASSERT_EQ(rules_callback_reached(&cb, NULL, 9000, 0), 1);

  memset(&s4, 0x5a, sizeof(s4));
  ASSERT_EQ(rules_nat64_ipv4(test_sa(&a, "64:ff9b::a9fe:a9fe"), &s4), 1);
  ASSERT_EQ(s4.sin_family, AF_INET);
  ASSERT_NOT_NULL(inet_ntop(AF_INET, &s4.sin_addr, text, sizeof(text)));
  ASSERT_STREQ(text, "169.254.169.254");
  ASSERT_EQ(rules_nat64_ipv4(test_sa(&a, "2001:db8::a9fe:a9fe"), &s4), 0);
  ASSERT_EQ(rules_nat64_ipv4(test_sa(&a, "169.254.169.254"), &s4), 0);
}
