/*
 * netns_build_rules / netns_build_lockdown: the batch they produce, parsed back with
 * libnftnl, and the naming of a failed message. No privileges needed.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>

#include "netns/netns.h"
#include "netns/netns_internal.h"
#include "test.h"

#define FIRST_SEQ 1000

/* `fib saddr . iif oif missing counter drop` in CHAIN. */
#define RPF_DROP(chain) \
  "inet authproxy " chain "\n" \
  "  [ fib saddr . iif oif present => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00000000 ]\n" \
  "  [ counter pkts 0 bytes 0 ]\n" \
  "  [ immediate reg 0 drop ]\n"

/* `ct direction reply ct mark MARK meta mark SOCK_MARK accept` in filter_output. */
#define REPLY_ACCEPT \
  "inet authproxy filter_output\n" \
  "  [ ct load direction => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00000001 ]\n" \
  "  [ ct load mark => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00004150 ]\n" \
  "  [ meta load mark => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00004151 ]\n" \
  "  [ immediate reg 0 accept ]\n"

/* `meta l4proto udp socket mark SOCK_MARK accept` and `meta l4proto udp ct status
 * dnat counter drop` in filter_input: a guest's DNS reaches the responder's socket
 * only, not one a process of the sandbox's bound where it was. */
#define UDP_DAEMON_ONLY \
  "inet authproxy filter_input\n" \
  "  [ meta load l4proto => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00000011 ]\n" \
  "  [ socket load mark => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00004151 ]\n" \
  "  [ immediate reg 0 accept ]\n"
#define UDP_DNAT_DROP \
  "inet authproxy filter_input\n" \
  "  [ meta load l4proto => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00000011 ]\n" \
  "  [ ct load status => reg 1 ]\n" \
  "  [ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ]\n" \
  "  [ cmp neq reg 1 0x00000000 ]\n" \
  "  [ counter pkts 0 bytes 0 ]\n" \
  "  [ immediate reg 0 drop ]\n"


struct msg {
  uint16_t type; /* NFT_MSG_* */
  uint16_t flags;
  uint32_t seq;
  char chain[32];  /* chains and rules */
  char text[2048]; /* nftnl_*_snprintf of chains and rules; table name for tables */
  uint32_t hook, policy, prio_raw;
  char chain_type[16];
};

struct built {
  char buf[NETNS_BATCH_LIMIT * 2];
  const char *names[NETNS_BATCH_MAX_MSGS];
  struct msg msgs[NETNS_BATCH_MAX_MSGS];
  int n;
  uint32_t seq; /* after the build */
};

static void parse_msg(const struct nlmsghdr *nlh, struct msg *m)
{
  memset(m, 0, sizeof(*m));
  ASSERT_EQ(nlh->nlmsg_type >> 8, NFNL_SUBSYS_NFTABLES);
  m->type = nlh->nlmsg_type & 0xff;
  m->flags = nlh->nlmsg_flags;
  m->seq = nlh->nlmsg_seq;
  if (m->type == NFT_MSG_NEWRULE) {
    struct nftnl_rule *r = nftnl_rule_alloc();

    ASSERT_NOT_NULL(r);
    ASSERT_EQ(nftnl_rule_nlmsg_parse(nlh, r), 0);
    ASSERT_STREQ(nftnl_rule_get_str(r, NFTNL_RULE_TABLE), NETNS_TABLE);
    ASSERT_EQ(nftnl_rule_get_u32(r, NFTNL_RULE_FAMILY), NFPROTO_INET);
    snprintf(m->chain, sizeof(m->chain), "%s", nftnl_rule_get_str(r, NFTNL_RULE_CHAIN));
    nftnl_rule_snprintf(m->text, sizeof(m->text), r, NFTNL_OUTPUT_DEFAULT, 0);
    nftnl_rule_free(r);
  } else if (m->type == NFT_MSG_NEWCHAIN) {
    struct nftnl_chain *c = nftnl_chain_alloc();

    ASSERT_NOT_NULL(c);
    ASSERT_EQ(nftnl_chain_nlmsg_parse(nlh, c), 0);
    ASSERT_STREQ(nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE), NETNS_TABLE);
    snprintf(m->chain, sizeof(m->chain), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
    snprintf(m->chain_type, sizeof(m->chain_type), "%s",
             nftnl_chain_get_str(c, NFTNL_CHAIN_TYPE));
    m->hook = nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM);
    m->policy = nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY);
    m->prio_raw = (uint32_t)nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO);
    nftnl_chain_snprintf(m->text, sizeof(m->text), c, NFTNL_OUTPUT_DEFAULT, 0);
    nftnl_chain_free(c);
  } else {
    struct nftnl_table *t = nftnl_table_alloc();

    ASSERT_NOT_NULL(t);
    ASSERT_EQ(nftnl_table_nlmsg_parse(nlh, t), 0);
    snprintf(m->text, sizeof(m->text), "%s", nftnl_table_get_str(t, NFTNL_TABLE_NAME));
    ASSERT_EQ(nftnl_table_get_u32(t, NFTNL_TABLE_FAMILY), NFPROTO_INET);
    nftnl_table_free(t);
  }
}

