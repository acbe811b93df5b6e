#include <stdlib.h>
#include <string.h>

#include "proxy/scrub.h"
#include "test.h"

/* Feeds text split at every pair of positions and checks the output. */
static void check_all_splits(const char *const *vals, size_t nvals, const char *in,
                             const char *want)
{
  size_t len = strlen(in), a, b, i;

  for (a = 0; a <= len; a++) {
    for (b = a; b <= len; b++) {
      struct proxy_scrub s;
      char *copy = strdup(in), out[512];
      size_t cuts[4] = { 0, a, b, len }, olen = 0, n;
      const char *o;

      memset(&s, 0, sizeof(s));
      for (i = 0; i < nvals; i++)
        proxy_scrub_add(&s, vals[i], strlen(vals[i]));
      for (i = 0; i < 3; i++) {
        ASSERT_EQ(proxy_scrub_feed(&s, copy + cuts[i], cuts[i + 1] - cuts[i], &o, &n), 0);
        if (n > 0)
          memcpy(out + olen, o, n);
        olen += n;
        ASSERT_LT(s.held_len, s.maxlen);
      }
      proxy_scrub_flush(&s, &o, &n);
      if (n > 0)
        memcpy(out + olen, o, n);
      olen += n;
      out[olen] = '\0';
      if (strcmp(out, want) != 0)
        TEST_FAIL_("splits %zu/%zu: \"%s\" vs \"%s\"", a, b, out, want);
      /* Counted: the daemon logs a masked echo by this count. */
      if ((s.masked > 0) != (strcmp(in, want) != 0))
        TEST_FAIL_("splits %zu/%zu: %zu masked for \"%s\"", a, b, s.masked, in);
      proxy_scrub_free(&s);
      free(copy);
    }
  }
}

TEST(masks_across_every_split)
{
  static const char *const vals[] = { "Bearer sk-secret-1234", "tok-abcdefgh" };

  check_all_splits(vals, 2, "{\"authorization\": \"Bearer sk-secret-1234\"}",
                   "{\"authorization\": \"*********************\"}");
  check_all_splits(vals, 2, "tok-abcdefghtok-abcdefgh and Bearer sk-secret-1234!",
                   "************************ and *********************!");
  check_all_splits(vals, 2, "nothing to see: Bearer sk-secret-123 tok-abcdefg",
                   "nothing to see: Bearer sk-secret-123 tok-abcdefg");
}

/* Several values that overlap: one masked first must not hide the rest of another,
 * in one read or across reads (every split), and a value completed in the held tail
 * is masked when the tail is flushed. */
TEST(overlapping_values_masked_whole)
{
  /* "{USER}" and "{USER}:{PASS}" injected into one request, in either order. */
  static const char *const user_first[] = { "alice-0123", "alice-0123:pw-secret-9" };
  static const char *const pair_first[] = { "alice-0123:pw-secret-9", "alice-0123" };
  /* The end of one value is the start of another. */
  static const char *const chained[] = { "tok-AAAA-BBBB", "BBBB-CCCC-dd" };

  check_all_splits(user_first, 2, "echo: alice-0123:pw-secret-9 and alice-0123.",
                   "echo: ********************** and **********.");
  check_all_splits(pair_first, 2, "echo: alice-0123:pw-secret-9 and alice-0123.",
                   "echo: ********************** and **********.");
  check_all_splits(chained, 2, "x tok-AAAA-BBBB-CCCC-dd y", "x ********************* y");
  check_all_splits(chained, 2, "x tok-AAAA-BBBB y BBBB-CCCC-dd", "x ************* y ************");
  /* A value that is also the start of another, at the very end of the response. */
  check_all_splits(user_first, 2, "last: alice-0123", "last: **********");
  check_all_splits(chained, 2, "end tok-AAAA-BBBB", "end *************");
}

TEST(stream_not_delayed)
{
  static const char *const vals[] = { "sk-secret-1234" };
  struct proxy_scrub s;
  char ev[] = "data: event 1\n\n";
  const char *o;
  size_t n;

  memset(&s, 0, sizeof(s));
  proxy_scrub_add(&s, vals[0], strlen(vals[0]));
  /* A tail that cannot start a secret is forwarded at once. */
  ASSERT_EQ(proxy_scrub_feed(&s, ev, strlen(ev), &o, &n), 0);
  ASSERT_EQ(n, strlen(ev));
  ASSERT_EQ(s.held_len, 0);
  /* One that can is held until the next bytes decide. */
  char part[] = "data: sk-sec";
  ASSERT_EQ(proxy_scrub_feed(&s, part, strlen(part), &o, &n), 0);
  ASSERT_EQ(n, 6);
  ASSERT_EQ(s.held_len, 6);
  proxy_scrub_free(&s);
}

