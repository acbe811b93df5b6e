/*
 * netns_tool: drives netns/ for tests/integration/test_netns_*.sh. Not installed.
 *
 *   netns_tool attach NSPATH [--tproxy] [--proxy-port P] [--tproxy-port T] [--dns-port D]
 *       netns_attach, print "ready proxy_port=P tproxy_port=T dns_port=D ipv4_only=0|1",
 *       then serve the sockets until SIGTERM (or --lifetime seconds, default 60): every
 *       connection accepted by the proxy listener is answered "orig ADDR:PORT\n" with
 *       the original destination (SO_ORIGINAL_DST), by the transparent listener
 *       "tproxy ADDR:PORT\n" (its local address), a DNS datagram "dns " + the query, a
 *       DNS TCP connection "dns-tcp\n". Each event is also printed.
 *   netns_tool install NSPATH [--tproxy] --proxy-port P [--tproxy-port T] [--dns-port D]
 *   netns_tool detach NSPATH | remove NSPATH
 *   netns_tool reject NSPATH
 *       sends the rule set plus one rule the kernel must refuse (a redirect in a filter
 *       chain) and prints the error; exit 0 if the kernel refused it.
 *   netns_tool noperm NSPATH
 *       netns_install_rules on a thread without CAP_NET_ADMIN and prints the error;
 *       exit 0 if the kernel refused the batch.
 *   netns_tool selftest
 *       netns_open / netns_create / netns_run checks that need root but no topology.
 *   netns_tool tcp ADDR PORT | udp ADDR PORT MSG | ping ADDR
 *       clients, run inside a namespace: print the answer; exit 1 without one (each
 *       wait bounded: 1.5 s, or NETNS_TOOL_WAIT_MS).
 *   netns_tool peer PORT
 *       TCP and UDP server on [::]:PORT (both families): answers "peer\n" and prints
 *       "contact tcp|udp FROM" for everything that reaches it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>

#include "netns/netns.h"
#include "netns/netns_internal.h"

/* Client waits; NETNS_TOOL_WAIT_MS shortens them for checks that expect silence. */
#define WAIT_MS_DEFAULT 1500

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
  (void)sig;
  stop = 1;
}

static int usage(void)
{
  fprintf(stderr, "usage: see the comment at the top of tests/tools/netns_tool.c\n");
  return 2;
}

union addr {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
  struct sockaddr_storage ss;
};

static const char *addr_str(const union addr *a, char *buf, size_t len)
{
  char ip[INET6_ADDRSTRLEN] = "?";

  if (a->sa.sa_family == AF_INET) {
    inet_ntop(AF_INET, &a->in4.sin_addr, ip, sizeof(ip));
    snprintf(buf, len, "%s:%u", ip, ntohs(a->in4.sin_port));
  } else {
    inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip));
    snprintf(buf, len, "[%s]:%u", ip, ntohs(a->in6.sin6_port));
  }
  return buf;
}

static socklen_t addr_parse(union addr *a, const char *ip, const char *port)
{
  long p = strtol(port, NULL, 10);

  memset(a, 0, sizeof(*a));
  if (p < 0 || p > 65535)
    return 0;
  if (inet_pton(AF_INET, ip, &a->in4.sin_addr) == 1) {
    a->in4.sin_family = AF_INET;
    a->in4.sin_port = htons((uint16_t)p);
    return sizeof(a->in4);
  }
  if (inet_pton(AF_INET6, ip, &a->in6.sin6_addr) == 1) {
    a->in6.sin6_family = AF_INET6;
    a->in6.sin6_port = htons((uint16_t)p);
    return sizeof(a->in6);
  }
  return 0;
}

struct opts {
  struct netns_rules_opts r;
  unsigned lifetime;
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
  int i;

  memset(o, 0, sizeof(*o));
  o->r.dns_port = NETNS_DNS_PORT;
  o->r.capture = NETNS_CAPTURE_REDIRECT;
  o->lifetime = 60;
  for (i = 0; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(argv[i], "--tproxy") == 0) {
      o->r.capture = NETNS_CAPTURE_TPROXY;
      continue;
    }
    if (v == NULL)
      return -1;
    if (strcmp(argv[i], "--proxy-port") == 0)
      o->r.proxy_port = (uint16_t)atoi(v);
    else if (strcmp(argv[i], "--tproxy-port") == 0)
      o->r.tproxy_port = (uint16_t)atoi(v);
    else if (strcmp(argv[i], "--dns-port") == 0)
      o->r.dns_port = (uint16_t)atoi(v);
    else if (strcmp(argv[i], "--lifetime") == 0)
      o->lifetime = (unsigned)atoi(v);
    else
      return -1;
    i++;
  }
  return 0;
}

