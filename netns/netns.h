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

#define NETNS_TABLE "authproxy"        /* table inet authproxy */
#define NETNS_DNS_ADDR4 "127.0.0.53"   /* where the DNS responder listens (v4) */
#define NETNS_DNS_PORT 53
#define NETNS_TPROXY_MARK 0x4150       /* fwmark of TPROXY-captured packets ("AP") */
#define NETNS_TPROXY_TABLE 0x4150      /* policy routing table for them */

enum netns_capture {
  NETNS_CAPTURE_REDIRECT, /* forwarded traffic (guest tap, nested veth): nat REDIRECT */
  NETNS_CAPTURE_TPROXY,   /* forwarded traffic via TPROXY to a transparent listener */
};

/* What the rule set redirects where. Ports are those of sockets netns_sockets made. */
struct netns_rules_opts {
  uint16_t proxy_port;   /* TCP listener (0.0.0.0 and [::]) for captured connections */
  uint16_t tproxy_port;  /* transparent listener, only with NETNS_CAPTURE_TPROXY */
  uint16_t dns_port;     /* UDP+TCP responder on 127.0.0.53 (and [::1]); normally 53 */
  enum netns_capture capture;
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

/* ---- the following run inside the target namespace (from netns_run) ---- */

/* Brings `lo` up and, if the namespace has no IPv4/IPv6 default route, adds
 * `default dev lo src 127.0.0.1` and `default dev lo src ::1`. */
int netns_setup_links(char *err, size_t errsz);

/*
 * Creates the sandbox's sockets. proxy_port 0 picks a free port (the same for v4 and
 * v6); the chosen ports are written back into *o. Must run after netns_setup_links
 * (the responder must bind 127.0.0.53 with `lo` up).
 */
int netns_sockets(struct netns_rules_opts *o, struct netns_fds *out, char *err,
                  size_t errsz);

/*
 * Installs (or atomically replaces) table inet authproxy: one batch that deletes the
 * old table if present and adds the new one. With NETNS_CAPTURE_TPROXY also the fwmark
 * policy routing. A netlink error names the object (chain/rule) that failed.
 */
int netns_install_rules(const struct netns_rules_opts *o, char *err, size_t errsz);

/* Deletes table inet authproxy (and the TPROXY routing); -ENOENT if absent. */
int netns_remove_rules(char *err, size_t errsz);

/*
 * Appends the messages of the rule set for o to an open batch (between the batch
 * begin/end messages the caller adds). Pure: builds nftnl objects, no I/O, so it is
 * testable without privileges. *seq is advanced for each message. Returns the number
 * of messages or a negative errno. names (may be NULL) receives, per message index,
 * a static description ("chain nat_output", "rule 3 of filter_output: ...") used to
 * name the object that failed.
 */
int netns_build_rules(const struct netns_rules_opts *o, struct mnl_nlmsg_batch *b,
                      uint32_t *seq, const char **names, size_t names_cap);

/* ---- convenience: everything for one sandbox ---- */

/*
 * In namespace nsfd: links, sockets, rules, in that order (rules last, so a failure
 * leaves no redirect to a listener that does not exist). On failure nothing is left
 * installed and no fd is returned.
 */
int netns_attach(int nsfd, struct netns_rules_opts *o, struct netns_fds *out, char *err,
                 size_t errsz);

/* In namespace nsfd: removes the rules. The namespace is left without network. */
int netns_detach(int nsfd, char *err, size_t errsz);

#endif
