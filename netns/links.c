/*
 * Links and routes inside a sandbox's namespace, through rtnetlink (libmnl): `lo` up,
 * default routes via `lo`, and the fwmark policy routing TPROXY needs.
 *
 * Every function here runs on a thread that joined the target namespace: a netlink
 * socket belongs to the namespace it was created in, and /proc/sys/net resolves to the
 * namespace of the thread that opens it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <linux/fib_rules.h>
#include <linux/if_link.h>
#include <linux/ipv6.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <libmnl/libmnl.h>

#include "netns/netns_internal.h"

#define RTNL_BUFSZ 32768
#define RTNL_TIMEOUT_S 5
/* A dump of a namespace's routes fits in far fewer reads; this only bounds a loop. */
#define RTNL_MAX_READS 4096
/* Position of the TPROXY fwmark rule: ahead of the main table (32766). */
#define TPROXY_RULE_PREF 100
#define ROUTE_LOCALNET_PATH "/proc/sys/net/ipv4/conf/all/route_localnet"

struct rtnl {
  struct mnl_socket *nl;
  uint32_t portid;
  uint32_t seq;
  char *buf;
};

static void rtnl_close(struct rtnl *r)
{
  if (r->nl != NULL)
    mnl_socket_close(r->nl);
  free(r->buf);
  r->nl = NULL;
  r->buf = NULL;
}

static int rtnl_open(struct rtnl *r)
{
  struct timeval tv = { .tv_sec = RTNL_TIMEOUT_S };
  int ret;

  memset(r, 0, sizeof(*r));
  r->buf = malloc(RTNL_BUFSZ);
  if (r->buf == NULL)
    return -ENOMEM;
  r->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (r->nl == NULL) {
    ret = -errno;
    goto fail;
  }
  if (mnl_socket_bind(r->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    ret = -errno;
    goto fail;
  }
  /* Bounds every wait for the kernel's answer. */
  if (setsockopt(mnl_socket_get_fd(r->nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
    ret = -errno;
    goto fail;
  }
  r->portid = mnl_socket_get_portid(r->nl);
  r->seq = (uint32_t)time(NULL);
  return 0;
fail:
  rtnl_close(r);
  return ret;
}

/*
 * rtnl_open, and the index of lo in this thread's namespace in *lo. The index is asked
 * of the netlink socket itself (SIOCGIFINDEX works on any socket of the namespace):
 * if_nametoindex opens a socket of its own and, when that fails, leaves an errno of its
 * fallbacks (ENOENT, of a daemon out of descriptors).
 */
static int rtnl_open_lo(struct rtnl *r, unsigned int *lo, char *err, size_t errsz)
{
  struct ifreq ifr;
  int ret;

  ret = rtnl_open(r);
  if (ret != 0) {
    netns_errf(err, errsz, "rtnetlink socket: %s", strerror(-ret));
    return ret;
  }
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, "lo", 3);
  if (ioctl(mnl_socket_get_fd(r->nl), SIOCGIFINDEX, &ifr) != 0) {
    ret = -errno;
    netns_errf(err, errsz, "find interface lo: %s", strerror(-ret));
    rtnl_close(r);
    return ret;
  }
  *lo = (unsigned int)ifr.ifr_ifindex;
  return 0;
}

/* Starts a request in r->buf. */
static struct nlmsghdr *rtnl_msg(struct rtnl *r, uint16_t type, uint16_t flags)
{
  struct nlmsghdr *nlh = mnl_nlmsg_put_header(r->buf);

  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
  nlh->nlmsg_seq = ++r->seq;
  return nlh;
}

/* Sends the request in r->buf and reads answers until its ack (or the end of a dump),
 * passing other messages to cb. Returns 0 or the kernel's negative errno. */
static int rtnl_talk(struct rtnl *r, mnl_cb_t cb, void *data)
{
  struct nlmsghdr *nlh = (struct nlmsghdr *)r->buf;
  uint32_t seq = nlh->nlmsg_seq;
  int i, ret;

  if (mnl_socket_sendto(r->nl, nlh, nlh->nlmsg_len) < 0)
    return -errno;
  for (i = 0; i < RTNL_MAX_READS; i++) {
    ssize_t n = mnl_socket_recvfrom(r->nl, r->buf, RTNL_BUFSZ);

    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    ret = mnl_cb_run(r->buf, (size_t)n, seq, r->portid, cb, data);
    if (ret == MNL_CB_ERROR)
      return -errno;
    if (ret == MNL_CB_STOP)
      return 0;
  }
  return -EOVERFLOW;
}

/* ---- whether an address is the namespace's own ---- */

struct netns_local {
  struct rtnl r;
};

int netns_local_open(struct netns_local **out)
{
  struct netns_local *l = calloc(1, sizeof(*l));
  int ret;

  *out = NULL;
  if (l == NULL)
    return -ENOMEM;
  ret = rtnl_open(&l->r);
  if (ret != 0) {
    free(l);
    return ret;
  }
  *out = l;
  return 0;
}

void netns_local_close(struct netns_local *l)
{
  if (l == NULL)
    return;
  rtnl_close(&l->r);
  free(l);
}

static int route_local_cb(const struct nlmsghdr *nlh, void *data)
{
  const struct rtmsg *rm;
  int *local = data;

  if (nlh->nlmsg_type != RTM_NEWROUTE || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*rm)))
    return MNL_CB_OK;
  rm = mnl_nlmsg_get_payload(nlh);
  /* An IPv6 anycast address of one of its interfaces is delivered locally too. */
  *local = rm->rtm_type == RTN_LOCAL || rm->rtm_type == RTN_ANYCAST;
  return MNL_CB_OK;
}

