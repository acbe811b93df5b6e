/*
 * The audit log writer (proxy/audit.c): records reach the file whole, one per line,
 * even when a write fails part way.
 *
 * A failed write is made real with RLIMIT_FSIZE: a write across the limit is cut
 * short at it, and the next one fails with EFBIG (SIGXFSZ is ignored). Raising the
 * limit again plays a disk that has room again.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/audit.h"
#include "proxy/proxy.h"
#include "test.h"

void test_loop_close(uv_loop_t *loop);

static void noop_cb(uv_timer_t *t)
{
  (void)t;
}

/* Runs the loop past the writer's 200 ms flush timer and until every write it
 * started has completed (uv_run returns once no request is left). */
static void run_flush(uv_loop_t *loop)
{
  uv_timer_t t;

  ASSERT_EQ(uv_timer_init(loop, &t), 0);
  ASSERT_EQ(uv_timer_start(&t, noop_cb, 400, 0), 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* A record of exactly 59 bytes (60 with its newline): {"n":N,"pad":"xx..."} */
static void record(char *buf, size_t size, int n)
{
  int len = snprintf(buf, size, "{\"n\":%d,\"pad\":\"", n);

  ASSERT(len > 0 && (size_t)len < 57 && size >= 60);
  memset(buf + len, 'x', (size_t)(57 - len));
  memcpy(buf + 57, "\"}", 3);
  ASSERT_EQ(strlen(buf), 59);
}

/* Writes records first..last (each as record() makes it) to a. */
static void write_records(struct proxy_audit *a, int first, int last)
{
  char rec[64];
  int i;

  for (i = first; i <= last; i++) {
    record(rec, sizeof(rec), i);
    proxy_audit_write(a, rec, strlen(rec));
  }
}

static void set_fsize(rlim_t cur)
{
  struct rlimit rl;

  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &rl), 0);
  rl.rlim_cur = cur;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static char *read_all(const char *path, size_t *len)
{
  struct stat st;
  FILE *f;
  char *p;

  ASSERT_EQ(stat(path, &st), 0);
  p = malloc((size_t)st.st_size + 1);
  ASSERT_NOT_NULL(p);
  f = fopen(path, "rb");
  ASSERT_NOT_NULL(f);
  ASSERT_EQ(fread(p, 1, (size_t)st.st_size, f), (size_t)st.st_size);
  fclose(f);
  p[st.st_size] = '\0';
  *len = (size_t)st.st_size;
  return p;
}

/* Writes records 1-3 with room for 150 bytes (record 3 is cut after 30 bytes and the
 * rest of the write fails), then records 4 and 5 with room again, written by the
 * thread pool or, with at_close, by proxy_audit_close. Returns the file. */
static char *write_across_failure(uv_loop_t *loop, const char *path, int at_close)
{
  struct proxy_audit *a;
  size_t len;

  ASSERT_EQ(uv_loop_init(loop), 0);
  ASSERT_EQ(proxy_audit_open(loop, path, &a), 0);
  ASSERT(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
  set_fsize(150);
  write_records(a, 1, 3);
  run_flush(loop);
  set_fsize(RLIM_INFINITY);
  write_records(a, 4, 5);
  if (!at_close)
    run_flush(loop);
  proxy_audit_close(a);
  test_loop_close(loop);
  return read_all(path, &len);
}

/* Records 1 and 2 whole, 30 bytes of record 3, then 4 and 5 on lines of their own. */
static void check_file(const char *data)
{
  char rec[64], want[256];

  fprintf(stderr, "file:\n%s\n", data);
  record(rec, sizeof(rec), 3);
  snprintf(want, sizeof(want), "%.30s\n", rec);
  ASSERT_EQ(strncmp(data + 120, want, 31), 0);
  record(rec, sizeof(rec), 4);
  snprintf(want, sizeof(want), "\n%s\n", rec);
  ASSERT_NOT_NULL(strstr(data, want));
  record(rec, sizeof(rec), 5);
  snprintf(want, sizeof(want), "\n%s\n", rec);
  ASSERT_NOT_NULL(strstr(data, want));
  ASSERT_EQ(strlen(data), 120 + 31 + 120);
}

/* The record cut by the failed write ends its own line: the next record is not
 * appended to the fragment (which no reader could parse, losing both). */
TEST(cut_record_does_not_swallow_the_next)
{
  uv_loop_t loop;
  char path[512], *data;

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  data = write_across_failure(&loop, path, 0);
  check_file(data);
  free(data);
}

/* The same when the records after the failure are written by proxy_audit_close. */
TEST(cut_record_does_not_swallow_the_next_at_close)
{
  uv_loop_t loop;
  char path[512], *data;

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  data = write_across_failure(&loop, path, 1);
  check_file(data);
  free(data);
}

/* Records a failed write lost are counted as dropped, and only records that reached
 * the file as written: the metrics (authproxy_audit_*_total) must show the loss. */
TEST(failed_write_counted_as_dropped)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512];

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  ASSERT(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
  set_fsize(150);
  write_records(a, 1, 3);
  run_flush(&loop);
  /* Records 1 and 2 are in the file; record 3 was cut, so it is lost. */
  ASSERT_EQ(proxy_audit_records(a), 2);
  ASSERT_EQ(proxy_audit_dropped(a), 1);
  set_fsize(RLIM_INFINITY);
  write_records(a, 4, 5);
  run_flush(&loop);
  ASSERT_EQ(proxy_audit_records(a), 4);
  ASSERT_EQ(proxy_audit_dropped(a), 1);
  proxy_audit_close(a);
  test_loop_close(&loop);
}

/* Records dropped because the disk does not keep up (the buffer is full) are logged,
 * not only counted: the jail has no /metrics, and the daemon's log is where an
 * operator looks. The 1st drop and the 10th are logged, with the count, not each. */
TEST(dropped_when_full_is_logged)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], lpath[512], rec[64], want[600], *log;
  size_t len, n, i;
  int saved;

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);

  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  /* The loop does not run: the first 64 KiB go to the thread pool, whose completion
   * is not seen, and the rest wait in the buffer until it is full. */
  record(rec, sizeof(rec), 1);
  n = PROXY_AUDIT_MAX_BUFFER / 60 + (64u << 10) / 60 + 20;
  for (i = 0; i < n; i++)
    proxy_audit_write(a, rec, strlen(rec));
  ASSERT_GE(proxy_audit_dropped(a), 10);
  proxy_audit_close(a);
  test_loop_close(&loop);

  test_stderr_back(saved);
  log = read_all(lpath, &len);
  fprintf(stderr, "log:\n%s\n", log);
  /* Named: a host may run several daemons, each with its own log. */
  snprintf(want, sizeof(want), "audit log %s: records are dropped", path);
  ASSERT_NOT_NULL(strstr(log, want));
  ASSERT_NOT_NULL(strstr(log, "(1 dropped"));
  ASSERT_NOT_NULL(strstr(log, "(10 dropped"));
  ASSERT_NULL(strstr(log, "(2 dropped"));
  free(log);
}

