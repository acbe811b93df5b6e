/*
 * The `inet authproxy` rule set as nf_tables messages (libnftnl). Pure: no I/O, so the
 * unit tests can inspect every message without privileges.
 *
 * The expressions mirror what nft(8) emits for the same rules (`nft --debug=netlink`),
 * so `nft list table inet authproxy` shows them in familiar syntax; each rule's name
 * below is that syntax, with the configured ports by name.
 */
#include <errno.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tuple_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>

#include "netns/netns.h"

#define CH_NAT_OUTPUT "nat_output"
#define CH_NAT_PREROUTING "nat_prerouting"
#define CH_MANGLE_PREROUTING "mangle_prerouting"
#define CH_FILTER_INPUT "filter_input"
#define CH_FILTER_OUTPUT "filter_output"
#define CH_FILTER_FORWARD "filter_forward"
#define CH_FILTER_POSTROUTING "filter_postrouting"

/* Hook priorities of iptables' tables, as nft names them: dstnat, mangle, filter. */
#define PRIO_DSTNAT (-100)
#define PRIO_MANGLE (-150)
#define PRIO_FILTER 0

#define ICMPV6_ND_NEIGHBOR_SOLICIT 135
#define ICMPV6_ND_NEIGHBOR_ADVERT 136

/* Appending state; the first error sticks and every later step becomes a no-op, so the
 * rule set below reads as a plain list. */
struct build {
  struct mnl_nlmsg_batch *b;
  uint32_t *seq;
  const char **names;
  size_t names_cap;
  int n;   /* messages appended */
  int err; /* first error, negative errno */
};

/* One rule being assembled. */
struct rule {
  struct build *c;
  struct nftnl_rule *r;
};

static void fail(struct build *c, int err)
{
  if (c->err == 0)
    c->err = err;
}

/* Starts a message in the batch's current slot, or returns NULL after an error. */
static struct nlmsghdr *msg_start(struct build *c, uint16_t type, uint16_t flags)
{
  if (c->err != 0)
    return NULL;
  if (c->n >= NETNS_BATCH_MAX_MSGS || (c->names != NULL && (size_t)c->n >= c->names_cap)) {
    fail(c, -ENOSPC);
    return NULL;
  }
  return nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(c->b), type, NFPROTO_INET,
                               flags | NLM_F_ACK, *c->seq);
}

static void msg_end(struct build *c, const char *name)
{
  if (c->names != NULL)
    c->names[c->n] = name;
  c->n++;
  (*c->seq)++;
  /* false: this message ran past the limit into libmnl's overrun half. */
  if (!mnl_nlmsg_batch_next(c->b))
    fail(c, -EMSGSIZE);
}

static void put_table(struct build *c, uint16_t type, uint16_t flags, const char *name)
{
  struct nftnl_table *t;
  struct nlmsghdr *nlh;

  if (c->err != 0)
    return;
  t = nftnl_table_alloc();
  if (t == NULL) {
    fail(c, -ENOMEM);
    return;
  }
  nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
  if (nftnl_table_set_str(t, NFTNL_TABLE_NAME, NETNS_TABLE) != 0) {
    fail(c, -ENOMEM);
    goto out;
  }
  nlh = msg_start(c, type, flags);
  if (nlh == NULL)
    goto out;
  nftnl_table_nlmsg_build_payload(nlh, t);
  msg_end(c, name);
out:
  nftnl_table_free(t);
}

/* The add / delete / add sequence that replaces the table atomically: the first add
 * makes sure the delete has something to delete. */
static void put_table_replace(struct build *c)
{
  put_table(c, NFT_MSG_NEWTABLE, NLM_F_CREATE,
            "table inet " NETNS_TABLE " (add, a no-op if it exists)");
  put_table(c, NFT_MSG_DELTABLE, 0, "table inet " NETNS_TABLE " (delete the old table)");
  put_table(c, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL,
            "table inet " NETNS_TABLE " (add the new table)");
}