int netns_addr_is_local(struct netns_local *l, const struct sockaddr *sa)
{
  static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
  struct nlmsghdr *nlh = rtnl_msg(&l->r, RTM_GETROUTE, 0);
  struct rtmsg *rm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rm));
  const uint8_t *a6;
  int local = 0, ret;

  if (sa->sa_family == AF_INET) {
    rm->rtm_family = AF_INET;
    rm->rtm_dst_len = 32;
    mnl_attr_put(nlh, RTA_DST, 4, &((const struct sockaddr_in *)(const void *)sa)->sin_addr);
  } else if (sa->sa_family == AF_INET6) {
    a6 = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    if (memcmp(a6, mapped, sizeof(mapped)) == 0) {
      rm->rtm_family = AF_INET;
      rm->rtm_dst_len = 32;
      mnl_attr_put(nlh, RTA_DST, 4, a6 + 12);
    } else {
      rm->rtm_family = AF_INET6;
      rm->rtm_dst_len = 128;
      mnl_attr_put(nlh, RTA_DST, 16, a6);
    }
  } else {
    return -EAFNOSUPPORT;
  }
  ret = rtnl_talk(&l->r, route_local_cb, &local);
  /* Nothing routes it, or a route refuses it (EACCES: prohibit, EINVAL: blackhole;
   * the local table is looked up first, so an address of the namespace's own is
   * never answered so), or its family has no routing here (EOPNOTSUPP, EAFNOSUPPORT:
   * a kernel booted without IPv6): not an address of the namespace's either. */
  if (ret == -ENETUNREACH || ret == -EHOSTUNREACH || ret == -EACCES || ret == -EINVAL ||
      ret == -EOPNOTSUPP || ret == -EAFNOSUPPORT)
    return 0;
  return ret != 0 ? ret : local;
}

static int link_up(struct rtnl *r, unsigned int ifindex)
{
  struct nlmsghdr *nlh = rtnl_msg(r, RTM_NEWLINK, 0);
  struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = (int)ifindex;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  return rtnl_talk(r, NULL, NULL);
}

static int route_attr_cb(const struct nlattr *attr, void *data)
{
  const struct nlattr **tb = data;

  if (mnl_attr_get_type(attr) == RTA_TABLE && mnl_attr_validate(attr, MNL_TYPE_U32) == 0)
    tb[RTA_TABLE] = attr;
  return MNL_CB_OK;
}

/* Counts unicast default routes of the main table. */
static int default_route_cb(const struct nlmsghdr *nlh, void *data)
{
  const struct nlattr *tb[RTA_MAX + 1] = { 0 };
  const struct rtmsg *rm;
  uint32_t table;
  int *found = data;

  if (nlh->nlmsg_type != RTM_NEWROUTE || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*rm)))
    return MNL_CB_OK;
  rm = mnl_nlmsg_get_payload(nlh);
  mnl_attr_parse(nlh, sizeof(*rm), route_attr_cb, tb);
  table = tb[RTA_TABLE] != NULL ? mnl_attr_get_u32(tb[RTA_TABLE]) : rm->rtm_table;
  if (rm->rtm_dst_len == 0 && table == RT_TABLE_MAIN && rm->rtm_type == RTN_UNICAST)
    (*found)++;
  return MNL_CB_OK;
}

