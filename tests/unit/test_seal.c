/*
 * The daemon's state key (seal.c): created whole or not at all, read back as written,
 * one key for processes that create it at once; and sealing bound to its purpose.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxy/seal.h"
#include "test.h"

static void key_path(char *buf, size_t size)
{
  snprintf(buf, size, "%s/key", test_tmpdir());
}

static long file_size(const char *path)
{
  struct stat st;

  if (stat(path, &st) != 0)
    return -errno;
  return (long)st.st_size;
}

/* Entries of the test directory whose name starts with prefix. */
static int count_entries(const char *prefix)
{
  struct dirent *e;
  DIR *dir = opendir(test_tmpdir());
  int n = 0;

  ASSERT_NOT_NULL(dir);
  while ((e = readdir(dir)) != NULL)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      n++;
  closedir(dir);
  return n;
}

TEST(key_created_then_read_back)
{
  unsigned char k1[PROXY_SEAL_KEY_LEN], k2[PROXY_SEAL_KEY_LEN];
  char path[512], err[512];
  struct stat st;

  key_path(path, sizeof(path));
  ASSERT_EQ(proxy_seal_key_load(path, k1, err, sizeof(err)), 0);
  ASSERT_EQ(stat(path, &st), 0);
  ASSERT_EQ(st.st_size, PROXY_SEAL_KEY_LEN);
  ASSERT_EQ(st.st_mode & 0777, 0600);
  ASSERT_EQ(proxy_seal_key_load(path, k2, err, sizeof(err)), 0);
  ASSERT_MEMEQ(k1, k2, PROXY_SEAL_KEY_LEN);
  /* The temporary file it was written to is gone. */
  ASSERT_EQ(count_entries("key"), 1);
}

TEST(key_existing_is_read_as_written)
{
  unsigned char key[PROXY_SEAL_KEY_LEN];
  char path[512], err[512], want[PROXY_SEAL_KEY_LEN];
  size_t i;

  for (i = 0; i < sizeof(want); i++)
    want[i] = (char)(i * 7 + 1);
  test_write_file(test_tmpdir(), "key", want, sizeof(want), 0600);
  key_path(path, sizeof(path));
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), 0);
  ASSERT_MEMEQ(key, want, PROXY_SEAL_KEY_LEN);
}

TEST(key_refused_short_or_readable)
{
  unsigned char key[PROXY_SEAL_KEY_LEN];
  char path[512], err[512];

  key_path(path, sizeof(path));
  test_write_file(test_tmpdir(), "key", "0123456789", 10, 0600);
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -EINVAL);
  ASSERT_CONTAINS(err, "is 10 bytes; it must be exactly 32");
  ASSERT_CONTAINS(err, "remove it and move away the state sealed under it");
  ASSERT_EQ(unlink(path), 0);
  test_write_file(test_tmpdir(), "key", "0123456789abcdef0123456789abcdef", 32, 0644);
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -EPERM);
  ASSERT_CONTAINS(err, "chmod 600");
}

/*
 * A crash while the key is written: the first start dies in the middle of writing it
 * (RLIMIT_FSIZE lets 10 of its 32 bytes through, then SIGXFSZ kills the process). The
 * key file must not exist then, and the next start must create a whole key, whatever
 * the crash left behind. (A key file created in place was left 10 bytes long, and
 * every later start failed.)
 */
TEST(key_crash_while_created_does_not_stop_the_next_start)
{
  unsigned char k1[PROXY_SEAL_KEY_LEN], k2[PROXY_SEAL_KEY_LEN];
  char path[512], err[512];
  struct rlimit small = { 10, 10 }, nocore = { 0, 0 };
  int status;
  pid_t pid;

  key_path(path, sizeof(path));
  pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_DFL);
    setrlimit(RLIMIT_CORE, &nocore);
    setrlimit(RLIMIT_FSIZE, &small);
    proxy_seal_key_load(path, k1, err, sizeof(err));
    _exit(0);
  }
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFSIGNALED(status));
  ASSERT_EQ(WTERMSIG(status), SIGXFSZ);
  ASSERT_EQ(file_size(path), -ENOENT);
  ASSERT_EQ(count_entries("key.tmp."), 1);  /* what the crash left */
  err[0] = '\0';
  ASSERT_EQ(proxy_seal_key_load(path, k1, err, sizeof(err)), 0);
  ASSERT_EQ(file_size(path), PROXY_SEAL_KEY_LEN);
  ASSERT_EQ(proxy_seal_key_load(path, k2, err, sizeof(err)), 0);
  ASSERT_MEMEQ(k1, k2, PROXY_SEAL_KEY_LEN);
}

