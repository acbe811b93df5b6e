/*
 * SipHash-2-4 against the reference test vectors (Aumasson and Bernstein, the
 * reference implementation's vectors.h): key 00 01 .. 0f, messages 00 01 .. (n-1).
 */
#include "proxy/siphash.h"
#include "test.h"

static uint64_t vector(size_t n)
{
  const uint64_t key[2] = { UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908) };
  unsigned char msg[64] = { 0 };
  size_t i;

  for (i = 0; i < n; i++)
    msg[i] = (unsigned char)i;
  return proxy_siphash(key, msg, n);
}

TEST(reference_vectors)
{
  ASSERT_EQ(vector(0), UINT64_C(0x726fdb47dd0e0e31));
  ASSERT_EQ(vector(1), UINT64_C(0x74f839c593dc67fd));
  ASSERT_EQ(vector(8), UINT64_C(0x93f5f5799a932462));
  ASSERT_EQ(vector(15), UINT64_C(0xa129ca6149be45e5));
}
