/*
 * The unit runner itself: what a test forked ends with the test, when the test
 * returns and when the runner is stopped by a signal while the test runs (^C at a
 * terminal, a CI job cancelled, `timeout`). The test runs the runner (this binary)
 * again on itself: there, with RUNNER_ROLE set, it forks a child that would wait for
 * a minute, says the pids in a file, and returns or waits for the runner's alarm.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define ROLE_ENV "AUTHPROXY_RUNNER_TEST_ROLE"
#define PIDS_ENV "AUTHPROXY_RUNNER_TEST_PIDS"
#define SELF "test_runner/runner_ends_what_a_test_forked"

/* The inner run: fork a child that outlives the test, and say who is who. */
static void inner(const char *role)
{
  const char *file = getenv(PIDS_ENV);
  char tmp[1100], text[1200];
  pid_t child;
  int fd, n;

  ASSERT_NE(file, NULL);
  child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(60); /* bounded even when nothing ends it */
    for (;;)
      pause();
  }
  n = snprintf(text, sizeof(text), "%d %d %s\n", (int)getpid(), (int)child, test_tmpdir());
  snprintf(tmp, sizeof(tmp), "%s.tmp", file);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, text, (size_t)n), n);
  close(fd);
  ASSERT_EQ(rename(tmp, file), 0);
  if (strcmp(role, "wait") == 0)
    for (;;)
      pause(); /* until the runner ends it */
}

/* 1 once pid has exited (a zombie, or reaped), else 0. */
static int ended(pid_t pid)
{
  char path[64], buf[512], *p;
  ssize_t n;
  int fd;

  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  fd = open(path, O_RDONLY);
  if (fd < 0)
    return errno == ENOENT;
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return 1;
  buf[n] = '\0';
  p = strrchr(buf, ')');
  return p != NULL && (p[2] == 'Z' || p[2] == 'X');
}

/*
 * Polls until pid has ended; fails the test if it is still there after 20 s, far
 * longer than a SIGKILL takes, killing first the inner run's test and child (ours).
 */
static void assert_ends(pid_t pid, pid_t test, pid_t child, const char *who,
                        const char *when)
{
  struct timespec tick = { 0, 5 * 1000 * 1000 };
  int i;

  for (i = 0; i < 4000 && !ended(pid); i++)
    nanosleep(&tick, NULL);
  if (!ended(pid)) {
    kill(test, SIGKILL);
    kill(child, SIGKILL);
    TEST_FAIL_("%s (pid %d) still runs after %s", who, (int)pid, when);
  }
}

