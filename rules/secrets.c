/*
 * The secret store: a directory with one file per key (Kubernetes secret volumes,
 * systemd credentials), overlaid with values set in memory through the API. Every
 * copy of a value this file makes is wiped before it is freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rules/rules_internal.h"

/* Keys are file names: bounded like one. */
#define SECRET_KEY_MAX 255
/* In-memory values a store holds at most. */
#define SECRETS_MAX_KEYS 4096

struct secret {
  char *key;
  char *value; /* NUL-terminated; len bytes before the NUL */
  size_t len;
};

struct rules_secrets {
  char *dir;
  int files_only; /* no values through the API (rules_secrets_files_only) */
  struct secret *v; /* sorted by key */
  size_t n, cap;
};

int rules_secret_key_valid(const char *key, size_t len)
{
  size_t i;

  if (len == 0 || len > SECRET_KEY_MAX || key[0] == '.')
    return 0;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)key[i];

    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

struct rules_secrets *rules_secrets_new(const char *dir)
{
  struct rules_secrets *s = calloc(1, sizeof(*s));

  if (s == NULL)
    return NULL;
  if (dir != NULL) {
    s->dir = strdup(dir);
    if (s->dir == NULL) {
      free(s);
      return NULL;
    }
  }
  return s;
}

const char *rules_secrets_dir(const struct rules_secrets *s)
{
  return s ? s->dir : NULL;
}

void rules_secrets_files_only(struct rules_secrets *s)
{
  if (s != NULL)
    s->files_only = 1;
}

int rules_secrets_is_files_only(const struct rules_secrets *s)
{
  return s != NULL && s->files_only;
}

/* Index of key, or of where it would be inserted (with *found = 0). */
static size_t find(const struct rules_secrets *s, const char *key, int *found)
{
  size_t lo = 0, hi = s->n;

  *found = 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(key, s->v[mid].key);

    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

static void wipe_free(char *p, size_t len)
{
  if (p == NULL)
    return;
  explicit_bzero(p, len);
  free(p);
}

int rules_secrets_set(struct rules_secrets *s, const char *key, const char *value,
                      size_t len)
{
  char *copy;
  size_t i;
  int found;

  if (s == NULL || key == NULL || (value == NULL && len != 0))
    return -EINVAL;
  if (!rules_secret_key_valid(key, strlen(key)))
    return -EINVAL;
  if (len > RULES_MAX_SECRET_LEN)
    return -EFBIG;
  copy = malloc(len + 1);
  if (copy == NULL)
    return -ENOMEM;
  if (len != 0)
    memcpy(copy, value, len);
  copy[len] = '\0';
  i = find(s, key, &found);
  if (found) {
    wipe_free(s->v[i].value, s->v[i].len);
    s->v[i].value = copy;
    s->v[i].len = len;
    return 0;
  }
  if (s->n == SECRETS_MAX_KEYS) {
    wipe_free(copy, len);
    return -ENOSPC;
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    struct secret *v = realloc(s->v, cap * sizeof(*v));

    if (v == NULL) {
      wipe_free(copy, len);
      return -ENOMEM;
    }
    s->v = v;
    s->cap = cap;
  }
  memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(s->v[0]));
  s->v[i].key = strdup(key);
  if (s->v[i].key == NULL) {
    memmove(&s->v[i], &s->v[i + 1], (s->n - i) * sizeof(s->v[0]));
    wipe_free(copy, len);
    return -ENOMEM;
  }
  s->v[i].value = copy;
  s->v[i].len = len;
  s->n++;
  return 0;
}

int rules_secrets_unset(struct rules_secrets *s, const char *key)
{
  size_t i;
  int found;

  if (s == NULL || key == NULL)
    return -EINVAL;
  i = find(s, key, &found);
  if (!found)
    return -ENOENT;
  wipe_free(s->v[i].value, s->v[i].len);
  free(s->v[i].key);
  memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(s->v[0]));
  s->n--;
  return 0;
}

/*
 * 1 if a secret file with status st, in a directory owned by dir_uid, could have been
 * written by someone the daemon has no reason to trust: a file others may write, or
 * one owned by a user other than root, the daemon's and the directory's owner (who
 * controls the directory anyway: the laptop user's own ~/secrets under sudo). A
 * world-writable directory with the sticky bit (Kubernetes mounts secret volumes
 * 1777) lets any user create a key that is missing; such a file is theirs, so it is
 * refused here, as sshd's StrictModes refuses keys others could have written.
 */
static int uid_untrusted(uid_t uid, uid_t dir_uid)
{
  return uid != 0 && uid != geteuid() && uid != dir_uid;
}

static int file_untrusted(const struct stat *st, uid_t dir_uid)
{
  if (st->st_mode & S_IWOTH)
    return 1;
  return uid_untrusted(st->st_uid, dir_uid);
}

/*
 * 1 if the directory entry key (status lst, not followed) cannot vouch for the file
 * opened through it (status st). Opening follows a symbolic link, so the file's owner
 * says who wrote it, not who chose it: a user who may create entries (the sticky
 * directory above) would plant KEY -> any file root owns (the daemon's state key,
 * /etc/shadow) and have it sent upstream as a header. A link counts as its owner's
 * word (Kubernetes' KEY -> ..data/KEY are root's). An entry that is not a link must
 * be the file opened: else it was swapped between the open and the look, which only
 * the entry's owner could do, and the owner of what it was is unknown.
 */