static int open_ns(const char *path)
{
  int fd = netns_open(path);

  if (fd < 0)
    fprintf(stderr, "netns_open %s: %s\n", path, strerror(-fd));
  return fd;
}

/* ---- attach: serve the sockets ---- */

static void answer_stream(int lfd, const char *kind)
{
  union addr a;
  socklen_t len = sizeof(a);
  char line[128], where[INET6_ADDRSTRLEN + 16];
  int fd, n;

  fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0)
    return;
  if (strcmp(kind, "orig") == 0) {
    /* Conntrack (and so the original destination) lives in the sandbox's namespace;
     * the accepted socket belongs to it. */
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &a, &len) != 0) {
      len = sizeof(a);
      if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &a, &len) != 0)
        memset(&a, 0, sizeof(a));
    }
  } else if (getsockname(fd, &a.sa, &len) != 0) {
    memset(&a, 0, sizeof(a));
  }
  if (strcmp(kind, "dns-tcp") == 0)
    n = snprintf(line, sizeof(line), "dns-tcp\n");
  else
    n = snprintf(line, sizeof(line), "%s %s\n", kind, addr_str(&a, where, sizeof(where)));
  if (write(fd, line, (size_t)n) != n)
    perror("write");
  printf("served %s", line);
  fflush(stdout);
  close(fd);
}

static void answer_dgram(int fd)
{
  char buf[512], out[600];
  union addr from;
  socklen_t len = sizeof(from);
  ssize_t n;

  n = recvfrom(fd, buf, sizeof(buf) - 1, 0, &from.sa, &len);
  if (n < 0)
    return;
  buf[n] = '\0';
  n = snprintf(out, sizeof(out), "dns %s", buf);
  sendto(fd, out, (size_t)n, 0, &from.sa, len);
  printf("served dns %s\n", buf);
  fflush(stdout);
}

static int cmd_attach(const char *path, struct opts *o)
{
  struct netns_fds f;
  char err[512] = "";
  int nsfd, ret;
  time_t end;

  nsfd = open_ns(path);
  if (nsfd < 0)
    return 1;
  ret = netns_attach(nsfd, &o->r, &f, err, sizeof(err));
  close(nsfd);
  if (ret != 0) {
    fprintf(stderr, "attach: %s (%s)\n", err, strerror(-ret));
    return 1;
  }
  printf("ready proxy_port=%u tproxy_port=%u dns_port=%u ipv4_only=%d\n", o->r.proxy_port,
         o->r.tproxy_port, o->r.dns_port, o->r.ipv4_only);
  fflush(stdout);

  end = time(NULL) + (time_t)o->lifetime;
  while (!stop && time(NULL) < end) {
    struct pollfd p[] = {
      { .fd = f.tcp4, .events = POLLIN },     { .fd = f.tcp6, .events = POLLIN },
      { .fd = f.tproxy4, .events = POLLIN },  { .fd = f.tproxy6, .events = POLLIN },
      { .fd = f.dns_udp4, .events = POLLIN }, { .fd = f.dns_udp6, .events = POLLIN },
      { .fd = f.dns_tcp4, .events = POLLIN }, { .fd = f.dns_tcp6, .events = POLLIN },
    };
    static const char *const kinds[] = { "orig", "orig", "tproxy", "tproxy",
                                         NULL, NULL, "dns-tcp", "dns-tcp" };
    size_t i;

    if (poll(p, sizeof(p) / sizeof(p[0]), 200) <= 0)
      continue;
    for (i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
      if (!(p[i].revents & POLLIN))
        continue;
      if (kinds[i] != NULL)
        answer_stream(p[i].fd, kinds[i]);
      else
        answer_dgram(p[i].fd);
    }
  }
  netns_fds_close(&f);
  return 0;
}

/* ---- install / detach / remove / reject ---- */

struct in_ns {
  const struct netns_rules_opts *r;
  char err[512];
};

static int install_main(void *arg)
{
  struct in_ns *c = arg;

  return netns_install_rules(c->r, c->err, sizeof(c->err));
}

static int remove_main(void *arg)
{
  struct in_ns *c = arg;

  return netns_remove_rules(c->err, sizeof(c->err));
}

