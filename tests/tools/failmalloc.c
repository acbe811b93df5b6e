/* failmalloc: an LD_PRELOAD shim that makes chosen allocations fail (return NULL,
 * errno ENOMEM), to see how authproxy and its libraries (mbedTLS, cJSON, libuv, glibc's
 * own allocations inside getaddrinfo, fopen, strdup...) behave out of memory.
 *
 * Build:  cc -shared -fPIC -O2 -o failmalloc.so tests/tools/failmalloc.c -ldl
 * (tests/CMakeLists.txt builds it as build/tests/libfailmalloc.so). Use it with the
 * plain build only: ASan replaces malloc itself and refuses to run under a preload.
 *
 * Environment (all optional):
 *   FAILMALLOC_EXE=NAME    act only in a program of this name (program_invocation_
 *                          short_name), e.g. authproxy, so that the children a jail runs
 *                          (curl) are left alone; and only in the process that loaded
 *                          the shim, not in its fork()ed children.
 *   FAILMALLOC_ARM=WHAT    when counting starts: "start" (default), or FUNC:K, armed
 *                          when the K-th call of FUNC returns (accept4, recvmsg,
 *                          recvmmsg, connect), e.g. accept4:1 = after the first
 *                          connection a listener accepted; or file:PATH, armed when
 *                          one of those calls returns and PATH exists (a script
 *                          creates it right before the step to test).
 *   FAILMALLOC_NTH=N       the N-th counted allocation after arming fails (1-based);
 *   FAILMALLOC_RUN=C       and C allocations from there on (default 1; 0 = all later).
 *   FAILMALLOC_PROB=P      instead of NTH: each counted allocation fails with
 *                          probability P (0..1), from FAILMALLOC_SEED (default 1).
 *   FAILMALLOC_SIZE=S      count only allocations of exactly S bytes (calloc: n*size),
 *                          which picks an allocation site without depending on the
 *                          build's allocation order; FAILMALLOC_MINSIZE=S: of S or more.
 *   FAILMALLOC_THREADS=all also count allocations of other threads (libuv's pool, where
 *                          getaddrinfo runs); default: the main thread only.
 *   FAILMALLOC_LOG=PATH    append a line (and a backtrace) per failed allocation, and
 *                          at exit the number of counted allocations after arming.
 *   FAILMALLOC_TRACE=1     with FAILMALLOC_LOG: also a line per counted allocation,
 *                          "trace N SIZE" and its callers as module+offset, from which
 *                          failmalloc_sweep.sh picks one N per distinct call site.
 *
 * It calls glibc's __libc_malloc family, so it needs no dlsym (which allocates). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static int active;            /* configured and in the right process */
static int all_threads;
static pid_t own_pid;
static int armed;             /* counting */
static char arm_fn[32];
static char arm_file[256];
static long arm_after = -1;   /* calls of arm_fn left before arming */
static unsigned long nth;
static unsigned long run = 1;
static double prob = -1;
static uint64_t rng_state = 1;
static size_t only_size;
static size_t min_size;
static int log_fd = -1;
static int trace;
static unsigned long counted; /* allocations counted since arming */
static unsigned long failed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int busy;     /* inside the shim's own code: never fail */

static unsigned long env_ul(const char *name, unsigned long dflt)
{
  const char *v = getenv(name);

  return v != NULL && *v != '\0' ? strtoul(v, NULL, 10) : dflt;
}

__attribute__((constructor)) static void failmalloc_init(void)
{
  const char *exe = getenv("FAILMALLOC_EXE");
  const char *arm = getenv("FAILMALLOC_ARM");
  const char *v;
  void *frames[2];

  busy++;
  if (exe != NULL && *exe != '\0' && strcmp(exe, program_invocation_short_name) != 0)
    goto out;
  own_pid = getpid();
  all_threads = (v = getenv("FAILMALLOC_THREADS")) != NULL && strcmp(v, "all") == 0;
  nth = env_ul("FAILMALLOC_NTH", 0);
  run = env_ul("FAILMALLOC_RUN", 1);
  only_size = env_ul("FAILMALLOC_SIZE", 0);
  min_size = env_ul("FAILMALLOC_MINSIZE", 0);
  v = getenv("FAILMALLOC_PROB");
  if (v != NULL && *v != '\0') {
    prob = strtod(v, NULL);
    rng_state = env_ul("FAILMALLOC_SEED", 1) * 0x9E3779B97F4A7C15ull + 1;
  }
  v = getenv("FAILMALLOC_LOG");
  if (v != NULL && *v != '\0')
    log_fd = open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  trace = env_ul("FAILMALLOC_TRACE", 0) != 0;
  /* backtrace() loads libgcc_s on its first call, which allocates: do it now. */
  backtrace(frames, 2);
  if (arm == NULL || *arm == '\0' || strcmp(arm, "start") == 0) {
    armed = 1;
  } else {
    const char *colon = strchr(arm, ':');
    size_t n = colon != NULL ? (size_t)(colon - arm) : strlen(arm);

    if (n >= sizeof(arm_fn))
      n = sizeof(arm_fn) - 1;
    memcpy(arm_fn, arm, n);
    arm_after = colon != NULL ? strtol(colon + 1, NULL, 10) : 1;
    if (strcmp(arm_fn, "file") == 0 && colon != NULL)
      snprintf(arm_file, sizeof(arm_file), "%s", colon + 1);
  }
  active = nth > 0 || prob >= 0 || log_fd >= 0;
out:
  busy--;
}

