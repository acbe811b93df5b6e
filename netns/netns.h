/*
 * netns: privileged set-up inside a sandbox's network namespace.
 *
 * Opens or creates a namespace, brings `lo` up with default routes via `lo`
 * (rtnetlink through libmnl), installs the `inet authproxy` nf_tables table as one
 * atomic batch (libnftnl + libmnl), and creates the proxy's sockets inside the
 * namespace so the host-side event loop can serve them.
 *
 * setns(2) changes only the calling thread, so everything that must happen inside a
 * namespace runs on a short-lived helper thread (netns_run); the caller's thread,
 * typically the libuv loop's, never changes namespace.
 *
 * Functions return 0 (or an fd) on success and a negative errno on failure; those
 * taking `err` also write a message naming what failed into it.
 */
#ifndef AUTHPROXY_NETNS_H
#define AUTHPROXY_NETNS_H

#include <stddef.h>
#include <stdint.h>

struct mnl_nlmsg_batch;
struct sockaddr;

#define NETNS_TABLE "authproxy"        /* table inet authproxy */
#define NETNS_DNS_ADDR4 "127.0.0.53"   /* where the DNS responder listens (v4) */
#define NETNS_DNS_PORT 53
#define NETNS_TPROXY_MARK 0x4150       /* fwmark of TPROXY-captured packets ("AP"), and
                                          the ct mark of every captured guest flow */
#define NETNS_TPROXY_TABLE 0x4150      /* policy routing table for them */
#define NETNS_SOCK_MARK 0x4151         /* SO_MARK of every socket netns_sockets makes:
                                          what the rules let answer a guest, which
                                          a socket of the sandbox's cannot carry
                                          (SO_MARK needs CAP_NET_ADMIN or
                                          CAP_NET_RAW) */

/* A batch for netns_build_rules / netns_build_lockdown: libmnl needs a buffer of twice
 * the limit (the last message may overrun it); the rule set needs far less. */
#define NETNS_BATCH_LIMIT 32768
/* Upper bound on the messages either builder appends (size of a names array). */
#define NETNS_BATCH_MAX_MSGS 64

enum netns_capture {
  NETNS_CAPTURE_REDIRECT, /* forwarded traffic (guest tap, nested veth): nat REDIRECT */
  NETNS_CAPTURE_TPROXY,   /* forwarded traffic via TPROXY to a transparent listener */
};

/* What the rule set redirects where. Ports are those of sockets netns_sockets made. */
struct netns_rules_opts {
  uint16_t proxy_port;   /* TCP listener (0.0.0.0 and [::]) for captured connections */
  uint16_t tproxy_port;  /* transparent listener, only with NETNS_CAPTURE_TPROXY */
  uint16_t dns_port;     /* UDP+TCP responder on 127.0.0.53 (and [::1]); normally 53.
                            Queries to port 53 of any address are sent there. */
  enum netns_capture capture;
  /* Set by netns_attach (from netns_setup_links) when IPv6 is disabled on the
   * namespace's lo (net.ipv6.conf.lo.disable_ipv6=1, as container runtimes often
   * set, or a kernel without IPv6); read by netns_sockets, which then makes the IPv4
   * sockets only, and by netns_install_rules, which then adds IPv4 TPROXY routing
   * only. The rule set is the same either way: should IPv6 be enabled later, its TCP
   * is redirected to an IPv6 port nothing of the proxy's listens on (refused), its
   * DNS to [::1], where no responder is, and everything else is dropped as always. */
  int ipv4_only;
};

/* Sockets of one sandbox, created inside its namespace. -1 where not created. */
struct netns_fds {
  int tcp4;        /* 0.0.0.0:proxy_port, listening */
  int tcp6;        /* [::]:proxy_port (IPV6_V6ONLY), listening */
  int tproxy4;     /* transparent listeners, NETNS_CAPTURE_TPROXY only */
  int tproxy6;
  int dns_udp4;    /* 127.0.0.53:53 */
  int dns_tcp4;    /* 127.0.0.53:53, listening */
  int dns_udp6;    /* [::1]:53 */
  int dns_tcp6;    /* [::1]:53, listening */
};

/* Sets every fd to -1. */
void netns_fds_init(struct netns_fds *f);

/* Closes every fd that is not -1 and resets it. */
void netns_fds_close(struct netns_fds *f);