/* Builds into bt (lockdown if o is NULL) and parses every message back. */
static int build(struct built *bt, const struct netns_rules_opts *o)
{
  struct mnl_nlmsg_batch *b;
  const struct nlmsghdr *nlh;
  int len, i = 0;

  memset(bt->names, 0, sizeof(bt->names));
  bt->seq = FIRST_SEQ;
  b = mnl_nlmsg_batch_start(bt->buf, NETNS_BATCH_LIMIT);
  ASSERT_NOT_NULL(b);
  bt->n = o != NULL ? netns_build_rules(o, b, &bt->seq, bt->names, NETNS_BATCH_MAX_MSGS)
                    : netns_build_lockdown(b, &bt->seq, bt->names, NETNS_BATCH_MAX_MSGS);
  if (bt->n < 0) {
    mnl_nlmsg_batch_stop(b);
    return bt->n;
  }
  nlh = mnl_nlmsg_batch_head(b);
  len = (int)mnl_nlmsg_batch_size(b);
  while (mnl_nlmsg_ok(nlh, len)) {
    ASSERT_LT(i, bt->n);
    parse_msg(nlh, &bt->msgs[i]);
    i++;
    nlh = mnl_nlmsg_next(nlh, &len);
  }
  ASSERT_EQ(len, 0);
  ASSERT_EQ(i, bt->n);
  mnl_nlmsg_batch_stop(b);
  return bt->n;
}

/* The message named "rule N of chain C (...)" or "chain C (...)" with that prefix. */
static const struct msg *find(const struct built *bt, const char *name_prefix)
{
  int i, found = -1;

  for (i = 0; i < bt->n; i++) {
    if (strncmp(bt->names[i], name_prefix, strlen(name_prefix)) == 0) {
      ASSERT_EQ(found, -1); /* unambiguous */
      found = i;
    }
  }
  if (found < 0)
    TEST_FAIL_("no message named \"%s...\"", name_prefix);
  return &bt->msgs[found];
}

/* How libnftnl prints 2 or 4 bytes of data in a register: as a host-order u32. */
static uint32_t as_reg(const void *data, size_t len)
{
  uint32_t v = 0;

  memcpy(&v, data, len);
  return v;
}

static uint32_t port_reg(uint16_t port)
{
  uint16_t be = htons(port);

  return as_reg(&be, sizeof(be));
}

static const struct netns_rules_opts redirect_opts = {
  .proxy_port = 15001, .dns_port = 5353, .capture = NETNS_CAPTURE_REDIRECT,
};
static const struct netns_rules_opts tproxy_opts = {
  .proxy_port = 15001, .tproxy_port = 15002, .dns_port = 53,
  .capture = NETNS_CAPTURE_TPROXY,
};

/* Sequence numbers, flags, message kinds, unique names. */
static void check_layout(const struct built *bt, int nchains)
{
  int i, j, chains = 0;

  ASSERT_EQ(bt->seq, FIRST_SEQ + (uint32_t)bt->n);
  for (i = 0; i < bt->n; i++) {
    ASSERT_EQ(bt->msgs[i].seq, FIRST_SEQ + (uint32_t)i);
    ASSERT(bt->msgs[i].flags & NLM_F_ACK);
    ASSERT_NOT_NULL(bt->names[i]);
    for (j = 0; j < i; j++)
      ASSERT(strcmp(bt->names[i], bt->names[j]) != 0);
    if (bt->msgs[i].type == NFT_MSG_NEWCHAIN)
      chains++;
  }
  /* add (no-op if present), delete, add: the replacement never fails on absence. */
  ASSERT_EQ(bt->msgs[0].type, NFT_MSG_NEWTABLE);
  ASSERT_EQ(bt->msgs[1].type, NFT_MSG_DELTABLE);
  ASSERT_EQ(bt->msgs[2].type, NFT_MSG_NEWTABLE);
  ASSERT_EQ(bt->msgs[0].flags & NLM_F_EXCL, 0);
  for (i = 0; i < 3; i++)
    ASSERT_STREQ(bt->msgs[i].text, NETNS_TABLE);
  ASSERT_CONTAINS(bt->names[1], "delete");
  ASSERT_EQ(chains, nchains);
  for (i = 3; i < bt->n; i++)
    ASSERT(bt->msgs[i].type == NFT_MSG_NEWCHAIN || bt->msgs[i].type == NFT_MSG_NEWRULE);
}

