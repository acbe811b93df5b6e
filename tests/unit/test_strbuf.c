/*
 * strbuf_add_json_str (proxy/strbuf.c), which writes every string of the audit log,
 * the callback's request body and the control API's hand-made answers: the output is
 * printable ASCII (a record is one line and survives any log pipeline), and a JSON
 * reader gets back the text that went in. Rule names may be any UTF-8 (the config is
 * strict JSON); they used to come out byte by byte as \u00XX, which a reader decodes
 * as Latin-1: "clé" became "clÃ©" in the audit log.
 */
#include <cjson/cJSON.h>

#include "proxy/strbuf.h"
#include "rules/rules.h"
#include "test.h"

/* Parses the literal with the strict reader (UTF-8 checked, escapes checked, lone
 * surrogates refused); returns the tree, or fails the test. */
static cJSON *strict(const char *text)
{
  struct rules_diag d;
  cJSON *v = NULL;

  rules_diag_init(&d);
  if (rules_json_parse(text, strlen(text), &v, &d) != 0)
    TEST_FAIL_("the strict reader refused %s", text);
  rules_diag_free(&d);
  return v;
}

/* The literal strbuf_add_json_str makes of s[0..len). */
static char *literal(const char *s, size_t len)
{
  struct strbuf b;
  char *out;

  strbuf_init(&b);
  strbuf_add_json_str(&b, s, len);
  out = strbuf_take(&b);
  ASSERT_NOT_NULL(out);
  return out;
}

/* s[0..len) written and read back by cJSON equals want; the literal is printable ASCII
 * and equals lit when lit is given. */
static void round_trip(const char *s, size_t len, const char *want, const char *lit)
{
  char *out = literal(s, len);
  cJSON *v;
  size_t i;

  for (i = 0; out[i] != '\0'; i++)
    if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
      TEST_FAIL_("byte 0x%02x at %zu of %s is not printable ASCII", (unsigned char)out[i], i,
                 out);
  if (lit != NULL)
    ASSERT_STREQ(out, lit);
  v = strict(out);
  ASSERT(cJSON_IsString(v));
  ASSERT_STREQ(v->valuestring, want);
  rules_json_free(v);
  free(out);
}

TEST(ascii_and_escapes)
{
  round_trip("plain", 5, "plain", "\"plain\"");
  round_trip("a\"b\\c", 5, "a\"b\\c", "\"a\\\"b\\\\c\"");
  round_trip("l1\nl2\r\t", 7, "l1\nl2\r\t", "\"l1\\u000al2\\u000d\\u0009\"");
  round_trip("\x7f", 1, "\x7f", "\"\\u007f\"");
  round_trip("", 0, "", "\"\"");
}

TEST(utf8_decodes_to_the_same_text)
{
  /* 2, 3 and 4 bytes: é, €, U+2028 (a line separator to some readers), 😀. */
  round_trip("cl\xc3\xa9", 4, "cl\xc3\xa9", "\"cl\\u00e9\"");
  round_trip("\xe2\x82\xac", 3, "\xe2\x82\xac", "\"\\u20ac\"");
  round_trip("\xe2\x80\xa8", 3, "\xe2\x80\xa8", "\"\\u2028\"");
  round_trip("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80", "\"\\ud83d\\ude00\"");
  round_trip("\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf", "\"\\udbff\\udfff\"");
}

TEST(invalid_utf8_becomes_replacement_characters)
{
  /* Each byte that does not begin a well-formed sequence is one U+FFFD: a lone
   * continuation byte, a lead byte cut short (also at the end), an overlong form, a
   * surrogate, a code point past U+10FFFF, bytes never used (C0, C1, F5..FF). */
  static const struct {
    const char *in;
    size_t len;
    const char *want;
  } cases[] = {
    { "a\x80" "b", 3, "a\xef\xbf\xbd" "b" },
    { "\xc3(", 2, "\xef\xbf\xbd(" },
    { "x\xc3", 2, "x\xef\xbf\xbd" },
    { "\xe2\x82", 2, "\xef\xbf\xbd\xef\xbf\xbd" },
    { "\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd" },
    { "\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
    { "\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
    { "\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
    { "\xff\xfe", 2, "\xef\xbf\xbd\xef\xbf\xbd" },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    round_trip(cases[i].in, cases[i].len, cases[i].want, NULL);
}

TEST(nul_is_kept)
{
  char *out = literal("a\0b", 3);

  ASSERT_STREQ(out, "\"a\\u0000b\"");
  free(out);
}

/* Any bytes but NUL: the literal is printable ASCII and the strict reader accepts it
 * (valid UTF-8 comes back unchanged: checked above); 2000 strings of up to 63 bytes
 * from a fixed-seed generator, half of the bytes 0x80 and over. */
TEST(any_bytes_give_valid_json)
{
  uint32_t x = 0x12345678;
  char in[64], *out;
  cJSON *v;
  int i;
  size_t j, len, k;

  for (i = 0; i < 2000; i++) {
    x = x * 1103515245u + 12345u;
    len = (x >> 16) % sizeof(in);
    for (j = 0; j < len; j++) {
      x = x * 1103515245u + 12345u;
      in[j] = (char)((x >> 16) & 1 ? 0x80 | (x >> 20) : (x >> 20));
      if (in[j] == '\0')
        in[j] = 'z'; /* the strict reader refuses \u0000 (nul_is_kept covers it) */
    }
    out = literal(in, len);
    for (k = 0; out[k] != '\0'; k++)
      ASSERT((unsigned char)out[k] >= 0x20 && (unsigned char)out[k] <= 0x7e);
    v = strict(out);
    ASSERT(cJSON_IsString(v));
    rules_json_free(v);
    free(out);
  }
}
