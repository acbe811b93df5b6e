/*
 * Everything for one sandbox: attach (links, sockets, rules) and detach (lockdown).
 */
#include <errno.h>
#include <string.h>

#include "netns/netns_internal.h"

struct attach_ctx {
  struct netns_rules_opts *o;
  struct netns_fds *out;
  char *err;
  size_t errsz;
};

static int attach_main(void *arg)
{
  struct attach_ctx *c = arg;
  struct netns_fds f;
  int ret;

  netns_fds_init(&f);
  ret = netns_setup_links(&c->o->ipv4_only, c->err, c->errsz);
  if (ret != 0)
    goto out;
  ret = netns_sockets(c->o, &f, c->err, c->errsz);
  if (ret != 0)
    goto out;
  /* Last: no redirect may point at a listener that does not exist. */
  ret = netns_install_rules(c->o, c->err, c->errsz);
  if (ret != 0)
    goto out;
  *c->out = f;
  netns_fds_init(&f);
out:
  netns_fds_close(&f);
  return ret;
}

int netns_attach(int nsfd, struct netns_rules_opts *o, struct netns_fds *out, char *err,
                 size_t errsz)
{
  struct attach_ctx c = { .o = o, .out = out, .err = err, .errsz = errsz };
  int ret;

  if (err != NULL && errsz > 0)
    err[0] = '\0';
  if (o == NULL || out == NULL)
    return -EINVAL;
  netns_fds_init(out);
  ret = netns_run(nsfd, attach_main, &c);
  if (ret != 0 && err != NULL && errsz > 0 && err[0] == '\0')
    netns_errf(err, errsz, "enter the namespace: %s", strerror(-ret));
  return ret;
}

struct detach_ctx {
  char *err;
  size_t errsz;
};

static int detach_main(void *arg)
{
  struct detach_ctx *c = arg;

  return netns_install_lockdown(c->err, c->errsz);
}

int netns_detach(int nsfd, char *err, size_t errsz)
{
  struct detach_ctx c = { .err = err, .errsz = errsz };
  int ret;

  if (err != NULL && errsz > 0)
    err[0] = '\0';
  ret = netns_run(nsfd, detach_main, &c);
  if (ret != 0 && err != NULL && errsz > 0 && err[0] == '\0')
    netns_errf(err, errsz, "enter the namespace: %s", strerror(-ret));
  return ret;
}