/* Every "rule N of chain C" name matches the rule's real chain and position, and every
 * chain's message comes before its rules. */
static void check_names_match_positions(const struct built *bt)
{
  char seen_chain[8][32];
  int count[8] = { 0 };
  int nseen = 0, i, k;

  for (i = 0; i < bt->n; i++) {
    const struct msg *m = &bt->msgs[i];
    char chain[32];
    int num;

    if (m->type == NFT_MSG_NEWCHAIN) {
      char want[64];

      snprintf(want, sizeof(want), "chain %s (", m->chain);
      ASSERT_EQ(strncmp(bt->names[i], want, strlen(want)), 0);
      ASSERT_LT(nseen, 8);
      snprintf(seen_chain[nseen++], sizeof(seen_chain[0]), "%s", m->chain);
      continue;
    }
    if (m->type != NFT_MSG_NEWRULE)
      continue;
    ASSERT_EQ(sscanf(bt->names[i], "rule %d of chain %31s", &num, chain), 2);
    ASSERT_STREQ(chain, m->chain);
    for (k = 0; k < nseen && strcmp(seen_chain[k], chain) != 0; k++)
      ;
    ASSERT_LT(k, nseen); /* the chain was created earlier in the batch */
    count[k]++;
    ASSERT_EQ(num, count[k]);
  }
}

static void check_chain(const struct built *bt, const char *name, const char *type,
                        uint32_t hook, int32_t prio, uint32_t policy)
{
  char prefix[64];
  const struct msg *m;

  snprintf(prefix, sizeof(prefix), "chain %s (", name);
  m = find(bt, prefix);
  ASSERT_STREQ(m->chain_type, type);
  ASSERT_EQ(m->hook, hook);
  ASSERT_EQ((int32_t)m->prio_raw, prio);
  ASSERT_EQ(m->policy, policy);
}

/* The last rule of each filter chain counts and drops. */
static void check_final_drop(const struct built *bt, const char *chain)
{
  int i, last = -1;

  for (i = 0; i < bt->n; i++)
    if (bt->msgs[i].type == NFT_MSG_NEWRULE && strcmp(bt->msgs[i].chain, chain) == 0)
      last = i;
  ASSERT_GE(last, 0);
  ASSERT_CONTAINS(bt->names[last], "counter drop)");
  ASSERT_CONTAINS(bt->msgs[last].text, "[ counter pkts 0 bytes 0 ]");
  ASSERT_CONTAINS(bt->msgs[last].text, "[ immediate reg 0 drop ]");
}

static size_t count_in(const struct built *bt, const char *needle)
{
  size_t c = 0;
  int i;

  for (i = 0; i < bt->n; i++)
    if (strstr(bt->msgs[i].text, needle) != NULL)
      c++;
  return c;
}

/* A local destination must leave through lo: checked after routing, where the output
 * interface is the real one (a socket bound to an uplink sends 127.0.0.1 out of it). */
static void check_postrouting(const struct built *bt)
{
  check_chain(bt, "filter_postrouting", "filter", NF_INET_POST_ROUTING, 0, NF_ACCEPT);
  ASSERT_STREQ(find(bt, "rule 1 of chain filter_postrouting")->text,
               "inet authproxy filter_postrouting\n"
               "  [ meta load oifname => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ]\n"
               "  [ immediate reg 0 accept ]\n");
  ASSERT_STREQ(find(bt, "rule 2 of chain filter_postrouting")->text,
               "inet authproxy filter_postrouting\n"
               "  [ fib daddr type => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000002 ]\n"
               "  [ counter pkts 0 bytes 0 ]\n"
               "  [ immediate reg 0 drop ]\n");
}

