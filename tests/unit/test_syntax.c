#include "rules/rules.h"
#include "test.h"

TEST(tokens)
{
  ASSERT_EQ(rules_is_token("Authorization", 13), 1);
  ASSERT_EQ(rules_is_token("x-api-key", 9), 1);
  ASSERT_EQ(rules_is_token("!#$%&'*+-.^_`|~09azAZ", 21), 1);
  ASSERT_EQ(rules_is_token("", 0), 0);
  ASSERT_EQ(rules_is_token("X Bad", 5), 0);
  ASSERT_EQ(rules_is_token("X:Bad", 5), 0);
  ASSERT_EQ(rules_is_token("X\0Bad", 5), 0);
  ASSERT_EQ(rules_is_token("\"q\"", 3), 0);
  ASSERT_EQ(rules_is_token("a\xc3\xa9", 3), 0);
}

TEST(reserved_headers)
{
  ASSERT_EQ(rules_is_reserved_header("Connection", 10), 1);
  ASSERT_EQ(rules_is_reserved_header("HOST", 4), 1);
  ASSERT_EQ(rules_is_reserved_header("content-length", 14), 1);
  ASSERT_EQ(rules_is_reserved_header("Transfer-Encoding", 17), 1);
  ASSERT_EQ(rules_is_reserved_header("TE", 2), 1);
  ASSERT_EQ(rules_is_reserved_header("Proxy-Authorization", 19), 1);
  ASSERT_EQ(rules_is_reserved_header("Authorization", 13), 0);
  ASSERT_EQ(rules_is_reserved_header("Hostname", 8), 0);
  ASSERT_EQ(rules_is_reserved_header("T", 1), 0);
}

TEST(values)
{
  ASSERT_EQ(rules_is_valid_value("Bearer sk-123", 13), 1);
  ASSERT_EQ(rules_is_valid_value("a\tb", 3), 1);
  ASSERT_EQ(rules_is_valid_value("caf\xc3\xa9", 5), 1);
  ASSERT_EQ(rules_is_valid_value("a\rb", 3), 0);
  ASSERT_EQ(rules_is_valid_value("a\nb", 3), 0);
  ASSERT_EQ(rules_is_valid_value("a\0b", 3), 0);
  ASSERT_EQ(rules_is_valid_value("a\x7f", 2), 0);
}
