/*
 * Sending nf_tables batches and reading every answer (the manner of nftables'
 * mnl_batch_talk): each message carries NLM_F_ACK, so the kernel answers each one,
 * and an error answer's sequence number names the message that failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>

#include "netns/netns_internal.h"

/* The kernel handles a batch inside sendmsg(), so its answers are queued when that
 * returns; the timeout only bounds a kernel that misbehaves. */
#define ANSWER_TIMEOUT_MS 5000

void netns_errf(char *err, size_t errsz, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (err == NULL || errsz == 0)
    return;
  n = snprintf(err, errsz, "netns: ");
  if (n < 0 || (size_t)n >= errsz)
    return;
  va_start(ap, fmt);
  vsnprintf(err + n, errsz - (size_t)n, fmt, ap);
  va_end(ap);
}

/* What to check when the kernel rejects a message with this error. */
static const char *error_hint(const char *what, int error)
{
  if (error == EPERM || error == EACCES)
    return " (needs CAP_NET_ADMIN over the namespace; or another process owns table "
           "inet " NETNS_TABLE ")";
  if (what != NULL && strncmp(what, "rule ", 5) == 0 &&
      (error == EOPNOTSUPP || error == ENOENT))
    return " (a kernel without an nf_tables feature the rule uses answers so: check "
           "CONFIG_NFT_NAT, CONFIG_NFT_REDIR, CONFIG_NFT_FIB_INET, CONFIG_NFT_CT, "
           "CONFIG_NFT_SOCKET, CONFIG_NFT_TPROXY)";
  if (what != NULL && strncmp(what, "chain ", 6) == 0 && error == EOPNOTSUPP)
    return " (the kernel lacks nf_tables NAT or inet family support: check "
           "CONFIG_NFT_NAT, CONFIG_NF_TABLES_INET)";
  return "";
}

void netns_nft_describe_error(const char *const *names, size_t n, uint32_t first_seq,
                              uint32_t seq, int error, const char *kmsg, char *err,
                              size_t errsz)
{
  uint32_t idx = seq - first_seq; /* wraps for seqs before first_seq: out of range */
  const char *what = NULL;

  if (names != NULL && idx < n)
    what = names[idx];
  netns_errf(err, errsz, "nf_tables rejected %s: %s%s%s%s%s",
             what != NULL ? what : "the batch", strerror(error),
             kmsg != NULL && kmsg[0] != '\0' ? " (kernel: " : "",
             kmsg != NULL ? kmsg : "", kmsg != NULL && kmsg[0] != '\0' ? ")" : "",
             error_hint(what, error));
}

struct answers {
  uint32_t first_seq;
  size_t n;
  bool seen[NETNS_BATCH_MAX_MSGS];
  size_t nseen;
  bool batch_failed; /* an error about the batch as a whole: no more answers follow */
  int error;         /* first error by sequence number, positive errno; 0 if none */
  uint32_t error_seq;
  char kmsg[256];
};

static int errattr_cb(const struct nlattr *attr, void *data)
{
  const struct nlattr **tb = data;
  uint16_t type = mnl_attr_get_type(attr);

  if (type == NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
    tb[NLMSGERR_ATTR_MSG] = attr;
  return MNL_CB_OK;
}

/* The kernel's extended-ack text, if it sent one. */
static void copy_kmsg(const struct nlmsghdr *nlh, const struct nlmsgerr *e, char *out,
                      size_t outsz)
{
  const struct nlattr *tb[NLMSGERR_ATTR_MAX + 1] = { 0 };
  size_t off = sizeof(*e);

  out[0] = '\0';
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
    return;
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
    off += mnl_nlmsg_get_payload_len(&e->msg);
  if (mnl_nlmsg_size(off) > nlh->nlmsg_len)
    return;
  mnl_attr_parse(nlh, (unsigned int)off, errattr_cb, tb);
  if (tb[NLMSGERR_ATTR_MSG] != NULL)
    snprintf(out, outsz, "%s", mnl_attr_get_str(tb[NLMSGERR_ATTR_MSG]));
}

static int answer_cb(const struct nlmsghdr *nlh, void *data)
{
  struct answers *a = data;
  const struct nlmsgerr *e;
  uint32_t idx;
  int error;

  if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e))) {
    errno = EBADMSG;
    return MNL_CB_ERROR;
  }
  e = mnl_nlmsg_get_payload(nlh);
  error = e->error < 0 ? -e->error : e->error;
  idx = nlh->nlmsg_seq - a->first_seq;
  if (idx < a->n) {
    if (!a->seen[idx]) {
      a->seen[idx] = true;
      a->nseen++;
    }
  } else if (error != 0) {
    a->batch_failed = true;
  }
  if (error != 0 && (a->error == 0 || nlh->nlmsg_seq - a->first_seq <
                                          a->error_seq - a->first_seq)) {
    a->error = error;
    a->error_seq = nlh->nlmsg_seq;
    copy_kmsg(nlh, e, a->kmsg, sizeof(a->kmsg));
  }
  return MNL_CB_OK;
}

