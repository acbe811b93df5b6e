/*
 * Operational log (not the audit log): one line per event on stderr, with a level.
 * Never pass a secret or a header value to it.
 */
#ifndef AUTHPROXY_LOG_H
#define AUTHPROXY_LOG_H

enum proxy_log_level { PROXY_LOG_ERROR, PROXY_LOG_WARN, PROXY_LOG_INFO, PROXY_LOG_DEBUG };

/* Messages above this level are dropped. Default PROXY_LOG_INFO. */
void proxy_log_set_level(enum proxy_log_level level);
enum proxy_log_level proxy_log_get_level(void);

void proxy_log(enum proxy_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) proxy_log(PROXY_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) proxy_log(PROXY_LOG_WARN, __VA_ARGS__)
#define log_info(...) proxy_log(PROXY_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                            \
  do {                                                                            \
    if (proxy_log_get_level() >= PROXY_LOG_DEBUG)                                 \
      proxy_log(PROXY_LOG_DEBUG, __VA_ARGS__);                                    \
  } while (0)

#endif
