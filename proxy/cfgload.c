/*
 * Config files: bounded reads and error reporting with every validation message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/cfgload.h"

int proxy_read_file(const char *path, size_t max, char **data, size_t *len)
{
  size_t cap = 4096, n = 0;
  char *buf = NULL, *p;
  int fd, ret = 0;
  ssize_t r;

  *data = NULL;
  *len = 0;
  if (strcmp(path, "-") == 0) {
    fd = STDIN_FILENO;
  } else {
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return -errno;
  }
  buf = malloc(cap);
  if (buf == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  for (;;) {
    if (n + 1 >= cap) {
      if (cap > max) {
        ret = -EFBIG;
        goto out;
      }
      /* Not realloc: the old buffer may hold opaque values and must be wiped. */
      p = malloc(cap * 2);
      if (p == NULL) {
        ret = -ENOMEM;
        goto out;
      }
      memcpy(p, buf, n);
      explicit_bzero(buf, cap);
      free(buf);
      buf = p;
      cap *= 2;
    }
    r = read(fd, buf + n, cap - n - 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      ret = -errno;
      goto out;
    }
    if (r == 0)
      break;
    n += (size_t)r;
    if (n > max) {
      ret = -EFBIG;
      goto out;
    }
  }
  buf[n] = '\0';
  *data = buf;
  *len = n;
  buf = NULL;
out:
  if (buf != NULL)
    explicit_bzero(buf, cap);
  free(buf);
  if (fd != STDIN_FILENO)
    close(fd);
  return ret;
}

int proxy_load_config(const char *path, const struct rules_secrets *secrets,
                      const char *prefix, FILE *errf, struct rules_config **out)
{
  struct rules_diag diag;
  char *data = NULL;
  size_t len, i;
  int r;

  *out = NULL;
  r = proxy_read_file(path, PROXY_CONFIG_MAX_BYTES, &data, &len);
  if (r != 0) {
    fprintf(errf, "%s: cannot read %s: %s\n", prefix, path,
            r == -EFBIG ? "larger than 1 MiB, the limit of a proxy_config" : strerror(-r));
    return r;
  }
  rules_diag_init(&diag);
  r = rules_config_parse(data, len, "", secrets, out, &diag);
  if (r != 0) {
    for (i = 0; i < diag.count; i++)
      fprintf(errf, "%s: %s%s%s\n", prefix, diag.entries[i].path,
              diag.entries[i].path[0] ? ": " : "", diag.entries[i].message);
    if (diag.count == 0)
      fprintf(errf, "%s: %s: %s\n", prefix, path, strerror(-r));
  }
  rules_diag_free(&diag);
  /* The file may hold opaque values. */
  explicit_bzero(data, len);
  free(data);
  return r;
}