/* A record that could not be built for want of memory (proxy_audit_lost, from the
 * writers of connection, request and callback records) is counted as dropped and
 * logged as out of memory: it used to vanish without a count or a line. */
TEST(lost_out_of_memory_counted_and_logged)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], lpath[512], want[600], *log;
  size_t len;
  int saved;

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  proxy_audit_lost(a);
  proxy_audit_lost(a);
  ASSERT_EQ(proxy_audit_dropped(a), 2);
  proxy_audit_close(a);
  test_loop_close(&loop);
  test_stderr_back(saved);
  log = read_all(lpath, &len);
  snprintf(want, sizeof(want), "audit log %s: records are dropped: out of memory (1 dropped)",
           path);
  ASSERT_NOT_NULL(strstr(log, want));
  ASSERT_NULL(strstr(log, "wait for the file"));
  free(log);
}

/* Records the close writes itself (the daemon or the jail is stopping) and fails to
 * are not lost silently either: the close logs the failure and how many it lost. */
TEST(failed_write_at_close_is_logged)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], lpath[512], *log;
  size_t len;
  int saved;

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);

  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  ASSERT(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
  set_fsize(150);
  write_records(a, 1, 3);
  /* Nothing was written yet (the loop did not run): the close writes all three, and
   * the file takes two and a half. */
  proxy_audit_close(a);
  test_loop_close(&loop);
  set_fsize(RLIM_INFINITY);

  test_stderr_back(saved);
  log = read_all(lpath, &len);
  fprintf(stderr, "log:\n%s\n", log);
  ASSERT_NOT_NULL(strstr(log, "audit log: write failed at close: File too large"));
  ASSERT_NOT_NULL(strstr(log, "(1 records lost)"));
  free(log);
}