/* nat_prerouting's rules 5 and 6, both modes: `meta l4proto tcp fib daddr type
 * local|anycast counter drop`. */
#define OWN_TCP_DROP(type) \
  "inet authproxy nat_prerouting\n" \
  "  [ meta load l4proto => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x00000006 ]\n" \
  "  [ fib daddr type => reg 1 ]\n" \
  "  [ cmp eq reg 1 0x0000000" type " ]\n" \
  "  [ counter pkts 0 bytes 0 ]\n" \
  "  [ immediate reg 0 drop ]\n"
#define LOCAL_TCP_DROP OWN_TCP_DROP("2")   /* RTN_LOCAL */
#define ANYCAST_TCP_DROP OWN_TCP_DROP("4") /* RTN_ANYCAST */

TEST(redirect_layout)
{
  static struct built bt;

  ASSERT_EQ(build(&bt, &redirect_opts), 37);
  check_layout(&bt, 6);
  check_names_match_positions(&bt);
  check_chain(&bt, "nat_output", "nat", NF_INET_LOCAL_OUT, -100, NF_ACCEPT);
  check_chain(&bt, "nat_prerouting", "nat", NF_INET_PRE_ROUTING, -100, NF_ACCEPT);
  check_chain(&bt, "filter_input", "filter", NF_INET_LOCAL_IN, 0, NF_DROP);
  check_chain(&bt, "filter_output", "filter", NF_INET_LOCAL_OUT, 0, NF_DROP);
  check_chain(&bt, "filter_forward", "filter", NF_INET_FORWARD, 0, NF_DROP);
  check_final_drop(&bt, "filter_input");
  check_final_drop(&bt, "filter_output");
  check_final_drop(&bt, "filter_forward");
  check_postrouting(&bt);
  ASSERT_EQ(count_in(&bt, "tproxy"), 0);
  /* The daemon's sockets' mark, on guests' UDP in filter_input. */
  ASSERT_EQ(count_in(&bt, "socket"), 1);
  /* No packet marks set (nothing for the TPROXY routing); connection marks on guests'
   * flows and the filter that checks them, with the mark of the daemon's sockets on
   * the answers. */
  ASSERT_EQ(count_in(&bt, "meta set mark"), 0);
  ASSERT_EQ(count_in(&bt, "meta load mark"), 1);
  ASSERT_EQ(count_in(&bt, "mark"), 5); /* messages, not expressions */
}