TEST(short_values_ignored)
{
  struct proxy_scrub s;
  char text[] = "value 1 and agents";
  const char *o;
  size_t n;

  memset(&s, 0, sizeof(s));
  proxy_scrub_add(&s, "1", 1);
  proxy_scrub_add(&s, "agents", 6);
  ASSERT_EQ(s.n, 0);
  ASSERT_EQ(proxy_scrub_feed(&s, text, strlen(text), &o, &n), 0);
  ASSERT_MEMEQ(o, "value 1 and agents", n);
  proxy_scrub_free(&s);
}

/* "<scheme> <credential>": an error page quotes the credential without its scheme;
 * it is masked alone too, across every split, and the whole value still is. */
TEST(credential_without_scheme_masked)
{
  static const char *const bearer[] = { "Bearer sk-secret-1234" };
  static const char *const two[] = { "Basic dXNlcjpwYXNzd29yZA==", "token ghp_abcdefgh" };

  check_all_splits(bearer, 1, "{\"error\": \"invalid token: sk-secret-1234\"}",
                   "{\"error\": \"invalid token: **************\"}");
  check_all_splits(bearer, 1, "echo Bearer sk-secret-1234; again sk-secret-1234",
                   "echo *********************; again **************");
  check_all_splits(two, 2, "bad dXNlcjpwYXNzd29yZA== and ghp_abcdefgh.",
                   "bad ******************** and ************.");
}

/* A scheme may hold any token character (RFC 9110 5.6.2): digits, letters to the
 * ends of the alphabet, and "!#$%&'*+-.^_`|~", as custom schemes do ("Zoho-oauthtoken",
 * "Token-v2"). Its credential alone is masked all the same. */
TEST(credential_after_any_token_scheme_masked)
{
  static const char *const odd[] = { "Zz09-!#$%&'*+.^_`|~ credential-0123" };
  static const char *const zoho[] = { "Zoho-oauthtoken 1000.abcdef.0123456789" };

  check_all_splits(odd, 1, "echo credential-0123.", "echo ***************.");
  check_all_splits(zoho, 1, "bad token 1000.abcdef.0123456789",
                   "bad token **********************");
}

/* A credential ending in base64 padding decodes to the secret without it: a
 * percent-encoded echo ("=" as "%3D", in a redirect's Location) is masked up to the
 * padding, and an echo as sent is still masked whole, across every split. */
TEST(credential_without_padding_masked)
{
  static const char *const basic[] = { "Basic dXNlcjpwYXNzd29yZA==" };
  static const char *const bare[] = { "c2VjcmV0LWtleQ=" };
  static const char *const short_[] = { "Basic YWJjZA==" };

  check_all_splits(basic, 1, "Location: /login?auth=Basic%20dXNlcjpwYXNzd29yZA%3D%3D\r\n",
                   "Location: /login?auth=Basic%20******************%3D%3D\r\n");
  check_all_splits(basic, 1, "echo Basic dXNlcjpwYXNzd29yZA== and dXNlcjpwYXNzd29yZA",
                   "echo ************************** and ******************");
  check_all_splits(bare, 1, "key=c2VjcmV0LWtleQ%3D; again c2VjcmV0LWtleQ=",
                   "key=**************%3D; again ***************");
  /* Without its padding a credential may be too short to tell from text. */
  check_all_splits(short_, 1, "YWJjZA and YWJjZA==", "YWJjZA and ********");
}

/* Only that shape: a value of several words, or a credential too short to tell from
 * text, adds nothing besides the value itself. */
TEST(credential_shape_only)
{
  struct proxy_scrub s;

  memset(&s, 0, sizeof(s));
  proxy_scrub_add(&s, "Digest username=\"agent\", response=\"0123abcd\"", 44);
  ASSERT_EQ(s.n, 1);
  proxy_scrub_add(&s, "Bearer short", 12);
  ASSERT_EQ(s.n, 2);
  proxy_scrub_add(&s, "sk-no-scheme-0123", 17);
  ASSERT_EQ(s.n, 3);
  proxy_scrub_add(&s, " Bearer leading-space", 21);
  ASSERT_EQ(s.n, 4);
  proxy_scrub_add(&s, "Bearer  two-spaces-ok", 21);
  ASSERT_EQ(s.n, 6);
  ASSERT_EQ(s.len[5], 13);
  proxy_scrub_free(&s);
}

/* Finding the tail to hold back compares only places where a value could begin: text
 * that holds no value's first byte costs a scan per value, not a comparison per
 * byte and value (a credential of 2 KiB, such as a JWT, is common). */
