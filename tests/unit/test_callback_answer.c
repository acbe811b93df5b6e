/*
 * The credential callback's answer parser (proxy/callback_answer.c) on its own: the
 * bytes of an answer in, credentials or the reason for refusing them out, with no
 * connection. Limits are checked to the byte, and every answer is also fed one byte
 * at a time, which must come to the same result.
 */
#include <errno.h>

#include "proxy/callback_internal.h"
#include "proxy/strbuf.h"
#include "test.h"

/* What parsing one answer came to. */
struct parsed {
  int result;                 /* PROXY_CRED_ANSWER_DONE or _FAILED */
  int status;
  enum proxy_cred_outcome outcome;
  int err;
  char detail[256];
  int feed_failed;            /* feeding the bytes, before the end, refused them */
  int body_freed;             /* the body was released once the answer was read */
  struct proxy_creds *creds;  /* on success; the caller unrefs */
};

/* Feeds raw in pieces of piece bytes; the connection then ends (tls, clean) if more
 * is wanted, and credentials are built from a complete answer. */
static struct parsed parse_in(const char *raw, size_t len, size_t piece, int tls, int clean)
{
  struct proxy_cred_answer a;
  struct parsed p;
  size_t off = 0, n;
  int r = PROXY_CRED_ANSWER_MORE;

  memset(&p, 0, sizeof(p));
  proxy_cred_answer_init(&a);
  while (off < len && r == PROXY_CRED_ANSWER_MORE) {
    n = len - off < piece ? len - off : piece;
    r = proxy_cred_answer_feed(&a, raw + off, n);
    off += n;
  }
  p.feed_failed = r == PROXY_CRED_ANSWER_FAILED;
  if (r == PROXY_CRED_ANSWER_MORE)
    r = proxy_cred_answer_eof(&a, tls, clean);
  if (r == PROXY_CRED_ANSWER_DONE)
    r = proxy_cred_answer_creds(&a, &p.creds);
  ASSERT(r == PROXY_CRED_ANSWER_DONE || r == PROXY_CRED_ANSWER_FAILED);
  p.result = r;
  p.status = a.status;
  p.outcome = a.failed ? a.outcome : PROXY_CRED_OK;
  p.err = a.err;
  memcpy(p.detail, a.detail, sizeof(p.detail));
  p.body_freed = a.body == NULL && a.body_len == 0;
  proxy_cred_answer_free(&a);
  return p;
}

/* Parses raw whole and one byte at a time; both must agree. Returns the whole run. */
static struct parsed parse_tls(const char *raw, size_t len, int tls, int clean)
{
  struct parsed whole = parse_in(raw, len, len ? len : 1, tls, clean);
  struct parsed bytes = parse_in(raw, len, 1, tls, clean);
  size_t i;

  ASSERT_EQ(bytes.result, whole.result);
  ASSERT_EQ(bytes.status, whole.status);
  ASSERT_EQ(bytes.outcome, whole.outcome);
  ASSERT_EQ(bytes.feed_failed, whole.feed_failed);
  if (whole.creds != NULL) {
    ASSERT_EQ(bytes.creds->nheaders, whole.creds->nheaders);
    for (i = 0; i < whole.creds->nheaders; i++) {
      ASSERT_STREQ(bytes.creds->headers[i].name, whole.creds->headers[i].name);
      ASSERT_STREQ(bytes.creds->headers[i].value, whole.creds->headers[i].value);
    }
  }
  proxy_creds_unref(bytes.creds);
  return whole;
}

static struct parsed parse(const char *raw)
{
  return parse_tls(raw, strlen(raw), 0, 0);
}

/* An answer with Content-Length framing around body. */
static struct parsed parse_body(const char *status, const char *body)
{
  struct strbuf b;
  struct parsed p;

  strbuf_init(&b);
  strbuf_addf(&b, "HTTP/1.1 %s\r\nContent-Length: %zu\r\n\r\n%s", status, strlen(body), body);
  ASSERT(!b.oom);
  p = parse_tls(b.data, b.len, 0, 0);
  strbuf_free(&b);
  return p;
}

static void expect_failed(const struct parsed *p, enum proxy_cred_outcome outcome, int err,
                          const char *fragment)
{
  if (p->result != PROXY_CRED_ANSWER_FAILED || p->outcome != outcome || p->err != err ||
      strstr(p->detail, fragment) == NULL)
    TEST_FAIL_("result %d outcome %s err %d detail \"%s\"; expected outcome %s err %d "
               "detail with \"%s\"", p->result, proxy_cred_outcome_name(p->outcome), p->err,
               p->detail, proxy_cred_outcome_name(outcome), err, fragment);
  ASSERT_NULL(p->creds);
}