TEST(redirect_rules_round_trip)
{
  static struct built bt;
  const char *dns_addr = "127.0.0.53";
  struct in_addr a4;
  char want[1024];

  ASSERT_EQ(build(&bt, &redirect_opts), 37);

  /* The sandbox's own TCP: everything but local destinations to the proxy port. */
  snprintf(want, sizeof(want),
           "inet authproxy nat_output\n"
           "  [ meta load l4proto => reg 1 ]\n"
           "  [ cmp eq reg 1 0x00000006 ]\n"
           "  [ immediate reg 1 0x%08x ]\n"
           "  [ redir proto_min reg 1 flags 0x2 ]\n",
           port_reg(15001));
  ASSERT_STREQ(find(&bt, "rule 6 of chain nat_output")->text, want);
  ASSERT_STREQ(find(&bt, "rule 5 of chain nat_output")->text,
               "inet authproxy nat_output\n"
               "  [ fib daddr type => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000002 ]\n"
               "  [ immediate reg 0 accept ]\n");

  /* DNS: port 53 to any address, to the responder's own port. */
  inet_pton(AF_INET, dns_addr, &a4);
  snprintf(want, sizeof(want),
           "inet authproxy nat_output\n"
           "  [ meta load nfproto => reg 1 ]\n"
           "  [ cmp eq reg 1 0x00000002 ]\n"
           "  [ meta load l4proto => reg 1 ]\n"
           "  [ cmp eq reg 1 0x00000011 ]\n"
           "  [ payload load 2b @ transport header + 2 => reg 1 ]\n"
           "  [ cmp eq reg 1 0x%08x ]\n"
           "  [ immediate reg 1 0x%08x ]\n"
           "  [ immediate reg 2 0x%08x ]\n"
           "  [ nat dnat ip addr_min reg 1 proto_min reg 2 flags 0x2 ]\n",
           port_reg(53), as_reg(&a4, sizeof(a4)), port_reg(5353));
  ASSERT_STREQ(find(&bt, "rule 1 of chain nat_output")->text, want);
  ASSERT_CONTAINS(find(&bt, "rule 2 of chain nat_output")->text,
                  "[ cmp eq reg 1 0x00000006 ]");
  ASSERT_CONTAINS(find(&bt, "rule 4 of chain nat_output")->text,
                  "[ immediate reg 1 0x00000000 0x00000000 0x00000000 0x");
  ASSERT_CONTAINS(find(&bt, "rule 4 of chain nat_output")->text,
                  "[ nat dnat ip6 addr_min reg 1 proto_min reg 2 flags 0x2 ]");

  /* Guests: lo skipped, then DNS and the TCP redirect. */
  ASSERT_STREQ(find(&bt, "rule 1 of chain nat_prerouting")->text,
               "inet authproxy nat_prerouting\n"
               "  [ meta load iifname => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ]\n"
               "  [ immediate reg 0 accept ]\n");
  /* Guests' traffic from a source not routed back through its interface is dropped;
   * what is redirected is marked, so that filter_output lets the answers out. */
  ASSERT_STREQ(find(&bt, "rule 2 of chain nat_prerouting")->text, RPF_DROP("nat_prerouting"));
  ASSERT_CONTAINS(find(&bt, "rule 3 of chain nat_prerouting")->text,
                  "  [ immediate reg 1 0x00004150 ]\n"
                  "  [ ct set mark with reg 1 ]\n"
                  "  [ immediate reg 1 0x3500007f ]\n");
  ASSERT_CONTAINS(find(&bt, "rule 4 of chain nat_prerouting")->text, "[ ct set mark with reg 1 ]");
  snprintf(want, sizeof(want),
           "inet authproxy nat_prerouting\n"
           "  [ meta load l4proto => reg 1 ]\n"
           "  [ cmp eq reg 1 0x00000006 ]\n"
           "  [ immediate reg 1 0x00004150 ]\n"
           "  [ ct set mark with reg 1 ]\n"
           "  [ immediate reg 1 0x%08x ]\n"
           "  [ redir proto_min reg 1 flags 0x2 ]\n",
           port_reg(15001));
  ASSERT_STREQ(find(&bt, "rule 7 of chain nat_prerouting")->text, want);
  /* A connection to one of the namespace's own addresses is no guest's: not proxied. */
  ASSERT_STREQ(find(&bt, "rule 5 of chain nat_prerouting")->text, LOCAL_TCP_DROP);
  ASSERT_STREQ(find(&bt, "rule 6 of chain nat_prerouting")->text, ANYCAST_TCP_DROP);
  /* The sandbox's own connections are not marked. */
  ASSERT_EQ(count_in(&bt, "inet authproxy nat_output\n"), 6);
  ASSERT_EQ(count_in(&bt, "ct set mark"), 3);

  /* Filters. */
  ASSERT_STREQ(find(&bt, "rule 2 of chain filter_output")->text,
               "inet authproxy filter_output\n"
               "  [ ct load state => reg 1 ]\n"
               "  [ bitwise reg 1 = ( reg 1 & 0x00000001 ) ^ 0x00000000 ]\n"
               "  [ cmp neq reg 1 0x00000000 ]\n"
               "  [ counter pkts 0 bytes 0 ]\n"
               "  [ immediate reg 0 drop ]\n");
  /* Only replies to guests' flows: not 'ct status dnat', which the sandbox's own
   * connections have too (from a foreign source, with IPV6_FREEBIND, their SYN-ACK
   * would leave through an uplink), nor an original direction another table DNATs. */
  ASSERT_STREQ(find(&bt, "rule 3 of chain filter_output")->text, REPLY_ACCEPT);
  ASSERT_STREQ(find(&bt, "rule 3 of chain filter_input")->text, UDP_DAEMON_ONLY);
  ASSERT_STREQ(find(&bt, "rule 4 of chain filter_input")->text, UDP_DNAT_DROP);
  ASSERT_STREQ(find(&bt, "rule 6 of chain filter_input")->text,
               "inet authproxy filter_input\n"
               "  [ meta load nfproto => reg 1 ]\n"
               "  [ cmp eq reg 1 0x0000000a ]\n"
               "  [ meta load l4proto => reg 1 ]\n"
               "  [ cmp eq reg 1 0x0000003a ]\n"
               "  [ payload load 1b @ transport header + 0 => reg 1 ]\n"
               "  [ cmp gte reg 1 0x00000087 ]\n"
               "  [ cmp lte reg 1 0x00000088 ]\n"
               "  [ payload load 1b @ network header + 7 => reg 1 ]\n"
               "  [ cmp eq reg 1 0x000000ff ]\n"
               "  [ immediate reg 0 accept ]\n");
}

