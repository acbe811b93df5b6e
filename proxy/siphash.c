/*
 * SipHash-2-4, as in the reference implementation: 2 compression rounds per 8-byte
 * word, 4 finalization rounds.
 */
#include "proxy/siphash.h"

static uint64_t rotl64(uint64_t x, unsigned b)
{
  return x << b | x >> (64 - b);
}

static void sipround(uint64_t v[4])
{
  v[0] += v[1];
  v[1] = rotl64(v[1], 13);
  v[1] ^= v[0];
  v[0] = rotl64(v[0], 32);
  v[2] += v[3];
  v[3] = rotl64(v[3], 16);
  v[3] ^= v[2];
  v[0] += v[3];
  v[3] = rotl64(v[3], 21);
  v[3] ^= v[0];
  v[2] += v[1];
  v[1] = rotl64(v[1], 17);
  v[1] ^= v[2];
  v[2] = rotl64(v[2], 32);
}

uint64_t proxy_siphash(const uint64_t key[2], const void *data, size_t len)
{
  const uint8_t *in = data;
  uint64_t v[4] = {
    UINT64_C(0x736f6d6570736575) ^ key[0],
    UINT64_C(0x646f72616e646f6d) ^ key[1],
    UINT64_C(0x6c7967656e657261) ^ key[0],
    UINT64_C(0x7465646279746573) ^ key[1],
  };
  uint64_t m, last = (uint64_t)len << 56;
  size_t i, j, full = len - len % 8;

  for (i = 0; i < full; i += 8) {
    m = 0;
    for (j = 0; j < 8; j++)
      m |= (uint64_t)in[i + j] << (8 * j);
    v[3] ^= m;
    sipround(v);
    sipround(v);
    v[0] ^= m;
  }
  for (j = 0; i + j < len; j++)
    last |= (uint64_t)in[i + j] << (8 * j);
  v[3] ^= last;
  sipround(v);
  sipround(v);
  v[0] ^= last;
  v[2] ^= 0xff;
  for (j = 0; j < 4; j++)
    sipround(v);
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}