/* The real rule set followed by `redirect to :1` in filter_output, which the kernel
 * refuses (NAT statements belong in nat chains). */
static int reject_main(void *arg)
{
  struct in_ns *c = arg;
  struct netns_rules_opts o = { .proxy_port = 15001, .dns_port = 53 };
  const char *names[NETNS_BATCH_MAX_MSGS];
  static char buf[NETNS_BATCH_LIMIT * 2];
  struct mnl_nlmsg_batch *b;
  struct nftnl_rule *r;
  struct nftnl_expr *e;
  struct nlmsghdr *nlh;
  uint32_t seq = 1000, first;
  uint16_t port = htons(1);
  int n, ret;

  b = mnl_nlmsg_batch_start(buf, NETNS_BATCH_LIMIT);
  nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
  mnl_nlmsg_batch_next(b);
  first = seq;
  n = netns_build_rules(&o, b, &seq, names, NETNS_BATCH_MAX_MSGS - 1);
  if (n < 0) {
    snprintf(c->err, sizeof(c->err), "build: %s", strerror(-n));
    mnl_nlmsg_batch_stop(b);
    return n;
  }
  r = nftnl_rule_alloc();
  nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, NETNS_TABLE);
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, "filter_output");
  e = nftnl_expr_alloc("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
  nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &port, sizeof(port));
  nftnl_rule_add_expr(r, e);
  e = nftnl_expr_alloc("redir");
  nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
  nftnl_rule_add_expr(r, e);
  nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWRULE, NFPROTO_INET,
                              NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq++);
  nftnl_rule_nlmsg_build_payload(nlh, r);
  nftnl_rule_free(r);
  mnl_nlmsg_batch_next(b);
  names[n++] = "rule 99 of chain filter_output (test: redirect in a filter chain)";
  nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
  mnl_nlmsg_batch_next(b);
  ret = netns_nft_talk(mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b), first, names,
                       (size_t)n, c->err, sizeof(c->err));
  mnl_nlmsg_batch_stop(b);
  return ret;
}

/* netns_install_rules after this thread (capabilities are per thread) dropped
 * CAP_NET_ADMIN: the kernel refuses the whole batch. */