TEST(tproxy_layout_and_rules)
{
  static struct built bt;
  char want[1024];

  ASSERT_EQ(build(&bt, &tproxy_opts), 44);
  check_layout(&bt, 7);
  check_postrouting(&bt);
  check_names_match_positions(&bt);
  check_chain(&bt, "mangle_prerouting", "filter", NF_INET_PRE_ROUTING, -150, NF_ACCEPT);
  check_final_drop(&bt, "filter_input");
  check_final_drop(&bt, "filter_output");
  check_final_drop(&bt, "filter_forward");

  /* Guests' TCP is not redirected in nat_prerouting any more (the TCP rules drop
   * connections to local and anycast addresses); DNS still is. */
  ASSERT_EQ(count_in(&bt, "inet authproxy nat_prerouting\n  [ meta load l4proto"), 2);
  ASSERT_EQ(count_in(&bt, "[ redir"), 1); /* nat_output only */
  ASSERT_CONTAINS(find(&bt, "rule 3 of chain nat_prerouting")->text, "[ nat dnat ip ");
  ASSERT_STREQ(find(&bt, "rule 5 of chain nat_prerouting")->text, LOCAL_TCP_DROP);
  ASSERT_STREQ(find(&bt, "rule 6 of chain nat_prerouting")->text, ANYCAST_TCP_DROP);

  ASSERT_STREQ(find(&bt, "rule 3 of chain mangle_prerouting")->text,
               "inet authproxy mangle_prerouting\n"
               "  [ meta load l4proto => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000006 ]\n"
               "  [ socket load transparent => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000001 ]\n"
               "  [ immediate reg 1 0x00004150 ]\n"
               "  [ meta set mark with reg 1 ]\n"
               "  [ immediate reg 0 accept ]\n");
  snprintf(want, sizeof(want),
           "inet authproxy mangle_prerouting\n"
           "  [ meta load nfproto => reg 1 ]\n"
           "  [ cmp eq reg 1 0x0000000a ]\n"
           "  [ meta load l4proto => reg 1 ]\n"
           "  [ cmp eq reg 1 0x00000006 ]\n"
           "  [ immediate reg 1 0x%08x ]\n"
           "  [ tproxy ip6 port reg 1 ]\n"
           "  [ immediate reg 1 0x00004150 ]\n"
           "  [ meta set mark with reg 1 ]\n"
           "  [ immediate reg 1 0x00004150 ]\n"
           "  [ ct set mark with reg 1 ]\n",
           port_reg(15002));
  ASSERT_STREQ(find(&bt, "rule 6 of chain mangle_prerouting")->text, want);
  ASSERT_CONTAINS(find(&bt, "rule 5 of chain mangle_prerouting")->text,
                  "[ tproxy ip port reg 1 ]");
  ASSERT_STREQ(find(&bt, "rule 4 of chain mangle_prerouting")->text,
               "inet authproxy mangle_prerouting\n"
               "  [ meta load l4proto => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000006 ]\n"
               "  [ fib saddr . iif oif present => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000000 ]\n"
               "  [ counter pkts 0 bytes 0 ]\n"
               "  [ immediate reg 0 drop ]\n");
  ASSERT_STREQ(find(&bt, "rule 2 of chain nat_prerouting")->text, RPF_DROP("nat_prerouting"));
  ASSERT_CONTAINS(find(&bt, "rule 4 of chain nat_prerouting")->text, "[ ct set mark with reg 1 ]");
  /* DNS over TCP is left to nat_prerouting. */
  ASSERT_CONTAINS(find(&bt, "rule 2 of chain mangle_prerouting")->text,
                  "[ immediate reg 0 accept ]");
  ASSERT_STREQ(find(&bt, "rule 3 of chain filter_input")->text, UDP_DAEMON_ONLY);
  ASSERT_STREQ(find(&bt, "rule 4 of chain filter_input")->text, UDP_DNAT_DROP);
  ASSERT_STREQ(find(&bt, "rule 7 of chain filter_input")->text,
               "inet authproxy filter_input\n"
               "  [ meta load mark => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00004150 ]\n"
               "  [ immediate reg 0 accept ]\n");
  ASSERT_STREQ(find(&bt, "rule 3 of chain filter_output")->text, REPLY_ACCEPT);
}

