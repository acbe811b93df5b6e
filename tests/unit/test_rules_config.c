/*
 * Config parsing and validation: the public examples parse; every kind of invalid
 * input is rejected with the JSON path of the offending value and a message that
 * says what is wrong.
 */
#include "test_rules_helpers.h"

#include <cjson/cJSON.h>

#define HDR "\"headers\":[{\"name\":\"X-T\",\"type\":\"plaintext\",\"value\":\"v\"}]"
/* A valid rule with host pattern H. */
#define RULE_HOSTS(H) "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[" H "]," HDR "}]}"
/* A valid rule with headers list L. */
#define RULE_HEADERS(L) "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":[" L "]}]}"
#define CALLBACK(F) "{\"callback\":{" F "}}"
#define CB_OK "\"url\":\"http://127.0.0.1:9000/creds\",\"match_hosts\":[\"*.corp.example\"]"

TEST(public_examples_parse)
{
  struct rules_secrets *s = test_secrets();
  struct rules_config *single = load_config("config/public-single.json", s);
  struct rules_config *multi = load_config("config/public-multi.json", s);

  rules_config_unref(single);
  rules_config_unref(multi);
  rules_secrets_free(s);
}

TEST(empty_and_null_sections)
{
  rules_config_unref(parse_ok("{}", NULL));
  rules_config_unref(parse_ok("{\"rules\":[],\"no_proxy\":[]}", NULL));
  /* SDKs serialize unset optional fields as null: the same as leaving them out. */
  rules_config_unref(parse_ok("{\"rules\":null,\"no_proxy\":null,\"callback\":null,"
                              "\"egress\":null,\"dns\":null}",
                              NULL));
  rules_config_unref(parse_ok("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],"
                              "\"match_paths\":null,\"headers\":null}]}",
                              NULL));
  rules_config_unref(parse_ok("{\"egress\":{\"default\":null,\"allow\":null}}", NULL));
}

TEST(json_syntax)
{
  parse_err("{\"rules\": [}", NULL, "", "invalid JSON at line 1, column");
  parse_err("{\n  \"rules\": [\n    {\"name\": }\n  ]\n}", NULL, "", "line 3, column");
  parse_err("", NULL, "", "unexpected end of input");
  parse_err("{} x", NULL, "", "unexpected text after the JSON value");
  parse_err("{\"rules\":[]}{}", NULL, "", "unexpected text after");
  parse_err("[]", NULL, "", "must be a JSON object");
  parse_err("\"x\"", NULL, "", "must be a JSON object");
  /* cJSON would cut these strings short at the NUL; they are refused. */
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"a\\u0000b\"}"),
            NULL, "", "\\u0000 (NUL)");
  parse_err("{\"rules\":[{\"name\":\"a\tb\"}]}", NULL, "", "control character inside a string");
  /* cJSON skips any byte up to the space between tokens; only four may be there. */
  parse_err("{\"rules\":\x0b[]}", NULL, "", "line 1, column 10: control character between tokens");
  parse_err("\x01{\"rules\":[]}", NULL, "", "control character between tokens");
  rules_config_unref(parse_ok("\t{ \"rules\" :\r\n[ ] }\n", NULL));
  /* JSON text is UTF-8: a config's names and values come back from the API. */
  parse_err("{\"rules\":[{\"name\":\"r\xff\"}]}", NULL, "", "invalid UTF-8 inside a string");
  parse_err("{\"rules\":[{\"name\":\"caf\xe9\"}]}", NULL, "", "line 1, column 23: invalid UTF-8");
  parse_err("{\"rules\":[{\"name\":\"\xc0\xaf\"}]}", NULL, "", "invalid UTF-8"); /* overlong */
  parse_err("{\"rules\":[{\"name\":\"\xed\xa0\x80\"}]}", NULL, "", "invalid UTF-8"); /* surrogate */
  parse_err("{\"rules\":[{\"name\":\"\xf4\x90\x80\x80\"}]}", NULL, "", "invalid UTF-8");
  parse_err("{\"rules\":[{\"name\":\"\xe2\x82\"}]}", NULL, "", "invalid UTF-8"); /* cut */
}

TEST(json_utf8_accepted)
{
  /* Valid UTF-8 of every length passes (a plaintext value; names are tokens). */
  rules_config_unref(parse_ok(RULE_HEADERS(
      "{\"name\":\"X-Team\",\"type\":\"plaintext\",\"value\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91\"}"),
      NULL));
}

TEST(json_nul_byte)
{
  static const char text[] = "{\"no_proxy\":[\"a\0b.com\"]}";
  struct rules_config *cfg = NULL;
  struct rules_diag d;

  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(text, sizeof(text) - 1, "", NULL, &cfg, &d), -EINVAL);
  ASSERT_NULL(cfg);
  ASSERT_EQ(d.count, 1);
  ASSERT_CONTAINS(d.entries[0].message, "line 1, column 16");
  rules_diag_free(&d);
}

TEST(config_too_large)
{
  size_t len = RULES_MAX_CONFIG_LEN + 1;
  char *big = malloc(len);
  struct rules_config *cfg = NULL;
  struct rules_diag d;

  ASSERT_NOT_NULL(big);
  memset(big, ' ', len);
  big[0] = '{';
  big[len - 1] = '}';
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(big, len, "", NULL, &cfg, &d), -EINVAL);
  ASSERT_CONTAINS(d.entries[0].message, "the limit is 1048576");
  rules_diag_free(&d);
  free(big);
}

TEST(unknown_fields)
{
  parse_err("{\"rulez\":[]}", NULL, "rulez", "unknown field (did you mean rules?)");
  parse_err("{\"rulez\":[]}", NULL, "rulez",
            "allowed fields: rules, no_proxy, callback, egress, dns");
  parse_err("{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"x.com\"],\"mtach_paths\":[]}]}",
            NULL, "rules[0].mtach_paths", "did you mean match_paths?");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"v\",\"secret\":1}"),
            NULL, "rules[0].headers[0].secret", "allowed fields: name, type, value");
  parse_err(CALLBACK(CB_OK ",\"ttl\":5"), NULL, "callback.ttl", "unknown field");
  parse_err("{\"egress\":{\"defaults\":\"deny\"}}", NULL, "egress.defaults",
            "did you mean default?");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"method\":[\"POST\"]}]}}", NULL,
            "egress.deny[0].method", "did you mean methods?");
  parse_err("{\"dns\":{\"resolvers\":[]}}", NULL, "dns.resolvers", "allowed fields: remap");
  /* Keys that are not identifiers are quoted, control bytes escaped. */
  parse_err("{\"a b\\u001b[31m\":1}", NULL, "[\"a b\\x1b[31m\"]", "unknown field");
}

/*
 * A member name given twice is refused by the JSON intake, before validation, at any
 * depth: cJSON reads the first of the two, Python's json and jq the last.
 */
