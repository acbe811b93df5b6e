/*
 * netns_open: only network namespace files are accepted. Unprivileged: a process may
 * open its own namespace files. Namespace cookies (the part that enters a namespace
 * runs as root only).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "netns/netns.h"
#include "test.h"

TEST(opens_own_network_namespace)
{
  int fd = netns_open("/proc/self/ns/net");

  ASSERT_GE(fd, 0);
  ASSERT_EQ(close(fd), 0);
  fd = netns_open("/proc/thread-self/ns/net");
  ASSERT_GE(fd, 0);
  ASSERT_EQ(close(fd), 0);
}

TEST(rejects_what_is_not_a_network_namespace)
{
  ASSERT_EQ(netns_open("/proc/self/ns/uts"), -EINVAL);  /* another namespace type */
  ASSERT_EQ(netns_open("/proc/self/ns/mnt"), -EINVAL);
  ASSERT_EQ(netns_open("/proc/self/status"), -EINVAL);  /* procfs, not nsfs */
  ASSERT_EQ(netns_open("/dev/null"), -EINVAL);          /* no ioctl reaches a driver */
  ASSERT_EQ(netns_open(test_tmpdir()), -EINVAL);        /* a directory */
  ASSERT_EQ(netns_open("/nonexistent/netns"), -ENOENT);
  ASSERT_EQ(netns_open(""), -EINVAL);
  ASSERT_EQ(netns_open(NULL), -EINVAL);
}

/* A FIFO would block a plain open until a writer came (and the daemon's loop with
 * it); the runner's timeout fails the test instead of letting it hang. */
TEST(fifo_refused_without_blocking)
{
  char path[4096];

  snprintf(path, sizeof(path), "%s/fifo", test_tmpdir());
  ASSERT_EQ(mkfifo(path, 0600), 0);
  ASSERT_EQ(netns_open(path), -EINVAL);
  ASSERT_EQ(netns_open("/nonexistent/ns"), -ENOENT);
}

TEST(run_rejects_bad_arguments)
{
  ASSERT_EQ(netns_run(-1, NULL, NULL), -EINVAL);
}

/* Sockets of one namespace share its cookie; another namespace has another (as root:
 * entering namespaces needs CAP_SYS_ADMIN). */
TEST(cookie_names_the_namespace)
{
  int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int b = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  uint64_t ca = 0, cb = 0, cown = 0, cnew = 0;
  int own, fresh;

  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_EQ(netns_sock_cookie(a, &ca), 0);
  ASSERT_EQ(netns_sock_cookie(b, &cb), 0);
  ASSERT_NE(ca, 0);
  ASSERT_EQ(ca, cb);
  ASSERT_EQ(netns_sock_cookie(-1, &cb), -EBADF);
  close(a);
  close(b);
  if (geteuid() != 0)
    return;
  own = netns_open("/proc/self/ns/net");
  ASSERT_GE(own, 0);
  ASSERT_EQ(netns_cookie(own, &cown), 0);
  ASSERT_EQ(cown, ca);
  fresh = netns_create();
  ASSERT_GE(fresh, 0);
  ASSERT_EQ(netns_cookie(fresh, &cnew), 0);
  ASSERT_NE(cnew, 0);
  ASSERT_NE(cnew, ca);
  close(own);
  close(fresh);
}