/* Processes that start at once, with no key yet, all end with the one key on disk. */
TEST(key_created_at_once_is_one_key)
{
  enum { N = 16 };
  unsigned char keys[N][PROXY_SEAL_KEY_LEN], disk[PROXY_SEAL_KEY_LEN];
  char path[512], err[512];
  int go[2], res[N][2], status, i;
  pid_t pids[N];

  key_path(path, sizeof(path));
  ASSERT_EQ(pipe(go), 0);
  for (i = 0; i < N; i++) {
    ASSERT_EQ(pipe(res[i]), 0);
    pids[i] = fork();
    ASSERT_NE(pids[i], -1);
    if (pids[i] == 0) {
      unsigned char key[PROXY_SEAL_KEY_LEN + 1];
      char c;

      close(go[1]);
      /* Every child waits here until the parent closes the pipe: all start at once. */
      if (read(go[0], &c, 1) != 0)
        _exit(2);
      key[0] = proxy_seal_key_load(path, key + 1, err, sizeof(err)) == 0 ? 'y' : 'n';
      if (key[0] != 'y')
        fprintf(stderr, "child %d: %s\n", i, err);
      _exit(write(res[i][1], key, sizeof(key)) == (ssize_t)sizeof(key) ? 0 : 3);
    }
    close(res[i][1]);
  }
  close(go[0]);
  close(go[1]);
  for (i = 0; i < N; i++) {
    unsigned char got[PROXY_SEAL_KEY_LEN + 1];

    ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_EQ(read(res[i][0], got, sizeof(got)), (ssize_t)sizeof(got));
    close(res[i][0]);
    ASSERT_EQ(got[0], 'y');
    memcpy(keys[i], got + 1, PROXY_SEAL_KEY_LEN);
  }
  ASSERT_EQ(proxy_seal_key_load(path, disk, err, sizeof(err)), 0);
  for (i = 0; i < N; i++)
    ASSERT_MEMEQ(keys[i], disk, PROXY_SEAL_KEY_LEN);
  ASSERT_EQ(count_entries("key"), 1);
}

TEST(sealed_blob_bound_to_key_and_purpose)
{
  unsigned char key[PROXY_SEAL_KEY_LEN], other[PROXY_SEAL_KEY_LEN];
  unsigned char *blob = NULL, *plain = NULL;
  size_t blen, plen;

  memset(key, 1, sizeof(key));
  memset(other, 2, sizeof(other));
  ASSERT_EQ(proxy_seal(key, "secrets", "{\"K\":\"v\"}", 9, &blob, &blen), 0);
  ASSERT_EQ(blen, 9 + 4 + 12 + 16);
  ASSERT_EQ(proxy_unseal(key, "secrets", blob, blen, &plain, &plen), 0);
  ASSERT_EQ(plen, 9);
  ASSERT_STREQ((char *)plain, "{\"K\":\"v\"}");
  free(plain);
  ASSERT_EQ(proxy_unseal(key, "config:K", blob, blen, &plain, &plen), -EBADMSG);
  ASSERT_EQ(proxy_unseal(other, "secrets", blob, blen, &plain, &plen), -EBADMSG);
  blob[blen - 1] ^= 1;
  ASSERT_EQ(proxy_unseal(key, "secrets", blob, blen, &plain, &plen), -EBADMSG);
  ASSERT_NULL(plain);
  free(blob);
}

/*
 * A state key path that is not a plain file: a symlink (even to a good key, or to
 * nothing, where following it would create the key elsewhere) and a directory are
 * refused, naming the path; a key path whose directory is missing says which file
 * could not be created. Nothing is created in any of these cases.
 */
TEST(key_path_not_a_plain_file_refused)
{
  unsigned char key[PROXY_SEAL_KEY_LEN];
  char path[512], target[512], err[512];

  key_path(path, sizeof(path));
  snprintf(target, sizeof(target), "%s/real-key", test_tmpdir());
  test_write_file(test_tmpdir(), "real-key", "0123456789abcdef0123456789abcdef", 32, 0600);
  ASSERT_EQ(symlink(target, path), 0);
  err[0] = '\0';
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -ELOOP);
  ASSERT_CONTAINS(err, "cannot open state key ");
  ASSERT_CONTAINS(err, path);
  ASSERT_EQ(unlink(path), 0);

  snprintf(target, sizeof(target), "%s/elsewhere", test_tmpdir());
  ASSERT_EQ(symlink(target, path), 0);
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -ELOOP);
  ASSERT_EQ(file_size(target), -ENOENT);
  ASSERT_EQ(count_entries("key.tmp."), 0);
  ASSERT_EQ(unlink(path), 0);

  ASSERT_EQ(mkdir(path, 0700), 0);
  err[0] = '\0';
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -EINVAL);
  ASSERT_CONTAINS(err, "is not a regular file");
  ASSERT_EQ(rmdir(path), 0);

  /* One byte too many is as wrong as too few. */
  test_write_file(test_tmpdir(), "key", "0123456789abcdef0123456789abcdefX", 33, 0600);
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -EINVAL);
  ASSERT_CONTAINS(err, "is 33 bytes; it must be exactly 32");
  ASSERT_EQ(unlink(path), 0);

  snprintf(path, sizeof(path), "%s/missing-dir/key", test_tmpdir());
  err[0] = '\0';
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -ENOENT);
  ASSERT_CONTAINS(err, "cannot create state key ");
  ASSERT_CONTAINS(err, path);
}