/* Opens a FIFO in the test's directory for reading (*rfd, never read) and fills its
 * pipe with a writer of the test's own, so that the writer's writes find no room. */
static void stuck_fifo(char *path, size_t size, int *rfd)
{
  static char junk[4096];
  int wfd;

  snprintf(path, size, "%s/audit.fifo", test_tmpdir());
  ASSERT_EQ(mkfifo(path, 0600), 0);
  *rfd = open(path, O_RDONLY | O_NONBLOCK);
  ASSERT(*rfd >= 0);
  wfd = open(path, O_WRONLY | O_NONBLOCK);
  ASSERT(wfd >= 0);
  while (write(wfd, junk, sizeof(junk)) > 0)
    ;
  close(wfd);
}

/* A FIFO whose reader stopped reading does not hold the close (the daemon's stop, the
 * jail's end) for ever: the records it does not take in time are counted and logged.
 * The close used to write them with blocking writes, which never returned. */
TEST(close_does_not_wait_for_stuck_fifo_reader)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], lpath[512], *log;
  size_t len;
  int rfd, saved;

  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  stuck_fifo(path, sizeof(path), &rfd);
  saved = test_stderr_to(lpath);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  /* Fewer than the 64 KiB that start a write: all three wait for the close's. */
  write_records(a, 1, 3);
  proxy_audit_close_within(a, 100);
  test_loop_close(&loop);
  test_stderr_back(saved);
  close(rfd);
  log = read_all(lpath, &len);
  fprintf(stderr, "log:\n%s\n", log);
  ASSERT_NOT_NULL(strstr(log, "did not take the last records within 100 ms of the close "
                              "(3 records lost)"));
  free(log);
}

/* The same with a write in flight on the thread pool, which cannot be cancelled: the
 * close gives up on it, and proxy_loop_finish no longer waits for it (the process
 * ends without it). When the reader goes away, its callback frees what is left. */
TEST(close_gives_up_on_write_stuck_on_fifo)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], lpath[512], *log;
  size_t len;
  int rfd, saved;

  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  stuck_fifo(path, sizeof(path), &rfd);
  saved = test_stderr_to(lpath);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  /* 1,200 records (72 KiB): the first 64 KiB start a write, which waits for room. */
  write_records(a, 1, 1200);
  proxy_audit_close_within(a, 100);
  ASSERT_EQ(proxy_loop_finish(&loop), 1);
  ASSERT_EQ(proxy_lookups_orphaned(), 1);
  test_stderr_back(saved);
  /* The reader goes: the write fails (EPIPE), and its callback frees (uv_run waits
   * for it, which proxy_loop_finish does not). */
  close(rfd);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(proxy_lookups_orphaned(), 0);
  test_loop_close(&loop);
  log = read_all(lpath, &len);
  fprintf(stderr, "log:\n%s\n", log);
  ASSERT_NOT_NULL(strstr(log, "did not take the last records within 100 ms of the close "
                              "(up to 1200 records lost)"));
  free(log);
}

static int waits;

static int count_wait(void *arg)
{
  (void)arg;
  return ++waits >= 3;
}

/* --log naming a Unix socket (a log shipper's listener) fails at once, saying so: its
 * open(2) fails as a FIFO's without a reader does (ENXIO), and the daemon used to say
 * it waited for a FIFO's reader, and wait for ever, before restoring any sandbox. */