/*
 * Opens a network namespace by path (/var/run/netns/NAME, /proc/PID/ns/net) and checks
 * that it is one. Returns an O_CLOEXEC fd or a negative errno (-EINVAL: not a netns).
 */
int netns_open(const char *path);

/* Creates a new, anonymous network namespace; returns an fd referring to it. It lives
 * as long as a reference (this fd, a process, a socket inside it) remains. */
int netns_create(void);

/*
 * Runs fn(arg) on a new thread that has joined the namespace nsfd (borrowed), waits
 * for it, and returns fn's result (or a negative errno if the thread could not be set
 * up). The calling thread's namespace is never touched.
 */
int netns_run(int nsfd, int (*fn)(void *arg), void *arg);

/*
 * 1 if nsfd is the process's own network namespace (its main thread's: the host's for
 * the daemon and the jail), which is never a sandbox's: its rules would cut the host,
 * and the proxy's own upstream connections, off the network. 0 if another, or a
 * negative errno.
 */
int netns_is_own(int nsfd);

/*
 * The namespace's cookie (SO_NETNS_COOKIE, Linux 5.14): a number the kernel never
 * gives another namespace while it runs, unlike the nsfs inode number, which a new
 * namespace often gets as soon as the old one is freed. netns_sock_cookie reads it from
 * a socket created in the namespace; netns_cookie creates one there (on a helper
 * thread). 0 or a negative errno (-ENOPROTOOPT before Linux 5.14).
 */
int netns_sock_cookie(int fd, uint64_t *cookie);
int netns_cookie(int nsfd, uint64_t *cookie);

/* ---- the following run inside the target namespace (from netns_run) ---- */

/* Brings `lo` up and, if the namespace has no IPv4/IPv6 default route, adds
 * `default dev lo src 127.0.0.1` and `default dev lo src ::1`. Also sets
 * net.ipv4.conf.all.route_localnet=1 in the namespace, which the prerouting DNAT of
 * guests' DNS to 127.0.0.53 needs. *ipv4_only is set to 1 when IPv6 is disabled on
 * lo (see netns_rules_opts.ipv4_only); then nothing is done for IPv6. */
int netns_setup_links(int *ipv4_only, char *err, size_t errsz);

/*
 * Asks the kernel of the namespace it was opened in whether an address is that
 * namespace's own: one it routes as local (an address of any of its interfaces,
 * loopback), which a connection from there reaches on the host itself. One route
 * lookup (RTM_GETROUTE) per question, on a netlink socket kept open.
 */
struct netns_local;

/* Opens one in the calling thread's namespace: 0 or a negative errno. */
int netns_local_open(struct netns_local **out);

/* NULL is a no-op. */
void netns_local_close(struct netns_local *l);

/* 1 if sa (AF_INET or AF_INET6; a v4-mapped address counts as IPv4) is local, 0 if
 * not or if nothing routes it (or a prohibit or blackhole route refuses it), a
 * negative errno when the kernel cannot be asked. */
int netns_addr_is_local(struct netns_local *l, const struct sockaddr *sa);

/*
 * Creates the sandbox's sockets, all O_CLOEXEC|O_NONBLOCK; the caller owns them (close
 * with netns_fds_close); with o->ipv4_only the IPv6 ones stay -1. proxy_port 0 picks a
 * free port (the same for v4 and v6), as does tproxy_port 0 with NETNS_CAPTURE_TPROXY;
 * dns_port 0 means NETNS_DNS_PORT. The chosen ports are written back into *o. Must run
 * after netns_setup_links (the responder must bind 127.0.0.53 with `lo` up). On failure
 * no fd is left open.
 */
int netns_sockets(struct netns_rules_opts *o, struct netns_fds *out, char *err,
                  size_t errsz);

/*
 * Installs (or atomically replaces) table inet authproxy: one batch that deletes the
 * old table if present and adds the new one. With NETNS_CAPTURE_TPROXY also the fwmark
 * policy routing (added before the batch, removed again if the batch fails and it was
 * not there before); with NETNS_CAPTURE_REDIRECT stale TPROXY routing is removed. A
 * netlink error names the object (chain/rule) that failed, followed by the ports the
 * rule names refer to ("... [proxy_port 15001, tproxy_port 0, dns_port 53]"); on error
 * the previous table, if any, is left exactly as it was.
 */