static int has_default_route(struct rtnl *r, uint8_t family, int *found)
{
  struct nlmsghdr *nlh = rtnl_msg(r, RTM_GETROUTE, NLM_F_DUMP);
  struct rtmsg *rm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rm));

  rm->rtm_family = family;
  *found = 0;
  return rtnl_talk(r, default_route_cb, found);
}

/* `ip route add default dev lo src 127.0.0.1` (or `src ::1`). The source address
 * matters: without it connections leave with source 0.0.0.0 and get no answer. */
static int add_default_route(struct rtnl *r, uint8_t family, unsigned int lo)
{
  struct nlmsghdr *nlh = rtnl_msg(r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  struct rtmsg *rm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rm));
  struct in_addr a4 = { .s_addr = htonl(INADDR_LOOPBACK) };

  rm->rtm_family = family;
  rm->rtm_table = RT_TABLE_MAIN;
  rm->rtm_protocol = RTPROT_BOOT;
  /* What `ip route add default dev lo` picks for a route without gateway. */
  rm->rtm_scope = family == AF_INET ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  rm->rtm_type = RTN_UNICAST;
  mnl_attr_put_u32(nlh, RTA_OIF, lo);
  if (family == AF_INET)
    mnl_attr_put(nlh, RTA_PREFSRC, sizeof(a4), &a4);
  else
    mnl_attr_put(nlh, RTA_PREFSRC, sizeof(in6addr_loopback), &in6addr_loopback);
  return rtnl_talk(r, NULL, NULL);
}

static int ensure_default_route(struct rtnl *r, uint8_t family, unsigned int lo, char *err,
                                 size_t errsz)
{
  const char *v = family == AF_INET ? "IPv4" : "IPv6";
  int found, ret;

  ret = has_default_route(r, family, &found);
  if (ret != 0) {
    netns_errf(err, errsz, "list %s routes: %s", v, strerror(-ret));
    return ret;
  }
  if (found > 0)
    return 0;
  ret = add_default_route(r, family, lo);
  if (ret == -EEXIST) /* added meanwhile by someone else: what we wanted */
    return 0;
  /* Only asked for with IPv6 enabled on lo (netns_setup_links): EACCES means it was
   * disabled since, EINVAL that lo lacks ::1 (someone deleted it). */
  if (ret != 0)
    netns_errf(err, errsz, "add %s default route dev lo src %s: %s%s", v,
               family == AF_INET ? "127.0.0.1" : "::1", strerror(-ret),
               family != AF_INET6 ? ""
               : ret == -EACCES   ? " (was IPv6 disabled in the namespace meanwhile? "
                                    "attaching again sets up IPv4 only)"
               : ret == -EINVAL   ? " (lo has IPv6 enabled but no address ::1: add it, "
                                    "or disable IPv6 with net.ipv6.conf.lo.disable_ipv6=1)"
                                  : "");
  return ret;
}

struct lo_ipv6 {
  int inet6; /* lo has IPv6 attributes: the kernel runs IPv6 */
  int conf;  /* and they include disable_ipv6 */
  int disabled;
};

/* Reads IFLA_AF_SPEC > AF_INET6 > IFLA_INET6_CONF[DEVCONF_DISABLE_IPV6] of lo's link
 * message: the namespace's net.ipv6.conf.lo.disable_ipv6. */
static int lo_ipv6_cb(const struct nlmsghdr *nlh, void *data)
{
  struct lo_ipv6 *s = data;
  struct nlattr *spec, *af, *a;

  if (nlh->nlmsg_type != RTM_NEWLINK ||
      nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct ifinfomsg)))
    return MNL_CB_OK;
  mnl_attr_for_each(spec, nlh, sizeof(struct ifinfomsg)) {
    if (mnl_attr_get_type(spec) != IFLA_AF_SPEC)
      continue;
    mnl_attr_for_each_nested(af, spec) {
      if (mnl_attr_get_type(af) != AF_INET6)
        continue;
      s->inet6 = 1;
      mnl_attr_for_each_nested(a, af) {
        int32_t v;

        if (mnl_attr_get_type(a) != IFLA_INET6_CONF ||
            mnl_attr_get_payload_len(a) < (DEVCONF_DISABLE_IPV6 + 1) * sizeof(v))
          continue;
        /* An array of s32 indexed by DEVCONF_*. */
        memcpy(&v, (const char *)mnl_attr_get_payload(a) + DEVCONF_DISABLE_IPV6 * sizeof(v),
               sizeof(v));
        s->conf = 1;
        s->disabled = v != 0;
      }
    }
  }
  return MNL_CB_OK;
}

