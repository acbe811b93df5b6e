/*
 * splicebench: is splice(2) worth it for authproxy's tunnels? A TCP relay that
 * moves bytes the way the proxy does (read into one buffer, write it on) or through
 * a pipe with splice(2), measured against a direct connection in the same run.
 *
 *   splicebench source PORT MIB          serve MIB MiB of zeros to each connection
 *   splicebench relay PORT UPPORT MODE   relay PORT -> UPPORT; MODE copy or splice
 *   splicebench sink PORT N              download N times from PORT; prints MiB/s each
 *
 * Everything listens and connects on 127.0.0.1; scripts/bench/splice.sh runs it in a
 * namespace of its own. The relay serves one connection at a time, downstream only
 * (what a tunnelled download exercises), with the proxy's read size (256 KiB) and,
 * for splice, a pipe enlarged to PIPE_BYTES (default 1 MiB).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_BYTES (256 * 1024)
#ifndef PIPE_BYTES /* the splicing relay's pipe size; splice.sh sets it from PIPE_KIB */
#define PIPE_BYTES (1024 * 1024)
#endif

static void die(const char *what)
{
  fprintf(stderr, "splicebench: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Loopback paths differ from real ones; the benchmark's routes all use cubic. */
static int tcp_socket(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    die("socket");
  setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "cubic", 5);
  return fd;
}

static struct sockaddr_in loopback(int port)
{
  struct sockaddr_in a;

  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int listen_on(int port)
{
  struct sockaddr_in a = loopback(port);
  int fd = tcp_socket(), one = 1;

  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16) != 0)
    die("listen");
  return fd;
}

static int connect_to(int port)
{
  struct sockaddr_in a = loopback(port);
  int fd = tcp_socket();

  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
    die("connect");
  return fd;
}

static void source(int port, long mib)
{
  static char buf[BUF_BYTES];
  int l = listen_on(port);

  for (;;) {
    long left = mib << 20;
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);

    if (c < 0)
      continue;
    while (left > 0) {
      ssize_t n = write(c, buf, left < BUF_BYTES ? (size_t)left : BUF_BYTES);

      if (n <= 0)
        break;
      left -= n;
    }
    close(c);
  }
}

/* Waits until fd is ready for events (poll, as the proxy's epoll loop would). */
static void wait_fd(int fd, short events)
{
  struct pollfd p = { .fd = fd, .events = events };

  while (poll(&p, 1, -1) < 0 && errno == EINTR)
    ;
}

/* After a failed read, write or splice: 1 once fd is ready again (EAGAIN), 0 to stop. */
static int retry(int fd, short events)
{
  if (errno != EAGAIN)
    return 0;
  wait_fd(fd, events);
  return 1;
}

static void relay_copy(int in, int out)
{
  static char buf[BUF_BYTES];

  for (;;) {
    ssize_t n = read(in, buf, sizeof(buf)), off = 0;

    if (n == 0)
      return;
    if (n < 0) {
      if (!retry(in, POLLIN))
        return;
      continue;
    }
    while (off < n) {
      ssize_t m = write(out, buf + off, (size_t)(n - off));

      if (m < 0) {
        if (!retry(out, POLLOUT))
          return;
        continue;
      }
      off += m;
    }
  }
}

static void relay_splice(int in, int out)
{
  int p[2];
  size_t held = 0;

  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
    die("pipe2");
  fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES);
  for (;;) {
    ssize_t n = splice(in, NULL, p[1], NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

    if (n == 0)
      break;
    if (n < 0) {
      if (!retry(in, POLLIN))
        break;
      continue;
    }
    held += (size_t)n;
    while (held > 0) {
      ssize_t m = splice(p[0], NULL, out, NULL, held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

      if (m < 0) {
        if (!retry(out, POLLOUT))
          goto out;
        continue;
      }
      held -= (size_t)m;
    }
  }
out:
  close(p[0]);
  close(p[1]);
}

static void relay(int port, int upport, int use_splice)
{
  int l = listen_on(port);

  for (;;) {
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC), u;

    if (c < 0)
      continue;
    u = connect_to(upport);
    fcntl(c, F_SETFL, O_NONBLOCK);
    fcntl(u, F_SETFL, O_NONBLOCK);
    if (use_splice)
      relay_splice(u, c);
    else
      relay_copy(u, c);
    close(u);
    close(c);
  }
}

static void sink(int port, int n)
{
  static char buf[BUF_BYTES];
  int i;

  for (i = 0; i < n; i++) {
    struct timespec t0, t1;
    long long total = 0;
    ssize_t r;
    int fd;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = connect_to(port);
    while ((r = read(fd, buf, sizeof(buf))) > 0)
      total += r;
    close(fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.0f\n", (double)total / 1048576.0 /
                         ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9));
  }
}

int main(int argc, char **argv)
{
  if (argc == 4 && strcmp(argv[1], "source") == 0)
    source(atoi(argv[2]), atol(argv[3]));
  else if (argc == 5 && strcmp(argv[1], "relay") == 0 &&
           (strcmp(argv[4], "copy") == 0 || strcmp(argv[4], "splice") == 0))
    relay(atoi(argv[2]), atoi(argv[3]), strcmp(argv[4], "splice") == 0);
  else if (argc == 4 && strcmp(argv[1], "sink") == 0)
    sink(atoi(argv[2]), atoi(argv[3]));
  else {
    fprintf(stderr, "usage: splicebench source PORT MIB | relay PORT UPPORT copy|splice | "
                    "sink PORT N\n");
    return 2;
  }
  return 0;
}
