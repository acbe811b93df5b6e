/*
 * netns_open: only network namespace files are accepted. Unprivileged: a process may
 * open its own namespace files.
 */
#include <errno.h>
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

TEST(run_rejects_bad_arguments)
{
  ASSERT_EQ(netns_run(-1, NULL, NULL), -EINVAL);
}