/* A sealed file cut short, grown, or altered anywhere (magic, nonce, ciphertext,
 * tag) does not unseal, and hands back nothing. */
TEST(sealed_blob_altered_anywhere_refused)
{
  unsigned char key[PROXY_SEAL_KEY_LEN];
  unsigned char *blob = NULL, *plain = NULL, copy[256], marker[1];
  size_t blen, plen, i;
  static const char text[] = "{\"K\":\"a secret value\"}";

  memset(key, 3, sizeof(key));
  ASSERT_EQ(proxy_seal(key, "secrets", text, strlen(text), &blob, &blen), 0);
  ASSERT_LT(blen + 1, sizeof(copy));
  for (i = 0; i < blen; i++) {
    memcpy(copy, blob, blen);
    copy[i] ^= 0x40;
    plain = marker; /* proxy_unseal must clear it */
    if (proxy_unseal(key, "secrets", copy, blen, &plain, &plen) != -EBADMSG)
      TEST_FAIL_("byte %zu of %zu altered: unsealed", i, blen);
    ASSERT_NULL(plain);
  }
  /* Every length short of the whole, down to nothing, and one byte more. */
  for (i = 0; i < blen; i++)
    if (proxy_unseal(key, "secrets", blob, i, &plain, &plen) != -EBADMSG)
      TEST_FAIL_("cut to %zu of %zu bytes: unsealed", i, blen);
  memcpy(copy, blob, blen);
  copy[blen] = 0;
  ASSERT_EQ(proxy_unseal(key, "secrets", copy, blen + 1, &plain, &plen), -EBADMSG);
  ASSERT_NULL(plain);
  free(blob);

  /* Empty plaintext seals and unseals (a secrets file with nothing in it). */
  ASSERT_EQ(proxy_seal(key, "secrets", "", 0, &blob, &blen), 0);
  ASSERT_EQ(proxy_unseal(key, "secrets", blob, blen, &plain, &plen), 0);
  ASSERT_EQ(plen, 0);
  ASSERT_EQ(plain[0], '\0');
  free(plain);
  blob[4] ^= 1;
  ASSERT_EQ(proxy_unseal(key, "secrets", blob, blen, &plain, &plen), -EBADMSG);
  free(blob);
}

/* A state file whose path is a directory is not replaced, and leaves no temporary
 * file behind. */
TEST(write_atomic_failure_leaves_nothing)
{
  char path[512];

  snprintf(path, sizeof(path), "%s/state", test_tmpdir());
  ASSERT_EQ(mkdir(path, 0700), 0);
  ASSERT_EQ(proxy_write_file_atomic(path, "x", 1, 0600, 1), -EISDIR);
  ASSERT_EQ(count_entries("state.tmp."), 0);
  ASSERT_EQ(proxy_write_file_atomic(path, "x", 1, 0600, 0), -EISDIR);
  ASSERT_EQ(count_entries("state"), 1);
}

/*
 * A write that fails part way (the file size limit, as a full disk would) is
 * reported, and leaves the state file as it was and no temporary file. The write
 * runs in a child, where the limit applies; SIGXFSZ is ignored so write(2) fails
 * with EFBIG instead of killing it.
 */
TEST(write_atomic_error_keeps_the_old_file)
{
  struct rlimit small = { 10, 10 };
  char path[512], big[100], got[16];
  int status, fd;
  pid_t pid;

  snprintf(path, sizeof(path), "%s/state", test_tmpdir());
  ASSERT_EQ(proxy_write_file_atomic(path, "old", 3, 0600, 1), 0);
  memset(big, 'n', sizeof(big));
  pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &small);
    _exit(proxy_write_file_atomic(path, big, sizeof(big), 0600, 1) == -EFBIG ? 0 : 1);
  }
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  fd = open(path, O_RDONLY);
  ASSERT(fd >= 0);
  ASSERT_EQ(read(fd, got, sizeof(got)), 3);
  close(fd);
  ASSERT_MEMEQ(got, "old", 3);
  ASSERT_EQ(count_entries("state"), 1);
}