static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Closing an nf_tables socket can wait, inside close(2), for an RCU grace period:
 * the kernel flushes its work that destroys committed transactions (nft_rcv_nl_event
 * -> nf_tables_trans_destroy_work -> synchronize_rcu). That is 9-12 ms on a host
 * without rcu_expedited, on the thread that closes, and the caller of netns_run (the
 * daemon's event loop, serving every sandbox) waits for that thread: attaching took
 * 16 ms instead of 2. The batch has been applied and answered by then, so the socket
 * is handed to one background thread that closes it; a grace period covers every
 * transaction queued before it, so a backlog drains in about one wait. When the
 * queue is full or the thread cannot start, the socket is closed here as before.
 */
#define CLOSE_QUEUE 256

static pthread_mutex_t closer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t closer_cond = PTHREAD_COND_INITIALIZER;
static struct mnl_socket *closer_queue[CLOSE_QUEUE];
static size_t closer_head, closer_len;
static int closer_state; /* 0 not started, 1 running, -1 could not start */
static int closer_atfork; /* the fork handlers are registered (children inherit them) */

static void *closer_main(void *arg)
{
  struct mnl_socket *nl;
  int fd;

  (void)arg;
  pthread_setname_np(pthread_self(), NETNS_NFT_CLOSER_NAME);
  /* It is started by a helper thread inside a sandbox's namespace (nft_socket_close
   * runs there), whose namespace it inherits: it would keep that namespace alive for
   * the life of the process. It joins the process's own (/proc/self is the main
   * thread's, which never changes namespace); the sockets it closes need none. */
  fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)setns(fd, CLONE_NEWNET);
    close(fd);
  }
  pthread_mutex_lock(&closer_lock);
  for (;;) {
    while (closer_len == 0)
      pthread_cond_wait(&closer_cond, &closer_lock);
    nl = closer_queue[closer_head];
    closer_head = (closer_head + 1) % CLOSE_QUEUE;
    closer_len--;
    pthread_mutex_unlock(&closer_lock);
    mnl_socket_close(nl);
    pthread_mutex_lock(&closer_lock);
  }
  return NULL;
}

/* A fork() child has no closer thread: the lock is taken across fork so its state
 * is whole, and the child starts afresh (a thread of its own on first use; sockets
 * queued in the parent are the parent's to close, and close-on-exec in the child). */
static void closer_prepare(void)
{
  pthread_mutex_lock(&closer_lock);
}

static void closer_parent(void)
{
  pthread_mutex_unlock(&closer_lock);
}

static void closer_child(void)
{
  closer_head = 0;
  closer_len = 0;
  closer_state = 0;
  /* The parent's closer may have been waiting on it; in the child nobody is. */
  pthread_cond_init(&closer_cond, NULL);
  pthread_mutex_unlock(&closer_lock);
}

