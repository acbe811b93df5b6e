/*
 * The method a request's `_method` query parameter or override fields name, and the
 * one a CORS preflight asks for (proxy/http.c: proxy_http_override_method,
 * proxy_http_preflight_method). The query cases end the path at the end of a buffer
 * of its exact size, so that a read past it (an escape or a name cut short at the
 * end) is a heap overflow under the sanitizer build.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/httphead.h"
#include "proxy/proxy_internal.h"
#include "test.h"

/* proxy_http_override_method for a POST whose path is path, held in a buffer of
 * exactly its length (no NUL after it); the method is in out. */
static int query_method(const char *path, char *out, size_t size)
{
  struct proxy_http_request req;
  size_t n = strlen(path);
  char *buf = malloc(n > 0 ? n : 1);
  int r;

  if (buf == NULL)
    abort();
  memcpy(buf, path, n);
  memset(&req, 0, sizeof(req));
  req.method = "POST";
  req.method_len = 4;
  req.path = buf;
  req.path_len = n;
  req.host_field = -1;
  req.content_length = -1;
  r = proxy_http_override_method(&req, out, size);
  free(buf);
  return r;
}

struct query_case {
  const char *path;
  int ret;
  const char *method;
};

TEST(override_query_edges)
{
  static const struct query_case cases[] = {
    { "?", 0, "" },
    { "/?", 0, "" },
    { "/?%", 0, "" },
    { "/?%4", 0, "" },
    { "/?%5", 0, "" },
    { "/?_", 0, "" },
    { "/?_metho", 0, "" },
    { "/?_method", -EINVAL, "" },
    { "/?_method=", -EINVAL, "" },
    { "/?_method[", -EINVAL, "" },
    { "/?_method[]=put", -EINVAL, "" },
    { "/?_methodx=put", 0, "" },
    { "/?_method=%", 0, "%" },
    { "/?_method=de%4", 0, "DE%4" },
    { "/?_method=%64elete", 0, "DELETE" },
    { "/?_method=put", 0, "PUT" },
    { "/?a=1&_method=put&", 0, "PUT" },
    { "/?a=1;_method=put", 0, "PUT" },
    { "/?+_method=put", 0, "PUT" },
    { "/?.method=put", 0, "PUT" },
    { "/?%5Fmethod=put", 0, "PUT" },
    { "/?_method%00x=put", 0, "PUT" },
    { "/?_method=put&_method=PUT", 0, "PUT" },
    { "/?_method=put&_method=delete", -EINVAL, "" },
    { "/?_method=pu+t", -EINVAL, "" },
    { "/?_method=%2", 0, "%2" },
    { "/?_method=0123456789012345678901234567890", 0, "0123456789012345678901234567890" },
    { "/?_method=01234567890123456789012345678901", -EINVAL, "" },
  };
  char out[32];
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int r;

    memset(out, 'x', sizeof(out));
    r = query_method(cases[i].path, out, sizeof(out));
    if (r != cases[i].ret)
      TEST_FAIL_("%s: returned %d, not %d", cases[i].path, r, cases[i].ret);
    if (r == 0 && strcmp(out, cases[i].method) != 0)
      TEST_FAIL_("%s: method \"%s\", not \"%s\"", cases[i].path, out, cases[i].method);
  }
}

/* proxy_http_preflight_method for the request head head; the method is in out. */
static int preflight(const char *head, char *out, size_t size)
{
  struct proxy_http_request req;
  const char *why = NULL;

  if (proxy_http_parse_request(head, strlen(head), 65536, &req, &why) != PROXY_HTTP_OK)
    TEST_FAIL_("the head does not parse (%s): %s", why ? why : "?", head);
  return proxy_http_preflight_method(&req, out, size);
}

TEST(preflight_method_edges)
{
  char out[32];

  ASSERT_EQ(preflight("OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://o\r\n"
                      "Access-Control-Request-Method: put\r\n\r\n", out, sizeof(out)), 1);
  ASSERT_STREQ(out, "PUT");
  /* Not a preflight: no Origin, another method, an empty or disagreeing ask. */
  ASSERT_EQ(preflight("OPTIONS /x HTTP/1.1\r\nHost: a\r\n"
                      "Access-Control-Request-Method: PUT\r\n\r\n", out, sizeof(out)), 0);
  ASSERT_STREQ(out, "");
  ASSERT_EQ(preflight("POST /x HTTP/1.1\r\nHost: a\r\nOrigin: https://o\r\n"
                      "Access-Control-Request-Method: PUT\r\nContent-Length: 0\r\n\r\n",
                      out, sizeof(out)), 0);
  ASSERT_STREQ(out, "");
  ASSERT_EQ(preflight("OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://o\r\n"
                      "Access-Control-Request-Method:\r\n\r\n", out, sizeof(out)), 0);
  ASSERT_STREQ(out, "");
  ASSERT_EQ(preflight("OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://o\r\n"
                      "Access-Control-Request-Method: PUT\r\n"
                      "Access-Control-Request-Method: DELETE\r\n\r\n", out, sizeof(out)), 0);
  ASSERT_STREQ(out, "");
}
