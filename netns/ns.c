/*
 * Opening, creating and entering network namespaces.
 *
 * setns(2) and unshare(2) change the namespace of the calling thread only, so all work
 * inside a namespace happens on a short-lived helper thread that exits afterwards; the
 * caller's thread (the libuv loop's) never changes namespace. A thread that changed
 * namespace is never reused.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <linux/nsfs.h>

#include "netns/netns.h"

int netns_open(const char *path)
{
  struct statfs sfs;
  char self[32];
  int pfd, fd, type, ret;

  if (path == NULL || path[0] == '\0')
    return -EINVAL;
  /* O_PATH opens nothing: a FIFO at path would block a plain open (and the daemon's
   * loop with it) until a writer came, and a device would be opened, with whatever
   * that does, before the check below refused it. */
  pfd = open(path, O_PATH | O_CLOEXEC);
  if (pfd < 0)
    return -errno;
  /* Only nsfs files (/proc/PID/ns/net, and their bind mounts under /var/run/netns)
   * answer NS_GET_NSTYPE; checking the file system first keeps the ioctl from ever
   * reaching a device driver. */
  if (fstatfs(pfd, &sfs) != 0) {
    ret = -errno;
    close(pfd);
    return ret;
  }
  if (sfs.f_type != NSFS_MAGIC) {
    close(pfd);
    return -EINVAL;
  }
  /* setns() wants a file opened for reading: reopen the same inode. */
  snprintf(self, sizeof(self), "/proc/self/fd/%d", pfd);
  fd = open(self, O_RDONLY | O_CLOEXEC);
  ret = fd < 0 ? -errno : 0;
  close(pfd);
  if (fd < 0)
    return ret;
  type = ioctl(fd, NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    ret = type < 0 && errno != ENOTTY ? -errno : -EINVAL;
    goto fail;
  }
  return fd;
fail:
  close(fd);
  return ret;
}

/* Runs start(arg) on a new thread with every signal blocked (signals belong to the
 * process's other threads) and waits for it. */
static int run_thread(void *(*start)(void *), void *arg)
{
  sigset_t all, old;
  pthread_t t;
  int ret;

  sigfillset(&all);
  ret = pthread_sigmask(SIG_SETMASK, &all, &old);
  if (ret != 0)
    return -ret;
  ret = pthread_create(&t, NULL, start, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (ret != 0)
    return -ret;
  ret = pthread_join(t, NULL);
  return -ret;
}

struct run_ctx {
  int nsfd;
  int (*fn)(void *arg);
  void *arg;
  int ret;
};

static void *run_main(void *p)
{
  struct run_ctx *c = p;

  if (setns(c->nsfd, CLONE_NEWNET) != 0) {
    c->ret = -errno;
    return NULL;
  }
  c->ret = c->fn(c->arg);
  return NULL;
}

int netns_run(int nsfd, int (*fn)(void *arg), void *arg)
{
  struct run_ctx c = { .nsfd = nsfd, .fn = fn, .arg = arg, .ret = -EINVAL };
  int ret;

  if (nsfd < 0 || fn == NULL)
    return -EINVAL;
  ret = run_thread(run_main, &c);
  return ret != 0 ? ret : c.ret;
}

static void *create_main(void *p)
{
  int *ret = p;

  if (unshare(CLONE_NEWNET) != 0) {
    *ret = -errno;
    return NULL;
  }
  /* thread-self, not self: the namespace belongs to this thread only. */
  *ret = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (*ret < 0)
    *ret = -errno;
  return NULL;
}

int netns_create(void)
{
  int fd = -EINVAL;
  int ret;

  ret = run_thread(create_main, &fd);
  if (ret != 0) {
    if (fd >= 0)
      close(fd);
    return ret;
  }
  return fd;
}

int netns_is_own(int nsfd)
{
  struct stat ns, own;

  if (fstat(nsfd, &ns) != 0 || stat("/proc/self/ns/net", &own) != 0)
    return -errno;
  return ns.st_dev == own.st_dev && ns.st_ino == own.st_ino;
}

int netns_sock_cookie(int fd, uint64_t *cookie)
{
  socklen_t len = sizeof(*cookie);

  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len) != 0)
    return -errno;
  return len == sizeof(*cookie) ? 0 : -EPROTO;
}

static int cookie_main(void *arg)
{
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int ret;

  if (fd < 0)
    return -errno;
  ret = netns_sock_cookie(fd, arg);
  close(fd);
  return ret;
}

int netns_cookie(int nsfd, uint64_t *cookie)
{
  return netns_run(nsfd, cookie_main, cookie);
}
