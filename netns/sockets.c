/*
 * The sockets of one sandbox, created inside its namespace (from netns_run) and then
 * served by the host-side event loop: a socket stays in the namespace it was created
 * in, whichever thread or process uses it later.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "netns/netns_internal.h"

#define LISTEN_BACKLOG 4096
/* Attempts at a port free for both IPv4 and IPv6 when the caller lets us choose. */
#define PORT_ATTEMPTS 16

union addr {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
};

static socklen_t addr_set(union addr *a, int family, const char *ip, uint16_t port)
{
  memset(a, 0, sizeof(*a));
  if (family == AF_INET) {
    a->in4.sin_family = AF_INET;
    a->in4.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a->in4.sin_addr);
    return sizeof(a->in4);
  }
  a->in6.sin6_family = AF_INET6;
  a->in6.sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &a->in6.sin6_addr);
  return sizeof(a->in6);
}

struct sock_spec {
  int family;
  int type;          /* SOCK_STREAM (listening) or SOCK_DGRAM */
  const char *ip;    /* numeric address to bind */
  bool transparent;  /* IP_TRANSPARENT / IPV6_TRANSPARENT, for TPROXY */
  const char *what;  /* for errors: "proxy listener" */
  const char *taken; /* for errors: who else may hold a fixed address, or NULL */
};

/* Creates, binds (and for streams, listens on) one socket; *port 0 binds any port and
 * returns the chosen one. Returns the fd or a negative errno, with err set. */
static int open_socket(const struct sock_spec *s, uint16_t *port, char *err, size_t errsz)
{
  const char *proto = s->type == SOCK_STREAM ? "tcp" : "udp";
  const char *step;
  union addr a;
  socklen_t len;
  int one = 1;
  int mark = NETNS_SOCK_MARK;
  int fd, ret;

  fd = socket(s->family, s->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    ret = -errno;
    step = "socket";
    goto fail;
  }
  /* What the rules let through to and from a guest: with the daemon killed, its
   * address and ports are free, and a process of the sandbox's that binds them must
   * get no guest's or peer's traffic, nor answer it. */
  step = "set SO_MARK (needs CAP_NET_ADMIN)";
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
    goto fail_errno;
  step = "set options";
  if (s->type == SOCK_STREAM &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
    goto fail_errno;
  /* Separate IPv4 and IPv6 sockets on the same port. */
  if (s->family == AF_INET6 &&
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
    goto fail_errno;
  if (s->transparent) {
    step = "set IP_TRANSPARENT (needs CAP_NET_ADMIN or CAP_NET_RAW)";
    if (s->family == AF_INET && setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) != 0)
      goto fail_errno;
    if (s->family == AF_INET6 &&
        setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) != 0)
      goto fail_errno;
  }
  step = "bind";
  len = addr_set(&a, s->family, s->ip, *port);
  if (bind(fd, &a.sa, len) != 0)
    goto fail_errno;
  step = "getsockname";
  len = sizeof(a);
  if (getsockname(fd, &a.sa, &len) != 0)
    goto fail_errno;
  *port = ntohs(s->family == AF_INET ? a.in4.sin_port : a.in6.sin6_port);
  step = "listen";
  if (s->type == SOCK_STREAM && listen(fd, LISTEN_BACKLOG) != 0)
    goto fail_errno;
  return fd;

fail_errno:
  ret = -errno;
fail:
  if (fd >= 0)
    close(fd);
  netns_errf(err, errsz, "%s %s %s%s%s:%u (%s): %s%s%s", step, proto,
             s->family == AF_INET6 ? "[" : "", s->ip, s->family == AF_INET6 ? "]" : "", *port,
             s->what, strerror(-ret), ret == -EADDRINUSE && s->taken ? "; " : "",
             ret == -EADDRINUSE && s->taken ? s->taken : "");
  return ret;
}

/* TCP listeners on ip4:P and ip6:P with the same P. *port 0: the kernel picks P for
 * IPv4 and IPv6 takes the same; if another socket holds it for IPv6, try again. ip6
 * NULL: the IPv4 listener only (*fd6 is left -1). */