TEST(duplicate_member_names)
{
  /* The policy a reviewer's tool would read as allow. */
  parse_err("{\"egress\":{\"default\":\"deny\"},\"egress\":{\"default\":\"allow\"}}", NULL, "",
            "duplicate member name \"egress\" at line 1, column 30 ($.egress; first given at "
            "line 1, column 2): JSON readers disagree on which one counts");
  parse_err("{\"rules\":[],\"rules\":[]}", NULL, "", "duplicate member name \"rules\"");
  /* Nested in a rule, over several lines. */
  parse_err("{\n"
            "  \"rules\": [\n"
            "    {\"name\": \"a\", \"match_hosts\": [\"a.com\"]},\n"
            "    {\"name\": \"b\", \"match_hosts\": [\"b.com\"],\n"
            "     \"match_hosts\": [\"c.com\"]}\n"
            "  ]\n"
            "}\n",
            NULL, "",
            "duplicate member name \"match_hosts\" at line 5, column 6 "
            "($.rules[1].match_hosts; first given at line 4, column 19)");
  /* In a header object: which value would be injected? */
  parse_err(RULE_HEADERS(
                "{\"name\":\"X-A\",\"type\":\"plaintext\",\"value\":\"a\"},"
                "{\"name\":\"X-B\",\"type\":\"opaque\",\"value\":\"b\",\"value\":\"c\"}"),
            NULL, "", "\"value\" at line 1, column 146 ($.rules[0].headers[1].value;");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"name\":\"Y\",\"type\":\"plaintext\",\"value\":\"v\"}"),
            NULL, "", "($.rules[0].headers[0].name;");
  parse_err("{\"egress\":{\"default\":\"deny\",\"deny\":[{\"hosts\":[\"a.com\"],"
            "\"methods\":[\"POST\"],\"methods\":[]}]}}",
            NULL, "", "($.egress.deny[0].methods;");
  /* Keys compare as decoded: an escape does not make another name. */
  parse_err("{\"egress\":{\"default\":\"deny\",\"d\\u0065fault\":\"allow\"}}", NULL, "",
            "duplicate member name \"default\" at line 1, column 29 ($.egress.default;");
  parse_err("{\"no_proxy\":[\"a.com\"],\"\\u006e\\u006F_proxy\":[]}", NULL, "",
            "duplicate member name \"no_proxy\"");
  /* dns.remap keys are names, not identifiers: the path quotes them. */
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"a.internal\",\"pypi.org\":\"b.internal\"}}}",
            NULL, "", "($.dns.remap[\"pypi.org\"];");
}

/* The same name in different objects, or in different case, is not a repeat. */
TEST(duplicate_member_names_not_confused)
{
  rules_config_unref(parse_ok(
      "{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"a.com\"]},"
      "{\"name\":\"b\",\"match_hosts\":[\"b.com\"]}],"
      "\"egress\":{\"default\":\"allow\",\"deny\":[{\"hosts\":[\"c.com\"]},{\"hosts\":[\"d.com\"]}]},"
      "\"dns\":{\"remap\":{\"hosts\":\"mirror\",\"name\":\"mirror\",\"default\":\"mirror\"}}}",
      NULL));
}

/*
 * rules_check_object's own check of repeated fields, for a tree that did not come
 * through rules_json_parse (rules_config_from_cjson takes any cJSON tree).
 */
TEST(duplicate_fields_from_cjson)
{
  cJSON *root = cJSON_Parse("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],"
                            "\"headers\":[{\"name\":\"X\",\"name\":\"Y\",\"type\":\"plaintext\","
                            "\"value\":\"v\"}]}],\"rules\":[]}");
  struct rules_config *cfg = NULL;
  struct rules_diag d;
  size_t i;
  int top = 0, hdr = 0;

  ASSERT_NOT_NULL(root);
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_from_cjson(root, "", NULL, &cfg, &d), -EINVAL);
  ASSERT_NULL(cfg);
  for (i = 0; i < d.count; i++) {
    top |= strcmp(d.entries[i].path, "rules") == 0 &&
           strstr(d.entries[i].message, "is given more than once") != NULL;
    hdr |= strcmp(d.entries[i].path, "rules[0].headers[0].name") == 0 &&
           strstr(d.entries[i].message, "is given more than once") != NULL;
  }
  if (!top || !hdr) {
    print_diag(&d);
    TEST_FAIL_("repeated fields not reported at rules and rules[0].headers[0].name");
  }
  rules_diag_free(&d);
  cJSON_Delete(root);
}

TEST(wrong_types)
{
  parse_err("{\"rules\":{}}", NULL, "rules", "must be an array (got an object)");
  parse_err("{\"rules\":[5]}", NULL, "rules[0]", "must be an object (got a number)");
  parse_err("{\"rules\":[{\"name\":7,\"match_hosts\":[\"x.com\"]}]}", NULL, "rules[0].name",
            "must be a string (got a number)");
  parse_err("{\"rules\":[{\"name\":\"r\",\"match_hosts\":\"x.com\"}]}", NULL,
            "rules[0].match_hosts", "must be an array (got a string)");
  parse_err("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[true]}]}", NULL,
            "rules[0].match_hosts[0]", "must be a string (got a boolean)");
  parse_err("{\"no_proxy\":\"localhost\"}", NULL, "no_proxy", "must be an array");
  parse_err("{\"callback\":[]}", NULL, "callback", "must be an object (got an array)");
  parse_err("{\"egress\":{\"allow\":{}}}", NULL, "egress.allow", "must be an array");
  parse_err("{\"dns\":{\"remap\":[]}}", NULL, "dns.remap", "must be an object mapping");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":1}"), NULL,
            "rules[0].headers[0].value", "must be a string (got a number)");
  parse_err(RULE_HEADERS("\"Authorization\""), NULL, "rules[0].headers[0]",
            "must be an object (got a string)");
}

TEST(rule_names)
{
  parse_err("{\"rules\":[{\"match_hosts\":[\"x.com\"]}]}", NULL, "rules[0].name", "is required");
  parse_err("{\"rules\":[{\"name\":\"\",\"match_hosts\":[\"x.com\"]}]}", NULL, "rules[0].name",
            "must not be empty");
  parse_err("{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"x.com\"]},"
            "{\"name\":\"b\",\"match_hosts\":[\"x.com\"]},"
            "{\"name\":\"a\",\"match_hosts\":[\"y.com\"]}]}",
            NULL, "rules[2].name", "\"a\" is also the name of rules[0]; rule names must be unique");
  parse_err("{\"rules\":[{\"name\":\"0123456789012345678901234567890123456789012345678901234567890123\","
            "\"match_hosts\":[\"x.com\"]}]}",
            NULL, "rules[0].name", "longer than 63 bytes");
  parse_err("{\"rules\":[{\"name\":\"a\\u007fb\",\"match_hosts\":[\"x.com\"]}]}", NULL,
            "rules[0].name", "control character at byte 1");
  /* Names are labels for people and logs: spaces are fine. */
  rules_config_unref(parse_ok("{\"rules\":[{\"name\":\"GitHub API\",\"match_hosts\":[\"x.com\"]}]}",
                              NULL));
}

TEST(match_hosts_required)
{
  parse_err("{\"rules\":[{\"name\":\"r\"," HDR "}]}", NULL, "rules[0].match_hosts", "is required");
  parse_err("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[]," HDR "}]}", NULL,
            "rules[0].match_hosts", "must list at least one host");
}