/* Writing a state file durably and creating the key leave no descriptor open (the
 * directory opened to sync a new entry is closed). */
TEST(durable_writes_leave_no_descriptor_open)
{
  unsigned char key[PROXY_SEAL_KEY_LEN];
  char path[512], err[512];
  int before = test_open_fds();

  snprintf(path, sizeof(path), "%s/state", test_tmpdir());
  ASSERT_EQ(proxy_write_file_atomic(path, "x", 1, 0600, 1), 0);
  ASSERT_EQ(test_open_fds(), before);
  ASSERT_EQ(proxy_write_file_atomic(path, "y", 1, 0600, 0), 0);
  ASSERT_EQ(test_open_fds(), before);
  key_path(path, sizeof(path));
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), 0);
  ASSERT_EQ(test_open_fds(), before);
  /* An existing key, with errno left at ENOENT by some earlier call: read, and the
   * descriptor it was read through closed. */
  errno = ENOENT;
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), 0);
  ASSERT_EQ(test_open_fds(), before);
}

/*
 * Writing the new key fails part way (the file size limit, as a full disk would): the
 * error is returned and named, and neither the key file nor its temporary file is
 * left. Run in a child, where the limit applies; the result comes back over a pipe.
 */
TEST(key_write_failure_reported)
{
  struct rlimit small = { 10, 10 };
  char path[512], err[512];
  int fds[2], status, r;
  pid_t pid;

  key_path(path, sizeof(path));
  ASSERT_EQ(pipe(fds), 0);
  pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    unsigned char key[PROXY_SEAL_KEY_LEN];

    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &small);
    err[0] = '\0';
    r = proxy_seal_key_load(path, key, err, sizeof(err));
    _exit(write(fds[1], &r, sizeof(r)) == sizeof(r) &&
                  write(fds[1], err, sizeof(err)) == sizeof(err)
              ? 0
              : 1);
  }
  close(fds[1]);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_EQ(read(fds[0], &r, sizeof(r)), (ssize_t)sizeof(r));
  ASSERT_EQ(read(fds[0], err, sizeof(err)), (ssize_t)sizeof(err));
  close(fds[0]);
  ASSERT_EQ(r, -EFBIG);
  ASSERT_CONTAINS(err, "cannot create state key ");
  ASSERT_CONTAINS(err, path);
  ASSERT_EQ(file_size(path), -ENOENT);
  ASSERT_EQ(count_entries("key"), 0);
}

/* A path of exactly len bytes under the test directory, through directories that do
 * not exist (so nothing can be created at it). */
static void long_path(char *buf, size_t size, size_t len)
{
  size_t n = (size_t)snprintf(buf, size, "%s", test_tmpdir());

  ASSERT_LT(len, size);
  while (n + 3 < len - 100) {
    memcpy(buf + n, "/dd", 3);
    n += 3;
  }
  buf[n++] = '/';
  while (n < len)
    buf[n++] = 'k';
  buf[n] = '\0';
  ASSERT_EQ(strlen(buf), len);
}

/*
 * The temporary file's name is the path and a suffix: a path too long for the suffix
 * to fit in PATH_MAX is refused as too long, to the byte, rather than cut short
 * (".tmp.XXXXXX" one X short is no template; ".tmp.PID" one digit short is another
 * process's name).
 */
TEST(temporary_names_too_long_refused)
{
  unsigned char key[PROXY_SEAL_KEY_LEN];
  char path[PATH_MAX + 16], err[PATH_MAX + 256], pid[32];
  size_t suffix;

  /* "PATH.tmp.XXXXXX" and its NUL are PATH_MAX + 1 bytes: too long. */
  long_path(path, sizeof(path), PATH_MAX - strlen(".tmp.XXXXXX"));
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -ENAMETOOLONG);
  ASSERT_CONTAINS(err, "is too long");
  /* One byte shorter fits; the missing directories are the error then. */
  long_path(path, sizeof(path), PATH_MAX - strlen(".tmp.XXXXXX") - 1);
  ASSERT_EQ(proxy_seal_key_load(path, key, err, sizeof(err)), -ENOENT);

  suffix = (size_t)snprintf(pid, sizeof(pid), ".tmp.%ld", (long)getpid());
  long_path(path, sizeof(path), PATH_MAX - suffix);
  ASSERT_EQ(proxy_write_file_atomic(path, "x", 1, 0600, 0), -ENAMETOOLONG);
  long_path(path, sizeof(path), PATH_MAX - suffix - 1);
  ASSERT_EQ(proxy_write_file_atomic(path, "x", 1, 0600, 0), -ENOENT);
}