/* Names and values are copied whole and in order, the body is released once read, and
 * a body that outgrows its buffer several times arrives intact. */
TEST(answer_headers_copied_exactly)
{
  struct strbuf body;
  struct parsed p;
  int i;

  strbuf_init(&body);
  strbuf_adds(&body, "{\"pad\":\"");
  for (i = 0; i < 5000; i++)
    strbuf_add(&body, i % 2 ? "a" : "b", 1);
  strbuf_adds(&body, "\",\"headers\":{\"Authorization\":\"Bearer k-1\",\"X-Api-Key\":\"\\tv2\"}}");
  ASSERT(!body.oom);
  p = parse_body("200 OK", body.data);
  ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(p.status, 200);
  ASSERT(p.body_freed);
  ASSERT_NOT_NULL(p.creds);
  ASSERT_EQ(p.creds->refs, 1);
  ASSERT_EQ(p.creds->nheaders, 2);
  ASSERT_STREQ(p.creds->headers[0].name, "Authorization");
  ASSERT_STREQ(p.creds->headers[0].value, "Bearer k-1");
  ASSERT_EQ(p.creds->headers[0].value_len, 10);
  ASSERT_STREQ(p.creds->headers[1].name, "X-Api-Key");
  ASSERT_STREQ(p.creds->headers[1].value, "\tv2");
  ASSERT_EQ(p.creds->headers[1].value_len, 3);
  proxy_creds_unref(p.creds);
  strbuf_free(&body);
}

/* Interim answers (1xx but 101) are skipped; the final status must be 2xx. */
TEST(answer_status_codes)
{
  struct parsed p;

  p = parse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
            "HTTP/1.1 199 Odd\r\n\r\nHTTP/1.1 299 Fine\r\nContent-Length: 14\r\n\r\n"
            "{\"headers\":{}}");
  ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(p.status, 299);
  ASSERT_EQ(p.creds->nheaders, 0);
  proxy_creds_unref(p.creds);

  p = parse_body("200 OK", "{\"headers\":{}}");
  ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
  proxy_creds_unref(p.creds);

  p = parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n");
  expect_failed(&p, PROXY_CRED_BAD_STATUS, -EPROTO, "HTTP status 101");
  ASSERT_EQ(p.status, 101);
  /* Refused as soon as the head is read, not after the body. */
  ASSERT(p.feed_failed);
  p = parse_body("300 Multiple Choices", "{\"headers\":{}}");
  expect_failed(&p, PROXY_CRED_BAD_STATUS, -EPROTO, "HTTP status 300");
  ASSERT(p.feed_failed);
  p = parse_body("403 Forbidden", "{\"headers\":{}}");
  expect_failed(&p, PROXY_CRED_BAD_STATUS, -EPROTO, "HTTP status 403");
  ASSERT_EQ(p.status, 403);
  ASSERT(p.feed_failed);
}

/* The status line and header fields may add up to PROXY_CRED_MAX_HEAD bytes, not one
 * more. What counts: the reason phrase, each field name and each value. */
TEST(answer_head_limit_to_the_byte)
{
  /* "OK" + "Content-Length" + "14" + "X-Pad": 23 bytes besides the padding. */
  size_t fixed = 2 + 14 + 2 + 5, extra;

  for (extra = 0; extra < 2; extra++) {
    struct strbuf b;
    struct parsed p;
    size_t i;

    strbuf_init(&b);
    strbuf_adds(&b, "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nX-Pad: ");
    for (i = 0; i < PROXY_CRED_MAX_HEAD - fixed + extra; i++)
      strbuf_add(&b, "p", 1);
    strbuf_adds(&b, "\r\n\r\n{\"headers\":{}}");
    ASSERT(!b.oom);
    p = parse_tls(b.data, b.len, 0, 0);
    if (extra == 0) {
      ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
      proxy_creds_unref(p.creds);
    } else {
      expect_failed(&p, PROXY_CRED_TOO_LARGE, -EMSGSIZE, "the answer's head is over 16384 bytes");
      ASSERT(p.feed_failed);
    }
    strbuf_free(&b);
  }
}