__attribute__((destructor)) static void failmalloc_fini(void)
{
  char line[160];
  int n;

  if (!active || log_fd < 0 || getpid() != own_pid)
    return;
  /* Bytes still allocated at exit: more after a failed allocation than after a clean
   * run of the same flow is memory the failure's path did not give back. */
  n = snprintf(line, sizeof(line),
               "failmalloc: pid %d exit: %lu counted, %lu failed%s, %zu bytes in use\n",
               (int)own_pid, counted, failed, armed ? "" : " (never armed)",
               mallinfo2().uordblks);
  if (n > 0)
    (void)!write(log_fd, line, (size_t)n);
}

static void note_call(const char *fn, long ret)
{
  if (!active || armed || ret < 0 || arm_after < 0 || getpid() != own_pid)
    return;
  if (arm_file[0] != '\0') {
    if (access(arm_file, F_OK) == 0)
      armed = 1;
    return;
  }
  if (strcmp(fn, arm_fn) != 0)
    return;
  pthread_mutex_lock(&lock);
  if (arm_after > 0 && --arm_after == 0)
    armed = 1;
  pthread_mutex_unlock(&lock);
}

static uint64_t next_rand(void)
{
  /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

/* One line: "trace N SIZE" and the callers (past the shim's frames) as module+offset. */
static void trace_line(unsigned long n, size_t size)
{
  void *frames[12];
  char line[1024];
  int depth = backtrace(frames, 12), len, i, shown = 0;
  Dl_info info;

  len = snprintf(line, sizeof(line), "trace %lu %zu", n, size);
  for (i = 0; i < depth && shown < 6 && len < (int)sizeof(line) - 80; i++) {
    const char *base;

    if (dladdr(frames[i], &info) == 0 || info.dli_fname == NULL)
      continue;
    base = strrchr(info.dli_fname, '/');
    base = base != NULL ? base + 1 : info.dli_fname;
    if (strstr(base, "failmalloc") != NULL)
      continue;
    len += snprintf(line + len, sizeof(line) - (size_t)len, " %s+0x%lx", base,
                    (unsigned long)((char *)frames[i] - (char *)info.dli_fbase));
    shown++;
  }
  line[len++] = '\n';
  (void)!write(log_fd, line, (size_t)len);
}

/* Whether this allocation (of SIZE bytes) is to fail; logs it if so. */
static int should_fail(size_t size)
{
  unsigned long n;
  int fail = 0;

  if (!active || !armed || busy)
    return 0;
  if (getpid() != own_pid)
    return 0;
  if (!all_threads && (pid_t)syscall(SYS_gettid) != own_pid)
    return 0;
  if (only_size != 0 && size != only_size)
    return 0;
  if (size < min_size)
    return 0;
  busy++;
  pthread_mutex_lock(&lock);
  n = ++counted;
  if (prob >= 0)
    fail = (double)(next_rand() >> 11) / (double)(1ull << 53) < prob;
  else if (nth > 0)
    fail = n >= nth && (run == 0 || n < nth + run);
  if (fail)
    failed++;
  pthread_mutex_unlock(&lock);
  if (trace && log_fd >= 0)
    trace_line(n, size);
  if (fail && log_fd >= 0) {
    void *frames[24];
    char line[96];
    int len = snprintf(line, sizeof(line), "failmalloc: pid %d: allocation #%lu of %zu "
                       "bytes fails\n", (int)own_pid, n, size);
    int depth = backtrace(frames, 24);

    if (len > 0)
      (void)!write(log_fd, line, (size_t)len);
    backtrace_symbols_fd(frames, depth, log_fd);
  }
  busy--;
  return fail;
}

void *malloc(size_t size)
{
  if (should_fail(size)) {
    errno = ENOMEM;
    return NULL;
  }
  return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
  size_t total;

  if (__builtin_mul_overflow(n, size, &total))
    total = SIZE_MAX;
  if (should_fail(total)) {
    errno = ENOMEM;
    return NULL;
  }
  return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
  /* realloc(p, 0) frees: not an allocation that can fail. */
  if (size != 0 && should_fail(size)) {
    errno = ENOMEM;
    return NULL;
  }
  return __libc_realloc(p, size);
}

void *reallocarray(void *p, size_t n, size_t size)
{
  size_t total;

  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(p, total);
}

void free(void *p)
{
  __libc_free(p);
}

void *memalign(size_t align, size_t size)
{
  if (should_fail(size)) {
    errno = ENOMEM;
    return NULL;
  }
  return __libc_memalign(align, size);
}

void *aligned_alloc(size_t align, size_t size)
{
  return memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
  void *p;

  if (should_fail(size))
    return ENOMEM;
  p = __libc_memalign(align, size);
  if (p == NULL)
    return ENOMEM;
  *out = p;
  return 0;
}

/* The calls FAILMALLOC_ARM can wait for. */
int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
  int r = (int)syscall(SYS_accept4, fd, addr, len, flags);

  note_call("accept4", r);
  return r;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
  int r = (int)syscall(SYS_accept4, fd, addr, len, 0);

  note_call("accept", r);
  return r;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
  ssize_t r = syscall(SYS_recvmsg, fd, msg, flags);

  note_call("recvmsg", r);
  return r;
}

int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *t)
{
  int r = (int)syscall(SYS_recvmmsg, fd, v, n, flags, t);

  note_call("recvmmsg", r);
  return r;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
  int r = (int)syscall(SYS_connect, fd, addr, len);

  note_call("connect", r);
  return r;
}
