/*
 * One CTR_DRBG for the whole process. The proxy itself is single-threaded on its
 * loop, but tests and helper threads may draw from it too, so a mutex serialises
 * access; it is uncontended on the loop and costs far less than the signatures
 * the bytes are used for.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include "proxy/rng.h"

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static int seeded;
static int atfork_registered;
/* The process that last seeded: a forked child sees another pid and reseeds, so it
 * never replays its parent's stream. 0 (no process's pid) forces a reseed. */
static pid_t seeded_pid;

/* Holding the lock across fork() keeps the DRBG state consistent in the child and
 * the lock usable there even when another thread was drawing at the time. */
static void atfork_prepare(void)
{
  pthread_mutex_lock(&rng_lock);
}

static void atfork_parent(void)
{
  pthread_mutex_unlock(&rng_lock);
}

/* The pid alone cannot tell a child from its parent when the child gets the same
 * number: pid 1 forking the first process of a new PID namespace, or a pid recycled
 * after the parent exited. Every fork() child reseeds; the pid check stays for
 * children made without fork() (clone, vfork), which skip these handlers. */
static void atfork_child(void)
{
  seeded_pid = 0;
  pthread_mutex_unlock(&rng_lock);
}

/* Called with rng_lock held. */
static int seed_locked(void)
{
  static const unsigned char pers[] = "authproxy rng";
  int ret;

  if (seeded)
    return 0;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, pers,
                              sizeof(pers) - 1);
  if (ret != 0) {
    /* Leave nothing half-initialised: the next call tries again from scratch. */
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return ret;
  }
  if (!atfork_registered &&
      pthread_atfork(atfork_prepare, atfork_parent, atfork_child) == 0)
    atfork_registered = 1;
  seeded = 1;
  seeded_pid = getpid();
  return 0;
}

int proxy_rng_init(void)
{
  int ret;

  pthread_mutex_lock(&rng_lock);
  ret = seed_locked();
  pthread_mutex_unlock(&rng_lock);
  return ret == 0 ? 0 : -EIO;
}

int proxy_rng(void *ctx, unsigned char *out, size_t len)
{
  int ret;

  (void)ctx;
  pthread_mutex_lock(&rng_lock);
  ret = seed_locked();
  if (ret != 0)
    goto out;
  if (getpid() != seeded_pid) {
    pid_t pid = getpid();

    /* Fresh kernel entropy, plus the pid for good measure, in a forked child. */
    ret = mbedtls_ctr_drbg_reseed(&drbg, (const unsigned char *)&pid, sizeof(pid));
    if (ret != 0)
      goto out;
    seeded_pid = pid;
  }
  while (len > 0) {
    size_t n = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;

    ret = mbedtls_ctr_drbg_random(&drbg, out, n);
    if (ret != 0)
      goto out;
    out += n;
    len -= n;
  }
out:
  pthread_mutex_unlock(&rng_lock);
  return ret;
}
