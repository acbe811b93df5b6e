/*
 * proxy_reason_message (proxy/response.c): the message of the proxy's own answers,
 * which the OpenAI and Anthropic SDKs report as the error's. A reason without an
 * entry of its own got the one for a malformed request: a request refused because
 * its destination is a credential callback's said "the request is malformed or
 * ambiguous and was not forwarded", and an agent looked for the fault in its request.
 */
#include "proxy/proxy_internal.h"
#include "test.h"

/* Reasons that reach an answer (403, 501, 502) and are no fault of the request's
 * form: each needs a message of its own. */
TEST(response_reasons_not_malformed)
{
  static const char *const reasons[] = {
    "callback_endpoint", "config_changed", "path_too_long", "http2_preface",
    "out_of_memory", "head_too_large", "too_many_fields", "unsupported_method",
    "method_too_long", "unsupported_transfer_encoding", "unsupported_scheme",
    "userinfo_in_target", "missing_host", "invalid_connection_option",
    "invalid_method_override",
  };
  const char *fallback = proxy_reason_message("no_such_reason");
  size_t i;

  for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
    const char *m = proxy_reason_message(reasons[i]);

    ASSERT_NOT_NULL(m);
    if (strcmp(m, fallback) == 0)
      TEST_FAIL_("%s is answered with the malformed request's message", reasons[i]);
  }
  ASSERT_CONTAINS(proxy_reason_message("callback_endpoint"), "callback");
  ASSERT_CONTAINS(proxy_reason_message("http2_preface"), "HTTP/2");
  ASSERT_CONTAINS(proxy_reason_message("head_too_large"), "larger");
  ASSERT_CONTAINS(proxy_reason_message("too_many_fields"), "more than 128 header fields");
  ASSERT_CONTAINS(proxy_reason_message("unsupported_method"), "method");
  ASSERT_CONTAINS(proxy_reason_message("method_too_long"), "method is longer");
  ASSERT_CONTAINS(proxy_reason_message("unsupported_transfer_encoding"), "chunked");
  ASSERT_CONTAINS(proxy_reason_message("unsupported_scheme"), "http or https");
  ASSERT_CONTAINS(proxy_reason_message("userinfo_in_target"), "user name or password");
  ASSERT_CONTAINS(proxy_reason_message("missing_host"), "Host header");
  ASSERT_CONTAINS(proxy_reason_message("invalid_connection_option"), "Connection header");
  ASSERT_CONTAINS(proxy_reason_message("invalid_method_override"), "method override");
}

/* The parser's refusals of a malformed or ambiguous head keep the generic message:
 * it names no cause a client could change. */
TEST(response_reasons_malformed_generic)
{
  static const char *const reasons[] = {
    "bare_lf", "obs_fold", "cl_and_te", "duplicate_content_length", "invalid_target",
    "invalid_request_line", "malformed_request",
  };
  const char *fallback = proxy_reason_message("no_such_reason");
  size_t i;

  for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
    ASSERT_STREQ(proxy_reason_message(reasons[i]), fallback);
}
