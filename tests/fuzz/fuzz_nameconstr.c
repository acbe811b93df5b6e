/*
 * Fuzz target for the nameConstraints parser and checker (proxy/nameconstr.c), whose
 * input comes from CA certificates operators import. Beyond memory safety it checks
 * the contract proxy/ca.c relies on: a refusal says why, a parsed extension answers
 * every check with 0 or -EPERM and a reason, and every text is NUL-terminated inside
 * its buffer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/nameconstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct proxy_nc *nc, const struct proxy_nc_names *names)
{
  char why[96];
  int r;

  memset(why, 'x', sizeof(why));
  r = proxy_nc_check(nc, names, why, sizeof(why));
  if (r != 0 && r != -EPERM)
    abort();
  if (memchr(why, '\0', sizeof(why)) == NULL || (r == -EPERM) != (why[0] != '\0'))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const unsigned char v4[4] = { 192, 0, 2, 7 };
  static const unsigned char v6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                        0,    0,    0,    0,    0, 0, 0, 1 };
  static const char *const hosts[] = { "example.com", "api.example.com", "a",
                                       "a-much-longer-label.example.org" };
  struct proxy_nc *nc = NULL;
  struct proxy_nc_names names;
  char err[80], text[200];
  size_t i;
  int r;

  memset(err, 'x', sizeof(err));
  r = proxy_nc_parse(data, size, &nc, err, sizeof(err));
  if (r != 0) {
    if (r != -EINVAL || nc != NULL || memchr(err, '\0', sizeof(err)) == NULL ||
        err[0] == '\0')
      abort();
    return 0;
  }
  if (nc == NULL || proxy_nc_forms(nc) == 0)
    abort();
  memset(text, 'x', sizeof(text));
  proxy_nc_describe(nc, text, sizeof(text));
  if (memchr(text, '\0', sizeof(text)) == NULL)
    abort();
  for (i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
    memset(&names, 0, sizeof(names));
    names.dns = hosts[i];
    names.cn = hosts[i];
    names.cn_len = strlen(hosts[i]);
    check(nc, &names);
  }
  memset(&names, 0, sizeof(names));
  names.ip = v4;
  names.ip_len = sizeof(v4);
  check(nc, &names);
  names.ip = v6;
  names.ip_len = sizeof(v6);
  check(nc, &names);
  proxy_nc_free(nc);
  return 0;
}
