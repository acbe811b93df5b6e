#include "rules/rules.h"
#include "test.h"

TEST(collects_every_error)
{
  struct rules_diag d;

  rules_diag_init(&d);
  ASSERT_EQ(rules_diag_add(&d, "rules[0].name", "must not be empty"), 0);
  ASSERT_EQ(rules_diag_add(&d, "rules[1].headers[0].name", "\"%s\" is not a token", "X Bad"), 0);
  ASSERT_EQ(d.count, 2);
  ASSERT_STREQ(d.entries[1].path, "rules[1].headers[0].name");
  ASSERT_STREQ(d.entries[1].message, "\"X Bad\" is not a token");
  rules_diag_free(&d);
  ASSERT_EQ(d.count, 0);
  rules_diag_free(&d);
}