TEST(header_names)
{
  static const char *const reserved[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
    "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Host",
    "content-length", "HOST",
  };
  char json[512];
  size_t i;

  parse_err("{\"rules\":[{\"name\":\"a\",\"match_hosts\":[\"x.com\"]," HDR "},"
            "{\"name\":\"b\",\"match_hosts\":[\"x.com\"],"
            "\"headers\":[{\"name\":\"X Bad\",\"type\":\"plaintext\",\"value\":\"v\"}]}]}",
            NULL, "rules[1].headers[0].name", "\"X Bad\" is not an HTTP header token");
  parse_err(RULE_HEADERS("{\"name\":\"X:Bad\",\"type\":\"plaintext\",\"value\":\"v\"}"), NULL,
            "rules[0].headers[0].name", "is not an HTTP header token");
  parse_err(RULE_HEADERS("{\"name\":\"\",\"type\":\"plaintext\",\"value\":\"v\"}"), NULL,
            "rules[0].headers[0].name", "is not an HTTP header token");
  parse_err(RULE_HEADERS("{\"name\":\"X-\\u00e9\",\"type\":\"plaintext\",\"value\":\"v\"}"), NULL,
            "rules[0].headers[0].name", "\"X-\\xc3\\xa9\" is not an HTTP header token");
  parse_err(RULE_HEADERS("{\"type\":\"plaintext\",\"value\":\"v\"}"), NULL,
            "rules[0].headers[0].name", "is required");
  for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
    snprintf(json, sizeof(json),
             RULE_HEADERS("{\"name\":\"%s\",\"type\":\"plaintext\",\"value\":\"v\"}"),
             reserved[i]);
    parse_err(json, NULL, "rules[0].headers[0].name", "hop-by-hop or framing header");
  }
  parse_err(RULE_HEADERS("{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"a\"},"
                         "{\"name\":\"X-Other\",\"type\":\"plaintext\",\"value\":\"b\"},"
                         "{\"name\":\"authorization\",\"type\":\"plaintext\",\"value\":\"c\"}"),
            NULL, "rules[0].headers[2].name", "\"authorization\" is set twice");
  /* A header that is not an object is that one error, not also one per field. */
  ASSERT_EQ(parse_err(RULE_HEADERS("\"X-T\""), NULL, "rules[0].headers[0]", "object"), 1);
  /* A name may be 256 bytes long, not one more. */
  {
    char name[258], big[1024];

    memset(name, 'n', sizeof(name));
    name[256] = '\0';
    snprintf(big, sizeof(big),
             RULE_HEADERS("{\"name\":\"%s\",\"type\":\"plaintext\",\"value\":\"v\"}"), name);
    rules_config_unref(parse_ok(big, NULL));
    name[256] = 'n';
    name[257] = '\0';
    snprintf(big, sizeof(big),
             RULE_HEADERS("{\"name\":\"%s\",\"type\":\"plaintext\",\"value\":\"v\"}"), name);
    parse_err(big, NULL, "rules[0].headers[0].name", "is longer than 256 bytes");
  }
}

TEST(header_types_and_values)
{
  char json[20000], big[RULES_MAX_VALUE_LEN + 2];
  size_t n;

  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"secret\",\"value\":\"v\"}"), NULL,
            "rules[0].headers[0].type", "\"secret\" is not a header type");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"value\":\"v\"}"), NULL, "rules[0].headers[0].type",
            "is required");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\"}"), NULL,
            "rules[0].headers[0].value", "is required");
  n = parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"SEKRIT\\r\\nEvil: 1\"}"),
                NULL, "rules[0].headers[0].value", "contains a control character");
  ASSERT_EQ(n, 1);
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"opaque\",\"value\":\"a\\nb\"}"), NULL,
            "rules[0].headers[0].value", "a header value is one line");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"opaque\",\"value\":\"a\\u0007b\"}"), NULL,
            "rules[0].headers[0].value", "control character");
  parse_err(RULE_HEADERS("{\"name\":\"X\",\"type\":\"workspace_secret\",\"value\":\"a\\rb\"}"),
            NULL, "rules[0].headers[0].value", "control character");

  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  snprintf(json, sizeof(json),
           RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"%s\"}"), big);
  parse_err(json, NULL, "rules[0].headers[0].value", "is 8193 bytes; the limit is 8192");
  big[sizeof(big) - 2] = '\0';
  snprintf(json, sizeof(json),
           RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"%s\"}"), big);
  rules_config_unref(parse_ok(json, NULL));
  /* A template of literal text alone is its text, even empty. */
  {
    struct rules_config *cfg = parse_ok(
        RULE_HEADERS("{\"name\":\"X\",\"type\":\"workspace_secret\",\"value\":\"\"},"
                     "{\"name\":\"Y\",\"type\":\"workspace_secret\",\"value\":\"{{}}\"}"),
        NULL);
    struct rules_request_decision r;

    req_decide(cfg, "x.com", 443, "GET", "/", &r);
    ASSERT_EQ(r.nheaders, 2);
    ASSERT_NOT_NULL(r.headers[0].value);
    ASSERT_EQ(r.headers[0].value_len, 0);
    ASSERT_STREQ(r.headers[0].value, "");
    ASSERT_STREQ(r.headers[1].value, "{}");
    rules_config_unref(cfg);
  }
  /* Braces in plaintext and opaque values are literal, not templates. */
  rules_config_unref(parse_ok(
      RULE_HEADERS("{\"name\":\"X\",\"type\":\"plaintext\",\"value\":\"{NOT_A_KEY} }\"}"), NULL));
}

/* Error messages never quote a header value: it may be a secret. */
TEST(errors_never_quote_values)
{
  struct rules_config *cfg = NULL;
  static const char json[] =
      RULE_HEADERS("{\"name\":\"X\",\"type\":\"opaque\",\"value\":\"TOPSECRET\\n\"},"
                   "{\"name\":\"Y\",\"type\":\"plaintext\",\"value\":\"PLAINSECRET\\r\"}");
  struct rules_diag d;
  size_t i;

  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(json, strlen(json), "", NULL, &cfg, &d), -EINVAL);
  ASSERT_EQ(d.count, 2);
  for (i = 0; i < d.count; i++) {
    ASSERT_NOT_CONTAINS(d.entries[i].message, "TOPSECRET");
    ASSERT_NOT_CONTAINS(d.entries[i].message, "PLAINSECRET");
  }
  rules_diag_free(&d);
}

TEST(malformed_host_globs)
{
  parse_err(RULE_HOSTS("\"\""), NULL, "rules[0].match_hosts[0]", "must not be empty");
  parse_err(RULE_HOSTS("\"a..b.com\""), NULL, "rules[0].match_hosts[0]",
            "\"a..b.com\" has an empty label");
  parse_err(RULE_HOSTS("\"x.com\",\".example.com\""), NULL, "rules[0].match_hosts[1]",
            "starts with a dot; write *.example.com");
  /* The same for the longest pattern, its name cut to fit the message. */
  {
    char pat[301], json[512];

    memset(pat, 'd', 300);
    pat[0] = '.';
    pat[300] = '\0';
    snprintf(json, sizeof(json), RULE_HOSTS("\"%s\""), pat);
    parse_err(json, NULL, "rules[0].match_hosts[0]", "starts with a dot; write *.ddd");
  }
  parse_err(RULE_HOSTS("\"**.example.com\""), NULL, "rules[0].match_hosts[0]", "\"**\"");
  parse_err(RULE_HOSTS("\"exa mple.com\""), NULL, "rules[0].match_hosts[0]",
            "has ' ' at byte 3");
  parse_err(RULE_HOSTS("\"exa/mple.com\""), NULL, "rules[0].match_hosts[0]",
            "is neither a host name nor a CIDR");
  parse_err(RULE_HOSTS("\"b\\u00fccher.de\""), NULL, "rules[0].match_hosts[0]",
            "punycode (xn--)");
  parse_err(RULE_HOSTS("\"10.0.*\""), NULL, "rules[0].match_hosts[0]",
            "looks like an address range");
  parse_err(RULE_HOSTS("\"192.168.*.*\""), NULL, "rules[0].match_hosts[0]",
            "write a CIDR such as 10.0.0.0/8");
  parse_err(RULE_HOSTS("\"127.1\""), NULL, "rules[0].match_hosts[0]",
            "neither a dotted-quad IPv4 address nor a host name");
  parse_err(RULE_HOSTS("\"0x7f000001\""), NULL, "rules[0].match_hosts[0]",
            "resolvers read as the IPv4 address 127.0.0.1");
  parse_err(RULE_HOSTS("\"a.0123456789012345678901234567890123456789012345678901234567890123.com\""),
            NULL, "rules[0].match_hosts[0]", "label longer than 63 bytes");
  parse_err(RULE_HOSTS("\"a.com.\",\"b.com..\""), NULL, "rules[0].match_hosts[1]",
            "empty label");
}