static void put_chain(struct build *c, const char *chain, const char *type, uint32_t hook,
                      int32_t prio, uint32_t policy, const char *name)
{
  struct nftnl_chain *ch;
  struct nlmsghdr *nlh;

  if (c->err != 0)
    return;
  ch = nftnl_chain_alloc();
  if (ch == NULL) {
    fail(c, -ENOMEM);
    return;
  }
  nftnl_chain_set_u32(ch, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  nftnl_chain_set_u32(ch, NFTNL_CHAIN_HOOKNUM, hook);
  nftnl_chain_set_s32(ch, NFTNL_CHAIN_PRIO, prio);
  nftnl_chain_set_u32(ch, NFTNL_CHAIN_POLICY, policy);
  if (nftnl_chain_set_str(ch, NFTNL_CHAIN_TABLE, NETNS_TABLE) != 0 ||
      nftnl_chain_set_str(ch, NFTNL_CHAIN_NAME, chain) != 0 ||
      nftnl_chain_set_str(ch, NFTNL_CHAIN_TYPE, type) != 0) {
    fail(c, -ENOMEM);
    goto out;
  }
  nlh = msg_start(c, NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL);
  if (nlh == NULL)
    goto out;
  nftnl_chain_nlmsg_build_payload(nlh, ch);
  msg_end(c, name);
out:
  nftnl_chain_free(ch);
}

static void rule_begin(struct build *c, struct rule *r, const char *chain)
{
  r->c = c;
  r->r = NULL;
  if (c->err != 0)
    return;
  r->r = nftnl_rule_alloc();
  if (r->r == NULL) {
    fail(c, -ENOMEM);
    return;
  }
  nftnl_rule_set_u32(r->r, NFTNL_RULE_FAMILY, NFPROTO_INET);
  if (nftnl_rule_set_str(r->r, NFTNL_RULE_TABLE, NETNS_TABLE) != 0 ||
      nftnl_rule_set_str(r->r, NFTNL_RULE_CHAIN, chain) != 0)
    fail(c, -ENOMEM);
}

/* Appends the rule (appended at the end of its chain) and frees it. */
static void rule_end(struct rule *r, const char *name)
{
  struct nlmsghdr *nlh;

  nlh = msg_start(r->c, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
  if (nlh != NULL) {
    nftnl_rule_nlmsg_build_payload(nlh, r->r);
    msg_end(r->c, name);
  }
  /* Frees the expressions too. Not NULL-safe in libnftnl 1.2.4. */
  if (r->r != NULL)
    nftnl_rule_free(r->r);
  r->r = NULL;
}

/* Adds an expression of kind to the rule (which then owns it). */
static struct nftnl_expr *expr(struct rule *r, const char *kind)
{
  struct nftnl_expr *e;

  if (r->c->err != 0 || r->r == NULL)
    return NULL;
  e = nftnl_expr_alloc(kind);
  if (e == NULL) {
    fail(r->c, -ENOMEM);
    return NULL;
  }
  nftnl_rule_add_expr(r->r, e);
  return e;
}

static void set_u32(struct rule *r, struct nftnl_expr *e, uint16_t attr, uint32_t v)
{
  /* nftnl_expr_set_u32 hides the result; this reports an attribute the expression
   * does not have. */
  if (e != NULL && nftnl_expr_set(e, attr, &v, sizeof(v)) != 0)
    fail(r->c, -EINVAL);
}

static void set_data(struct rule *r, struct nftnl_expr *e, uint16_t attr, const void *data,
                     uint32_t len)
{
  if (e != NULL && nftnl_expr_set(e, attr, data, len) != 0)
    fail(r->c, -EINVAL);
}

/* ---- expressions ---- */

static void load_meta(struct rule *r, uint32_t key)
{
  struct nftnl_expr *e = expr(r, "meta");

  set_u32(r, e, NFTNL_EXPR_META_KEY, key);
  set_u32(r, e, NFTNL_EXPR_META_DREG, NFT_REG_1);
}

static void load_payload(struct rule *r, uint32_t base, uint32_t offset, uint32_t len)
{
  struct nftnl_expr *e = expr(r, "payload");

  set_u32(r, e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_PAYLOAD_BASE, base);
  set_u32(r, e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  set_u32(r, e, NFTNL_EXPR_PAYLOAD_LEN, len);
}

static void load_ct(struct rule *r, uint32_t key)
{
  struct nftnl_expr *e = expr(r, "ct");

  set_u32(r, e, NFTNL_EXPR_CT_KEY, key);
  set_u32(r, e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
}

static void cmp(struct rule *r, uint32_t op, const void *data, uint32_t len)
{
  struct nftnl_expr *e = expr(r, "cmp");

  set_u32(r, e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_CMP_OP, op);
  set_data(r, e, NFTNL_EXPR_CMP_DATA, data, len);
}

static void cmp_u8(struct rule *r, uint32_t op, uint8_t v)
{
  cmp(r, op, &v, sizeof(v));
}

static void cmp_u32(struct rule *r, uint32_t op, uint32_t v)
{
  cmp(r, op, &v, sizeof(v));
}

/* Register 1 has any bit of mask set (`ct state invalid`, `ct status dnat`). */
static void test_bits(struct rule *r, uint32_t mask)
{
  struct nftnl_expr *e = expr(r, "bitwise");
  uint32_t zero = 0;

  set_u32(r, e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_BITWISE_LEN, sizeof(mask));
  set_data(r, e, NFTNL_EXPR_BITWISE_MASK, &mask, sizeof(mask));
  set_data(r, e, NFTNL_EXPR_BITWISE_XOR, &zero, sizeof(zero));
  cmp_u32(r, NFT_CMP_NEQ, 0);
}

static void immediate(struct rule *r, uint32_t reg, const void *data, uint32_t len)
{
  struct nftnl_expr *e = expr(r, "immediate");

  set_u32(r, e, NFTNL_EXPR_IMM_DREG, reg);
  set_data(r, e, NFTNL_EXPR_IMM_DATA, data, len);
}

static void immediate_port(struct rule *r, uint32_t reg, uint16_t port)
{
  uint16_t be = htons(port);

  immediate(r, reg, &be, sizeof(be));
}

/* `meta nfproto ipv4|ipv6` */
static void match_nfproto(struct rule *r, uint8_t nfproto)
{
  load_meta(r, NFT_META_NFPROTO);
  cmp_u8(r, NFT_CMP_EQ, nfproto);
}

/* `meta l4proto tcp|udp|ipv6-icmp` */
static void match_l4proto(struct rule *r, uint8_t proto)
{
  load_meta(r, NFT_META_L4PROTO);
  cmp_u8(r, NFT_CMP_EQ, proto);
}

/* `tcp dport P` / `udp dport P` (after match_l4proto). */
static void match_dport(struct rule *r, uint16_t port)
{
  uint16_t be = htons(port);

  load_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, sizeof(be));
  cmp(r, NFT_CMP_EQ, &be, sizeof(be));
}

/* `iifname "lo"`: the name, NUL-padded to IFNAMSIZ, as nft encodes an exact match. */
static void match_iif_lo(struct rule *r)
{
  char name[16] = "lo";

  load_meta(r, NFT_META_IIFNAME);
  cmp(r, NFT_CMP_EQ, name, sizeof(name));
}

/* `oifname "lo"` */
static void match_oif_lo(struct rule *r)
{
  char name[16] = "lo";

  load_meta(r, NFT_META_OIFNAME);
  cmp(r, NFT_CMP_EQ, name, sizeof(name));
}

/* `fib daddr type local|anycast` (RTN_*): local is an address of this namespace. */
static void match_daddr_type(struct rule *r, uint32_t type)
{
  struct nftnl_expr *e = expr(r, "fib");

  set_u32(r, e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
  set_u32(r, e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
  cmp_u32(r, NFT_CMP_EQ, type);
}

static void match_daddr_local(struct rule *r)
{
  match_daddr_type(r, RTN_LOCAL);
}

/* `fib saddr . iif oif missing`: the source address is not routed back through the
 * interface the packet came in on (reverse path). */
static void match_rpf_fails(struct rule *r)
{
  struct nftnl_expr *e = expr(r, "fib");

  set_u32(r, e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_OIF);
  set_u32(r, e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_SADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT);
  /* The kernel stores the answer as one byte in a cleared register; nft compares the
   * whole register, and lists a shorter comparison as "missing/8". */
  cmp_u32(r, NFT_CMP_EQ, 0);
}

/* `meta mark MARK` / `ct mark MARK` */
static void match_meta_mark(struct rule *r)
{
  load_meta(r, NFT_META_MARK);
  cmp_u32(r, NFT_CMP_EQ, NETNS_TPROXY_MARK);
}

static void match_ct_mark(struct rule *r)
{
  load_ct(r, NFT_CT_MARK);
  cmp_u32(r, NFT_CMP_EQ, NETNS_TPROXY_MARK);
}

/* `ct original protocol tcp` (listed `ct protocol tcp`): the connection is TCP; an
 * ICMP error related to it, which has the connection's conntrack, matches too. */
static void match_ct_tcp(struct rule *r)
{
  struct nftnl_expr *e = expr(r, "ct");
  uint8_t dir = IP_CT_DIR_ORIGINAL;

  set_u32(r, e, NFTNL_EXPR_CT_KEY, NFT_CT_PROTOCOL);
  set_u32(r, e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
  set_data(r, e, NFTNL_EXPR_CT_DIR, &dir, sizeof(dir)); /* a u8 in libnftnl */
  cmp_u8(r, NFT_CMP_EQ, IPPROTO_TCP);
}

/* `ct direction reply`: the packet goes from the connection's responder back to its
 * initiator. */
static void match_ct_reply(struct rule *r)
{
  load_ct(r, NFT_CT_DIRECTION);
  cmp_u8(r, NFT_CMP_EQ, IP_CT_DIR_REPLY);
}

/* `meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 135-136 ip6 hoplimit 255` */
static void match_ipv6_nd(struct rule *r)
{
  match_nfproto(r, NFPROTO_IPV6);
  match_l4proto(r, IPPROTO_ICMPV6);
  load_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
  cmp_u8(r, NFT_CMP_GTE, ICMPV6_ND_NEIGHBOR_SOLICIT);
  cmp_u8(r, NFT_CMP_LTE, ICMPV6_ND_NEIGHBOR_ADVERT);
  load_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 7, 1); /* ip6 hoplimit */
  cmp_u8(r, NFT_CMP_EQ, 255);
}

/* `socket transparent 1`: the packet belongs to a transparent (TPROXY) socket. */
static void match_socket_transparent(struct rule *r)
{
  struct nftnl_expr *e = expr(r, "socket");

  set_u32(r, e, NFTNL_EXPR_SOCKET_KEY, NFT_SOCKET_TRANSPARENT);
  set_u32(r, e, NFTNL_EXPR_SOCKET_DREG, NFT_REG_1);
  cmp_u8(r, NFT_CMP_EQ, 1);
}

/* `socket mark SOCK_MARK`: the packet is for one of the daemon's sockets
 * (netns_sockets marks them). No match when no socket takes the packet, and for a
 * TCP socket that is not a full one (a connection in its handshake, or in
 * TIME_WAIT): for UDP only, whose sockets are all full ones. */
static void match_socket_mark(struct rule *r)
{
  struct nftnl_expr *e = expr(r, "socket");

  set_u32(r, e, NFTNL_EXPR_SOCKET_KEY, NFT_SOCKET_MARK);
  set_u32(r, e, NFTNL_EXPR_SOCKET_DREG, NFT_REG_1);
  cmp_u32(r, NFT_CMP_EQ, NETNS_SOCK_MARK);
}

/* `meta mark SOCK_MARK`: the packet was sent by one of the daemon's sockets (or by the
 * kernel on behalf of one: a SYN-ACK, a reset). */
static void match_sent_by_daemon(struct rule *r)
{
  load_meta(r, NFT_META_MARK);
  cmp_u32(r, NFT_CMP_EQ, NETNS_SOCK_MARK);
}

static void counter(struct rule *r)
{
  expr(r, "counter");
}

static void verdict(struct rule *r, uint32_t v)
{
  struct nftnl_expr *e = expr(r, "immediate");

  set_u32(r, e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  set_u32(r, e, NFTNL_EXPR_IMM_VERDICT, v);
}

/* `dnat ip to 127.0.0.53:P` / `dnat ip6 to [::1]:P` */
static void dnat_dns(struct rule *r, uint8_t nfproto, uint16_t port)
{
  struct nftnl_expr *e;
  struct in_addr a4;

  if (nfproto == NFPROTO_IPV4) {
    inet_pton(AF_INET, NETNS_DNS_ADDR4, &a4);
    immediate(r, NFT_REG_1, &a4, sizeof(a4));
  } else {
    immediate(r, NFT_REG_1, &in6addr_loopback, sizeof(in6addr_loopback));
  }
  immediate_port(r, NFT_REG_2, port);
  e = expr(r, "nat");
  set_u32(r, e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
  set_u32(r, e, NFTNL_EXPR_NAT_FAMILY, nfproto);
  set_u32(r, e, NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_NAT_REG_PROTO_MIN, NFT_REG_2);
  set_u32(r, e, NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
}

/* `redirect to :P` */
static void redirect(struct rule *r, uint16_t port)
{
  struct nftnl_expr *e;

  immediate_port(r, NFT_REG_1, port);
  e = expr(r, "redir");
  set_u32(r, e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
  set_u32(r, e, NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
}

/* `tproxy ip to :P` / `tproxy ip6 to :P` */
static void tproxy(struct rule *r, uint8_t nfproto, uint16_t port)
{
  struct nftnl_expr *e;

  immediate_port(r, NFT_REG_1, port);
  e = expr(r, "tproxy");
  set_u32(r, e, NFTNL_EXPR_TPROXY_FAMILY, nfproto);
  set_u32(r, e, NFTNL_EXPR_TPROXY_REG_PORT, NFT_REG_1);
}

/* `meta mark set MARK` / `ct mark set MARK` */
static void set_meta_mark(struct rule *r)
{
  uint32_t mark = NETNS_TPROXY_MARK;
  struct nftnl_expr *e;

  immediate(r, NFT_REG_1, &mark, sizeof(mark));
  e = expr(r, "meta");
  set_u32(r, e, NFTNL_EXPR_META_KEY, NFT_META_MARK);
  set_u32(r, e, NFTNL_EXPR_META_SREG, NFT_REG_1);
}

static void set_ct_mark(struct rule *r)
{
  uint32_t mark = NETNS_TPROXY_MARK;
  struct nftnl_expr *e;

  immediate(r, NFT_REG_1, &mark, sizeof(mark));
  e = expr(r, "ct");
  set_u32(r, e, NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
  set_u32(r, e, NFTNL_EXPR_CT_SREG, NFT_REG_1);
}

/* ---- rules shared by several chains ---- */

/* `meta nfproto F meta l4proto P P dport 53 [ct mark set MARK] dnat to
 * <responder>:dns_port`; the mark for guests' queries (see rule_reply_accept). */
static void rule_dns(struct build *c, const char *chain, uint8_t nfproto, uint8_t l4proto,
                     uint16_t dns_port, int guest, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_nfproto(&r, nfproto);
  match_l4proto(&r, l4proto);
  match_dport(&r, NETNS_DNS_PORT);
  if (guest)
    set_ct_mark(&r);
  dnat_dns(&r, nfproto, dns_port);
  rule_end(&r, name);
}

/*
 * `fib saddr . iif oif missing counter drop`, for traffic entering through an interface
 * of the namespace. Its flows are answered by the proxy and the responder (and
 * rule_reply_accept lets the answers out): from a source routed elsewhere, out of an
 * uplink say, the answers would be packets the sender addresses to anyone, each
 * SYN-ACK carrying the original destination it chose.
 */
static void rule_rpf_drop(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_rpf_fails(&r);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, name);
}

static void rule_oif_lo_accept(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_oif_lo(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, name);
}

static void rule_iif_lo_accept(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_iif_lo(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, name);
}

static void rule_local_accept(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_daddr_local(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, name);
}


static void rule_ct_bits(struct build *c, const char *chain, uint32_t key, uint32_t mask,
                         int count, uint32_t v, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  load_ct(&r, key);
  test_bits(&r, mask);
  if (count)
    counter(&r);
  verdict(&r, v);
  rule_end(&r, name);
}

static void rule_nd_accept(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_ipv6_nd(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, name);
}

/* `ct direction reply ct mark MARK meta mark SOCK_MARK accept` */
static void rule_reply_accept(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  match_ct_reply(&r);
  match_ct_mark(&r);
  match_sent_by_daemon(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, name);
}

static void rule_counter_drop(struct build *c, const char *chain, const char *name)
{
  struct rule r;

  rule_begin(c, &r, chain);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, name);
}

/* ---- chains ---- */

static void chain_nat_output(struct build *c, const struct netns_rules_opts *o)
{
  struct rule r;

  put_chain(c, CH_NAT_OUTPUT, "nat", NF_INET_LOCAL_OUT, PRIO_DSTNAT, NF_ACCEPT,
            "chain nat_output (type nat hook output priority dstnat)");
  rule_dns(c, CH_NAT_OUTPUT, NFPROTO_IPV4, IPPROTO_UDP, o->dns_port, 0,
           "rule 1 of chain nat_output (udp dport 53 dnat ip to 127.0.0.53:dns_port)");
  rule_dns(c, CH_NAT_OUTPUT, NFPROTO_IPV4, IPPROTO_TCP, o->dns_port, 0,
           "rule 2 of chain nat_output (tcp dport 53 dnat ip to 127.0.0.53:dns_port)");
  rule_dns(c, CH_NAT_OUTPUT, NFPROTO_IPV6, IPPROTO_UDP, o->dns_port, 0,
           "rule 3 of chain nat_output (udp dport 53 dnat ip6 to [::1]:dns_port)");
  rule_dns(c, CH_NAT_OUTPUT, NFPROTO_IPV6, IPPROTO_TCP, o->dns_port, 0,
           "rule 4 of chain nat_output (tcp dport 53 dnat ip6 to [::1]:dns_port)");
  /* Loopback and the namespace's own addresses stay untouched. */
  rule_local_accept(c, CH_NAT_OUTPUT, "rule 5 of chain nat_output (fib daddr type local accept)");
  rule_begin(c, &r, CH_NAT_OUTPUT);
  match_l4proto(&r, IPPROTO_TCP);
  redirect(&r, o->proxy_port);
  rule_end(&r, "rule 6 of chain nat_output (tcp redirect to :proxy_port)");
}

/* Traffic entering through an interface of the namespace: the DNS part, both modes. */
static void chain_nat_prerouting(struct build *c, const struct netns_rules_opts *o)
{
  struct rule r;

  put_chain(c, CH_NAT_PREROUTING, "nat", NF_INET_PRE_ROUTING, PRIO_DSTNAT, NF_ACCEPT,
            "chain nat_prerouting (type nat hook prerouting priority dstnat)");
  /* The namespace's own packets come back through lo; nat_output handled them. */
  rule_iif_lo_accept(c, CH_NAT_PREROUTING, "rule 1 of chain nat_prerouting (iifname lo accept)");
  rule_rpf_drop(c, CH_NAT_PREROUTING,
                "rule 2 of chain nat_prerouting (fib saddr . iif oif missing counter drop)");
  /* Needs route_localnet=1 (netns_setup_links): 127.0.0.53 reached from outside lo. */
  rule_dns(c, CH_NAT_PREROUTING, NFPROTO_IPV4, IPPROTO_UDP, o->dns_port, 1,
           "rule 3 of chain nat_prerouting (udp dport 53 ct mark set MARK dnat ip to "
           "127.0.0.53:dns_port)");
  rule_dns(c, CH_NAT_PREROUTING, NFPROTO_IPV4, IPPROTO_TCP, o->dns_port, 1,
           "rule 4 of chain nat_prerouting (tcp dport 53 ct mark set MARK dnat ip to "
           "127.0.0.53:dns_port)");
  /* Capture is for traffic the namespace would route onwards (a guest's). A
   * connection to one of its own addresses is not: proxied, it would have the
   * sandbox's policy and credentials applied for whoever opened it, a peer on an
   * uplink's network or the daemon itself when another sandbox dials the address,
   * and the proxy would dial the address again from the host, back into this chain
   * (one connection became one per --max-conns). In both modes: under TPROXY the
   * first packet, assigned to the transparent listener in mangle_prerouting, is
   * dropped here. */
  rule_begin(c, &r, CH_NAT_PREROUTING);
  match_l4proto(&r, IPPROTO_TCP);
  match_daddr_local(&r);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, "rule 5 of chain nat_prerouting (meta l4proto tcp fib daddr type local "
               "counter drop)");
  /* The namespace's IPv6 anycast addresses are its own too: with forwarding on, each
   * prefix's subnet-router address (fd00::/64 has fd00::), which a peer on the link
   * reaches without a route of its own. */
  rule_begin(c, &r, CH_NAT_PREROUTING);
  match_l4proto(&r, IPPROTO_TCP);
  match_daddr_type(&r, RTN_ANYCAST);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, "rule 6 of chain nat_prerouting (meta l4proto tcp fib daddr type anycast "
               "counter drop)");
  if (o->capture != NETNS_CAPTURE_REDIRECT)
    return;
  /* REDIRECT rewrites the destination to the incoming interface's primary address,
   * which the wildcard listener accepts. */
  rule_begin(c, &r, CH_NAT_PREROUTING);
  match_l4proto(&r, IPPROTO_TCP);
  set_ct_mark(&r);
  redirect(&r, o->proxy_port);
  rule_end(&r, "rule 7 of chain nat_prerouting (tcp ct mark set MARK redirect to "
               ":proxy_port)");
}

static void rule_tproxy(struct build *c, uint8_t nfproto, uint16_t port, const char *name)
{
  struct rule r;

  rule_begin(c, &r, CH_MANGLE_PREROUTING);
  match_nfproto(&r, nfproto);
  match_l4proto(&r, IPPROTO_TCP);
  tproxy(&r, nfproto, port);
  set_meta_mark(&r);
  /* The connection's mark lets filter_output pass the listener's replies, which carry
   * the original (foreign) address as source and no NAT status. */
  set_ct_mark(&r);
  rule_end(&r, name);
}

/* NETNS_CAPTURE_TPROXY: guests' TCP to the transparent listener. The fwmark routes the
 * marked packets to `lo` (netns_tproxy_routing_set) so they are delivered locally. */
static void chain_mangle_prerouting(struct build *c, const struct netns_rules_opts *o)
{
  struct rule r;

  put_chain(c, CH_MANGLE_PREROUTING, "filter", NF_INET_PRE_ROUTING, PRIO_MANGLE, NF_ACCEPT,
            "chain mangle_prerouting (type filter hook prerouting priority mangle)");
  rule_iif_lo_accept(c, CH_MANGLE_PREROUTING,
                     "rule 1 of chain mangle_prerouting (iifname lo accept)");
  /* DNS over TCP goes to the responder through nat_prerouting, not to the proxy. */
  rule_begin(c, &r, CH_MANGLE_PREROUTING);
  match_l4proto(&r, IPPROTO_TCP);
  match_dport(&r, NETNS_DNS_PORT);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, "rule 2 of chain mangle_prerouting (tcp dport 53 accept)");
  /* Later packets of a connection the transparent listener already accepted. */
  rule_begin(c, &r, CH_MANGLE_PREROUTING);
  match_l4proto(&r, IPPROTO_TCP);
  match_socket_transparent(&r);
  set_meta_mark(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, "rule 3 of chain mangle_prerouting (meta l4proto tcp socket transparent 1 "
               "meta mark set MARK accept)");
  /* TCP only: this chain sees every packet, neighbour discovery from the unspecified
   * address included, which no route leads back to; nat_prerouting checks the rest
   * (the first packet of each connection it captures). */
  rule_begin(c, &r, CH_MANGLE_PREROUTING);
  match_l4proto(&r, IPPROTO_TCP);
  match_rpf_fails(&r);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, "rule 4 of chain mangle_prerouting (meta l4proto tcp fib saddr . iif oif "
               "missing counter drop)");
  rule_tproxy(c, NFPROTO_IPV4, o->tproxy_port,
              "rule 5 of chain mangle_prerouting (meta l4proto tcp tproxy ip to :tproxy_port "
              "meta mark set MARK ct mark set MARK)");
  rule_tproxy(c, NFPROTO_IPV6, o->tproxy_port,
              "rule 6 of chain mangle_prerouting (meta l4proto tcp tproxy ip6 to :tproxy_port "
              "meta mark set MARK ct mark set MARK)");
}

static void chain_filter_input(struct build *c, const struct netns_rules_opts *o)
{
  int tp = o->capture == NETNS_CAPTURE_TPROXY;
  struct rule r;

  put_chain(c, CH_FILTER_INPUT, "filter", NF_INET_LOCAL_IN, PRIO_FILTER, NF_DROP,
            "chain filter_input (type filter hook input priority filter; policy drop)");
  rule_iif_lo_accept(c, CH_FILTER_INPUT, "rule 1 of chain filter_input (iifname lo accept)");
  rule_ct_bits(c, CH_FILTER_INPUT, NFT_CT_STATE, NF_CT_STATE_INVALID_BIT, 1, NF_DROP,
               "rule 2 of chain filter_input (ct state invalid counter drop)");
  /* A guest's (or a peer's) DNS over UDP, DNAT'ed to the responder, reaches the
   * responder only: with the daemon killed, a process of the sandbox's may bind
   * 127.0.0.53:53 (CAP_NET_BIND_SERVICE, or ip_unprivileged_port_start=0 as Docker
   * sets it) and would get it. Its answers would not leave (filter_output lets out
   * only what the daemon's sockets send), but what it received would be a way in.
   * TCP needs no such rule: a connection to such a process never gets its SYN-ACK
   * out. */
  rule_begin(c, &r, CH_FILTER_INPUT);
  match_l4proto(&r, IPPROTO_UDP);
  match_socket_mark(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, "rule 3 of chain filter_input (meta l4proto udp socket mark SOCK_MARK accept)");
  rule_begin(c, &r, CH_FILTER_INPUT);
  match_l4proto(&r, IPPROTO_UDP);
  load_ct(&r, NFT_CT_STATUS);
  test_bits(&r, IPS_DST_NAT);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, "rule 4 of chain filter_input (meta l4proto udp ct status dnat counter drop)");
  /* Redirected and DNAT'ed flows, both directions (and ICMP errors related to them). */
  rule_ct_bits(c, CH_FILTER_INPUT, NFT_CT_STATUS, IPS_DST_NAT, 0, NF_ACCEPT,
               "rule 5 of chain filter_input (ct status dnat accept)");
  rule_nd_accept(c, CH_FILTER_INPUT,
                 "rule 6 of chain filter_input (icmpv6 type 135-136 ip6 hoplimit 255 accept)");
  if (tp) {
    rule_begin(c, &r, CH_FILTER_INPUT);
    match_meta_mark(&r);
    verdict(&r, NF_ACCEPT);
    rule_end(&r, "rule 7 of chain filter_input (meta mark MARK accept)");
  }
  rule_counter_drop(c, CH_FILTER_INPUT,
                    tp ? "rule 8 of chain filter_input (counter drop)"
                       : "rule 7 of chain filter_input (counter drop)");
}

static void chain_filter_output(struct build *c)
{
  put_chain(c, CH_FILTER_OUTPUT, "filter", NF_INET_LOCAL_OUT, PRIO_FILTER, NF_DROP,
            "chain filter_output (type filter hook output priority filter; policy drop)");
  /* Loopback: with default routes via lo every packet leaves through lo, so what makes
   * traffic loopback is a local destination, not the output interface (which is
   * checked after routing, in filter_postrouting). */
  rule_local_accept(c, CH_FILTER_OUTPUT,
                    "rule 1 of chain filter_output (fib daddr type local accept)");
  rule_ct_bits(c, CH_FILTER_OUTPUT, NFT_CT_STATE, NF_CT_STATE_INVALID_BIT, 1, NF_DROP,
               "rule 2 of chain filter_output (ct state invalid counter drop)");
  /* The answers of the proxy, the transparent listener and the responder to traffic
   * that entered through an interface (a guest's), whose address is not local. Only
   * replies, and only of flows marked on their way in (nat_prerouting,
   * mangle_prerouting) from a source that passed the reverse-path check: not
   * 'ct status dnat', which every redirected connection has. A connection of the
   * sandbox's own, from a foreign source its socket bound with IPV6_FREEBIND (no
   * privilege needed), would have its SYN-ACK, carrying the original destination it
   * chose, sent out of an uplink to that source. And an original-direction packet
   * with DNAT status here was translated by another table's nat chain. Only what the
   * daemon's sockets send (or the kernel for them): with the daemon killed its ports
   * are free, and a process of the sandbox's listening on the proxy's port or bound
   * to the responder's address would answer a guest, or a peer on an uplink, through
   * the rules that still send the flows there. */
  rule_reply_accept(c, CH_FILTER_OUTPUT,
                    "rule 3 of chain filter_output (ct direction reply ct mark MARK meta mark "
                    "SOCK_MARK accept)");
  rule_nd_accept(c, CH_FILTER_OUTPUT,
                 "rule 4 of chain filter_output (icmpv6 type 135-136 ip6 hoplimit 255 accept)");
  rule_counter_drop(c, CH_FILTER_OUTPUT, "rule 5 of chain filter_output (counter drop)");
}

/* Guests' traffic is never routed onwards, whatever ip_forward says. */
static void chain_filter_forward(struct build *c)
{
  put_chain(c, CH_FILTER_FORWARD, "filter", NF_INET_FORWARD, PRIO_FILTER, NF_DROP,
            "chain filter_forward (type filter hook forward priority filter; policy drop)");
  rule_counter_drop(c, CH_FILTER_FORWARD, "rule 1 of chain filter_forward (counter drop)");
}

/*
 * A packet to a local address must leave through lo. filter_output cannot tell: the
 * output interface it sees is the one routed before nat_output redirected the
 * packet. Here, after routing, it is the real one. A socket bound to another device
 * (SO_BINDTODEVICE, which needs no privilege since Linux 5.7) does not match the
 * local routes, which are lo's, so its packets to 127.0.0.1 or ::1, redirected or
 * sent there, are routed out of that device, an uplink, destination and payload
 * intact.
 */
static void chain_filter_postrouting(struct build *c, const char *what)
{
  struct rule r;

  put_chain(c, CH_FILTER_POSTROUTING, "filter", NF_INET_POST_ROUTING, PRIO_FILTER, NF_ACCEPT,
            what);
  rule_oif_lo_accept(c, CH_FILTER_POSTROUTING,
                     "rule 1 of chain filter_postrouting (oifname lo accept)");
  rule_begin(c, &r, CH_FILTER_POSTROUTING);
  match_daddr_local(&r);
  counter(&r);
  verdict(&r, NF_DROP);
  rule_end(&r, "rule 2 of chain filter_postrouting (fib daddr type local counter drop)");
}

static int build_init(struct build *c, struct mnl_nlmsg_batch *b, uint32_t *seq,
                      const char **names, size_t names_cap)
{
  memset(c, 0, sizeof(*c));
  if (b == NULL || seq == NULL)
    return -EINVAL;
  c->b = b;
  c->seq = seq;
  c->names = names;
  c->names_cap = names_cap;
  return 0;
}

int netns_build_rules(const struct netns_rules_opts *o, struct mnl_nlmsg_batch *b,
                      uint32_t *seq, const char **names, size_t names_cap)
{
  struct build c;
  int ret;

  ret = build_init(&c, b, seq, names, names_cap);
  if (ret != 0)
    return ret;
  if (o == NULL || o->proxy_port == 0 || o->dns_port == 0)
    return -EINVAL;
  if (o->capture != NETNS_CAPTURE_REDIRECT && o->capture != NETNS_CAPTURE_TPROXY)
    return -EINVAL;
  if (o->capture == NETNS_CAPTURE_TPROXY && o->tproxy_port == 0)
    return -EINVAL;

  put_table_replace(&c);
  chain_nat_output(&c, o);
  chain_nat_prerouting(&c, o);
  if (o->capture == NETNS_CAPTURE_TPROXY)
    chain_mangle_prerouting(&c, o);
  chain_filter_input(&c, o);
  chain_filter_output(&c);
  chain_filter_forward(&c);
  chain_filter_postrouting(&c, "chain filter_postrouting (type filter hook postrouting "
                               "priority filter)");
  return c.err != 0 ? c.err : c.n;
}

int netns_build_lockdown(struct mnl_nlmsg_batch *b, uint32_t *seq, const char **names,
                         size_t names_cap)
{
  struct build c;
  struct rule r;
  int ret;

  ret = build_init(&c, b, seq, names, names_cap);
  if (ret != 0)
    return ret;
  put_table_replace(&c);
  /* No redirection, but the connections redirected before keep their way to the
   * proxy, which drains them: the kernel tracks a namespace's connections only while
   * some rule uses conntrack, and translates them only while some nat chain exists.
   * Without both, a sandbox's packets to the address it dialed were dropped and the
   * answers of the requests in flight reset, the proxy's own FIN and close_notify
   * included. A new connection meets an empty nat chain and the drops below. */
  put_chain(&c, CH_NAT_OUTPUT, "nat", NF_INET_LOCAL_OUT, PRIO_DSTNAT, NF_ACCEPT,
            "chain nat_output (lockdown; type nat hook output priority dstnat)");
  rule_begin(&c, &r, CH_NAT_OUTPUT);
  load_ct(&r, NFT_CT_STATE);
  test_bits(&r, NF_CT_STATE_BIT(IP_CT_NEW));
  counter(&r);
  rule_end(&r, "rule 1 of chain nat_output (lockdown: ct state new counter)");
  put_chain(&c, CH_FILTER_INPUT, "filter", NF_INET_LOCAL_IN, PRIO_FILTER, NF_DROP,
            "chain filter_input (lockdown; type filter hook input priority filter; "
            "policy drop)");
  rule_iif_lo_accept(&c, CH_FILTER_INPUT,
                     "rule 1 of chain filter_input (lockdown: iifname lo accept)");
  /* The connections a guest opened before, redirected to the proxy (marked on their
   * way in by nat_prerouting; nothing marks a connection now), drain as the
   * sandbox's own do: their packets in, and the proxy's answers out. TCP only: a
   * guest's or a peer's DNS flow to the responder, marked too, is UDP, which has no
   * state to tell the responder's socket from the next one bound to 127.0.0.53:53
   * (the responder closes at the detach, and a process of the sandbox's with
   * CAP_NET_BIND_SERVICE may take its address), and would be a way in and out for
   * as long as either side kept it alive. */
  rule_begin(&c, &r, CH_FILTER_INPUT);
  match_ct_tcp(&r);
  match_ct_mark(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, "rule 2 of chain filter_input (lockdown: ct original protocol tcp ct mark "
               "MARK accept)");
  rule_counter_drop(&c, CH_FILTER_INPUT,
                    "rule 3 of chain filter_input (lockdown: counter drop)");
  put_chain(&c, CH_FILTER_OUTPUT, "filter", NF_INET_LOCAL_OUT, PRIO_FILTER, NF_DROP,
            "chain filter_output (lockdown; type filter hook output priority filter; "
            "policy drop)");
  rule_local_accept(&c, CH_FILTER_OUTPUT,
                    "rule 1 of chain filter_output (lockdown: fib daddr type local accept)");
  rule_begin(&c, &r, CH_FILTER_OUTPUT);
  match_ct_tcp(&r);
  match_ct_reply(&r);
  match_ct_mark(&r);
  verdict(&r, NF_ACCEPT);
  rule_end(&r, "rule 2 of chain filter_output (lockdown: ct original protocol tcp ct "
               "direction reply ct mark MARK accept)");
  rule_counter_drop(&c, CH_FILTER_OUTPUT,
                    "rule 3 of chain filter_output (lockdown: counter drop)");
  put_chain(&c, CH_FILTER_FORWARD, "filter", NF_INET_FORWARD, PRIO_FILTER, NF_DROP,
            "chain filter_forward (lockdown; type filter hook forward priority filter; "
            "policy drop)");
  rule_counter_drop(&c, CH_FILTER_FORWARD,
                    "rule 1 of chain filter_forward (lockdown: counter drop)");
  chain_filter_postrouting(&c, "chain filter_postrouting (lockdown; type filter hook "
                               "postrouting priority filter)");
  return c.err != 0 ? c.err : c.n;
}