/* A body of PROXY_CRED_MAX_BODY bytes is read, one byte more is refused: announced by
 * Content-Length (refused before the body), chunked, or delimited by the end of the
 * connection. */
TEST(answer_body_limit_to_the_byte)
{
  static const char *const framings[] = { "length", "chunked", "close" };
  size_t f, extra;

  for (f = 0; f < 3; f++) {
    for (extra = 0; extra < 2; extra++) {
      size_t blen = PROXY_CRED_MAX_BODY + extra, i;
      struct strbuf b, body;
      struct parsed p;

      strbuf_init(&body);
      strbuf_adds(&body, "{\"headers\":{},\"pad\":\"");
      while (body.len < blen - 2)
        strbuf_add(&body, "x", 1);
      strbuf_adds(&body, "\"}");
      ASSERT(!body.oom);
      ASSERT_EQ(body.len, blen);
      strbuf_init(&b);
      if (f == 0) {
        strbuf_addf(&b, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", blen);
        strbuf_add(&b, body.data, body.len);
      } else if (f == 1) {
        strbuf_adds(&b, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (i = 0; i < body.len; i += 1000) {
          size_t n = body.len - i < 1000 ? body.len - i : 1000;

          strbuf_addf(&b, "%zx\r\n", n);
          strbuf_add(&b, body.data + i, n);
          strbuf_adds(&b, "\r\n");
        }
        strbuf_adds(&b, "0\r\n\r\n");
      } else {
        strbuf_adds(&b, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        strbuf_add(&b, body.data, body.len);
      }
      ASSERT(!b.oom);
      fprintf(stderr, "framing %s, %zu bytes\n", framings[f], blen);
      p = parse_tls(b.data, b.len, 0, 0);
      if (extra == 0) {
        ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
        proxy_creds_unref(p.creds);
      } else if (f == 0) {
        expect_failed(&p, PROXY_CRED_TOO_LARGE, -EMSGSIZE,
                      "Content-Length 65537 is over the 65536-byte limit");
        ASSERT(p.feed_failed);
      } else {
        expect_failed(&p, PROXY_CRED_TOO_LARGE, -EMSGSIZE, "the body is over 65536 bytes");
        ASSERT(p.feed_failed);
      }
      strbuf_free(&b);
      strbuf_free(&body);
    }
  }
}

/* Once the answer is complete, later bytes are ignored; once refused, it stays
 * refused. */
TEST(answer_after_its_end)
{
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"headers\":{}}";
  struct proxy_cred_answer a;
  struct proxy_creds *cr = NULL;

  proxy_cred_answer_init(&a);
  ASSERT_EQ(proxy_cred_answer_feed(&a, ok, strlen(ok)), PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(proxy_cred_answer_feed(&a, "HTTP/1.1 500 No\r\n\r\n", 19), PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(proxy_cred_answer_feed(&a, "garbage", 7), PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(proxy_cred_answer_eof(&a, 1, 0), PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(proxy_cred_answer_creds(&a, &cr), PROXY_CRED_ANSWER_DONE);
  ASSERT_NOT_NULL(cr);
  proxy_creds_unref(cr);
  proxy_cred_answer_free(&a);

  /* A second answer on the same connection is not read. */
  {
    struct parsed p = parse("HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"headers\":{}}"
                            "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"
                            "{\"headers\":{\"Authorization\":\"Bearer k\"}}");

    ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
    ASSERT_EQ(p.creds->nheaders, 0);
    proxy_creds_unref(p.creds);
  }

  proxy_cred_answer_init(&a);
  ASSERT_EQ(proxy_cred_answer_feed(&a, "nonsense\r\n\r\n", 12), PROXY_CRED_ANSWER_FAILED);
  ASSERT_EQ(a.outcome, PROXY_CRED_BAD_RESPONSE);
  ASSERT_CONTAINS(a.detail, "malformed HTTP answer");
  ASSERT_EQ(proxy_cred_answer_feed(&a, ok, strlen(ok)), PROXY_CRED_ANSWER_FAILED);
  ASSERT_EQ(proxy_cred_answer_eof(&a, 0, 0), PROXY_CRED_ANSWER_FAILED);
  cr = (struct proxy_creds *)1;
  ASSERT_EQ(proxy_cred_answer_creds(&a, &cr), PROXY_CRED_ANSWER_FAILED);
  ASSERT_NULL(cr);
  ASSERT_CONTAINS(a.detail, "malformed HTTP answer");
  proxy_cred_answer_free(&a);
}

/* How the connection ends: an answer delimited by the end needs close_notify over TLS;
 * one that ended early, or never began, is refused, saying which. */
TEST(answer_connection_end)
{
  static const char until_close[] =
    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"headers\":{\"Authorization\":\"Bearer k\"}}";
  static const char short_body[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"headers\":{}}";
  struct proxy_cred_answer a;
  struct proxy_creds *cr = NULL;
  struct parsed p;

  p = parse_tls(until_close, strlen(until_close), 1, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -EPROTO, "ended without close_notify");
  p = parse_tls(until_close, strlen(until_close), 1, 1);
  ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
  ASSERT_EQ(p.creds->nheaders, 1);
  proxy_creds_unref(p.creds);
  p = parse_tls(until_close, strlen(until_close), 0, 0);
  ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
  proxy_creds_unref(p.creds);

  p = parse_tls(short_body, strlen(short_body), 0, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                "the connection ended before the answer was complete");
  p = parse_tls(short_body, strlen(short_body), 1, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                "the connection ended before the answer was complete");
  p = parse_tls("HTTP/1.1 200 OK\r\nContent-Le", 27, 0, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                "the connection ended before the answer was complete");
  /* Over TLS, a head cut short without close_notify may have been cut by anyone. */
  p = parse_tls("HTTP/1.1 200 OK\r\nContent-Le", 27, 1, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -EPROTO, "ended without close_notify");

  /* Nothing at all, over TCP or TLS. */
  p = parse_tls("", 0, 0, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                "the callback closed the connection without answering");
  p = parse_tls("", 0, 1, 0);
  expect_failed(&p, PROXY_CRED_BAD_RESPONSE, -ECONNRESET,
                "the callback closed the connection without answering");

  /* Credentials are only built from a complete answer. */
  proxy_cred_answer_init(&a);
  ASSERT_EQ(proxy_cred_answer_feed(&a, short_body, strlen(short_body)), PROXY_CRED_ANSWER_MORE);
  ASSERT_EQ(proxy_cred_answer_creds(&a, &cr), PROXY_CRED_ANSWER_FAILED);
  ASSERT_NULL(cr);
  ASSERT_EQ(a.outcome, PROXY_CRED_BAD_RESPONSE);
  ASSERT_CONTAINS(a.detail, "the answer is not complete");
  proxy_cred_answer_free(&a);
}

/* Bodies that are not the credentials the callback must send, each refused naming
 * what is wrong. */
TEST(answer_body_refused)
{
  static const struct {
    const char *body;
    enum proxy_cred_outcome outcome;
    const char *detail;
  } cases[] = {
    { "", PROXY_CRED_NOT_JSON, "the body (0 bytes) is not strict JSON" },
    { "{\"headers\":", PROXY_CRED_NOT_JSON, "the body (11 bytes) is not strict JSON" },
    { "[]", PROXY_CRED_NOT_JSON, "the body (2 bytes) is not a JSON object" },
    { "{}", PROXY_CRED_BAD_HEADERS, "the answer has no \"headers\" member" },
    { "{\"Headers\":{}}", PROXY_CRED_BAD_HEADERS, "no \"headers\" member" },
    { "{\"headers\":[]}", PROXY_CRED_BAD_HEADERS, "\"headers\" is not an object" },
    { "{\"headers\":{\"X-A\":1}}", PROXY_CRED_BAD_HEADERS, "header X-A: the value is not a string" },
    { "{\"headers\":{\"X-A\":\"a\",\"x-a\":\"b\"}}", PROXY_CRED_BAD_HEADERS,
      "header x-a appears twice" },
    { "{\"headers\":{\"X-A\":\"a\",\"X-B\":\"b\",\"x-b\":\"c\"}}", PROXY_CRED_BAD_HEADERS,
      "header x-b appears twice" },
    { "{\"headers\":{\"Connection\":\"close\"}}", PROXY_CRED_BAD_HEADERS,
      "header Connection is hop-by-hop or framing" },
    { "{\"headers\":{\"Bad Name\":\"x\"}}", PROXY_CRED_BAD_HEADERS,
      "header name \"Bad Name\" is not a token" },
    { "{\"headers\":{\"X-A\":\"a\\u0001b\"}}", PROXY_CRED_BAD_HEADERS,
      "header X-A: the value has CR, LF, NUL or another control byte" },
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct parsed p = parse_body("200 OK", cases[i].body);

    fprintf(stderr, "case %zu: %s\n", i, cases[i].body);
    expect_failed(&p, cases[i].outcome, -EPROTO, cases[i].detail);
    ASSERT(p.body_freed);
  }
}

/* At most RULES_MAX_INJECT headers with values of at most RULES_MAX_VALUE_LEN bytes. */
TEST(answer_header_limits_to_the_byte)
{
  struct strbuf body;
  struct parsed p;
  int i, extra;

  for (extra = 0; extra < 2; extra++) {
    strbuf_init(&body);
    strbuf_adds(&body, "{\"headers\":{");
    for (i = 0; i < RULES_MAX_INJECT + extra; i++)
      strbuf_addf(&body, "%s\"X-H%d\":\"v%d\"", i ? "," : "", i, i);
    strbuf_adds(&body, "}}");
    ASSERT(!body.oom);
    p = parse_body("200 OK", body.data);
    if (extra == 0) {
      ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
      ASSERT_EQ(p.creds->nheaders, RULES_MAX_INJECT);
      ASSERT_STREQ(p.creds->headers[RULES_MAX_INJECT - 1].name, "X-H63");
      ASSERT_STREQ(p.creds->headers[RULES_MAX_INJECT - 1].value, "v63");
      proxy_creds_unref(p.creds);
    } else {
      expect_failed(&p, PROXY_CRED_BAD_HEADERS, -EPROTO, "the answer has more than 64 headers");
    }
    strbuf_free(&body);

    strbuf_init(&body);
    strbuf_adds(&body, "{\"headers\":{\"Authorization\":\"");
    for (i = 0; i < RULES_MAX_VALUE_LEN + extra; i++)
      strbuf_add(&body, "a", 1);
    strbuf_adds(&body, "\"}}");
    ASSERT(!body.oom);
    p = parse_body("200 OK", body.data);
    if (extra == 0) {
      ASSERT_EQ(p.result, PROXY_CRED_ANSWER_DONE);
      ASSERT_EQ(p.creds->headers[0].value_len, RULES_MAX_VALUE_LEN);
      ASSERT_EQ(strlen(p.creds->headers[0].value), RULES_MAX_VALUE_LEN);
      proxy_creds_unref(p.creds);
    } else {
      expect_failed(&p, PROXY_CRED_BAD_HEADERS, -EPROTO,
                    "header Authorization: the value is longer than 8192 bytes");
    }
    strbuf_free(&body);
  }
}

/* A name that is not a token goes into the log line made safe: printable ASCII but
 * '"' and '\' (each shown as '?'), at most 64 bytes, then "...". */
TEST(answer_bad_name_logged_safely)
{
  struct strbuf body, want;
  struct parsed p;
  int i;

  /* 71 bytes: a"b\c, a control byte, DEL, then x's. */
  strbuf_init(&body);
  strbuf_adds(&body, "{\"headers\":{\"a\\\"b\\\\c\\u0001\\u007f");
  for (i = 0; i < 64; i++)
    strbuf_add(&body, "x", 1);
  strbuf_adds(&body, "\":\"v\"}}");
  strbuf_init(&want);
  strbuf_adds(&want, "header name \"a?b?c??");
  for (i = 0; i < 57; i++)
    strbuf_add(&want, "x", 1);
  strbuf_adds(&want, "...\" is not a token");
  ASSERT(!body.oom && !want.oom);
  p = parse_body("200 OK", body.data);
  expect_failed(&p, PROXY_CRED_BAD_HEADERS, -EPROTO, want.data);
  strbuf_free(&body);
  strbuf_free(&want);

  /* Exactly 64 bytes: shown whole, without "...". */
  strbuf_init(&body);
  strbuf_adds(&body, "{\"headers\":{\"a b");
  for (i = 0; i < 61; i++)
    strbuf_add(&body, "y", 1);
  strbuf_adds(&body, "\":\"v\"}}");
  strbuf_init(&want);
  strbuf_adds(&want, "header name \"a b");
  for (i = 0; i < 61; i++)
    strbuf_add(&want, "y", 1);
  strbuf_adds(&want, "\" is not a token");
  ASSERT(!body.oom && !want.oom);
  p = parse_body("200 OK", body.data);
  expect_failed(&p, PROXY_CRED_BAD_HEADERS, -EPROTO, want.data);
  strbuf_free(&body);
  strbuf_free(&want);
}