TEST(open_socket_fails_naming_it)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct proxy_audit *a;
  uv_loop_t loop;
  char lpath[512], *log;
  size_t len;
  int s, saved;

  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/audit.sock", test_tmpdir());
  s = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT(s >= 0);
  ASSERT_EQ(bind(s, (struct sockaddr *)&sun, sizeof(sun)), 0);
  ASSERT_EQ(listen(s, 1), 0);
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  waits = 0;
  ASSERT_EQ(proxy_audit_open_wait(&loop, sun.sun_path, count_wait, NULL, &a), -ENXIO);
  ASSERT_NULL(a);
  ASSERT_EQ(waits, 0);
  test_loop_close(&loop);
  test_stderr_back(saved);
  close(s);
  log = read_all(lpath, &len);
  fprintf(stderr, "log:\n%s\n", log);
  ASSERT_NOT_NULL(strstr(log, "a Unix socket, which cannot be opened for writing"));
  ASSERT_NULL(strstr(log, "FIFO that no reader has open"));
  free(log);
}

/* Records waiting in memory are bounded by PROXY_AUDIT_MAX_BUFFER, the batch whose
 * write is under way included (README: up to 8 MiB): behind a write of a full
 * buffer that took long (a slow disk, a reader that stopped), a second full buffer
 * used to wait, twice the bound. */
TEST(buffer_bound_counts_write_in_flight)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], lpath[512], rec[64], *data;
  size_t len, n, i, lines = 0;
  int saved;

  snprintf(path, sizeof(path), "%s/audit.log", test_tmpdir());
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), 0);
  record(rec, sizeof(rec), 1);
  /* The loop does not run: the first 64 KiB are a write whose end is not seen, and
   * the buffer fills up behind it. */
  n = PROXY_AUDIT_MAX_BUFFER / 60 + (64u << 10) / 60 + 20;
  for (i = 0; i < n; i++)
    proxy_audit_write(a, rec, strlen(rec));
  /* One turn sees that write end and starts writing the full buffer, whose end is
   * not seen in turn: 8 MiB wait, and the buffer must take nothing more. */
  uv_run(&loop, UV_RUN_ONCE);
  for (i = 0; i < n; i++)
    proxy_audit_write(a, rec, strlen(rec));
  proxy_audit_close(a);
  /* The close ends when the 8 MiB write does. */
  uv_run(&loop, UV_RUN_DEFAULT);
  test_loop_close(&loop);
  test_stderr_back(saved);
  data = read_all(path, &len);
  for (i = 0; i < len; i++)
    lines += data[i] == '\n';
  free(data);
  /* What was written: the first 64 KiB, and at most the bound after them. */
  ASSERT_LE(lines * 60, PROXY_AUDIT_MAX_BUFFER + (64u << 10) + 60);
}

/* --log naming a symbolic link fails saying so: the open does not follow links, and
 * the error used to be strerror's "Too many levels of symbolic links" alone. */
TEST(open_symlink_fails_naming_it)
{
  struct proxy_audit *a;
  uv_loop_t loop;
  char path[512], target[512], lpath[512], *log;
  size_t len;
  int saved;

  snprintf(target, sizeof(target), "%s/audit.log", test_tmpdir());
  snprintf(path, sizeof(path), "%s/link.log", test_tmpdir());
  ASSERT_EQ(symlink(target, path), 0);
  snprintf(lpath, sizeof(lpath), "%s/stderr.log", test_tmpdir());
  saved = test_stderr_to(lpath);
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ASSERT_EQ(proxy_audit_open(&loop, path, &a), -ELOOP);
  ASSERT_NULL(a);
  test_loop_close(&loop);
  test_stderr_back(saved);
  log = read_all(lpath, &len);
  fprintf(stderr, "log:\n%s\n", log);
  ASSERT_NOT_NULL(strstr(log, "link.log: a symbolic link, which is not followed"));
  free(log);
}