TEST(lockdown)
{
  static struct built bt;

  ASSERT_EQ(build(&bt, NULL), 18);
  check_layout(&bt, 5);
  check_names_match_positions(&bt);
  /* A nat chain that translates nothing new, and a rule that keeps conntrack: the
   * connections redirected before the lockdown keep reaching the proxy, which drains
   * them. */
  check_chain(&bt, "nat_output", "nat", NF_INET_LOCAL_OUT, -100, NF_ACCEPT);
  ASSERT_CONTAINS(find(&bt, "rule 1 of chain nat_output")->text, "[ ct load state");
  ASSERT_EQ(count_in(&bt, "[ nat "), 0);
  check_chain(&bt, "filter_input", "filter", NF_INET_LOCAL_IN, 0, NF_DROP);
  check_chain(&bt, "filter_output", "filter", NF_INET_LOCAL_OUT, 0, NF_DROP);
  check_chain(&bt, "filter_forward", "filter", NF_INET_FORWARD, 0, NF_DROP);
  check_final_drop(&bt, "filter_input");
  check_final_drop(&bt, "filter_output");
  check_final_drop(&bt, "filter_forward");
  ASSERT_EQ(count_in(&bt, "redir"), 0);
  ASSERT_CONTAINS(find(&bt, "rule 1 of chain filter_output")->text, "[ fib daddr type");
  /* A guest's TCP connections, redirected before (marked), drain too: in, and answers
   * out. Not its DNS flows (UDP), which a process of the sandbox's could take over
   * once the responder is gone. */
  ASSERT_STREQ(find(&bt, "rule 2 of chain filter_input")->text,
               "inet authproxy filter_input\n"
               "  [ ct load protocol => reg 1 , dir original ]\n"
               "  [ cmp eq reg 1 0x00000006 ]\n"
               "  [ ct load mark => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00004150 ]\n"
               "  [ immediate reg 0 accept ]\n");
  ASSERT_STREQ(find(&bt, "rule 2 of chain filter_output")->text,
               "inet authproxy filter_output\n"
               "  [ ct load protocol => reg 1 , dir original ]\n"
               "  [ cmp eq reg 1 0x00000006 ]\n"
               "  [ ct load direction => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00000001 ]\n"
               "  [ ct load mark => reg 1 ]\n"
               "  [ cmp eq reg 1 0x00004150 ]\n"
               "  [ immediate reg 0 accept ]\n");
  ASSERT_EQ(count_in(&bt, "set mark"), 0);
  check_postrouting(&bt);
}

/* Invalid options fail before anything is appended. */
static void expect_invalid(const struct netns_rules_opts *o)
{
  static char buf[NETNS_BATCH_LIMIT * 2];
  const char *names[NETNS_BATCH_MAX_MSGS];
  struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, NETNS_BATCH_LIMIT);
  uint32_t seq = 7;

  ASSERT_EQ(netns_build_rules(o, b, &seq, names, NETNS_BATCH_MAX_MSGS), -EINVAL);
  ASSERT_EQ(seq, 7);
  ASSERT_EQ(mnl_nlmsg_batch_size(b), 0);
  mnl_nlmsg_batch_stop(b);
}

TEST(invalid_opts)
{
  struct netns_rules_opts o = redirect_opts;

  o.proxy_port = 0;
  expect_invalid(&o);
  o = redirect_opts;
  o.dns_port = 0;
  expect_invalid(&o);
  o = tproxy_opts;
  o.tproxy_port = 0;
  expect_invalid(&o);
  o = redirect_opts;
  o.capture = (enum netns_capture)7;
  expect_invalid(&o);
  expect_invalid(NULL);
}

TEST(names_optional_and_bounded)
{
  static char buf[NETNS_BATCH_LIMIT * 2];
  const char *names[NETNS_BATCH_MAX_MSGS];
  struct mnl_nlmsg_batch *b;
  uint32_t seq = 1;

  b = mnl_nlmsg_batch_start(buf, NETNS_BATCH_LIMIT);
  ASSERT_EQ(netns_build_rules(&redirect_opts, b, &seq, NULL, 0), 37);
  mnl_nlmsg_batch_stop(b);

  b = mnl_nlmsg_batch_start(buf, NETNS_BATCH_LIMIT);
  ASSERT_EQ(netns_build_rules(&redirect_opts, b, &seq, names, 10), -ENOSPC);
  mnl_nlmsg_batch_stop(b);

  b = mnl_nlmsg_batch_start(buf, NETNS_BATCH_LIMIT);
  ASSERT_EQ(netns_build_lockdown(b, &seq, names, 3), -ENOSPC);
  mnl_nlmsg_batch_stop(b);

  ASSERT_EQ(netns_build_rules(&redirect_opts, NULL, &seq, names, 64), -EINVAL);
}

