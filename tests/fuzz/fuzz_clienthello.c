/*
 * Fuzz target for the ClientHello parser. Beyond memory safety it checks the
 * contract the proxy relies on: a complete hello is reported the same way when only
 * its records are passed, its last byte missing makes it NEED_MORE, and the name is
 * a NUL-terminated string of the reported length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/clienthello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct proxy_hello h, again;
  enum proxy_hello_status st;

  st = proxy_hello_parse(data, size, &h);
  if (st == PROXY_HELLO_NOT_TLS && (size == 0 || data[0] == 0x16))
    abort();
  if (st != PROXY_HELLO_OK)
    return 0;
  if (h.record_bytes == 0 || h.record_bytes > size ||
      h.record_bytes > PROXY_HELLO_MAX_BYTES)
    abort();
  if (h.sni_len >= sizeof(h.sni) || strlen(h.sni) != h.sni_len)
    abort();
  if (proxy_hello_parse(data, h.record_bytes, &again) != PROXY_HELLO_OK ||
      memcmp(&h, &again, sizeof(h)) != 0)
    abort();
  if (proxy_hello_parse(data, h.record_bytes - 1, &again) != PROXY_HELLO_NEED_MORE)
    abort();
  return 0;
}
