#include <errno.h>
#include <stdio.h>

#include "proxy/log.h"
#include "test.h"

/* The line proxy_log_accept_failed writes for err (the first of the process: each
 * test runs in its own, so its rate limit has not begun). */
static void accept_failed_line(int err, char *buf, size_t size)
{
  char path[4096];
  FILE *f;
  size_t n;
  int saved;

  snprintf(path, sizeof(path), "%s/log", test_tmpdir());
  saved = test_stderr_to(path);
  proxy_log_accept_failed("control", err);
  test_stderr_back(saved);
  f = fopen(path, "r");
  ASSERT_NOT_NULL(f);
  n = fread(buf, 1, size - 1, f);
  buf[n] = '\0';
  fclose(f);
}

TEST(accept_failed_daemon_limit)
{
  char line[2048];

  accept_failed_line(EMFILE, line, sizeof(line));
  ASSERT_CONTAINS(line, "control: accept: Too many open files");
  ASSERT_CONTAINS(line, "LimitNOFILE=");
}

/* The host's file table full is not the daemon's limit: raising LimitNOFILE= does
 * nothing for it. */
TEST(accept_failed_host_table)
{
  char line[2048];

  accept_failed_line(ENFILE, line, sizeof(line));
  ASSERT_CONTAINS(line, "control: accept: Too many open files in system");
  ASSERT_CONTAINS(line, "fs.file-max");
  ASSERT_NOT_CONTAINS(line, "LimitNOFILE=");
}