static int noperm_main(void *arg)
{
  struct in_ns *c = arg;
  struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
  struct __user_cap_data_struct d[2];

  if (syscall(SYS_capget, &h, d) != 0)
    return -errno;
  d[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
  if (syscall(SYS_capset, &h, d) != 0)
    return -errno;
  return netns_install_rules(c->r, c->err, sizeof(c->err));
}

static int cmd_in_ns(const char *cmd, const char *path, struct opts *o)
{
  struct in_ns c = { .r = &o->r };
  int nsfd, ret;

  nsfd = open_ns(path);
  if (nsfd < 0)
    return 1;
  if (strcmp(cmd, "install") == 0)
    ret = netns_run(nsfd, install_main, &c);
  else if (strcmp(cmd, "remove") == 0)
    ret = netns_run(nsfd, remove_main, &c);
  else if (strcmp(cmd, "reject") == 0)
    ret = netns_run(nsfd, reject_main, &c);
  else if (strcmp(cmd, "noperm") == 0)
    ret = netns_run(nsfd, noperm_main, &c);
  else
    ret = netns_detach(nsfd, c.err, sizeof(c.err));
  close(nsfd);
  if (strcmp(cmd, "reject") == 0 || strcmp(cmd, "noperm") == 0) {
    printf("%s\n", c.err);
    return ret < 0 ? 0 : 1;
  }
  if (ret != 0) {
    fprintf(stderr, "%s: %s (%s)\n", cmd, c.err, strerror(-ret));
    return 1;
  }
  return 0;
}

/* ---- selftest ---- */

static int check(bool ok, const char *what)
{
  printf("%s %s\n", ok ? "ok" : "FAIL", what);
  return ok ? 0 : 1;
}

static int ino_of(const char *path, ino_t *ino)
{
  struct stat st;

  if (stat(path, &st) != 0)
    return -errno;
  *ino = st.st_ino;
  return 0;
}

static int probe_main(void *arg)
{
  ino_t *ino = arg;

  return ino_of("/proc/thread-self/ns/net", ino);
}

static int setup_main(void *arg)
{
  char *err = arg;
  int ipv4_only, ret;

  ret = netns_setup_links(&ipv4_only, err, 256);
  /* A fresh namespace has IPv6 on lo (the host's kernel runs it). */
  if (ret == 0 && ipv4_only) {
    snprintf(err, 256, "IPv6 taken for disabled in a fresh namespace");
    return -EPROTO;
  }
  return ret;
}

/* Sockets this process holds. */
static int count_sockets(void)
{
  char path[300], link[64];
  struct dirent *d;
  DIR *dir = opendir("/proc/self/fd");
  int n = 0;
  ssize_t len;

  if (dir == NULL)
    return -1;
  while ((d = readdir(dir)) != NULL) {
    snprintf(path, sizeof(path), "/proc/self/fd/%s", d->d_name);
    len = readlink(path, link, sizeof(link) - 1);
    if (len > 0) {
      link[len] = '\0';
      n += strncmp(link, "socket:", 7) == 0;
    }
  }
  closedir(dir);
  return n;
}

/* 1 if a thread of this process is named name. */
static bool have_thread(const char *name)
{
  char path[300], comm[32];
  struct dirent *d;
  DIR *dir = opendir("/proc/self/task");
  bool found = false;
  FILE *f;

  if (dir == NULL)
    return false;
  while (!found && (d = readdir(dir)) != NULL) {
    snprintf(path, sizeof(path), "/proc/self/task/%s/comm", d->d_name);
    f = fopen(path, "r");
    if (f == NULL)
      continue;
    if (fgets(comm, sizeof(comm), f) != NULL) {
      comm[strcspn(comm, "\n")] = '\0';
      found = strcmp(comm, name) == 0;
    }
    fclose(f);
  }
  closedir(dir);
  return found;
}

/* A child forked while the closer runs installs rules too (its own closer thread;
 * a lock held across fork would hang it, hence the alarm) and exits 0. */
#ifdef __SANITIZE_THREAD__
/* ThreadSanitizer cannot follow a child of a threaded process that starts threads. */
static int closer_fork_selftest(int nsfd)
{
  (void)nsfd;
  printf("skip a forked child installs rules with a closer thread of its own "
         "(ThreadSanitizer)\n");
  return 0;
}
#else
static int closer_fork_selftest(int nsfd)
{
  struct netns_rules_opts r = { .proxy_port = 15001, .dns_port = 53 };
  struct in_ns c = { .r = &r };
  int i, status = -1;
  pid_t pid = fork();

  if (pid == 0) {
    alarm(20);
    for (i = 0; i < 50; i++)
      if (netns_run(nsfd, install_main, &c) != 0)
        _exit(1);
    _exit(have_thread(NETNS_NFT_CLOSER_NAME) ? 0 : 2);
  }
  if (pid > 0)
    waitpid(pid, &status, 0);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    printf("  child status %#x\n", status);
  return check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "a forked child installs rules with a closer thread of its own");
}
#endif

/* Rules installed many more times than the closer's queue holds: the nf_tables
 * sockets are closed by the closer thread, every one of them, and every install
 * succeeds while they wait. */
static int closer_selftest(int nsfd)
{
  struct netns_rules_opts r = { .proxy_port = 15001, .dns_port = 53 };
  struct in_ns c = { .r = &r };
  int fails = 0, before = count_sockets(), now = -1, i, bad = 0;

  for (i = 0; i < 600; i++)
    if (netns_run(nsfd, install_main, &c) != 0 && bad++ == 0)
      printf("  install %d: %s\n", i, c.err);
  fails += check(bad == 0, "600 rule installs in a row");
  fails += check(have_thread(NETNS_NFT_CLOSER_NAME), "nf_tables sockets closed by the "
                 NETNS_NFT_CLOSER_NAME " thread");
  /* Bounded: 10 s, far above the RCU grace periods the closes can wait for. */
  for (i = 0; i < 1000; i++) {
    now = count_sockets();
    if (now == before)
      break;
    usleep(10 * 1000);
  }
  if (now != before)
    printf("  sockets: %d before, %d after\n", before, now);
  fails += check(now == before && before >= 0, "every nf_tables socket closed");
  fails += closer_fork_selftest(nsfd);
  return fails;
}

