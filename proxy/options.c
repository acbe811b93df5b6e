/*
 * The shared options of `jail` and `serve`, parsed once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/log.h"
#include "proxy/options.h"

enum {
  O_UPCA = 1000, O_CAPTURE, O_MAXCONNS, O_IDLE, O_CONNECT, O_HEAD, O_MAXHDR, O_DRAIN,
  O_LEAF, O_HANDSHAKE, O_WQUEUE, O_DNSNAMES, O_BUSYPOLL, O_SBQUEUE, O_QUEUE,
  O_LOGINTERVAL,
};

const struct option proxy_common_options[PROXY_COMMON_OPTIONS + 1] = {
  { "upstream-ca", required_argument, NULL, O_UPCA },
  { "capture", required_argument, NULL, O_CAPTURE },
  { "max-conns", required_argument, NULL, O_MAXCONNS },
  { "idle-timeout", required_argument, NULL, O_IDLE },
  { "connect-timeout", required_argument, NULL, O_CONNECT },
  { "head-timeout", required_argument, NULL, O_HEAD },
  { "handshake-timeout", required_argument, NULL, O_HANDSHAKE },
  { "max-header-bytes", required_argument, NULL, O_MAXHDR },
  { "write-queue-bytes", required_argument, NULL, O_WQUEUE },
  { "sandbox-queue-bytes", required_argument, NULL, O_SBQUEUE },
  { "queue-bytes", required_argument, NULL, O_QUEUE },
  { "dns-max-names", required_argument, NULL, O_DNSNAMES },
  { "drain-timeout", required_argument, NULL, O_DRAIN },
  { "leaf-cache", required_argument, NULL, O_LEAF },
  { "busy-poll", required_argument, NULL, O_BUSYPOLL },
  { "log-interval", required_argument, NULL, O_LOGINTERVAL },
  { "verbose", no_argument, NULL, 'v' },
  { NULL, 0, NULL, 0 },
};

void proxy_common_opts_init(struct proxy_common_opts *o)
{
  memset(o, 0, sizeof(*o));
  proxy_limits_default(&o->limits);
  o->capture = NETNS_CAPTURE_REDIRECT;
}

static int number(const char *prog, const char *opt, const char *s, uint64_t min,
                  uint64_t max, uint64_t *out)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
    fprintf(stderr, "%s: --%s: \"%s\" is not a number from %llu to %llu\n", prog, opt, s,
            (unsigned long long)min, (unsigned long long)max);
    return -EINVAL;
  }
  *out = v;
  return 0;
}

int proxy_common_option(const char *prog, int c, const char *arg, struct proxy_common_opts *o)
{
  struct proxy_limits *l = &o->limits;
  uint64_t v = 0;

  switch (c) {
  case 'v':
    o->verbose++;
    return 1;
  case O_UPCA:
    if (o->nupstream_ca == PROXY_MAX_UPSTREAM_CA) {
      fprintf(stderr, "%s: at most %d --upstream-ca files\n", prog, PROXY_MAX_UPSTREAM_CA);
      return -EINVAL;
    }
    o->upstream_ca[o->nupstream_ca++] = arg;
    return 1;
  case O_CAPTURE:
    if (strcmp(arg, "redirect") == 0) {
      o->capture = NETNS_CAPTURE_REDIRECT;
    } else if (strcmp(arg, "tproxy") == 0) {
      o->capture = NETNS_CAPTURE_TPROXY;
    } else {
      fprintf(stderr, "%s: --capture: \"%s\" is neither redirect nor tproxy\n", prog, arg);
      return -EINVAL;
    }
    return 1;
  case O_MAXCONNS:
    if (number(prog, "max-conns", arg, 1, 1000000, &v) != 0)
      return -EINVAL;
    l->max_conns = (unsigned)v;
    return 1;
  case O_IDLE:
    if (number(prog, "idle-timeout", arg, 1, 86400, &v) != 0)
      return -EINVAL;
    l->idle_ms = v * 1000;
    return 1;
  case O_CONNECT:
    if (number(prog, "connect-timeout", arg, 1, 3600, &v) != 0)
      return -EINVAL;
    l->connect_ms = v * 1000;
    return 1;
  case O_HEAD:
    if (number(prog, "head-timeout", arg, 1, 3600, &v) != 0)
      return -EINVAL;
    l->head_ms = v * 1000;
    return 1;
  case O_HANDSHAKE:
    if (number(prog, "handshake-timeout", arg, 1, 3600, &v) != 0)
      return -EINVAL;
    l->handshake_ms = v * 1000;
    return 1;
  case O_MAXHDR:
    if (number(prog, "max-header-bytes", arg, 1024, 1u << 20, &v) != 0)
      return -EINVAL;
    l->max_header_bytes = (size_t)v;
    return 1;
  case O_WQUEUE:
    if (number(prog, "write-queue-bytes", arg, 4096, 64u << 20, &v) != 0)
      return -EINVAL;
    l->write_queue_max = (size_t)v;
    return 1;
  case O_SBQUEUE:
    if (number(prog, "sandbox-queue-bytes", arg, 1u << 20, 1u << 30, &v) != 0)
      return -EINVAL;
    l->sandbox_queue_max = (size_t)v;
    return 1;
  case O_QUEUE:
    /* Below --sandbox-queue-bytes it is accepted: it then binds a sandbox first. */
    if (number(prog, "queue-bytes", arg, 1u << 20,
               sizeof(size_t) >= 8 ? (uint64_t)1 << 40 : 1u << 30, &v) != 0)
      return -EINVAL;
    l->total_queue_max = (size_t)v;
    return 1;
  case O_DNSNAMES:
    if (number(prog, "dns-max-names", arg, 16, 131070, &v) != 0)
      return -EINVAL;
    l->dns_max_names = (size_t)v;
    return 1;
  case O_DRAIN:
    if (number(prog, "drain-timeout", arg, 0, 3600, &v) != 0)
      return -EINVAL;
    l->drain_ms = v * 1000;
    return 1;
  case O_LEAF:
    if (number(prog, "leaf-cache", arg, 1, 1000000, &v) != 0)
      return -EINVAL;
    o->leaf_cache = (size_t)v;
    return 1;
  case O_BUSYPOLL:
    if (number(prog, "busy-poll", arg, 0, 1000000, &v) != 0)
      return -EINVAL;
    o->busy_poll_us = (unsigned)v;
    return 1;
  case O_LOGINTERVAL:
    if (number(prog, "log-interval", arg, 0, 86400, &v) != 0)
      return -EINVAL;
    l->audit_interval_ms = v * 1000;
    return 1;
  default:
    return 0;
  }
}