/* Called with closer_lock held. */
static void closer_start(void)
{
  pthread_attr_t attr;
  sigset_t all, old;
  pthread_t t;
  int ret;

  if (!closer_atfork) {
    if (pthread_atfork(closer_prepare, closer_parent, closer_child) != 0) {
      closer_state = -1;
      return;
    }
    closer_atfork = 1;
  }
  /* Signals belong to the process's other threads. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  ret = pthread_attr_init(&attr);
  if (ret == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ret = pthread_create(&t, &attr, closer_main, NULL);
    pthread_attr_destroy(&attr);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  closer_state = ret == 0 ? 1 : -1;
}

static void nft_socket_close(struct mnl_socket *nl)
{
  pthread_mutex_lock(&closer_lock);
  if (closer_state == 0)
    closer_start();
  if (closer_state == 1 && closer_len < CLOSE_QUEUE) {
    closer_queue[(closer_head + closer_len) % CLOSE_QUEUE] = nl;
    closer_len++;
    pthread_cond_signal(&closer_cond);
    pthread_mutex_unlock(&closer_lock);
    return;
  }
  pthread_mutex_unlock(&closer_lock);
  mnl_socket_close(nl);
}

int netns_nft_talk(const void *batch, size_t len, uint32_t first_seq,
                   const char *const *names, size_t n, char *err, size_t errsz)
{
  static mnl_cb_t ctl[NLMSG_MIN_TYPE] = { [NLMSG_ERROR] = answer_cb };
  struct mnl_socket *nl = NULL;
  struct answers *a = NULL;
  char *buf = NULL;
  size_t bufsz = MNL_SOCKET_BUFFER_SIZE * 4;
  int64_t deadline;
  uint32_t portid;
  int one = 1;
  int ret;

  if (n > NETNS_BATCH_MAX_MSGS) {
    netns_errf(err, errsz, "nf_tables batch of %zu messages exceeds %d", n,
               NETNS_BATCH_MAX_MSGS);
    return -EINVAL;
  }
  a = calloc(1, sizeof(*a));
  buf = malloc(bufsz);
  if (a == NULL || buf == NULL) {
    ret = -ENOMEM;
    netns_errf(err, errsz, "nf_tables: out of memory");
    goto out;
  }
  a->first_seq = first_seq;
  a->n = n;

  /* Non-blocking: the kernel applies the batch inside sendto() and has queued every
   * answer (one per message: 37 for a sandbox's table) by the time it returns, so
   * they are read without a poll before each; poll only waits when none is there. */
  nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (nl == NULL) {
    ret = -errno;
    netns_errf(err, errsz, "nf_tables: netlink socket: %s", strerror(-ret));
    goto out;
  }
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    ret = -errno;
    netns_errf(err, errsz, "nf_tables: bind netlink socket: %s", strerror(-ret));
    goto out;
  }
  /* Short answers (no copy of the request) with the kernel's message when it has one;
   * both are optional, an old kernel just ignores them. */
  mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, sizeof(one));
  mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, sizeof(one));
  portid = mnl_socket_get_portid(nl);

  if (mnl_socket_sendto(nl, batch, len) < 0) {
    ret = -errno;
    netns_errf(err, errsz, "nf_tables: send batch (%zu bytes): %s", len, strerror(-ret));
    goto out;
  }

  deadline = now_ms() + ANSWER_TIMEOUT_MS;
  while (a->nseen < n && !a->batch_failed) {
    ssize_t got = mnl_socket_recvfrom(nl, buf, bufsz);

    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd p = { .fd = mnl_socket_get_fd(nl), .events = POLLIN };
      int64_t left = deadline - now_ms();

      if (left <= 0)
        break;
      ret = poll(&p, 1, (int)left);
      if (ret < 0 && errno != EINTR) {
        ret = -errno;
        netns_errf(err, errsz, "nf_tables: poll: %s", strerror(-ret));
        goto out;
      }
      continue;
    }
    if (got < 0) {
      ret = -errno;
      /* ENOBUFS: answers were lost, so whether the batch applied is unknown. */
      netns_errf(err, errsz, "nf_tables: receive answers: %s", strerror(-ret));
      goto out;
    }
    ret = mnl_cb_run2(buf, (size_t)got, 0, portid, NULL, a, ctl, NLMSG_MIN_TYPE);
    if (ret == MNL_CB_ERROR) {
      ret = -errno;
      netns_errf(err, errsz, "nf_tables: malformed answer: %s", strerror(-ret));
      goto out;
    }
  }

  if (a->error != 0) {
    ret = -a->error;
    netns_nft_describe_error(names, n, first_seq, a->error_seq, a->error, a->kmsg, err,
                             errsz);
    goto out;
  }
  if (a->nseen < n) {
    ret = -ETIMEDOUT;
    netns_errf(err, errsz, "nf_tables answered %zu of %zu messages within %d ms", a->nseen,
               n, ANSWER_TIMEOUT_MS);
    goto out;
  }
  ret = 0;
out:
  if (nl != NULL)
    nft_socket_close(nl);
  free(buf);
  free(a);
  return ret;
}

/* Builds (begin, messages from build(), end) and sends it. */
typedef int (*build_cb)(const void *arg, struct mnl_nlmsg_batch *b, uint32_t *seq,
                        const char **names, size_t cap);