/* A URL where a host belongs is the most common slip: the error says so and names the
 * host to write, instead of reporting the scheme's colon as a bad port. */
TEST(url_instead_of_host)
{
  parse_err(RULE_HOSTS("\"https://api.github.com\""), NULL, "rules[0].match_hosts[0]",
            "is a URL; write the host alone: \"api.github.com\"");
  parse_err(RULE_HOSTS("\"http://x.example:8080/v1\""), NULL, "rules[0].match_hosts[0]",
            "is a URL; write the host alone: \"x.example:8080\"");
  parse_err("{\"no_proxy\":[\"http://localhost/\"]}", NULL, "no_proxy[0]",
            "write the host alone: \"localhost\"");
  parse_err("{\"egress\":{\"deny\":[\"https://pastebin.com\"]}}", NULL, "egress.deny[0]",
            "write the host alone: \"pastebin.com\"");
  parse_err("{\"callback\":{\"url\":\"http://127.0.0.1:9000/\",\"match_hosts\":["
            "\"https://*.corp.example\"]}}",
            NULL, "callback.match_hosts[0]", "write the host alone: \"*.corp.example\"");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"https://mirror.internal:8443/simple\"}}}",
            NULL, "dns.remap[\"pypi.org\"]",
            "is a URL; write the host alone: \"mirror.internal:8443\"");
  parse_err("{\"dns\":{\"remap\":{\"https://pypi.org\":\"mirror\"}}}", NULL,
            "dns.remap[\"https://pypi.org\"]", "is a URL; write the host alone: \"pypi.org\"");
  /* Schemes with digits, '+', '-', '.' and capitals after the first letter
   * (RFC 3986 3.1); text before "://" that is no scheme gets no URL hint. */
  parse_err(RULE_HOSTS("\"git+ssh://github.com/o/r\""), NULL, "rules[0].match_hosts[0]",
            "is a URL; write the host alone: \"github.com\"");
  parse_err(RULE_HOSTS("\"s3://bucket.example\""), NULL, "rules[0].match_hosts[0]",
            "is a URL; write the host alone: \"bucket.example\"");
  parse_err(RULE_HOSTS("\"HTTPZ://x.example\""), NULL, "rules[0].match_hosts[0]",
            "is a URL; write the host alone: \"x.example\"");
  parse_err(RULE_HOSTS("\"1a://x.example\""), NULL, "rules[0].match_hosts[0]",
            "invalid port");
  parse_err(RULE_HOSTS("\"a_b://x.example\""), NULL, "rules[0].match_hosts[0]",
            "invalid port");
  /* A key with a port: the key applies to every port, the target may carry one. */
  parse_err("{\"dns\":{\"remap\":{\"pypi.org:443\":\"mirror\"}}}", NULL,
            "dns.remap[\"pypi.org:443\"]", "keys carry no port");
}

TEST(malformed_addresses)
{
  parse_err(RULE_HOSTS("\"10.0.0.1/8\""), NULL, "rules[0].match_hosts[0]",
            "has host bits set beyond /8; did you mean 10.0.0.0/8?");
  parse_err(RULE_HOSTS("\"2001:db8::1/32\""), NULL, "rules[0].match_hosts[0]",
            "did you mean 2001:db8::/32?");
  parse_err(RULE_HOSTS("\"10.0.0.0/33\""), NULL, "rules[0].match_hosts[0]",
            "invalid prefix length (expected 0 to 32)");
  parse_err(RULE_HOSTS("\"10.0.0.0/08\""), NULL, "rules[0].match_hosts[0]", "prefix length");
  parse_err(RULE_HOSTS("\"10.0.0.0/\""), NULL, "rules[0].match_hosts[0]", "prefix length");
  parse_err(RULE_HOSTS("\"2001:db8::/129\""), NULL, "rules[0].match_hosts[0]",
            "expected 0 to 128");
  parse_err(RULE_HOSTS("\"10.0.0/8\""), NULL, "rules[0].match_hosts[0]",
            "not a valid dotted-quad IPv4 address");
  parse_err(RULE_HOSTS("\"2001:db8::zz\""), NULL, "rules[0].match_hosts[0]",
            "not a valid IPv6 address");
  parse_err(RULE_HOSTS("\"2001:db8::1:443x\""), NULL, "rules[0].match_hosts[0]",
            "[ADDRESS]:PORT");
  parse_err(RULE_HOSTS("\"[::1\""), NULL, "rules[0].match_hosts[0]", "without a closing ']'");
  parse_err(RULE_HOSTS("\"[::1]x\""), NULL, "rules[0].match_hosts[0]",
            "unexpected text after ']'");
  parse_err(RULE_HOSTS("\"[10.0.0.1]\""), NULL, "rules[0].match_hosts[0]",
            "not a valid IPv6 address");
}

TEST(malformed_ports)
{
  static const char *const bad[] = { "x.com:0", "x.com:65536", "x.com:abc", "x.com:",
                                     "x.com:0443", "x.com:-1", "x.com:+80", "[::1]:99999",
                                     "10.0.0.0/8:0", "x.com:443:1",
                                     /* 2^32 + 443: too long, never read modulo 2^32 */
                                     "x.com:4294967739" };
  char json[512];
  size_t i;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    snprintf(json, sizeof(json), RULE_HOSTS("\"%s\""), bad[i]);
    parse_err(json, NULL, "rules[0].match_hosts[0]",
              i == 9 ? "not a valid IPv6 address" : "invalid port (expected 1 to 65535)");
  }
  rules_config_unref(parse_ok(RULE_HOSTS("\"x.com:65535\",\"x.com:1\""), NULL));
}

TEST(malformed_paths)
{
#define RULE_PATHS(P) "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"match_paths\":[" P "]," HDR "}]}"
  parse_err(RULE_PATHS("\"repos/*\""), NULL, "rules[0].match_paths[0]", "must start with '/'");
  parse_err(RULE_PATHS("\"\""), NULL, "rules[0].match_paths[0]", "must not be empty");
  parse_err(RULE_PATHS("\"/a\",\"/repos/../admin\""), NULL, "rules[0].match_paths[1]",
            "\".\" or \"..\" segment");
  parse_err(RULE_PATHS("\"/repos/%2e%2e/admin\""), NULL, "rules[0].match_paths[0]",
            "segment");
  parse_err(RULE_PATHS("\"/a/.\""), NULL, "rules[0].match_paths[0]", "segment");
  parse_err(RULE_PATHS("\"/a/./b\""), NULL, "rules[0].match_paths[0]", "segment");
  parse_err(RULE_PATHS("\"/a?x=1\""), NULL, "rules[0].match_paths[0]",
            "the query is never matched");
  parse_err(RULE_PATHS("\"/a#x\""), NULL, "rules[0].match_paths[0]", "has '#'");
  parse_err(RULE_PATHS("\"/a%zz\""), NULL, "rules[0].match_paths[0]",
            "malformed percent-encoding");
  parse_err(RULE_PATHS("\"/a%2Fb\""), NULL, "rules[0].match_paths[0]", "ambiguous");
  parse_err(RULE_PATHS("\"/a//b\""), NULL, "rules[0].match_paths[0]", "'//'");
  parse_err(RULE_PATHS("\"/a;b\""), NULL, "rules[0].match_paths[0]", "';'");
  parse_err(RULE_PATHS("\"/a b\""), NULL, "rules[0].match_paths[0]", "percent-encode it");
  parse_err(RULE_PATHS("1"), NULL, "rules[0].match_paths[0]", "must be a string");
  /* Patterns are normalized like request paths: %7E and ~ are the same. */
  rules_config_unref(parse_ok(RULE_PATHS("\"/%7Euser/*\",\"*/git-receive-pack\",\"/a/.../b\""),
                              NULL));
  /* A pattern may be 2048 bytes long, not one more. */
  {
    char pat[2050], json[2300];

    memset(pat, 'p', sizeof(pat));
    pat[0] = '/';
    pat[2048] = '\0';
    snprintf(json, sizeof(json), RULE_PATHS("\"%s\""), pat);
    rules_config_unref(parse_ok(json, NULL));
    pat[2048] = 'p';
    pat[2049] = '\0';
    snprintf(json, sizeof(json), RULE_PATHS("\"%s\""), pat);
    parse_err(json, NULL, "rules[0].match_paths[0]", "is longer than 2048 bytes");
  }
#undef RULE_PATHS
}

