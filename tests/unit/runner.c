/*
 * The unit test runner. Each registered test runs in a child process with its own
 * temporary directory and a timeout, so a crash, a hang or leaked state in one test
 * cannot mask another; SIGINT, SIGTERM or SIGHUP ends the running test and what it
 * forked, then the runner. Usage: unit-tests [--list] [PREFIX...]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "proxy/coverage.h"
#include "rules/rules.h"
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include "test.h"

#define MAX_TESTS 2048

struct test_entry {
  char id[160];
  test_fn fn;
};

static struct test_entry tests[MAX_TESTS];
static int ntests;
static char tmpdir[256];

/* A test's exit status when LeakSanitizer found a leak after it returned. */
#define EXIT_LEAKED 98

/*
 * A test runs in a process group of its own (run_one), which the terminal's ^C, a
 * hangup or a `timeout` does not reach: the runner passes those on. The signals, how
 * the runner found them (a test gets them so), the running test's group, and the
 * signal that stops the runner once the test and its directory are gone.
 */
static const int stop_signals[] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction stop_before[sizeof(stop_signals) / sizeof(stop_signals[0])];
static volatile sig_atomic_t test_group, stop_signal;

static void on_stop(int sig)
{
  stop_signal = sig;
  if (test_group > 0)
    kill(-test_group, SIGKILL);
}

static void stop_signals_block(int how)
{
  sigset_t set;
  size_t i;

  sigemptyset(&set);
  for (i = 0; i < sizeof(stop_signals) / sizeof(stop_signals[0]); i++)
    sigaddset(&set, stop_signals[i]);
  sigprocmask(how, &set, NULL);
}

/* Catches the stop signals, but one the runner was started ignoring (a background
 * job of a script ignores ^C), which stays ignored. */
static void stop_signals_catch(void)
{
  struct sigaction sa;
  size_t i;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  for (i = 0; i < sizeof(stop_signals) / sizeof(stop_signals[0]); i++) {
    sigaction(stop_signals[i], NULL, &stop_before[i]);
    if (stop_before[i].sa_handler != SIG_IGN)
      sigaction(stop_signals[i], &sa, NULL);
  }
}

/* In a test: the stop signals as the runner found them. */
static void stop_signals_restore(void)
{
  size_t i;

  for (i = 0; i < sizeof(stop_signals) / sizeof(stop_signals[0]); i++)
    sigaction(stop_signals[i], &stop_before[i], NULL);
}

/* After a stop signal, with no test left: dies of it, as it would have. */
static void stop_now(void)
{
  int sig = stop_signal;

  fprintf(stderr, "runner: stopped by signal %d (%s)\n", sig, strsignal(sig));
  fflush(NULL);
  signal(sig, SIG_DFL);
  stop_signals_block(SIG_UNBLOCK);
  raise(sig);
  _exit(128 + sig);
}

void test_register(const char *file, const char *name, test_fn fn)
{
  const char *base = strrchr(file, '/');
  char stem[96];
  size_t len;

  base = base ? base + 1 : file;
  len = strcspn(base, ".");
  if (len >= sizeof(stem))
    len = sizeof(stem) - 1;
  memcpy(stem, base, len);
  stem[len] = '\0';
  if (ntests == MAX_TESTS) {
    fprintf(stderr, "runner: more than %d tests; raise MAX_TESTS\n", MAX_TESTS);
    abort();
  }
  snprintf(tests[ntests].id, sizeof(tests[ntests].id), "%s/%s", stem, name);
  tests[ntests].fn = fn;
  ntests++;
}

const char *test_data_path(const char *rel)
{
  static char buf[4][1024];
  static int slot;
  char *p = buf[slot++ % 4];

  snprintf(p, sizeof(buf[0]), "%s/%s", AUTHPROXY_TEST_DATA_DIR, rel);
  return p;
}

const char *test_tmpdir(void)
{
  return tmpdir;
}