static int open_pair(const char *ip4, const char *ip6, bool transparent, const char *what,
                     uint16_t *port, int *fd4, int *fd6, char *err, size_t errsz)
{
  struct sock_spec s4 = { AF_INET, SOCK_STREAM, ip4, transparent, what, NULL };
  struct sock_spec s6 = { AF_INET6, SOCK_STREAM, ip6, transparent, what, NULL };
  bool pick = *port == 0;
  int attempt;

  for (attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    uint16_t p = pick ? 0 : *port;

    *fd4 = open_socket(&s4, &p, err, errsz);
    if (*fd4 < 0)
      return *fd4;
    if (ip6 == NULL) {
      *fd6 = -1;
      *port = p;
      return 0;
    }
    *fd6 = open_socket(&s6, &p, err, errsz);
    if (*fd6 >= 0) {
      *port = p;
      return 0;
    }
    close(*fd4);
    *fd4 = -1;
    if (!pick || *fd6 != -EADDRINUSE)
      return *fd6;
  }
  netns_errf(err, errsz, "no port free for both 0.0.0.0 and [::] after %d attempts (%s)",
             PORT_ATTEMPTS, what);
  *fd6 = -1;
  return -EADDRINUSE;
}

int netns_sockets(struct netns_rules_opts *o, struct netns_fds *out, char *err,
                  size_t errsz)
{
  static const char taken[] =
      "another authproxy (a daemon or a jail) serves this namespace, or a DNS server "
      "runs in it";
  struct sock_spec dns[] = {
    { AF_INET, SOCK_DGRAM, NETNS_DNS_ADDR4, false, "DNS responder", taken },
    { AF_INET, SOCK_STREAM, NETNS_DNS_ADDR4, false, "DNS responder", taken },
    { AF_INET6, SOCK_DGRAM, "::1", false, "DNS responder", taken },
    { AF_INET6, SOCK_STREAM, "::1", false, "DNS responder", taken },
  };
  struct netns_fds f;
  int *dns_fds[] = { &f.dns_udp4, &f.dns_tcp4, &f.dns_udp6, &f.dns_tcp6 };
  uint16_t proxy_port, tproxy_port = 0, dns_port;
  const char *ip6;
  size_t i;
  int ret;

  if (o == NULL || out == NULL)
    return -EINVAL;
  if (o->capture != NETNS_CAPTURE_REDIRECT && o->capture != NETNS_CAPTURE_TPROXY) {
    netns_errf(err, errsz, "unknown capture mode %d", (int)o->capture);
    return -EINVAL;
  }
  netns_fds_init(&f);
  netns_fds_init(out);
  proxy_port = o->proxy_port;
  dns_port = o->dns_port != 0 ? o->dns_port : NETNS_DNS_PORT;

  /* IPv6 disabled: no IPv6 listener. [::] could be bound, but the namespace has no
   * IPv6 to capture, and ::1, where the responder listens, does not exist. */
  ip6 = o->ipv4_only ? NULL : "::";
  ret = open_pair("0.0.0.0", ip6, false, "proxy listener", &proxy_port, &f.tcp4, &f.tcp6,
                  err, errsz);
  if (ret != 0)
    goto fail;
  if (o->capture == NETNS_CAPTURE_TPROXY) {
    tproxy_port = o->tproxy_port;
    ret = open_pair("0.0.0.0", ip6, true, "transparent proxy listener", &tproxy_port,
                    &f.tproxy4, &f.tproxy6, err, errsz);
    if (ret != 0)
      goto fail;
  }
  for (i = 0; i < sizeof(dns) / sizeof(dns[0]); i++) {
    uint16_t p = dns_port;

    if (dns[i].family == AF_INET6 && o->ipv4_only)
      continue;
    ret = open_socket(&dns[i], &p, err, errsz);
    if (ret < 0)
      goto fail;
    *dns_fds[i] = ret;
  }

  o->proxy_port = proxy_port;
  o->dns_port = dns_port;
  if (o->capture == NETNS_CAPTURE_TPROXY)
    o->tproxy_port = tproxy_port;
  *out = f;
  return 0;
fail:
  netns_fds_close(&f);
  return ret;
}