static int commit(build_cb build, const void *arg, char *err, size_t errsz)
{
  const char *names[NETNS_BATCH_MAX_MSGS];
  struct mnl_nlmsg_batch *b = NULL;
  uint32_t seq = (uint32_t)time(NULL);
  uint32_t first_seq;
  char *buf;
  int ret, n;

  /* Zeroed: libmnl 1.0.4 (bookworm) does not write the padding after an attribute
   * whose length is not a multiple of 4 (a table or chain name), and those bytes would
   * go to the kernel as whatever the heap held. */
  buf = calloc(2, NETNS_BATCH_LIMIT);
  if (buf == NULL) {
    netns_errf(err, errsz, "nf_tables: out of memory");
    return -ENOMEM;
  }
  b = mnl_nlmsg_batch_start(buf, NETNS_BATCH_LIMIT);
  if (b == NULL) {
    ret = -ENOMEM;
    netns_errf(err, errsz, "nf_tables: out of memory");
    goto out;
  }
  nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
  mnl_nlmsg_batch_next(b);
  first_seq = seq;
  n = build(arg, b, &seq, names, NETNS_BATCH_MAX_MSGS);
  if (n < 0) {
    ret = n;
    netns_errf(err, errsz, "building the nf_tables rule set: %s", strerror(-n));
    goto out;
  }
  nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
  mnl_nlmsg_batch_next(b);
  ret = netns_nft_talk(mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b), first_seq, names,
                       (size_t)n, err, errsz);
out:
  if (b != NULL)
    mnl_nlmsg_batch_stop(b);
  free(buf);
  return ret;
}

static int build_rules_cb(const void *arg, struct mnl_nlmsg_batch *b, uint32_t *seq,
                          const char **names, size_t cap)
{
  return netns_build_rules(arg, b, seq, names, cap);
}

static int build_lockdown_cb(const void *arg, struct mnl_nlmsg_batch *b, uint32_t *seq,
                             const char **names, size_t cap)
{
  (void)arg;
  return netns_build_lockdown(b, seq, names, cap);
}

/* DELTABLE inet authproxy, on its own. */
static int build_delete_cb(const void *arg, struct mnl_nlmsg_batch *b, uint32_t *seq,
                           const char **names, size_t cap)
{
  struct nlmsghdr *nlh;

  (void)arg;
  if (cap < 1)
    return -ENOSPC;
  nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_DELTABLE, NFPROTO_INET,
                              NLM_F_ACK, (*seq)++);
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, NETNS_TABLE);
  names[0] = "table inet " NETNS_TABLE " (delete)";
  if (!mnl_nlmsg_batch_next(b))
    return -EMSGSIZE;
  return 1;
}

int netns_install_rules(const struct netns_rules_opts *o, char *err, size_t errsz)
{
  int existed = 0;
  int ret;

  if (o == NULL)
    return -EINVAL;
  if (o->capture == NETNS_CAPTURE_TPROXY) {
    /* Routing first: on its own it only affects packets that carry the mark, which
     * nothing sets until the table is in place. */
    ret = netns_tproxy_routing_set(o->ipv4_only, &existed, err, errsz);
    if (ret != 0)
      return ret;
  }
  ret = commit(build_rules_cb, o, err, errsz);
  if (ret != 0) {
    /* The rule names say "proxy_port"; give the numbers they stood for. */
    if (err != NULL && errsz > 0) {
      size_t used = strnlen(err, errsz);

      snprintf(err + used, errsz - used, " [proxy_port %u, tproxy_port %u, dns_port %u]",
               o->proxy_port, o->tproxy_port, o->dns_port);
    }
    if (o->capture == NETNS_CAPTURE_TPROXY && !existed)
      netns_tproxy_routing_clear(NULL, 0);
    return ret;
  }
  /* The table is in place, redirecting to the listeners: from here the install has
   * succeeded, and must say so, or its caller would close the listeners under it.
   * Routing left from an earlier TPROXY attach is inert without the rules that mark
   * packets for it, so failing to remove it is not a failure of the install. */
  if (o->capture != NETNS_CAPTURE_TPROXY)
    (void)netns_tproxy_routing_clear(NULL, 0);
  return 0;
}

int netns_install_lockdown(char *err, size_t errsz)
{
  int ret;

  ret = commit(build_lockdown_cb, NULL, err, errsz);
  if (ret != 0)
    return ret;
  /* Locked down whatever happens to the routing (inert without the TPROXY rules). */
  (void)netns_tproxy_routing_clear(NULL, 0);
  return 0;
}

int netns_remove_rules(char *err, size_t errsz)
{
  int ret, ret2;

  ret = commit(build_delete_cb, NULL, err, errsz);
  if (ret == -ENOENT)
    netns_errf(err, errsz, "table inet " NETNS_TABLE " does not exist");
  ret2 = netns_tproxy_routing_clear(ret == 0 ? err : NULL, errsz);
  return ret != 0 ? ret : ret2;
}