TEST(batch_full)
{
  static char buf[2048];
  struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, sizeof(buf) / 2);
  uint32_t seq = 1;

  ASSERT_EQ(netns_build_rules(&tproxy_opts, b, &seq, NULL, 0), -EMSGSIZE);
  mnl_nlmsg_batch_stop(b);
}

/* ---- naming the message an error answer refers to ---- */

TEST(describe_error_maps_seq_to_name)
{
  static const char *const names[] = { "table x (add)", "chain c (type nat)",
                                        "rule 4 of chain nat_output (tcp redirect)" };
  char err[512];

  netns_nft_describe_error(names, 3, 100, 102, EOPNOTSUPP, NULL, err, sizeof(err));
  ASSERT_EQ(strncmp(err,
                    "netns: nf_tables rejected rule 4 of chain nat_output (tcp redirect): "
                    "Operation not supported",
                    strlen("netns: nf_tables rejected rule 4 of chain nat_output (tcp "
                           "redirect): Operation not supported")),
            0);
  netns_nft_describe_error(names, 3, 100, 101, ENOENT, "Chain not found", err, sizeof(err));
  ASSERT_STREQ(err, "netns: nf_tables rejected chain c (type nat): No such file or directory "
                    "(kernel: Chain not found)");
  /* The batch begin/end messages, and anything else, are the batch as a whole. */
  netns_nft_describe_error(names, 3, 100, 99, ENOMEM, NULL, err, sizeof(err));
  ASSERT_STREQ(err, "netns: nf_tables rejected the batch: Cannot allocate memory");
  netns_nft_describe_error(names, 3, 100, 103, EINVAL, "", err, sizeof(err));
  ASSERT_STREQ(err, "netns: nf_tables rejected the batch: Invalid argument");
  /* Sequence numbers that wrap around. */
  netns_nft_describe_error(names, 3, 0xffffffffu, 0, EINVAL, NULL, err, sizeof(err));
  ASSERT_STREQ(err, "netns: nf_tables rejected chain c (type nat): Invalid argument");
  netns_nft_describe_error(NULL, 3, 100, 100, EPERM, NULL, err, sizeof(err));
  ASSERT_CONTAINS(err, "rejected the batch: Operation not permitted (needs CAP_NET_ADMIN");
  /* A small buffer truncates, always terminated. */
  netns_nft_describe_error(names, 3, 100, 102, EINVAL, NULL, err, 12);
  ASSERT_STREQ(err, "netns: nf_t");
}

TEST(describe_error_with_built_names)
{
  static struct built bt;
  char err[512];

  ASSERT_EQ(build(&bt, &redirect_opts), 37);
  netns_nft_describe_error(bt.names, (size_t)bt.n, FIRST_SEQ, FIRST_SEQ + 8, EOPNOTSUPP, NULL,
                           err, sizeof(err));
  ASSERT_CONTAINS(err, "netns: nf_tables rejected rule 5 of chain nat_output "
                       "(fib daddr type local accept): Operation not supported");
  netns_nft_describe_error(bt.names, (size_t)bt.n, FIRST_SEQ, FIRST_SEQ + 33, EINVAL, NULL,
                           err, sizeof(err));
  ASSERT_STREQ(err, "netns: nf_tables rejected rule 1 of chain filter_forward (counter drop): "
                    "Invalid argument");
}

TEST(fds_init_and_close)
{
  struct netns_fds f;
  int p[2];

  netns_fds_init(&f);
  ASSERT_EQ(f.tcp4, -1);
  ASSERT_EQ(f.dns_tcp6, -1);
  ASSERT_EQ(pipe(p), 0);
  f.tproxy6 = p[0];
  f.dns_udp4 = p[1];
  netns_fds_close(&f);
  ASSERT_EQ(f.tproxy6, -1);
  ASSERT_EQ(f.dns_udp4, -1);
  ASSERT_EQ(close(p[0]), -1); /* really closed */
  netns_fds_close(&f);        /* idempotent */
}
