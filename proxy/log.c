/*
 * Operational log lines: "2026-11-26T18:27:36.123Z authproxy[PID] LEVEL: message".
 * One write(2) per line so lines from concurrent processes do not interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "proxy/log.h"

static enum proxy_log_level current = PROXY_LOG_INFO;

void proxy_log_set_level(enum proxy_log_level level)
{
  current = level;
}

enum proxy_log_level proxy_log_get_level(void)
{
  return current;
}

void proxy_log(enum proxy_log_level level, const char *fmt, ...)
{
  static const char *const names[] = { "error", "warn", "info", "debug" };
  char line[2048];
  struct timeval tv;
  struct tm tm;
  va_list ap;
  int n, m;

  if (level > current)
    return;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ authproxy[%d] %s: ",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
               tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), names[level]);
  va_start(ap, fmt);
  m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0)
    m = 0;
  n += m;
  if ((size_t)n > sizeof(line) - 2)
    n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  (void)!write(STDERR_FILENO, line, (size_t)n);
}

void proxy_log_accept_failed(const char *who, int err)
{
  static uint64_t failed, logged_ms;
  struct timespec ts;
  uint64_t now;

  failed++;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  if (!proxy_log_due(&logged_ms, now, PROXY_LOG_ACCEPT_MS))
    return;
  log_error("%s: accept: %s (%llu failed accepts so far; logged at most every %d s)%s", who,
            strerror(err), (unsigned long long)failed, PROXY_LOG_ACCEPT_MS / 1000,
            err == EMFILE   ? ": the daemon is out of file descriptors; raise its limit "
                              "(LimitNOFILE= in its unit), or detach sandboxes no longer used"
            : err == ENFILE ? ": the host is out of file descriptors, whatever the "
                              "daemon's limit: raise fs.file-max, or find what holds them"
                            : "");
}
