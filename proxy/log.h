/*
 * Operational log (not the audit log): one line per event on stderr, with a level.
 * Never pass a secret or a header value to it.
 */
#ifndef AUTHPROXY_LOG_H
#define AUTHPROXY_LOG_H

#include <stdint.h>

enum proxy_log_level { PROXY_LOG_ERROR, PROXY_LOG_WARN, PROXY_LOG_INFO, PROXY_LOG_DEBUG };

/* Messages above this level are dropped. Default PROXY_LOG_INFO. */
void proxy_log_set_level(enum proxy_log_level level);
enum proxy_log_level proxy_log_get_level(void);

void proxy_log(enum proxy_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Whether the nth event of a run (n counted from 1) is worth a line: the 1st, 10th,
 * 100th and every 1000th. For events a sandbox can repeat as fast as it likes (a
 * callback that is down, a name the CA may not sign): the log shows the run and its
 * length without one line per event.
 */
static inline int proxy_log_nth(unsigned long long n)
{
  return n == 1 || n == 10 || n == 100 || (n > 0 && n % 1000 == 0);
}

/*
 * Whether an event at now_ms (loop time) is worth a log line when such lines come
 * at most every every_ms: the first is, then one per period, each naming the count
 * so far. For refusals a flood repeats at every turn of the loop: a count of them
 * (proxy_log_nth) would stay silent through a second flood long after the first.
 */
static inline int proxy_log_due(uint64_t *last_ms, uint64_t now_ms, uint64_t every_ms)
{
  if (*last_ms != 0 && now_ms - *last_ms < every_ms)
    return 0;
  *last_ms = now_ms != 0 ? now_ms : 1;
  return 1;
}

/* How often a failed accept is logged at most (proxy_log_accept_failed). */
#define PROXY_LOG_ACCEPT_MS (5 * 1000)

/*
 * Logs that a listener's accept failed with errno err (positive): who names the
 * listener ("control", "sandbox NAME"). Out of descriptors, with its spare one gone,
 * libuv calls back again at once without returning to the loop, as long as the
 * connection waits: the lines come at most every PROXY_LOG_ACCEPT_MS of real time
 * (the loop's clock stands still meanwhile), with the count, or they would fill the
 * disk in seconds.
 */
void proxy_log_accept_failed(const char *who, int err);

#define log_error(...) proxy_log(PROXY_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) proxy_log(PROXY_LOG_WARN, __VA_ARGS__)
#define log_info(...) proxy_log(PROXY_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                            \
  do {                                                                            \
    if (proxy_log_get_level() >= PROXY_LOG_DEBUG)                                 \
      proxy_log(PROXY_LOG_DEBUG, __VA_ARGS__);                                    \
  } while (0)

#endif