/*
 * Whether IPv6 is off on lo: net.ipv6.conf.lo.disable_ipv6 set (as container runtimes
 * commonly do), or no IPv6 in the kernel at all (ipv6.disable=1). Asked through
 * rtnetlink rather than read from /proc/sys/net, whose path walk costs time that grows
 * with the number of namespaces on the host (see netns_setup_links).
 */
static int lo_ipv6_off(struct rtnl *r, unsigned int lo, int *off)
{
  struct nlmsghdr *nlh = rtnl_msg(r, RTM_GETLINK, 0);
  struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
  struct lo_ipv6 s = { 0, 0, 0 };
  int ret;

  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = (int)lo;
  ret = rtnl_talk(r, lo_ipv6_cb, &s);
  /* IPv6 attributes without disable_ipv6 (not a kernel we know): assume it is on, so
   * that anything IPv6 cannot do fails the attach with its own message. */
  *off = !s.inet6 || (s.conf && s.disabled);
  return ret;
}

struct other_links {
  unsigned int lo;
  int found;
};

static int other_link_cb(const struct nlmsghdr *nlh, void *data)
{
  struct other_links *o = data;
  const struct ifinfomsg *ifi;

  if (nlh->nlmsg_type != RTM_NEWLINK || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*ifi)))
    return MNL_CB_OK;
  ifi = mnl_nlmsg_get_payload(nlh);
  if ((unsigned int)ifi->ifi_index != o->lo)
    o->found++;
  return MNL_CB_OK;
}

/* Whether the namespace has an interface besides lo (traffic can enter it). */
static int has_other_links(struct rtnl *r, unsigned int lo, int *found)
{
  struct nlmsghdr *nlh = rtnl_msg(r, RTM_GETLINK, NLM_F_DUMP);
  struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
  struct other_links o = { lo, 0 };
  int ret;

  ifi->ifi_family = AF_UNSPEC;
  ret = rtnl_talk(r, other_link_cb, &o);
  *found = o.found;
  return ret;
}

static int set_route_localnet(char *err, size_t errsz)
{
  int fd, ret = 0;

  fd = open(ROUTE_LOCALNET_PATH, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    ret = -errno;
    goto out;
  }
  if (write(fd, "1\n", 2) != 2)
    ret = -errno;
  close(fd);
out:
  if (ret != 0)
    netns_errf(err, errsz, "write 1 to %s: %s", ROUTE_LOCALNET_PATH, strerror(-ret));
  return ret;
}

int netns_setup_links(int *ipv4_only, char *err, size_t errsz)
{
  struct rtnl r;
  unsigned int lo;
  int ret, others = 0;

  *ipv4_only = 0;
  ret = rtnl_open_lo(&r, &lo, err, errsz);
  if (ret != 0)
    return ret;
  ret = link_up(&r, lo);
  if (ret != 0) {
    netns_errf(err, errsz, "bring lo up: %s", strerror(-ret));
    goto out;
  }
  ret = ensure_default_route(&r, AF_INET, lo, err, errsz);
  if (ret != 0)
    goto out;
  ret = lo_ipv6_off(&r, lo, ipv4_only);
  if (ret != 0) {
    netns_errf(err, errsz, "read the IPv6 settings of lo: %s", strerror(-ret));
    goto out;
  }
  /* With IPv6 disabled on lo there is no ::1 and no route via lo for IPv6: the kernel
   * refuses both (EACCES, EADDRNOTAVAIL). The namespace then has no IPv6 to capture;
   * the rule set still covers IPv6, should it be enabled later (netns.h). */
  if (!*ipv4_only) {
    ret = ensure_default_route(&r, AF_INET6, lo, err, errsz);
    if (ret != 0)
      goto out;
  }
  /* route_localnet lets forwarded DNS (a guest's) be redirected to 127.0.0.53. Only a
   * namespace with another interface can see forwarded traffic, and writing under
   * /proc/sys/net costs time that grows with the number of namespaces on the host
   * (their sysctl entries share dentry hash chains), so skip it for lo-only ones. An
   * interface added after attaching gets no guest DNS (fails closed) until the
   * sandbox is attached again. */
  ret = has_other_links(&r, lo, &others);
  if (ret != 0) {
    netns_errf(err, errsz, "list interfaces: %s", strerror(-ret));
    goto out;
  }
  if (others > 0)
    ret = set_route_localnet(err, errsz);
out:
  rtnl_close(&r);
  return ret;
}

