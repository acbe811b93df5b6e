/*
 * Command-line options that `jail` and `serve` share: limits, upstream trust,
 * capture mode, certificate cache, verbosity.
 */
#ifndef AUTHPROXY_OPTIONS_H
#define AUTHPROXY_OPTIONS_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#include "netns/netns.h"
#include "proxy/proxy.h"

#define PROXY_MAX_UPSTREAM_CA 16
#define PROXY_COMMON_OPTIONS 17 /* entries of proxy_common_options, terminator excluded */

struct proxy_common_opts {
  struct proxy_limits limits;
  const char *upstream_ca[PROXY_MAX_UPSTREAM_CA];
  size_t nupstream_ca;
  enum netns_capture capture;
  size_t leaf_cache;   /* 0: the CA's default */
  unsigned busy_poll_us; /* 0: the loop sleeps when idle (proxy_loop_run) */
  int verbose;
};

/* getopt_long entries (values from 1000 up, and 'v'), NULL-terminated. */
extern const struct option proxy_common_options[PROXY_COMMON_OPTIONS + 1];

void proxy_common_opts_init(struct proxy_common_opts *o);

/*
 * Handles one getopt_long result c with its argument. Returns 1 when c was one of the
 * shared options, 0 when it is not, -EINVAL when its value is wrong (the message,
 * prefixed by prog, is printed).
 */
int proxy_common_option(const char *prog, int c, const char *arg, struct proxy_common_opts *o);

/*
 * Builds a getopt_long table of own (NULL-terminated, borrowed) followed by the shared
 * options into out (capacity cap). Returns 0 or -ENOSPC.
 */
int proxy_options_merge(const struct option *own, struct option *out, size_t cap);

/* Prints the help lines of the shared options. */
void proxy_common_usage(FILE *f);

/*
 * For a command whose result is what it prints on standard output (status ret): flushes
 * it, and turns a write error, now or earlier, into status 1 with a line naming it,
 * prefixed with who. A status other than 0 is kept.
 */
int proxy_finish_output(const char *who, int ret);

/* Sets the log level for -v counts (default: quiet_level). */
void proxy_common_log_level(const struct proxy_common_opts *o, int quiet_level);

#endif
