/*
 * Answers the proxy gives on its own: a denied request, a malformed one, an upstream
 * that could not be reached. Always a complete HTTP/1.1 response with a JSON body and
 * `X-Authproxy-Error: <reason>`, so an agent reads why instead of retrying, followed
 * by a lingering close.
 */
#include <string.h>

#include "proxy/httphead.h"
#include "proxy/proxy_internal.h"
#include "proxy/strbuf.h"

#define STR_(x) #x
#define STR(x) STR_(x)

struct reason_text {
  const char *reason;
  const char *message;
};

static const struct reason_text reasons[] = {
  { "egress_deny", "the sandbox's egress policy denies this destination" },
  { "egress_not_allowed", "the destination is not in the sandbox's egress allow list" },
  { "blocked_address", "the destination resolves to an address the proxy never dials "
                       "unless a dns.remap or egress allow entry names it (loopback or the "
                       "proxy host's own, link-local or metadata, multicast or reserved, a "
                       "resolver's synthetic 198.18.0.0/15)" },
  { "invalid_name", "the destination name is not a valid host name" },
  { "invalid_host", "the Host header is not a valid host name" },
  { "invalid_sni", "the TLS server name is not a valid host name" },
  { "ip_literal_sni", "TLS server names may not be IP addresses" },
  { "host_mismatch", "the Host header names a different host than the connection" },
  { "sni_mismatch", "the TLS server name differs from the name the sandbox resolved" },
  { "unknown_synthetic_address", "the address was not handed out by this sandbox's "
                                 "resolver (or has expired); resolve the name again" },
  { "invalid_path", "the request path is malformed" },
  { "path_too_long", "the request path is too long to be checked against the policy" },
  { "callback_endpoint", "the destination is a credential callback's endpoint, which the "
                         "proxy never dials for a sandbox" },
  { "config_changed", "the sandbox's proxy_config changed while connecting and no "
                      "longer allows the destination" },
  { "http2_preface", "HTTP/2 without TLS (prior knowledge) is not supported where the "
                     "proxy reads requests; use HTTP/1.1" },
  { "out_of_memory", "the proxy is out of memory; the request was not sent" },
  { "interception_unavailable", "the destination needs TLS interception, which this "
                                "sandbox has no CA for" },
  { "upstream_unresolvable", "the destination name could not be resolved" },
  { "upstream_unreachable", "the destination could not be reached" },
  { "upstream_timeout", "the destination did not answer in time" },
  /* Also a handshake the upstream ended or cannot speak (TLS 1.3 only, not TLS at
   * all): not only a certificate. The log says which. */
  { "upstream_tls_failed", "the TLS handshake with the destination failed (a "
                           "certificate that did not verify for its name, no TLS 1.2, "
                           "or a connection it ended); the request was not sent" },
  { "upstream_alpn_not_http11", "the destination speaks only HTTP/2 (it refused http/1.1 "
                                "in ALPN), and requests authproxy changes are sent over "
                                "HTTP/1.1; the request was not sent" },
  { "upstream_certificate_expired", "the destination's TLS certificate has expired by "
                                    "the proxy host's clock (if it has not, that clock "
                                    "is wrong); the request was not sent" },
  { "upstream_certificate_not_yet_valid", "the destination's TLS certificate is not valid "
                                          "yet by the proxy host's clock (which is then "
                                          "probably behind); the request was not sent" },
  { "upstream_error", "the connection to the destination failed" },
  /* Failures after the request went out: an agent told that it was not sent would
   * send a POST again. */
  { "upstream_closed", "the destination closed the connection without answering; the "
                       "request was sent and may have been acted on" },
  { "upstream_reset", "the destination reset the connection without answering; the "
                      "request was sent and may have been acted on" },
  { "upstream_protocol_error", "the destination's answer was malformed and was not "
                               "passed on; the request was sent and may have been "
                               "acted on" },
  { "invalid_chunked_body", "the request's chunked body is malformed; the connection "
                            "was closed before the request was complete" },
  { "injection_refused", "a header to inject cannot be sent safely (a name that is "
                         "not a token or is reserved, a value with CR, LF or NUL, a "
                         "name given twice); the request was not sent" },
  { "callback_failed", "the credential callback failed; the request was not sent" },
  { "callback_timeout", "the credential callback did not answer in time; the request "
                        "was not sent" },
  { "head_timeout", "the request head did not arrive in time" },
  { "idle_timeout", "the request body stopped arriving for longer than the proxy waits "
                    "(--idle-timeout); what came of it was sent, and the request was not "
                    "completed" },
  { "headers_too_large", "the request head is too large" },
  { "head_too_large", "the request head (its URL and headers) is larger than the proxy "
                      "reads (--max-header-bytes); the request was not sent" },
  /* Refusals of the request parser whose cause the client can change (the others,
   * malformed or ambiguous framing, keep the generic message). */
  { "too_many_fields", "the request has more than " STR(PROXY_HTTP_MAX_FIELDS) " header "
                       "fields, more than the proxy reads; the request was not sent" },
  { "unsupported_method", "the request method is not one the proxy reads (standard "
                          "HTTP and WebDAV methods only); the request was not "
                          "sent" },
  { "method_too_long", "the request method is longer than the proxy reads; the request "
                       "was not sent" },
  { "unsupported_transfer_encoding", "a Transfer-Encoding other than chunked is not "
                                     "supported (compression goes in Content-Encoding); "
                                     "the request was not sent" },
  { "unsupported_scheme", "the request target's scheme is not http or https; the "
                          "request was not sent" },
  { "userinfo_in_target", "the request target carries a user name or password before "
                          "its host; send credentials in a header (the request was not "
                          "sent)" },
  { "missing_host", "an HTTP/1.1 request needs a Host header; the request was not sent" },
  { "invalid_connection_option", "the Connection header names Host, Content-Length or "
                                 "Transfer-Encoding, which the proxy must pass on; the "
                                 "request was not sent" },
  { "invalid_method_override", "a method override (X-HTTP-Method-Override, "
                               "X-HTTP-Method, X-Method-Override, a _method query "
                               "parameter) is not a method, or two name different "
                               "methods; the request was not sent" },
  { "injected_header_in_trailer", "a chunked trailer repeats a header the proxy injects" },
  { "tls_required", "this destination's credentials are sent only over HTTPS; use "
                    "https:// (the request was not sent)" },
  { "connect_not_allowed", "CONNECT is not supported: connect to the destination directly" },
};