int proxy_options_merge(const struct option *own, struct option *out, size_t cap)
{
  size_t n = 0, i;

  while (own[n].name != NULL)
    n++;
  if (n + PROXY_COMMON_OPTIONS + 1 > cap)
    return -ENOSPC;
  memcpy(out, own, n * sizeof(*own));
  for (i = 0; i <= PROXY_COMMON_OPTIONS; i++)
    out[n + i] = proxy_common_options[i];
  return 0;
}

void proxy_common_usage(FILE *f)
{
  fprintf(f,
    "  --upstream-ca FILE     also trust this CA (PEM) for upstream TLS; repeatable\n"
    "  --capture MODE         forwarded traffic: redirect (default) or tproxy\n"
    "  --max-conns N          concurrent connections per sandbox (default 4096)\n"
    "  --idle-timeout SEC     close connections with no byte either way this long; a\n"
    "                         request whose answer has not begun gets 504 (default 300)\n"
    "  --connect-timeout SEC  upstream resolution, connect and TLS handshake (default\n"
    "                         10); a name's addresses are raced: the next one starts\n"
    "                         beside those still connecting every 250 ms, or when one\n"
    "                         fails\n"
    "  --head-timeout SEC     time to send a request head (default 30)\n"
    "  --handshake-timeout SEC  TLS handshake with the sandbox (default 10)\n"
    "  --max-header-bytes N   request head limit; larger heads get 431 (default 65536)\n"
    "  --write-queue-bytes N  bytes queued toward one side before the other is no longer\n"
    "                         read (backpressure; default 262144)\n"
    "  --sandbox-queue-bytes N  bytes queued on all of a sandbox's connections before\n"
    "                         none of them is read (default 67108864)\n"
    "  --queue-bytes N        bytes queued on all sandboxes' connections together before\n"
    "                         each is read a TLS record at a time until half drains\n"
    "                         (default 1073741824; below --sandbox-queue-bytes it\n"
    "                         binds each sandbox first)\n"
    "  --dns-max-names N      synthetic names per sandbox (default 16384)\n"
    "  --drain-timeout SEC    detach/stop: connections get this long (default 5)\n"
    "  --leaf-cache N         certificates kept per sandbox (default 1024)\n"
    "  --busy-poll USEC       after a read, poll without sleeping for this long: lower\n"
    "                         latency for the CPU it spins (default 0: off)\n"
    "  --log-interval SEC     with --log, a record of each connection still open this\n"
    "                         long, and again each SEC after (default 60; 0: a\n"
    "                         connection's record only when it ends)\n"
    "  -v, --verbose          more log output (twice for debug)\n");
}

void proxy_common_log_level(const struct proxy_common_opts *o, int quiet_level)
{
  int level = quiet_level + o->verbose;

  if (level > PROXY_LOG_DEBUG)
    level = PROXY_LOG_DEBUG;
  proxy_log_set_level((enum proxy_log_level)level);
}

/*
 * A status of 0 with the output lost (a full disk under `ctl ca NAME > ca.pem`, a
 * closed descriptor, a CNI runtime's pipe) would have the caller use an empty or cut
 * result.
 */
int proxy_finish_output(const char *who, int ret)
{
  int failed;

  errno = 0;
  failed = fflush(stdout) != 0;
  failed |= ferror(stdout) != 0;
  if (!failed || ret != 0)
    return ret;
  fprintf(stderr, "%s: cannot write to standard output: %s\n", who,
          errno != 0 ? strerror(errno) : "write error");
  return 1;
}