static int cmd_selftest(void)
{
  ino_t before = 0, inside = 0, after = 0, created = 0;
  char err[256] = "";
  int fails = 0;
  int fd;

  fd = netns_open("/proc/self/ns/net");
  fails += check(fd >= 0, "netns_open /proc/self/ns/net");
  if (fd >= 0)
    close(fd);
  fails += check(netns_open("/proc/self/ns/uts") == -EINVAL, "netns_open uts ns -> -EINVAL");
  fails += check(netns_open("/proc/self/status") == -EINVAL, "netns_open procfs file -> -EINVAL");
  fails += check(netns_open("/dev/null") == -EINVAL, "netns_open /dev/null -> -EINVAL");
  fails += check(netns_open("/nonexistent/ns") == -ENOENT, "netns_open missing -> -ENOENT");

  ino_of("/proc/thread-self/ns/net", &before);
  fd = netns_create();
  fails += check(fd >= 0, "netns_create");
  if (fd < 0)
    return 1;
  fails += check(netns_run(fd, probe_main, &inside) == 0 && inside != before && inside != 0,
                 "netns_run runs in the other namespace");
  ino_of("/proc/thread-self/ns/net", &after);
  fails += check(after == before, "caller's thread never changes namespace");
  {
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ino_of(path, &created);
    fails += check(created == inside, "netns_create fd refers to that namespace");
  }
  fails += check(netns_run(fd, setup_main, err) == 0, "netns_setup_links in a fresh netns");
  if (err[0] != '\0')
    printf("  %s\n", err);
  fails += check(netns_run(fd, setup_main, err) == 0, "netns_setup_links again (idempotent)");
  fails += check(netns_run(-1, probe_main, &inside) == -EINVAL, "netns_run bad fd -> -EINVAL");
  fails += closer_selftest(fd);
  close(fd);
  return fails ? 1 : 0;
}

/* ---- clients ---- */

static int wait_fd(int fd, short events)
{
  struct pollfd p = { .fd = fd, .events = events };
  const char *env = getenv("NETNS_TOOL_WAIT_MS");
  int ms = env != NULL ? atoi(env) : WAIT_MS_DEFAULT;

  if (ms <= 0 || ms > 10000)
    ms = WAIT_MS_DEFAULT;
  return poll(&p, 1, ms) == 1 ? 0 : -1;
}

static int cmd_tcp(const char *ip, const char *port)
{
  union addr a;
  socklen_t len = addr_parse(&a, ip, port);
  char buf[256];
  int fd, soerr = 0;
  socklen_t sl = sizeof(soerr);
  ssize_t n;

  if (len == 0)
    return usage();
  fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || (connect(fd, &a.sa, len) != 0 && errno != EINPROGRESS)) {
    printf("connect: %s\n", strerror(errno));
    return 1;
  }
  if (wait_fd(fd, POLLOUT) != 0) {
    printf("connect: timeout\n");
    return 1;
  }
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
  if (soerr != 0) {
    printf("connect: %s\n", strerror(soerr));
    return 1;
  }
  if (wait_fd(fd, POLLIN) != 0) {
    printf("read: timeout\n");
    return 1;
  }
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) {
    printf("read: %s\n", n == 0 ? "EOF" : strerror(errno));
    return 1;
  }
  buf[n] = '\0';
  fputs(buf, stdout);
  return 0;
}

static int cmd_udp(const char *ip, const char *port, const char *msg)
{
  union addr a;
  socklen_t len = addr_parse(&a, ip, port);
  char buf[512];
  ssize_t n;
  int fd;

  if (len == 0)
    return usage();
  fd = socket(a.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || sendto(fd, msg, strlen(msg), 0, &a.sa, len) < 0) {
    printf("send: %s\n", strerror(errno));
    return 1;
  }
  if (wait_fd(fd, POLLIN) != 0) {
    printf("recv: timeout\n");
    return 1;
  }
  n = recv(fd, buf, sizeof(buf) - 1, 0);
  close(fd);
  if (n < 0) {
    printf("recv: %s\n", strerror(errno));
    return 1;
  }
  buf[n] = '\0';
  printf("%s\n", buf);
  return 0;
}