TEST(no_proxy_forms)
{
  rules_config_unref(parse_ok("{\"no_proxy\":[\"localhost\",\".example.com\",\"127.0.0.1\","
                              "\"::1\",\"10.0.0.0/8\",\"*.internal\",\"*\"]}",
                              NULL));
  parse_err("{\"no_proxy\":[\"..example.com\"]}", NULL, "no_proxy[0]", "empty label");
  parse_err("{\"no_proxy\":[\".*.example.com\"]}", NULL, "no_proxy[0]", "'*'");
  parse_err("{\"no_proxy\":[\".\"]}", NULL, "no_proxy[0]", "is empty");
  parse_err("{\"no_proxy\":[\"ok.com\",\"bad host\"]}", NULL, "no_proxy[1]", "has ' '");
}

TEST(callback_validation)
{
  parse_err(CALLBACK("\"match_hosts\":[\"a.com\"]"), NULL, "callback.url", "is required");
  parse_err(CALLBACK("\"url\":\"http://127.0.0.1/\""), NULL, "callback.match_hosts",
            "is required");
  parse_err(CALLBACK("\"url\":\"http://127.0.0.1/\",\"match_hosts\":[]"), NULL,
            "callback.match_hosts", "at least one host");
  parse_err(CALLBACK("\"url\":\"ftp://x/\",\"match_hosts\":[\"a.com\"]"), NULL, "callback.url",
            "\"ftp://x/\" is not an http://, https:// or unix: URL");
  parse_err(CALLBACK("\"url\":\"/run/creds.sock\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "is not an http://");
  parse_err(CALLBACK("\"url\":\"unix:run/creds.sock\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "absolute socket path");
  parse_err(CALLBACK("\"url\":\"http://user:pw@host/\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "must not carry credentials");
  parse_err(CALLBACK("\"url\":\"http://host:99999/\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "invalid port");
  parse_err(CALLBACK("\"url\":\"http:///creds\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "has no host");
  parse_err(CALLBACK("\"url\":\"http://bad host/\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "space or control character at byte 10");
  parse_err(CALLBACK("\"url\":\"http://a..b/\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "invalid host");
  parse_err(CALLBACK("\"url\":\"http://[::1/\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "without a closing ']'");
  parse_err(CALLBACK("\"url\":\"http://h/a#b\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "'#'");
  parse_err(CALLBACK("\"url\":\"unix:/a.sock:/a\\u00e9\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "request path");
  parse_err(CALLBACK("\"url\":\"unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\","
                     "\"match_hosts\":[\"a.com\"]"),
            NULL, "callback.url", "the limit is 107");
  /* The limit exactly: 107 bytes and the NUL fill sun_path; 108 do not fit. */
  {
    char sock[120], json[400];

    memset(sock, 's', sizeof(sock));
    sock[0] = '/';
    sock[107] = '\0';
    snprintf(json, sizeof(json), CALLBACK("\"url\":\"unix:%s\",\"match_hosts\":[\"a.com\"]"),
             sock);
    rules_config_unref(parse_ok(json, NULL));
    sock[107] = 's';
    sock[108] = '\0';
    snprintf(json, sizeof(json), CALLBACK("\"url\":\"unix:%s\",\"match_hosts\":[\"a.com\"]"),
             sock);
    parse_err(json, NULL, "callback.url", "has a socket path of 108 bytes; the limit is 107");
  }
  /* A space would split the callback's request line. */
  parse_err(CALLBACK("\"url\":\"http://h/a b\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "space");
  parse_err(CALLBACK("\"url\":\"unix:/a.sock:/a b\",\"match_hosts\":[\"a.com\"]"), NULL,
            "callback.url", "space");
  parse_err(CALLBACK("\"url\":5,\"match_hosts\":[\"a.com\"]"), NULL, "callback.url",
            "must be a string");
}

TEST(callback_numbers)
{
  parse_err(CALLBACK(CB_OK ",\"ttl_seconds\":-1"), NULL, "callback.ttl_seconds",
            "whole number from 0 to 86400 (got -1)");
  parse_err(CALLBACK(CB_OK ",\"ttl_seconds\":86401"), NULL, "callback.ttl_seconds",
            "from 0 to 86400");
  parse_err(CALLBACK(CB_OK ",\"ttl_seconds\":1.5"), NULL, "callback.ttl_seconds",
            "whole number");
  parse_err(CALLBACK(CB_OK ",\"ttl_seconds\":1e999"), NULL, "callback.ttl_seconds",
            "whole number");
  parse_err(CALLBACK(CB_OK ",\"ttl_seconds\":\"300\""), NULL, "callback.ttl_seconds",
            "must be a number (got a string)");
  parse_err(CALLBACK(CB_OK ",\"timeout_ms\":0"), NULL, "callback.timeout_ms",
            "from 1 to 60000");
  parse_err(CALLBACK(CB_OK ",\"timeout_ms\":60001"), NULL, "callback.timeout_ms",
            "from 1 to 60000");
  rules_config_unref(parse_ok(CALLBACK(CB_OK ",\"ttl_seconds\":0,\"timeout_ms\":60000"), NULL));
  rules_config_unref(parse_ok(CALLBACK(CB_OK ",\"ttl_seconds\":86400,\"timeout_ms\":1"), NULL));
}

TEST(callback_headers)
{
  parse_err(CALLBACK(CB_OK ",\"headers\":[{\"name\":\"Bad Name\",\"type\":\"plaintext\","
                     "\"value\":\"x\"}]"),
            NULL, "callback.headers[0].name", "not an HTTP header token");
  parse_err(CALLBACK(CB_OK ",\"headers\":[{\"name\":\"Host\",\"type\":\"plaintext\","
                     "\"value\":\"x\"}]"),
            NULL, "callback.headers[0].name", "hop-by-hop");
  parse_err(CALLBACK(CB_OK ",\"headers\":[{\"name\":\"A\",\"type\":\"plaintext\",\"value\":\"x\"},"
                     "{\"name\":\"a\",\"type\":\"plaintext\",\"value\":\"y\"}]"),
            NULL, "callback.headers[1].name", "set twice");
  parse_err(CALLBACK(CB_OK ",\"headers\":[{\"name\":\"A\",\"type\":\"workspace_secret\","
                     "\"value\":\"{MISSING}\"}]"),
            NULL, "callback.headers[0].value", "secret MISSING cannot be resolved");
}

TEST(egress_validation)
{
  parse_err("{\"egress\":{\"default\":\"maybe\"}}", NULL, "egress.default",
            "\"maybe\" must be \"allow\" or \"deny\"");
  parse_err("{\"egress\":{\"default\":\"Deny\"}}", NULL, "egress.default", "must be");
  parse_err("{\"egress\":{\"default\":false}}", NULL, "egress.default", "must be a string");
  parse_err("{\"egress\":{\"allow\":[1]}}", NULL, "egress.allow[0]",
            "must be a host pattern string or an object");
  parse_err("{\"egress\":{\"allow\":[\"ok.com\",\"bad..com\"]}}", NULL, "egress.allow[1]",
            "empty label");
  parse_err("{\"egress\":{\"deny\":[\".pastebin.com\"]}}", NULL, "egress.deny[0]",
            "starts with a dot");
  parse_err("{\"egress\":{\"deny\":[{\"paths\":[\"/x\"]}]}}", NULL, "egress.deny[0].hosts",
            "is required");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[]}]}}", NULL, "egress.deny[0].hosts",
            "at least one host");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"methods\":[\"post\"]}]}}", NULL,
            "egress.deny[0].methods[0]", "\"post\" must be written in uppercase");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"methods\":[\"GETz\"]}]}}", NULL,
            "egress.deny[0].methods[0]", "\"GETz\" must be written in uppercase");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"methods\":[\"GE T\"]}]}}", NULL,
            "egress.deny[0].methods[0]", "not an HTTP method");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"methods\":[]}]}}", NULL,
            "egress.deny[0].methods", "at least one method");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"methods\":\"POST\"}]}}", NULL,
            "egress.deny[0].methods", "must be an array");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"paths\":[]}]}}", NULL,
            "egress.deny[0].paths", "at least one path");
  parse_err("{\"egress\":{\"deny\":[{\"hosts\":[\"a.com\"],\"paths\":[\"push\"]}]}}", NULL,
            "egress.deny[0].paths[0]", "must start with '/'");
}

TEST(dns_validation)
{
  parse_err("{\"dns\":{\"remap\":{\"*.pypi.org\":\"mirror\"}}}", NULL,
            "dns.remap[\"*.pypi.org\"]", "exact host names, not globs");
  parse_err("{\"dns\":{\"remap\":{\"1.2.3.4\":\"mirror\"}}}", NULL, "dns.remap[\"1.2.3.4\"]",
            "not a host name");
  parse_err("{\"dns\":{\"remap\":{\"bad host\":\"mirror\"}}}", NULL, "dns.remap[\"bad host\"]",
            "not a host name");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"\"}}}", NULL, "dns.remap[\"pypi.org\"]",
            "not a valid target");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"2001:db8::1\"}}}", NULL,
            "dns.remap[\"pypi.org\"]", "in brackets");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"mirror:0\"}}}", NULL, "dns.remap[\"pypi.org\"]",
            "invalid port");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"[::1\"}}}", NULL, "dns.remap[\"pypi.org\"]",
            "[IPv6]:port");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"*.mirror\"}}}", NULL, "dns.remap[\"pypi.org\"]",
            "not a valid target");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":\"a..b\"}}}", NULL, "dns.remap[\"pypi.org\"]",
            "does not name a valid host");
  parse_err("{\"dns\":{\"remap\":{\"pypi.org\":5}}}", NULL, "dns.remap[\"pypi.org\"]",
            "must be a string");
  parse_err("{\"dns\":{\"remap\":{\"PyPI.org\":\"a\",\"pypi.org.\":\"b\"}}}", NULL,
            "dns.remap[\"pypi.org.\"]", "same host as another dns.remap key");
  rules_config_unref(parse_ok("{\"dns\":{\"remap\":{\"a.com\":\"mirror\",\"b.com\":\"mirror:8080\","
                              "\"c.com\":\"10.0.0.1\",\"d.com\":\"10.0.0.1:81\","
                              "\"e.com\":\"[::1]\",\"f.com\":\"[2001:db8::1]:8443\"}}}",
                              NULL));
}

/* head, n copies of item joined by commas (each '@' replaced by the index), tail. */
static char *repeat(const char *head, const char *item, size_t n, const char *tail)
{
  size_t cap = strlen(head) + strlen(tail) + n * (strlen(item) * 4 + 2) + 1, w = 0, i, k;
  char *buf = malloc(cap);

  ASSERT_NOT_NULL(buf);
  w += (size_t)snprintf(buf + w, cap - w, "%s", head);
  for (i = 0; i < n; i++) {
    if (i)
      buf[w++] = ',';
    for (k = 0; item[k] != '\0'; k++) {
      if (item[k] == '@')
        w += (size_t)snprintf(buf + w, cap - w, "%zu", i);
      else
        buf[w++] = item[k];
    }
  }
  snprintf(buf + w, cap - w, "%s", tail);
  return buf;
}

TEST(limits)
{
  char *json;

  json = repeat("{\"rules\":[", "{\"name\":\"r@\",\"match_hosts\":[\"x.com\"]}",
                RULES_MAX_RULES, "]}");
  rules_config_unref(parse_ok(json, NULL));
  free(json);
  json = repeat("{\"rules\":[", "{\"name\":\"r@\",\"match_hosts\":[\"x.com\"]}",
                RULES_MAX_RULES + 1, "]}");
  parse_err(json, NULL, "rules", "has 257 entries; the limit is 256");
  free(json);

  json = repeat("{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"headers\":[",
                "{\"name\":\"X-@\",\"type\":\"plaintext\",\"value\":\"v\"}",
                RULES_MAX_HEADERS_PER_RULE + 1, "]}]}");
  parse_err(json, NULL, "rules[0].headers", "has 33 entries; the limit is 32");
  free(json);

  json = repeat("{\"no_proxy\":[", "\"h@.example\"", RULES_MAX_PATTERNS, "]}");
  rules_config_unref(parse_ok(json, NULL));
  free(json);
  json = repeat("{\"no_proxy\":[", "\"h@.example\"", RULES_MAX_PATTERNS + 1, "]}");
  parse_err(json, NULL, "no_proxy", "has 1025 entries; the limit is 1024");
  free(json);

  /* 65 distinct header names over 3 rules: more than one request can carry. */
  json = repeat("{\"rules\":[",
                "{\"name\":\"r@\",\"match_hosts\":[\"x.com\"],\"headers\":["
                "{\"name\":\"A-@\",\"type\":\"plaintext\",\"value\":\"v\"},"
                "{\"name\":\"B-@\",\"type\":\"plaintext\",\"value\":\"v\"}]}",
                33, "]}");
  parse_err(json, NULL, "rules[32].headers[0].name", "at most 64 distinct header names");
  free(json);
  /* The same names in every rule count once, case-insensitively. */
  json = repeat("{\"rules\":[",
                "{\"name\":\"r@\",\"match_hosts\":[\"x.com\"],\"headers\":["
                "{\"name\":\"Authorization\",\"type\":\"plaintext\",\"value\":\"v\"},"
                "{\"name\":\"x-api-key\",\"type\":\"plaintext\",\"value\":\"v\"}]}",
                200, "]}");
  rules_config_unref(parse_ok(json, NULL));
  free(json);
}

/* Globs with text between two stars may each take a pass over the whole request path
 * or name at every decision: a config holds a bounded number of them, over all its
 * lists; other globs cost at most their own length and are not counted. */
TEST(scanning_glob_limits)
{
  char *json, *paths, *more;
  size_t n;

  paths = repeat("", "\"/a@*b*\"", RULES_MAX_SCAN_PATHS - 1, "");
  n = strlen(paths) + 512;
  json = malloc(n);
  ASSERT_NOT_NULL(json);
  snprintf(json, n,
           "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"match_paths\":[%s],"
           HDR "}],\"egress\":{\"deny\":[{\"hosts\":[\"x.com\"],"
           "\"paths\":[\"/x/**\",\"/*/y\",\"*/\",\"/*c*/\"]}]}}",
           paths);
  rules_config_unref(parse_ok(json, NULL));
  snprintf(json, n,
           "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[\"x.com\"],\"match_paths\":[%s],"
           HDR "}],\"egress\":{\"deny\":[{\"hosts\":[\"x.com\"],"
           "\"paths\":[\"/*c*/\",\"/x/**\",\"/*d*\"]}]}}",
           paths);
  parse_err(json, NULL, "egress.deny[0].paths[2]",
            "\"/*d*\" is path pattern number 129 with text between two '*'");
  free(json);
  free(paths);

  /* Names: 1023 in a rule, one in the callback, then a string entry of egress. */
  more = repeat("", "\"*a@*\"", RULES_MAX_SCAN_HOSTS - 1, "");
  n = strlen(more) + 512;
  json = malloc(n);
  ASSERT_NOT_NULL(json);
  snprintf(json, n,
           "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[%s]," HDR "}],"
           "\"callback\":{\"url\":\"http://127.0.0.1:9000/c\",\"match_hosts\":[\"*.b.*\"]},"
           "\"egress\":{\"allow\":[\"*.x.com\",\"a*b\",\"*x\"]}}",
           more);
  rules_config_unref(parse_ok(json, NULL));
  snprintf(json, n,
           "{\"rules\":[{\"name\":\"r\",\"match_hosts\":[%s]," HDR "}],"
           "\"callback\":{\"url\":\"http://127.0.0.1:9000/c\",\"match_hosts\":[\"*.b.*\"]},"
           "\"egress\":{\"deny\":[\"*.x.com\",\"*c*\"]}}",
           more);
  parse_err(json, NULL, "egress.deny[1]",
            "\"*c*\" is host pattern number 1025 with text between two '*'");
  free(json);
  free(more);
}

TEST(collects_every_error)
{
  static const char json[] =
      "{\"rules\":[{\"name\":\"\",\"match_hosts\":[\"a..b\"],"
      "\"headers\":[{\"name\":\"X Bad\",\"type\":\"nope\",\"value\":\"v\"}]}],"
      "\"no_proxy\":[\"bad host\"],\"egress\":{\"default\":\"maybe\"},\"extra\":1}";
  struct rules_config *cfg = NULL;
  struct rules_diag d;

  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(json, strlen(json), "proxy_config.", NULL, &cfg, &d), -EINVAL);
  ASSERT_EQ(d.count, 7);
  ASSERT_STREQ(d.entries[0].path, "proxy_config.extra");
  ASSERT_STREQ(d.entries[1].path, "proxy_config.rules[0].name");
  ASSERT_STREQ(d.entries[2].path, "proxy_config.rules[0].match_hosts[0]");
  ASSERT_STREQ(d.entries[3].path, "proxy_config.rules[0].headers[0].name");
  ASSERT_STREQ(d.entries[4].path, "proxy_config.rules[0].headers[0].type");
  ASSERT_STREQ(d.entries[5].path, "proxy_config.no_proxy[0]");
  ASSERT_STREQ(d.entries[6].path, "proxy_config.egress.default");
  rules_diag_free(&d);

  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse("[1]", 3, "proxy_config.", NULL, &cfg, &d), -EINVAL);
  ASSERT_STREQ(d.entries[0].path, "proxy_config");
  rules_diag_free(&d);
}

TEST(error_count_is_bounded)
{
  char *json = repeat("{\"no_proxy\":[", "\"bad host @\"", 150, "]}");
  struct rules_config *cfg = NULL;
  struct rules_diag d;

  rules_diag_init(&d);
  ASSERT_EQ(rules_config_parse(json, strlen(json), "", NULL, &cfg, &d), -EINVAL);
  ASSERT_EQ(d.count, 101);
  ASSERT_STREQ(d.entries[99].path, "no_proxy[99]");
  ASSERT_CONTAINS(d.entries[100].message, "50 more errors not shown");
  rules_diag_free(&d);
  free(json);
}

TEST(from_cjson)
{
  cJSON *root = cJSON_Parse("{\"netns\":\"/run/netns/x\",\"proxy_config\":{\"rules\":[{\"name\":"
                            "\"r\",\"match_hosts\":[\"x.com\"],\"bogus\":1}]}}");
  struct rules_config *cfg = NULL;
  struct rules_diag d;

  ASSERT_NOT_NULL(root);
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_from_cjson(cJSON_GetObjectItem(root, "proxy_config"), "proxy_config.",
                                    NULL, &cfg, &d),
            -EINVAL);
  ASSERT_EQ(d.count, 1);
  ASSERT_STREQ(d.entries[0].path, "proxy_config.rules[0].bogus");
  rules_diag_free(&d);
  rules_diag_init(&d);
  ASSERT_EQ(rules_config_from_cjson(NULL, "", NULL, &cfg, &d), -EINVAL);
  rules_diag_free(&d);
  cJSON_Delete(root);
}

TEST(refcount)
{
  struct rules_config *cfg = parse_ok("{\"no_proxy\":[\"a.com\"]}", NULL);

  ASSERT(rules_config_ref(cfg) == cfg);
  rules_config_unref(cfg);
  ASSERT_EQ(conn_action(cfg, "a.com", 443), RULES_BYPASS);
  rules_config_unref(cfg);
  rules_config_unref(NULL);
}

TEST(json_parse_api)
{
  struct rules_diag d;
  cJSON *root = NULL;

  rules_diag_init(&d);
  ASSERT_EQ(rules_json_parse("{\"proxy_config\":{\"no_proxy\":[\"a.com\"]}} \n", 41, &root, &d), 0);
  ASSERT_NOT_NULL(root);
  ASSERT_EQ(d.count, 0);
  ASSERT_STREQ(cJSON_GetObjectItem(root, "proxy_config")->child->string, "no_proxy");
  rules_json_free(root);
  ASSERT_EQ(rules_json_parse("{\"a\":\"x\\u0000\"}", 15, &root, &d), -EINVAL);
  ASSERT_NULL(root);
  ASSERT_EQ(d.count, 1);
  ASSERT_STREQ(d.entries[0].path, "");
  ASSERT_CONTAINS(d.entries[0].message, "line 1, column 8: \\u0000 (NUL)");
  rules_diag_free(&d);
  rules_json_free(NULL);
}

/* Parses text with rules_json_parse expecting a refusal whose message holds fragment. */
static void json_refused(const char *text, const char *fragment)
{
  struct rules_diag d;
  cJSON *root = NULL;

  rules_diag_init(&d);
  if (rules_json_parse(text, strlen(text), &root, &d) != -EINVAL)
    TEST_FAIL_("accepted: %.200s", text);
  ASSERT_NULL(root);
  ASSERT_EQ(d.count, 1);
  ASSERT_STREQ(d.entries[0].path, "");
  if (strstr(d.entries[0].message, fragment) == NULL)
    TEST_FAIL_("message \"%s\" lacks \"%s\"", d.entries[0].message, fragment);
  rules_diag_free(&d);
}

static void json_accepted(const char *text)
{
  struct rules_diag d;
  cJSON *root = NULL;

  rules_diag_init(&d);
  if (rules_json_parse(text, strlen(text), &root, &d) != 0)
    TEST_FAIL_("refused (%s): %.200s", d.count ? d.entries[0].message : "?", text);
  ASSERT_NOT_NULL(root);
  rules_json_free(root);
  rules_diag_free(&d);
}

TEST(json_duplicate_names)
{
  json_refused("{\"a\":1,\"b\":2,\"a\":3}",
               "duplicate member name \"a\" at line 1, column 14 ($.a; first given at line 1, "
               "column 2)");
  /* Any JSON text, not only configs: arrays at the root, objects in arrays. */
  json_refused("[1,{\"x\":[]},{\"k\":{\"y\":1,\"y\":2}}]", "\"y\" at line 1, column 25 ($[2].k.y;");
  json_refused("{\"\":1,\"\":2}", "duplicate member name \"\" at line 1, column 7 ($[\"\"];");
  /* Names are shown escaped, whatever bytes they hold. */
  json_refused("{\"a\\u001b[2J\":1,\"a\\u001b[2J\":2}", "duplicate member name \"a\\x1b[2J\"");
  json_refused("{\"caf\\u00e9\":1,\"caf\xc3\xa9\":2}", "\"caf\\xc3\\xa9\" at line 1, column 16");
  /* cJSON skips a byte order mark; columns count bytes from the start of the text. */
  json_refused("\xef\xbb\xbf{\"a\":1, \"a\":2}", "at line 1, column 12 ($.a; first given at line "
               "1, column 5)");
  /* The outer object is checked before its members' values. */
  json_refused("{\"o\":{\"i\":1,\"i\":2},\"o\":3}", "duplicate member name \"o\"");
  json_accepted("{\"a\":{\"x\":1},\"b\":{\"x\":2},\"c\":[{\"x\":1},{\"x\":1}],\"A\":1}");
  json_accepted("{}");
  json_accepted("[]");
  json_accepted("\"a\"");
}

/* Objects above the pair-by-pair size go through a sorted copy of their names. */
TEST(json_duplicate_names_large_object)
{
  char *json;

  /* A map of 5000 secrets, every name different, some sharing long prefixes. */
  json = repeat("{", "\"SECRET_KEY_NUMBER_@\":\"v\"", 5000, "}");
  json_accepted(json);
  free(json);
  /* 200 names, then a repeat of the 150th and later of the 7th: the repeat met first
   * in the text is reported, with the position of its first occurrence. */
  json = repeat("{", "\"k@\":1", 200, ",\"k150\":2,\"k7\":3}");
  json_refused(json, "duplicate member name \"k150\"");
  json_refused(json, "($.k150; first given at line 1, column 1242)");
  free(json);
  /* A name given three times: the second occurrence is the one reported. */
  json = repeat("{\"z\":0,", "\"k@\":1", 50, ",\"z\":1,\"z\":2}");
  json_refused(json, "duplicate member name \"z\" at line 1, column 398 ($.z; first given at "
                     "line 1, column 2)");
  free(json);
}

/*
 * cJSON refuses text nested deeper than CJSON_NESTING_LIMIT (1000) containers; the
 * check walks whatever it accepts without recursion, down to the deepest object.
 */
TEST(json_duplicate_names_deep)
{
  size_t n = CJSON_NESTING_LIMIT - 1, i, w = 0;
  char *json = malloc(2 * n + 64);

  ASSERT_NOT_NULL(json);
  for (i = 0; i < n; i++)
    json[w++] = '[';
  w += (size_t)sprintf(json + w, "{\"d\":1,\"d\":2}");
  for (i = 0; i < n; i++)
    json[w++] = ']';
  json[w] = '\0';
  json_refused(json, "duplicate member name \"d\" at line 1, column 1007 ($[0][0][0]");
  /* Unique names at the same depth pass. */
  json[n + 2] = 'e';
  json_accepted(json);
  free(json);
  /* As deep as cJSON goes, and one level more, which cJSON refuses. */
  for (n = CJSON_NESTING_LIMIT; n <= CJSON_NESTING_LIMIT + 1; n++) {
    json = malloc(2 * n + 1);
    ASSERT_NOT_NULL(json);
    memset(json, '[', n);
    memset(json + n, ']', n);
    json[2 * n] = '\0';
    if (n == CJSON_NESTING_LIMIT)
      json_accepted(json);
    else
      json_refused(json, "invalid JSON at line 1, column");
    free(json);
  }
}

/*
 * cJSON decodes a \u escape whose four characters are not all hex digits as U+0000
 * (parse_hex4 returns 0), so "\uZZZZ" cut strings short at a NUL just as "\u0000"
 * would, and made names that differ in the text equal. Other readers refuse them.
 */
TEST(json_invalid_unicode_escape)
{
  json_refused("{\"no_proxy\":[\"evil.example\\uZZZZ.allowed.example\"]}",
               "line 1, column 27: invalid \\u escape");
  json_refused("[\"a\\u00G0\"]", "invalid \\u escape (it takes four hex digits");
  json_refused("[\"a\\u12\\\"\"]", "invalid \\u escape");
  /* Not a duplicate of "a" in any other reader: refused for the escape instead. */
  json_refused("{\"a\":1,\"a\\u-000\":2}", "line 1, column 10: invalid \\u escape");
  /* An escaped backslash before "u" is no escape; hex digits of either case pass. */
  json_accepted("[\"\\\\uZZZZ\", \"\\u00e9\\u00C9\\uD83D\\uDE00\"]");
}

/*
 * A text that ends before its value does (a body cut short, or sent with a
 * Content-Length counted in characters, not bytes) is an unexpected end of input
 * where the text stops. cJSON reports such a failure at the last byte (or, inside a
 * string never closed, at the string's first), and the message blamed that byte: a
 * control API body cut after `"proxy_config": {` read "unexpected '{'".
 */
TEST(json_ends_early)
{
  json_refused("{\"netns\": \"/x\", \"proxy_config\": {",
               "line 1, column 34: unexpected end of input");
  json_refused("{\"rules\": [], \"no_proxy\": [\"a\",", "column 32: unexpected end of input");
  json_refused("{\"netns\": \"/x\"", "column 15: unexpected end of input");
  json_refused("[1", "column 3: unexpected end of input");
  json_refused("{\"value\": \"p\xc3\xa4ssw\xc3\xb6", "unexpected end of input");
  json_refused("{\"a\": \"x\\\"", "unexpected end of input");
  /* A last byte that is wrong is still named. */
  json_refused("{\"rules\": [1,]", "column 14: unexpected ']'");
  json_refused("[1,]", "column 4: unexpected ']'");
  json_refused("{\"a\"\"b\"}", "column 5: unexpected '\"'");
  /* So is a wrong byte after a string that closed: the bracket that does not match. */
  json_refused("{\"rules\": [\"x\"}", "column 15: unexpected '}'");
  json_refused("{\"a\": \"b\"]", "column 10: unexpected ']'");
  json_refused("{\n  \"no_proxy\": [\"a\"}\n}\n", "line 2, column 19: unexpected '}'");
  json_refused("[\"a\\\"b\"}", "column 8: unexpected '}'");
  json_refused("[\"a\\\\\", \"b", "column 11: unexpected end of input");
}

/* daemon_json_parse_own passes no diag: the verdict is the same. */
TEST(json_duplicate_names_without_diag)
{
  static const char text[] = "{\"proxy_config\":{},\"proxy_config\":{}}";
  cJSON *root = NULL;

  ASSERT_EQ(rules_json_parse_max(text, sizeof(text) - 1, 1 << 22, &root, NULL), -EINVAL);
  ASSERT_NULL(root);
}