static int entry_untrusted(const struct stat *lst, const struct stat *st, uid_t dir_uid)
{
  if (S_ISLNK(lst->st_mode))
    return uid_untrusted(lst->st_uid, dir_uid);
  return lst->st_dev != st->st_dev || lst->st_ino != st->st_ino;
}

/*
 * Reads dir/key. The file is opened non-blocking and must be a regular file, so a
 * FIFO or device planted in the directory cannot stall the daemon, and one that
 * another user could have written or linked to is refused (file_untrusted,
 * entry_untrusted: -EPERM). The value is
 * read into a buffer of the maximum size and copied to an exact one; both are wiped.
 */
static int read_file(const char *dir, const char *key, char **value, size_t *len)
{
  char path[PATH_MAX], *buf = NULL, *copy = NULL;
  size_t n = 0;
  struct stat st, dst, lst;
  int dfd = -1, fd = -1, ret;

  ret = snprintf(path, sizeof(path), "%s/%s", dir, key);
  if (ret < 0 || (size_t)ret >= sizeof(path))
    return -ENAMETOOLONG;
  /* One descriptor for the directory: its owner, the entry and the file are looked
   * up in the same one, even if its path is renamed meanwhile. O_PATH: searching it
   * needs no read permission, as opening dir/key did not (a 0711 directory). */
  dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return -errno;
  if (fstat(dfd, &dst) != 0) {
    ret = -errno;
    goto out;
  }
  /* Without the sticky bit, anyone who may write the directory may rename or remove
   * root's entries and put their own in: nothing read from it can be vouched for. */
  if ((dst.st_mode & S_IWOTH) && !(dst.st_mode & S_ISVTX)) {
    ret = -EPERM;
    goto out;
  }
  fd = openat(dfd, key, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    ret = -errno;
    goto out;
  }
  if (fstat(fd, &st) != 0) {
    ret = -errno;
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    ret = -EINVAL;
    goto out;
  }
  /* The entry after the open, so that what the open followed cannot be hidden by a
   * swap back (entry_untrusted). */
  if (fstatat(dfd, key, &lst, AT_SYMLINK_NOFOLLOW) != 0) {
    ret = errno == ENOENT ? -EPERM : -errno;
    goto out;
  }
  if (file_untrusted(&st, dst.st_uid) || entry_untrusted(&lst, &st, dst.st_uid)) {
    ret = -EPERM;
    goto out;
  }
  if (st.st_size > RULES_MAX_SECRET_LEN) {
    ret = -EFBIG;
    goto out;
  }
  buf = malloc(RULES_MAX_SECRET_LEN + 2);
  if (buf == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  /* Read up to one byte past the limit to notice a file that grew since fstat. */
  while (n < RULES_MAX_SECRET_LEN + 1) {
    ssize_t r = read(fd, buf + n, RULES_MAX_SECRET_LEN + 1 - n);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      ret = -errno;
      goto out;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  if (n > RULES_MAX_SECRET_LEN) {
    ret = -EFBIG;
    goto out;
  }
  /* One trailing newline is how editors and `echo` end a file, not part of it. */
  if (n > 0 && buf[n - 1] == '\n')
    n--;
  copy = malloc(n + 1);
  if (copy == NULL) {
    ret = -ENOMEM;
    goto out;
  }
  memcpy(copy, buf, n);
  copy[n] = '\0';
  *value = copy;
  *len = n;
  ret = 0;
out:
  if (buf != NULL)
    wipe_free(buf, RULES_MAX_SECRET_LEN + 2);
  if (fd >= 0)
    close(fd);
  if (dfd >= 0)
    close(dfd);
  return ret;
}

int rules_secrets_lookup(const struct rules_secrets *s, const char *key, char **value,
                         size_t *len, int *from_api)
{
  size_t i;
  int found;

  *value = NULL;
  *len = 0;
  *from_api = 0;
  if (key == NULL || !rules_secret_key_valid(key, strlen(key)))
    return -EINVAL;
  if (s == NULL)
    return -ENOENT;
  i = find(s, key, &found);
  if (found) {
    char *copy = malloc(s->v[i].len + 1);

    if (copy == NULL)
      return -ENOMEM;
    memcpy(copy, s->v[i].value, s->v[i].len + 1);
    *value = copy;
    *len = s->v[i].len;
    *from_api = 1;
    return 0;
  }
  if (s->dir == NULL)
    return -ENOENT;
  return read_file(s->dir, key, value, len);
}

int rules_secrets_get(const struct rules_secrets *s, const char *key, char **value,
                      size_t *len)
{
  int from_api;

  return rules_secrets_lookup(s, key, value, len, &from_api);
}

void rules_secrets_list(const struct rules_secrets *s,
                        void (*cb)(const char *key, void *arg), void *arg)
{
  size_t i;

  if (s == NULL)
    return;
  for (i = 0; i < s->n; i++)
    cb(s->v[i].key, arg);
}

void rules_secrets_free(struct rules_secrets *s)
{
  size_t i;

  if (s == NULL)
    return;
  for (i = 0; i < s->n; i++) {
    wipe_free(s->v[i].value, s->v[i].len);
    free(s->v[i].key);
  }
  free(s->v);
  free(s->dir);
  free(s);
}

void rules_secret_free(char *value, size_t len)
{
  if (value == NULL)
    return;
  /* len excludes the terminating NUL the value was allocated with. */
  explicit_bzero(value, len + 1);
  free(value);
}