int test_open_fds(void)
{
  struct dirent *e;
  DIR *dir = opendir("/proc/self/fd");
  int n = 0;

  if (dir == NULL)
    return -1;
  while ((e = readdir(dir)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(dir);
  return n;
}

int test_stderr_to(const char *path)
{
  int saved, fd;

  fflush(stderr);
  saved = dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(dup2(fd, STDERR_FILENO), STDERR_FILENO);
  close(fd);
  return saved;
}

void test_stderr_back(int saved)
{
  fflush(stderr);
  ASSERT_EQ(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
}

static int json_allocs, json_fail_at;

static void *json_malloc_counted(size_t n)
{
  if (++json_allocs == json_fail_at) {
    rules_json_count_failure();
    errno = ENOMEM;
    return NULL;
  }
  return malloc(n);
}

void test_json_fail_at(int n)
{
  static cJSON_Hooks counted = { json_malloc_counted, free };

  json_allocs = 0;
  json_fail_at = n;
  cJSON_InitHooks(&counted);
}

int test_json_allocs(void)
{
  return json_allocs;
}

void test_json_plain(void)
{
  cJSON_InitHooks(NULL);
}

void test_write_file(const char *dir, const char *name, const char *data, size_t len,
                     int mode)
{
  char path[1024];
  int fd;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    TEST_FAIL_("open %s: %s", path, strerror(errno));
  if (fchmod(fd, (mode_t)mode) != 0 || write(fd, data, len) != (ssize_t)len)
    TEST_FAIL_("write %s: %s", path, strerror(errno));
  close(fd);
}

void test_hexdump_(const char *label, const void *p, size_t n)
{
  const unsigned char *b = p;
  size_t i;

  fprintf(stderr, "  %s:", label);
  for (i = 0; i < n && i < 256; i++)
    fprintf(stderr, "%s%02x", i % 32 ? " " : "\n    ", b[i]);
  fprintf(stderr, "%s\n", n > 256 ? " ..." : "");
}

/* Closes every handle still open on loop, failing the test if any was left. */
static void count_open(uv_handle_t *h, void *arg)
{
  int *n = arg;

  if (!uv_is_closing(h)) {
    fprintf(stderr, "open handle left on loop: %s\n", uv_handle_type_name(h->type));
    (*n)++;
  }
}

void test_loop_close(uv_loop_t *loop);
void test_loop_close(uv_loop_t *loop)
{
  int open = 0;

  uv_run(loop, UV_RUN_NOWAIT);
  uv_walk(loop, count_open, &open);
  if (open != 0)
    TEST_FAIL_("%d handle(s) not closed", open);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0)
    TEST_FAIL_("uv_loop_close: loop still busy");
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int run_one(const struct test_entry *t, unsigned timeout)
{
  struct timespec t0, t1;
  pid_t pid;
  int status;
  double ms;

  snprintf(tmpdir, sizeof(tmpdir), "/tmp/authproxy-unit.XXXXXX");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fflush(NULL);
  /* Blocked until test_group names the test's group, which both sides set first. */
  stop_signals_block(SIG_BLOCK);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    stop_signals_block(SIG_UNBLOCK);
    return 1;
  }
  if (pid == 0) {
    /* Its own process group, so that what it forked can be ended with it below. */
    setpgid(0, 0);
    stop_signals_restore();
    stop_signals_block(SIG_UNBLOCK);
    signal(SIGPIPE, SIG_IGN);
    alarm(timeout);
    t->fn();
    fflush(NULL);
    proxy_coverage_dump();
#if defined(__SANITIZE_ADDRESS__)
    /* _exit skips the leak check LeakSanitizer runs at exit: run it here, so that a
     * test that leaks fails under AUTHPROXY_SANITIZE. */
    if (__lsan_do_recoverable_leak_check() != 0)
      _exit(EXIT_LEAKED);
#endif
    _exit(0);
  }
  setpgid(pid, pid);
  test_group = pid;
  stop_signals_block(SIG_UNBLOCK);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  /* Processes the test forked and left behind (a test that timed out while its
   * children were writing, or one that failed before it reaped them) would run on,
   * unbounded, after it: the alarm ends the test, not them. */
  kill(-pid, SIGKILL);
  test_group = 0;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  if (stop_signal != 0)
    stop_now();

  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    printf("ok     %s (%.1f ms)\n", t->id, ms);
    return 0;
  }
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
    printf("FAIL   %s: timed out after %u s\n", t->id, timeout);
  else if (WIFSIGNALED(status))
    printf("FAIL   %s: killed by signal %d (%s)\n", t->id, WTERMSIG(status),
           strsignal(WTERMSIG(status)));
  else if (WEXITSTATUS(status) == EXIT_LEAKED)
    printf("FAIL   %s: leaked memory (LeakSanitizer's report above)\n", t->id);
  else
    printf("FAIL   %s: exit status %d\n", t->id, WEXITSTATUS(status));
  return 1;
}

static int matches(const char *id, int argc, char **argv)
{
  int i, any = 0;

  for (i = 1; i < argc; i++) {
    if (argv[i][0] == '-')
      continue;
    any = 1;
    if (strncmp(id, argv[i], strlen(argv[i])) == 0)
      return 1;
  }
  return !any;
}

int main(int argc, char **argv)
{
  unsigned timeout = 60;
  int i, run = 0, failed = 0, list = 0;
  const char *env = getenv("UNIT_TEST_TIMEOUT");

  if (env != NULL && atoi(env) > 0)
    timeout = (unsigned)atoi(env);
  for (i = 1; i < argc; i++)
    if (strcmp(argv[i], "--list") == 0)
      list = 1;
  setvbuf(stdout, NULL, _IOLBF, 0);
  stop_signals_catch();

  for (i = 0; i < ntests; i++) {
    if (!matches(tests[i].id, argc, argv))
      continue;
    if (list) {
      printf("%s\n", tests[i].id);
      continue;
    }
    if (stop_signal != 0)
      stop_now();
    run++;
    failed += run_one(&tests[i], timeout);
  }
  if (stop_signal != 0)
    stop_now();
  if (list)
    return 0;
  if (run == 0) {
    fprintf(stderr, "no test matches\n");
    return 1;
  }
  printf("%d of %d tests passed\n", run - failed, run);
  return failed ? 1 : 0;
}