/* Runs the test id under a runner of its own with role; returns the runner's pid. */
static pid_t start_runner(const char *id, const char *role, const char *pids)
{
  char out[1100], self[1024];
  ssize_t n;
  pid_t pid;
  int fd;

  /* Read, not exec'd as it is: under valgrind (scripts/memcheck.sh) /proc/self/exe is
   * valgrind's own program, and only readlink answers with this one. */
  n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  self[n] = '\0';

  snprintf(out, sizeof(out), "%s/runner.out", test_tmpdir());
  fflush(NULL);
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    /* As a shell's foreground job has them, whatever this runner was started with. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    setenv(ROLE_ENV, role, 1);
    setenv(PIDS_ENV, pids, 1);
    setenv("UNIT_TEST_TIMEOUT", "60", 1);
    fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    execl(self, "unit-tests", id, (char *)NULL);
    _exit(127);
  }
  return pid;
}

/* The pids the inner run wrote (polled until the file is there). */
static void read_pids(const char *pids, pid_t runner, pid_t *test, pid_t *child,
                      char *dir, size_t dir_size)
{
  struct timespec tick = { 0, 5 * 1000 * 1000 };
  int t = 0, c = 0, i, st;
  FILE *f = NULL;

  for (i = 0; i < 4000 && f == NULL; i++) {
    f = fopen(pids, "r");
    if (f == NULL) {
      if (waitpid(runner, &st, WNOHANG) == runner)
        TEST_FAIL_("the inner runner ended (status 0x%x) before its test forked", st);
      nanosleep(&tick, NULL);
    }
  }
  if (f == NULL) {
    kill(runner, SIGKILL);
    TEST_FAIL_("the inner run wrote no pids in 20 s");
  }
  ASSERT_EQ(dir_size, 256);
  ASSERT_EQ(fscanf(f, "%d %d %255s", &t, &c, dir), 3);
  fclose(f);
  *test = (pid_t)t;
  *child = (pid_t)c;
}

TEST(runner_ends_what_a_test_forked)
{
  static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
  const char *role = getenv(ROLE_ENV);
  char pids[1100], dir[256], when[64];
  pid_t runner, test, child;
  size_t i;
  int st;

  if (role != NULL) {
    inner(role);
    return;
  }
  snprintf(pids, sizeof(pids), "%s/pids", test_tmpdir());

  /* The test returns, leaving its child: the child ends with it. */
  runner = start_runner(SELF, "return", pids);
  read_pids(pids, runner, &test, &child, dir, sizeof(dir));
  ASSERT_EQ(waitpid(runner, &st, 0), runner);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_ends(child, test, child, "the child of a test that returned", "the runner exited");

  /* The runner stopped by a signal while the test waits: the test, its child and its
   * directory end too, and the runner dies of the signal. */
  for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    ASSERT_EQ(unlink(pids), 0);
    runner = start_runner(SELF, "wait", pids);
    read_pids(pids, runner, &test, &child, dir, sizeof(dir));
    ASSERT_EQ(kill(runner, sigs[i]), 0);
    ASSERT_EQ(waitpid(runner, &st, 0), runner);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != sigs[i]) {
      kill(test, SIGKILL);
      kill(child, SIGKILL);
      TEST_FAIL_("runner status 0x%x after signal %d", st, sigs[i]);
    }
    snprintf(when, sizeof(when), "the runner died of signal %d", sigs[i]);
    assert_ends(test, test, child, "the test", when);
    assert_ends(child, test, child, "the child of the test", when);
    if (access(dir, F_OK) == 0 || errno != ENOENT)
      TEST_FAIL_("the test's directory %s is still there after %s", dir, when);
  }
}

#if defined(__SANITIZE_ADDRESS__)
/* Allocates and drops the pointer, in a frame of its own that is gone by the time
 * LeakSanitizer scans the stack. */
static __attribute__((noinline)) void lose_memory(void)
{
  char *volatile p = malloc(4096);

  if (p != NULL)
    memset(p, 1, 4096);
}
#endif

/*
 * A test that leaks fails under AUTHPROXY_SANITIZE, and the runner says that memory
 * leaked, not only the exit status its leak check gives. Without AddressSanitizer
 * (or with detect_leaks=0) there is no leak check to see.
 */
TEST(runner_names_a_leak)
{
#if defined(__SANITIZE_ADDRESS__)
  const char *role = getenv(ROLE_ENV), *opts = getenv("ASAN_OPTIONS");
  char pids[1100], out[1100], text[8192];
  pid_t runner;
  ssize_t n;
  int fd, st;

  if (role != NULL) {
    lose_memory();
    return;
  }
  if (opts != NULL && strstr(opts, "detect_leaks=0") != NULL)
    return;
  snprintf(pids, sizeof(pids), "%s/pids", test_tmpdir());
  runner = start_runner("test_runner/runner_names_a_leak", "leak", pids);
  ASSERT_EQ(waitpid(runner, &st, 0), runner);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) != 0);
  snprintf(out, sizeof(out), "%s/runner.out", test_tmpdir());
  fd = open(out, O_RDONLY);
  ASSERT_GE(fd, 0);
  n = read(fd, text, sizeof(text) - 1);
  close(fd);
  ASSERT_GT(n, 0);
  text[n] = '\0';
  if (strstr(text, "FAIL   test_runner/runner_names_a_leak: leaked memory") == NULL)
    TEST_FAIL_("the runner's output does not name the leak: %s", text);
#endif
}