/* `ip rule add|del fwmark MARK lookup TABLE pref TPROXY_RULE_PREF` */
static int tproxy_rule(struct rtnl *r, uint16_t type, uint16_t flags, uint8_t family)
{
  struct nlmsghdr *nlh = rtnl_msg(r, type, flags);
  struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));

  frh->family = family;
  frh->action = FR_ACT_TO_TBL;
  frh->table = RT_TABLE_UNSPEC; /* the table number does not fit: FRA_TABLE */
  mnl_attr_put_u32(nlh, FRA_PRIORITY, TPROXY_RULE_PREF);
  mnl_attr_put_u32(nlh, FRA_FWMARK, NETNS_TPROXY_MARK);
  mnl_attr_put_u32(nlh, FRA_FWMASK, 0xffffffffu);
  mnl_attr_put_u32(nlh, FRA_TABLE, NETNS_TPROXY_TABLE);
  return rtnl_talk(r, NULL, NULL);
}

/* `ip route add|del local default dev lo table TABLE`: marked packets are delivered
 * locally, to the transparent socket, whatever their destination. */
static int tproxy_route(struct rtnl *r, uint16_t type, uint16_t flags, uint8_t family,
                        unsigned int lo)
{
  struct nlmsghdr *nlh = rtnl_msg(r, type, flags);
  struct rtmsg *rm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rm));

  rm->rtm_family = family;
  rm->rtm_table = RT_TABLE_UNSPEC;
  rm->rtm_protocol = RTPROT_BOOT;
  rm->rtm_scope = RT_SCOPE_HOST;
  rm->rtm_type = RTN_LOCAL;
  mnl_attr_put_u32(nlh, RTA_TABLE, NETNS_TPROXY_TABLE);
  if (lo != 0)
    mnl_attr_put_u32(nlh, RTA_OIF, lo);
  return rtnl_talk(r, NULL, NULL);
}

int netns_tproxy_routing_set(int ipv4_only, int *existed, char *err, size_t errsz)
{
  static const uint8_t families[] = { AF_INET, AF_INET6 };
  /* IPv6 disabled on lo: no route via lo can be added for it (EACCES), and no
   * transparent IPv6 listener exists for it to lead to. */
  size_t nfamilies = ipv4_only ? 1 : sizeof(families);
  struct rtnl r;
  unsigned int lo;
  size_t i;
  int ret;

  if (existed != NULL)
    *existed = 0;
  ret = rtnl_open_lo(&r, &lo, err, errsz);
  if (ret != 0)
    return ret;
  for (i = 0; i < nfamilies; i++) {
    const char *v = families[i] == AF_INET ? "IPv4" : "IPv6";

    ret = tproxy_route(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, families[i], lo);
    if (ret != 0) {
      netns_errf(err, errsz, "add %s route local default dev lo table %d: %s", v,
                 NETNS_TPROXY_TABLE, strerror(-ret));
      goto out;
    }
    /* EXCL: without it the kernel adds a duplicate rule on every install. */
    ret = tproxy_rule(&r, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, families[i]);
    if (ret == -EEXIST) {
      if (existed != NULL && families[i] == AF_INET)
        *existed = 1;
      ret = 0;
    }
    if (ret != 0) {
      netns_errf(err, errsz, "add %s rule fwmark %#x lookup %d: %s", v, NETNS_TPROXY_MARK,
                 NETNS_TPROXY_TABLE, strerror(-ret));
      goto out;
    }
  }
out:
  rtnl_close(&r);
  return ret;
}

int netns_tproxy_routing_clear(char *err, size_t errsz)
{
  static const uint8_t families[] = { AF_INET, AF_INET6 };
  struct rtnl r;
  size_t i;
  int ret;

  ret = rtnl_open(&r);
  if (ret != 0) {
    netns_errf(err, errsz, "rtnetlink socket: %s", strerror(-ret));
    return ret;
  }
  for (i = 0; i < sizeof(families); i++) {
    const char *v = families[i] == AF_INET ? "IPv4" : "IPv6";

    ret = tproxy_rule(&r, RTM_DELRULE, 0, families[i]);
    if (ret != 0 && ret != -ENOENT) {
      netns_errf(err, errsz, "delete %s rule fwmark %#x lookup %d: %s", v,
                 NETNS_TPROXY_MARK, NETNS_TPROXY_TABLE, strerror(-ret));
      goto out;
    }
    ret = tproxy_route(&r, RTM_DELROUTE, 0, families[i], 0);
    if (ret != 0 && ret != -ESRCH && ret != -ENOENT) {
      netns_errf(err, errsz, "delete %s route local default table %d: %s", v,
                 NETNS_TPROXY_TABLE, strerror(-ret));
      goto out;
    }
    ret = 0;
  }
out:
  rtnl_close(&r);
  return ret;
}