int netns_install_rules(const struct netns_rules_opts *o, char *err, size_t errsz);

/* The nf_tables sockets of these calls are closed by one background thread of this
 * name (started on first use): closing one can wait for an RCU grace period, which
 * the caller of netns_run would otherwise wait for too. See nft.c. */
#define NETNS_NFT_CLOSER_NAME "nft-close"

/* Deletes table inet authproxy (and the TPROXY routing); -ENOENT if absent. */
int netns_remove_rules(char *err, size_t errsz);

/*
 * Appends the messages of the rule set for o to an open batch (between the batch
 * begin/end messages the caller adds): add table (a no-op if it exists), delete table,
 * add table, its chains, its rules; every message carries NLM_F_ACK. Pure: builds
 * nftnl objects, no I/O, so it is testable without privileges. *seq is the sequence
 * number of the first message and is advanced for each one. Returns the number of
 * messages or a negative errno: -EINVAL for invalid opts (a port 0, an unknown capture
 * mode), -ENOSPC if names_cap is too small, -EMSGSIZE if the batch (see
 * NETNS_BATCH_LIMIT) is full; after an error the batch must be discarded. names (may
 * be NULL) receives, per message index, a static description ("chain nat_output (...)",
 * "rule 6 of chain nat_output (tcp redirect to :proxy_port)") used to name the object
 * that failed.
 *
 * The rule set: nat_output sends DNS (UDP/TCP port 53, any address) to the responder
 * and redirects every other TCP connection not to a local address to proxy_port;
 * nat_prerouting (and with TPROXY, mangle_prerouting) does the same for traffic
 * entering through an interface of the namespace (IPv4 DNS only: IPv6 cannot be routed
 * to ::1 from outside `lo`, so guests' IPv6 DNS is dropped), dropping what comes from
 * a source not routed back through that interface and giving the flows it captures
 * the ct mark NETNS_TPROXY_MARK; filter_input, filter_output and filter_forward
 * drop, with a counter, everything that is not loopback or one of those redirected
 * flows (IPv6 neighbour discovery excepted, the
 * counterpart of ARP, which nf_tables' inet family does not see). filter_output
 * passes packets to a non-local address only as replies of marked flows (the answers
 * to a guest): neither the sandbox's own connections (from a foreign source bound
 * with IPV6_FREEBIND, their SYN-ACKs would go out to it) nor a connection another
 * table's nat chain translated first. filter_postrouting drops packets to a local
 * address that leave through an interface other than lo (a socket bound to an
 * uplink with SO_BINDTODEVICE sends 127.0.0.1 out of it).
 */
int netns_build_rules(const struct netns_rules_opts *o, struct mnl_nlmsg_batch *b,
                      uint32_t *seq, const char **names, size_t names_cap);

/*
 * Like netns_build_rules, for the lockdown table netns_detach installs: table inet
 * authproxy with filter_input, filter_output and filter_forward chains that accept
 * loopback, and the TCP connections guests opened before (marked by the rule set's
 * capture), and drop everything else with a counter, and the same
 * filter_postrouting as the rule set; no redirection: a nat chain that translates
 * nothing new, so that the connections redirected before drain.
 */
int netns_build_lockdown(struct mnl_nlmsg_batch *b, uint32_t *seq, const char **names,
                         size_t names_cap);

/* ---- convenience: everything for one sandbox ---- */

/*
 * In namespace nsfd: links, sockets, rules, in that order (rules last, so a failure
 * leaves no redirect to a listener that does not exist). On failure nothing is left
 * installed and no fd is returned. Sets o->ipv4_only (whatever it was) when the
 * namespace has IPv6 disabled: then only IPv4 is set up and captured.
 */
int netns_attach(int nsfd, struct netns_rules_opts *o, struct netns_fds *out, char *err,
                 size_t errsz);

/*
 * In namespace nsfd: removes the proxy's rules. The namespace is left without network:
 * rather than deleting the table, detach atomically replaces it with the lockdown table
 * (netns_build_lockdown), so that a namespace whose runtime gave it an uplink (a veth)
 * does not gain unfiltered network when the proxy lets go of it (invariant I1: fail
 * closed). The TPROXY policy routing is removed. Callers that really want the table
 * gone use netns_remove_rules inside the namespace.
 */
int netns_detach(int nsfd, char *err, size_t errsz);

#endif
