/*
 * HTTP field syntax shared by config validation, the HTTP path and the callback
 * client (RFC 9110 section 5).
 */
#include <string.h>
#include <strings.h>

#include "rules/rules.h"

/* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" /
 *         "`" / "|" / "~" / DIGIT / ALPHA */
static int is_tchar(unsigned char c)
{
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int rules_is_token(const char *s, size_t len)
{
  size_t i;

  if (len == 0)
    return 0;
  for (i = 0; i < len; i++)
    if (!is_tchar((unsigned char)s[i]))
      return 0;
  return 1;
}

int rules_is_reserved_header(const char *name, size_t len)
{
  static const char *const reserved[] = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host",
    "content-length",
  };
  size_t i;

  for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
    if (strlen(reserved[i]) == len && strncasecmp(reserved[i], name, len) == 0)
      return 1;
  return 0;
}

int rules_is_valid_value(const char *v, size_t len)
{
  size_t i;

  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)v[i];

    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return 0;
  }
  return 1;
}
