/*
 * AES-256-GCM sealing of state files, and atomic file replacement.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/gcm.h>
#include <mbedtls/platform_util.h>

#include "proxy/rng.h"
#include "proxy/seal.h"

#define MAGIC "APS1"
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN (4 + NONCE_LEN)

static int write_all(int fd, const void *p, size_t len)
{
  const char *c = p;

  while (len > 0) {
    ssize_t n = write(fd, c, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    c += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Makes path's directory entry durable (after a rename or link into it). */
static void sync_dir(const char *path)
{
  char dir[PATH_MAX];
  int dfd;

  snprintf(dir, sizeof(dir), "%s", path);
  dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

int proxy_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                            int durable)
{
  char tmp[PATH_MAX];
  int fd, r;

  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
    return -ENAMETOOLONG;
  unlink(tmp);
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return -errno;
  r = fchmod(fd, mode) != 0 ? -errno : 0;
  if (r == 0)
    r = write_all(fd, data, len);
  if (r == 0 && durable && fsync(fd) != 0)
    r = -errno;
  if (close(fd) != 0 && r == 0)
    r = -errno;
  if (r == 0 && rename(tmp, path) != 0)
    r = -errno;
  if (r != 0) {
    unlink(tmp);
    return r;
  }
  if (durable)
    sync_dir(path);
  return 0;
}

/*
 * Creates the key file: 32 random bytes written to a temporary file beside it and
 * made durable, then linked to path. A crash leaves at most the temporary file (never
 * read again), never a key file that is empty or short, which would stop every later
 * start. link(2), unlike rename(2), fails with EEXIST when path exists: of two daemons
 * starting at once, one links its key and the other reads the winner's. Returns 0
 * (key holds the new key), -EEXIST (another process created path first; key wiped), or
 * a negative errno with err set.
 */
static int key_create(const char *path, unsigned char key[PROXY_SEAL_KEY_LEN], char *err,
                      size_t errsz)
{
  char tmp[PATH_MAX];
  int fd, r;

  if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
    snprintf(err, errsz, "state key path %s is too long", path);
    return -ENAMETOOLONG;
  }
  if (proxy_rng(NULL, key, PROXY_SEAL_KEY_LEN) != 0) {
    snprintf(err, errsz, "cannot generate a state key: random generator failed");
    return -EIO;
  }
  /* mkostemp creates the file 0600, with O_EXCL, under a name no one else uses. */
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    r = -errno;
    mbedtls_platform_zeroize(key, PROXY_SEAL_KEY_LEN);
    snprintf(err, errsz, "cannot create state key %s: cannot create %s: %s", path, tmp,
             strerror(-r));
    return r;
  }
  r = write_all(fd, key, PROXY_SEAL_KEY_LEN);
  if (r == 0 && fsync(fd) != 0)
    r = -errno;
  if (close(fd) != 0 && r == 0)
    r = -errno;
  if (r == 0 && link(tmp, path) != 0)
    r = -errno;
  unlink(tmp);
  if (r != 0)
    mbedtls_platform_zeroize(key, PROXY_SEAL_KEY_LEN);
  if (r != 0 && r != -EEXIST) {
    snprintf(err, errsz, "cannot create state key %s: %s", path, strerror(-r));
    return r;
  }
  if (r == 0)
    sync_dir(path);
  return r;
}

int proxy_seal_key_load(const char *path, unsigned char key[PROXY_SEAL_KEY_LEN],
                        char *err, size_t errsz)
{
  struct stat st;
  ssize_t n;
  int fd, r;

  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    r = key_create(path, key, err, errsz);
    if (r != -EEXIST)
      return r;
    /* Another daemon created it meanwhile, complete: use its key. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) {
    r = -errno;
    snprintf(err, errsz, "cannot open state key %s: %s", path, strerror(errno));
    return r;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    snprintf(err, errsz, "state key %s is not a regular file", path);
    return -EINVAL;
  }
  if (st.st_mode & 077) {
    close(fd);
    snprintf(err, errsz, "state key %s is readable by others (mode %03o): chmod 600 %s",
             path, (unsigned)(st.st_mode & 0777), path);
    return -EPERM;
  }
  n = read(fd, key, PROXY_SEAL_KEY_LEN);
  close(fd);
  if (n != PROXY_SEAL_KEY_LEN || st.st_size != PROXY_SEAL_KEY_LEN) {
    mbedtls_platform_zeroize(key, PROXY_SEAL_KEY_LEN);
    snprintf(err, errsz,
             "state key %s is %lld bytes; it must be exactly %d. State sealed under it "
             "cannot be read without it: restore it from a backup, or, to start with a new "
             "key and lose that state, remove it and move away the state sealed under it",
             path, (long long)st.st_size,
             PROXY_SEAL_KEY_LEN);
    return -EINVAL;
  }
  return 0;
}

int proxy_seal(const unsigned char key[PROXY_SEAL_KEY_LEN], const char *aad,
               const void *plain, size_t len, unsigned char **out, size_t *outlen)
{
  mbedtls_gcm_context gcm;
  unsigned char *buf;
  int r, ret = -EIO;

  *out = NULL;
  *outlen = 0;
  buf = malloc(HEADER_LEN + len + TAG_LEN);
  if (buf == NULL)
    return -ENOMEM;
  memcpy(buf, MAGIC, 4);
  if (proxy_rng(NULL, buf + 4, NONCE_LEN) != 0) {
    free(buf);
    return -EIO;
  }
  mbedtls_gcm_init(&gcm);
  r = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, PROXY_SEAL_KEY_LEN * 8);
  if (r == 0)
    r = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, len, buf + 4, NONCE_LEN,
                                  (const unsigned char *)aad, strlen(aad), plain,
                                  buf + HEADER_LEN, TAG_LEN, buf + HEADER_LEN + len);
  mbedtls_gcm_free(&gcm);
  if (r != 0) {
    free(buf);
    return ret;
  }
  *out = buf;
  *outlen = HEADER_LEN + len + TAG_LEN;
  return 0;
}

int proxy_unseal(const unsigned char key[PROXY_SEAL_KEY_LEN], const char *aad,
                 const void *in, size_t len, unsigned char **plain, size_t *plainlen)
{
  const unsigned char *p = in;
  mbedtls_gcm_context gcm;
  unsigned char *buf;
  size_t n;
  int r;

  *plain = NULL;
  *plainlen = 0;
  if (len < HEADER_LEN + TAG_LEN || memcmp(p, MAGIC, 4) != 0)
    return -EBADMSG;
  n = len - HEADER_LEN - TAG_LEN;
  buf = malloc(n + 1);
  if (buf == NULL)
    return -ENOMEM;
  mbedtls_gcm_init(&gcm);
  r = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, PROXY_SEAL_KEY_LEN * 8);
  if (r == 0)
    r = mbedtls_gcm_auth_decrypt(&gcm, n, p + 4, NONCE_LEN, (const unsigned char *)aad,
                                 strlen(aad), p + HEADER_LEN + n, TAG_LEN, p + HEADER_LEN,
                                 buf);
  mbedtls_gcm_free(&gcm);
  if (r != 0) {
    mbedtls_platform_zeroize(buf, n);
    free(buf);
    return -EBADMSG;
  }
  buf[n] = '\0';
  *plain = buf;
  *plainlen = n;
  return 0;
}