const char *proxy_reason_message(const char *reason)
{
  size_t i;

  if (reason == NULL)
    return "request refused";
  for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
    if (strcmp(reasons[i].reason, reason) == 0)
      return reasons[i].message;
  return "the request is malformed or ambiguous and was not forwarded";
}

static const char *status_text(int status)
{
  switch (status) {
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 408: return "Request Timeout";
  case 421: return "Misdirected Request";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Error";
  }
}

static const char *error_word(int status)
{
  switch (status) {
  case 403: return "forbidden";
  case 502: case 503: case 504: return "upstream";
  default: return "bad_request";
  }
}

void proxy_error_response(struct proxy_conn *c, int status, const char *reason,
                          const char *entry, struct strbuf *out)
{
  struct strbuf body;
  const char *msg;

  if (c->reason == NULL)
    c->reason = reason;
  msg = proxy_reason_message(reason);
  if (reason == NULL)
    reason = "unknown";
  strbuf_init(&body);
  /* `error` is the object the API SDKs read an error from (OpenAI's and Anthropic's,
   * Node and Python: its message, code and type); a plain string there made the
   * OpenAI SDK report `403 "forbidden"`, without the cause. The top-level fields
   * are for agents and scripts (Anthropic's SDK prints `message`). */
  strbuf_addf(&body, "{\"error\":{\"type\":\"%s\",\"code\":", error_word(status));
  strbuf_add_json_str(&body, reason, strlen(reason));
  strbuf_adds(&body, ",\"message\":");
  strbuf_add_json_str(&body, msg, strlen(msg));
  strbuf_adds(&body, "},\"reason\":");
  strbuf_add_json_str(&body, reason, strlen(reason));
  if (c->name_src != NAME_NONE) {
    strbuf_adds(&body, ",\"host\":");
    strbuf_add_json_str(&body, c->name, strlen(c->name));
  }
  if (entry != NULL && entry[0] != '\0') {
    strbuf_adds(&body, ",\"rule\":");
    strbuf_add_json_str(&body, entry, strnlen(entry, 64));
  }
  strbuf_adds(&body, ",\"message\":");
  strbuf_add_json_str(&body, msg, strlen(msg));
  strbuf_adds(&body, "}\n");

  /* The reason in the status line too: package managers (npm, pip, go, apt, Maven)
   * print the status line of a failed request and not its body. */
  strbuf_addf(out,
              "HTTP/1.1 %d %s (authproxy: %s)\r\n"
              "Content-Type: application/json\r\n"
              "X-Authproxy-Error: %s\r\n"
              "Content-Length: %zu\r\n"
              "Cache-Control: no-store\r\n"
              "Connection: close\r\n\r\n",
              status, status_text(status), reason, reason, body.len);
  if (body.oom)
    out->oom = 1;
  else
    strbuf_add(out, body.data, body.len);
  strbuf_free(&body);
}

void proxy_respond(struct proxy_conn *c, const struct strbuf *answer)
{
  uv_buf_t buf;

  if (!answer->oom && answer->len > 0) {
    buf = uv_buf_init(answer->data, (unsigned)answer->len);
    proxy_end_write(&c->down, &buf, 1);
  }
  proxy_conn_linger(c);
}