TEST(tail_search_skips_ordinary_text)
{
  static char vals[4][2048], text[1400];
  struct proxy_scrub s;
  const char *o;
  size_t i, k, n;

  memset(&s, 0, sizeof(s));
  for (i = 0; i < 4; i++) {
    memcpy(vals[i], "Bearer ", 7);
    for (k = 7; k < sizeof(vals[i]); k++)
      vals[i][k] = (char)('a' + (i * 7 + k * 13) % 26);
    proxy_scrub_add(&s, vals[i], sizeof(vals[i]));
  }
  ASSERT_EQ(s.n, 8);
  for (k = 0; k < sizeof(text); k++)
    text[k] = "{\"id\": 12, \"TEXT\": \"OK\"} "[k % 26];
  ASSERT_EQ(proxy_scrub_feed(&s, text, sizeof(text), &o, &n), 0);
  ASSERT_EQ(n, sizeof(text));
  ASSERT_EQ(s.held_len, 0);
  ASSERT_LT(s.tail_compared, 8 * 8);
  /* A tail that could begin a value still is held back. */
  memcpy(text + sizeof(text) - 9, vals[2], 9);
  ASSERT_EQ(proxy_scrub_feed(&s, text, sizeof(text), &o, &n), 0);
  ASSERT_EQ(s.held_len, 9);
  ASSERT_EQ(n, sizeof(text) - 9);
  proxy_scrub_free(&s);
}

/* xorshift64: the same sequence on every run. */
static uint64_t scrub_rand(uint64_t *st)
{
  *st ^= *st << 13;
  *st ^= *st >> 7;
  *st ^= *st << 17;
  return *st;
}

/*
 * With several values, what comes out is the whole stream with every occurrence of
 * every value masked, however it is split, and what is held after each read is the
 * longest end of the stream so far that begins a value (its proper prefix): checked
 * against both computed naively, on values and text from small alphabets (so that
 * values overlap, share prefixes and recur), some with a "Bearer " scheme.
 */
TEST(agrees_with_whole_stream_masking)
{
  static const char *const alphabets[] = { "ab", "aab", "abc", "a b" };
  static char vals[3][24], in[400], want[400], out[400], chunk[400];
  uint64_t st = 0x5851f42d4c957f2dULL;
  size_t it, i, k, a, n, len, fed, olen, hold, nv, cut;
  const char *o;

  for (it = 0; it < 20000; it++) {
    const char *al = alphabets[scrub_rand(&st) % 4];
    struct proxy_scrub s;

    memset(&s, 0, sizeof(s));
    n = strlen(al);
    nv = 2 + scrub_rand(&st) % 2;
    for (i = 0; i < nv; i++) {
      len = 8 + scrub_rand(&st) % 12;
      for (k = 0; k < len; k++)
        vals[i][k] = al[scrub_rand(&st) % n];
      if (scrub_rand(&st) % 3 == 0)
        memcpy(vals[i], "Bearer ", 7);
      proxy_scrub_add(&s, vals[i], len);
    }
    len = scrub_rand(&st) % sizeof(in);
    for (k = 0; k < len; k++)
      in[k] = al[scrub_rand(&st) % n];
    for (k = scrub_rand(&st) % 6; k > 0; k--) {
      i = scrub_rand(&st) % s.n;
      if (len >= s.len[i])
        memcpy(in + scrub_rand(&st) % (len - s.len[i] + 1), s.val[i], s.len[i]);
    }
    memcpy(want, in, len);
    for (i = 0; i < s.n; i++)
      for (a = 0; a + s.len[i] <= len; a++)
        if (memcmp(in + a, s.val[i], s.len[i]) == 0)
          memset(want + a, '*', s.len[i]);
    for (fed = 0, olen = 0; fed < len; fed = cut) {
      cut = fed + 1 + scrub_rand(&st) % (len - fed);
      memcpy(chunk, in + fed, cut - fed);
      ASSERT_EQ(proxy_scrub_feed(&s, chunk, cut - fed, &o, &n), 0);
      memcpy(out + olen, o, n);
      olen += n;
      for (hold = 0, i = 0; i < s.n; i++)
        for (k = s.len[i] - 1 < cut ? s.len[i] - 1 : cut; k > hold; k--)
          if (memcmp(in + cut - k, s.val[i], k) == 0)
            hold = k;
      if (s.held_len != hold)
        TEST_FAIL_("case %zu: %zu bytes held after %zu, the longest end that begins a "
                   "value is %zu",
                   it, s.held_len, cut, hold);
      ASSERT_EQ(olen + s.held_len, cut);
    }
    proxy_scrub_flush(&s, &o, &n);
    if (n > 0)
      memcpy(out + olen, o, n);
    olen += n;
    ASSERT_EQ(olen, len);
    if (memcmp(out, want, len) != 0)
      TEST_FAIL_("case %zu: \"%.*s\" masked as \"%.*s\", whole-stream masking gives "
                 "\"%.*s\"",
                 it, (int)len, in, (int)len, out, (int)len, want);
    proxy_scrub_free(&s);
  }
}