static int cmd_ping(const char *ip)
{
  union addr a;
  socklen_t len = addr_parse(&a, ip, "0");
  unsigned char pkt[64] = { 0 }, buf[256];
  bool v6;
  int fd;

  if (len == 0)
    return usage();
  v6 = a.sa.sa_family == AF_INET6;
  fd = socket(a.sa.sa_family, SOCK_RAW | SOCK_CLOEXEC, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
  if (fd < 0) {
    printf("socket: %s\n", strerror(errno));
    return 1;
  }
  if (v6) {
    struct icmp6_hdr *h = (struct icmp6_hdr *)pkt;

    h->icmp6_type = ICMP6_ECHO_REQUEST; /* the kernel fills in the checksum */
    h->icmp6_id = htons(0x4150);
  } else {
    struct icmphdr *h = (struct icmphdr *)pkt;
    uint32_t sum = 0;
    size_t i;

    h->type = ICMP_ECHO;
    h->un.echo.id = htons(0x4150);
    for (i = 0; i < sizeof(pkt); i += 2)
      sum += (uint32_t)(pkt[i] << 8 | pkt[i + 1]);
    while (sum >> 16)
      sum = (sum & 0xffff) + (sum >> 16);
    h->checksum = htons((uint16_t)~sum);
  }
  if (sendto(fd, pkt, sizeof(pkt), 0, &a.sa, len) < 0) {
    printf("send: %s\n", strerror(errno));
    return 1;
  }
  for (;;) {
    ssize_t n;

    if (wait_fd(fd, POLLIN) != 0) {
      printf("no echo reply\n");
      return 1;
    }
    n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      continue;
    /* IPv4 raw sockets see the IP header; IPv6 ones do not. */
    if (v6 ? buf[0] == ICMP6_ECHO_REPLY
           : (n > 20 && (size_t)n > (size_t)(buf[0] & 0xf) * 4 &&
              buf[(buf[0] & 0xf) * 4] == ICMP_ECHOREPLY)) {
      printf("echo reply\n");
      return 0;
    }
  }
}

static int cmd_peer(const char *port, unsigned lifetime)
{
  union addr a;
  socklen_t len = addr_parse(&a, "::", port);
  int t, u, zero = 0, one = 1;
  time_t end = time(NULL) + (time_t)lifetime;

  if (len == 0)
    return usage();
  t = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  u = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (t < 0 || u < 0)
    return 1;
  setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(t, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  setsockopt(u, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(t, &a.sa, len) != 0 || listen(t, 16) != 0 || bind(u, &a.sa, len) != 0) {
    perror("peer: bind");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  while (!stop && time(NULL) < end) {
    struct pollfd p[] = { { .fd = t, .events = POLLIN }, { .fd = u, .events = POLLIN } };
    union addr from;
    socklen_t fl = sizeof(from);
    char buf[512], where[INET6_ADDRSTRLEN + 16];

    if (poll(p, 2, 200) <= 0)
      continue;
    if (p[0].revents & POLLIN) {
      int fd = accept4(t, &from.sa, &fl, SOCK_CLOEXEC);

      if (fd >= 0) {
        printf("contact tcp %s\n", addr_str(&from, where, sizeof(where)));
        if (write(fd, "peer\n", 5) != 5)
          perror("write");
        close(fd);
      }
    }
    if (p[1].revents & POLLIN) {
      fl = sizeof(from);
      if (recvfrom(u, buf, sizeof(buf), 0, &from.sa, &fl) >= 0) {
        printf("contact udp %s\n", addr_str(&from, where, sizeof(where)));
        sendto(u, "peer", 4, 0, &from.sa, fl);
      }
    }
    fflush(stdout);
  }
  return 0;
}

int main(int argc, char **argv)
{
  struct sigaction sa = { .sa_handler = on_signal };
  struct opts o;

  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (argc < 2)
    return usage();
  if (strcmp(argv[1], "selftest") == 0)
    return cmd_selftest();
  if (strcmp(argv[1], "tcp") == 0 && argc == 4)
    return cmd_tcp(argv[2], argv[3]);
  if (strcmp(argv[1], "udp") == 0 && argc == 5)
    return cmd_udp(argv[2], argv[3], argv[4]);
  if (strcmp(argv[1], "ping") == 0 && argc == 3)
    return cmd_ping(argv[2]);
  if (argc < 3 || parse_opts(argc - 3, argv + 3, &o) != 0)
    return usage();
  if (strcmp(argv[1], "peer") == 0)
    return cmd_peer(argv[2], o.lifetime);
  if (strcmp(argv[1], "attach") == 0)
    return cmd_attach(argv[2], &o);
  if (strcmp(argv[1], "install") == 0 || strcmp(argv[1], "detach") == 0 ||
      strcmp(argv[1], "remove") == 0 || strcmp(argv[1], "reject") == 0 ||
      strcmp(argv[1], "noperm") == 0)
    return cmd_in_ns(argv[1], argv[2], &o);
  return usage();
}
