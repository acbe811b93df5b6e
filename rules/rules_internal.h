/*
 * Internals of the rules library shared between its files: the arena a config lives
 * in, the pre-parsed pattern types, the layout of a config, and the parse context.
 * Nothing here is part of the contract in rules.h.
 */
#ifndef AUTHPROXY_RULES_INTERNAL_H
#define AUTHPROXY_RULES_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "rules/rules.h"

/* ---- arena ---------------------------------------------------------------------- */

/*
 * Every byte of a config (its structs, strings and resolved secrets) lives in one
 * arena: a short list of chunks. Freeing wipes each chunk whole before releasing it,
 * so no secret survives in freed memory, and a config costs a few allocations instead
 * of hundreds.
 */
struct rules_arena_chunk;

struct rules_arena {
  struct rules_arena_chunk *head;
  size_t bytes; /* total allocated, headers included */
};

/* Returns zeroed, 8-byte aligned memory, or NULL. */
void *rules_arena_alloc(struct rules_arena *a, size_t size);

/* Gives an empty arena one chunk of exactly size bytes (for a copy of known size). */
int rules_arena_reserve(struct rules_arena *a, size_t size);

/* Bytes handed out so far (alignment included). */
size_t rules_arena_used(const struct rules_arena *a);

/* Allocates an array of n elements of size each; NULL on overflow or exhaustion. */
void *rules_arena_array(struct rules_arena *a, size_t n, size_t size);

/* Copies len bytes of s and a terminating NUL. */
char *rules_arena_strndup(struct rules_arena *a, const char *s, size_t len);

/* Wipes and frees every chunk; the arena is left empty. */
void rules_arena_free(struct rules_arena *a);

/* ---- patterns ------------------------------------------------------------------- */

enum rules_hostpat_kind {
  RULES_HP_ANY,    /* "*": every name and every address */
  RULES_HP_EXACT,  /* a name without wildcards */
  RULES_HP_SUFFIX, /* "*.example.com": glob holds ".example.com" */
  RULES_HP_DOMAIN, /* no_proxy ".example.com": glob holds "example.com" */
  RULES_HP_GLOB,   /* anything else with a '*' */
  RULES_HP_ADDR,   /* an IP address or CIDR */
};

/* One entry of match_hosts, no_proxy, egress or callback.match_hosts, pre-parsed. */
struct rules_hostpat {
  const char *text; /* as written, for serialization */
  const char *glob; /* name kinds: normalized (lowercase, no trailing dot) */
  uint16_t len;     /* strlen(glob) */
  uint16_t port;    /* 0: any port */
  uint8_t kind;     /* enum rules_hostpat_kind */
  uint8_t v4;       /* RULES_HP_ADDR: an IPv4 range (addr is v4-mapped) */
  uint8_t prefix;   /* RULES_HP_ADDR: prefix length over the 128-bit address */
  uint8_t addr[16]; /* RULES_HP_ADDR: network address, host bits zero */
};

enum rules_pathpat_kind {
  RULES_PP_EXACT,  /* no '*' */
  RULES_PP_PREFIX, /* one '*', at the end: glob holds the part before it */
  RULES_PP_GLOB,
};

/* One entry of match_paths or egress paths, pre-normalized. */
struct rules_pathpat {
  const char *text; /* as written */
  const char *glob; /* normalized */
  uint16_t len;
  uint8_t kind; /* enum rules_pathpat_kind */
};

/* A destination, classified once per decision. */
struct rules_target {
  const char *name; /* a DNS name (NULL when absent or an IP literal) */
  size_t name_len;
  uint16_t port;
  uint8_t has_ip; /* the name is an IP literal */
  uint8_t ip_v4;
  uint8_t has_addr;
  uint8_t addr_v4;
  uint8_t ip[16];   /* the IP-literal name, v4-mapped when IPv4 */
  uint8_t addr[16]; /* dest->addr, v4-mapped when IPv4 */
};

/*
 * Parses one host pattern. allow_domain admits the no_proxy ".example.com" form.
 * On error writes a message to err and returns -EINVAL.
 */
int rules_hostpat_parse(struct rules_arena *a, const char *s, int allow_domain,
                        struct rules_hostpat *out, char *err, size_t errsize);

/*
 * 1 when s is written as a URL ("https://api.github.com/v1") where a host belongs, and
 * then err holds a message naming the host[:port] to write instead; 0 otherwise.
 */
int rules_url_hint(const char *s, char *err, size_t errsize);

/* 1 when pattern p matches the target (name or address, and port). */
int rules_hostpat_match(const struct rules_hostpat *p, const struct rules_target *t);

/* Index of the first pattern in v[0..n) matching t, or -1. */
int rules_hostpats_match(const struct rules_hostpat *v, size_t n,
                         const struct rules_target *t);

/* Fills t from dest; -EINVAL when dest->name is not a normalized host name. */
int rules_target_init(struct rules_target *t, const struct rules_dest *dest);

/* Converts an AF_INET/AF_INET6 address to 16 bytes (v4-mapped); -EAFNOSUPPORT else. */
int rules_addr_from_sockaddr(const struct sockaddr *sa, uint8_t out[16], int *v4);

/* 1 when the first prefix bits of a and b are equal. */
int rules_prefix_equal(const uint8_t a[16], const uint8_t b[16], unsigned prefix);

/* Parses a port ("1".."65535", no sign, no leading zero); -EINVAL otherwise. */
int rules_parse_port(const char *s, size_t len, uint16_t *port);

/* Parses one path pattern; on error writes a message and returns -EINVAL. */
int rules_pathpat_parse(struct rules_arena *a, const char *s, struct rules_pathpat *out,
                        char *err, size_t errsize);

/* 1 when pattern p matches the normalized path (len bytes). */
int rules_pathpat_match(const struct rules_pathpat *p, const char *path, size_t len);

/*
 * 1 when the path pattern of an egress.deny entry covers the normalized path as the
 * common server frameworks route it: ASCII letters in either case (Express by
 * default, ASP.NET Core, IIS) and one trailing slash more or less (Express's
 * non-strict routing, Spring MVC before 6). Only for denies: matching more there
 * refuses more; granting patterns (allow, match_paths) use rules_pathpat_match.
 */
int rules_pathpat_match_deny(const struct rules_pathpat *p, const char *path, size_t len);

/* 1 when the glob has text between two stars: matching it may take a pass over the
 * whole subject, where any other glob compares at most its own length. */
int rules_glob_scans(const char *glob, size_t len);

/* Glob match over explicit lengths; `*` matches any run of bytes. */
int rules_glob_match(const char *pat, size_t plen, const char *s, size_t slen);

/* The glob match (letters in either case when icase) into *match, returning the byte
 * comparisons it took: for tests that hold matching to linear work. */
size_t rules_glob_steps(const char *pat, size_t plen, const char *s, size_t slen, int icase,
                        int *match);

/* ---- secrets ---------------------------------------------------------------------- */

/* 1 when key is a valid secret key. */
int rules_secret_key_valid(const char *key, size_t len);

/* As rules_secrets_get; *from_api says whether the value came from the overlay. */
int rules_secrets_lookup(const struct rules_secrets *s, const char *key, char **value,
                         size_t *len, int *from_api);

/* ---- config layout ----------------------------------------------------------------- */

enum rules_header_type { RULES_HDR_SECRET, RULES_HDR_PLAIN, RULES_HDR_OPAQUE };

/* What a header was pushed as, parallel to the public struct rules_header array. */
struct rules_hdrmeta {
  const char *pushed; /* template or value as pushed (== value for plain/opaque) */
  uint16_t name_id;   /* index of the lowercase name among distinct rule header names */
  uint8_t type;       /* enum rules_header_type */
};

struct rules_rule {
  const char *name;
  struct rules_hostpat *hosts;
  struct rules_pathpat *paths;
  struct rules_header *hdrs;
  struct rules_hdrmeta *meta;
  uint16_t nhosts, npaths, nhdrs;
  uint8_t plain_http; /* allow_plain_http: its secrets may go over plain HTTP */
};

struct rules_egress {
  struct rules_hostpat *hosts;
  struct rules_pathpat *paths;
  const char **methods; /* uppercase tokens */
  uint16_t nhosts, npaths, nmethods;
  uint8_t object; /* written as an object (serialization keeps the form) */
};

struct rules_remap_entry {
  const char *name;   /* normalized source name (the key) */
  const char *target; /* as written */
  const char *host;   /* target host, no brackets */
  uint16_t port;      /* 0: keep the original port */
};

struct rules_cb {
  struct rules_callback pub; /* pub.headers points at hdrs */
  struct rules_hostpat *hosts;
  struct rules_header *hdrs;
  struct rules_hdrmeta *meta;
  uint16_t nhosts;
};

/* Which top-level sections the pushed config had (serialization keeps them). */
#define RULES_HAVE_RULES 0x01u
#define RULES_HAVE_NO_PROXY 0x02u
#define RULES_HAVE_CALLBACK 0x04u
#define RULES_HAVE_EGRESS 0x08u
#define RULES_HAVE_DNS 0x10u
#define RULES_HAVE_REMAP 0x20u

struct rules_config {
  struct rules_arena arena; /* owns this struct and everything it points to */
  unsigned refs;
  unsigned have; /* RULES_HAVE_* */
  struct rules_rule *rules;
  struct rules_hostpat *no_proxy;
  struct rules_cb *callback;
  struct rules_egress *allow, *deny;
  struct rules_remap_entry *remap; /* sorted by name */
  uint16_t nrules, nno_proxy, nallow, ndeny, nremap;
  uint16_t nnames; /* distinct header names over all rules */
  uint8_t default_deny;
  uint8_t address_requests; /* an egress.deny entry with paths or methods names an
                               IP or CIDR (rules_has_address_requests) */
};

/* Bytes of memory a config holds (for tests and metrics). */
size_t rules_config_bytes(const struct rules_config *cfg);

/*
 * Copies a freshly parsed config (refs not yet set) into one chunk of exactly the
 * size it needs, leaving out what only parsing used. *out gets the copy; src is left
 * for the caller to free. Returns 0 or -ENOMEM.
 */
int rules_config_compact(const struct rules_config *src, struct rules_config **out);

/* ---- parse context ------------------------------------------------------------------- */

/* At most this many errors are reported for one config; the rest are counted. */
#define RULES_MAX_ERRORS 100

#define RULES_PATH_MAX 512

struct rules_pctx {
  struct rules_diag *diag;
  const struct rules_secrets *secrets;
  struct rules_arena *arena;
  struct rules_config *cfg;
  size_t errors;  /* errors found, including those beyond RULES_MAX_ERRORS */
  int oom;        /* an allocation failed: the parse ends with -ENOMEM */
  size_t plen;    /* current length of path */
  size_t root;    /* length of the caller's prefix */
  char path[RULES_PATH_MAX];
  const char *names[RULES_MAX_INJECT]; /* distinct lowercase rule header names */
  /* Secrets looked up by this parse, sorted by key (template.c): each is read once. */
  struct rules_secret_memo *memo;
  size_t nmemo;
  int memo_full;  /* the limit on distinct secrets was reported */
  size_t scan_hosts; /* host patterns with text between two stars */
  size_t scan_paths; /* path patterns with text between two stars */
};

/* Reports an error at the current path. */
void rules_perr(struct rules_pctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Path building: each push returns the previous length, to be passed to pop. */
size_t rules_path_field(struct rules_pctx *c, const char *name);
size_t rules_path_index(struct rules_pctx *c, size_t i);
size_t rules_path_key(struct rules_pctx *c, const char *key);
void rules_path_pop(struct rules_pctx *c, size_t len);

/*
 * Checks that obj is an object whose fields are all in allowed[] (NULL-terminated),
 * each at most once; reports the others. Returns 0 when obj is an object.
 */
int rules_check_object(struct rules_pctx *c, const struct cJSON *obj,
                       const char *const *allowed);

/* The value of field name, or NULL when absent or JSON null (which means absent). */
const struct cJSON *rules_field(const struct cJSON *obj, const char *name);

/* Type checks that report "must be a ..." at the current path; 0 when it is one. */
int rules_expect_string(struct rules_pctx *c, const struct cJSON *v);
int rules_expect_array(struct rules_pctx *c, const struct cJSON *v, size_t max);
int rules_expect_bool(struct rules_pctx *c, const struct cJSON *v, uint8_t *out);
int rules_expect_uint(struct rules_pctx *c, const struct cJSON *v, uint32_t min,
                      uint32_t max, uint32_t *out);

/* Writes a printable, quoted and shortened rendering of s (never a secret). */
const char *rules_quote(const char *s, char *buf, size_t size);

/* Parses a list of host patterns at the current path (field already pushed). */
int rules_parse_hostpats(struct rules_pctx *c, const struct cJSON *arr, int allow_domain,
                         int required, struct rules_hostpat **out, uint16_t *n);

/* Counts a parsed pattern against RULES_MAX_SCAN_HOSTS / RULES_MAX_SCAN_PATHS and
 * reports, at the current path, the first one past the limit. */
void rules_count_hostpat(struct rules_pctx *c, const struct rules_hostpat *p);
void rules_count_pathpat(struct rules_pctx *c, const struct rules_pathpat *p);

/* Parses a list of path patterns at the current path. */
int rules_parse_pathpats(struct rules_pctx *c, const struct cJSON *arr,
                         struct rules_pathpat **out, uint16_t *n);

/*
 * Parses a headers array at the current path. intern: count distinct names over
 * the whole config (rule headers), else only reject duplicates within the list.
 */
int rules_parse_headers(struct rules_pctx *c, const struct cJSON *arr, const char *owner,
                        int intern, struct rules_header **hdrs, struct rules_hdrmeta **meta,
                        uint16_t *n);

/* Section parsers (the field name already pushed on the path). */
void rules_parse_callback(struct rules_pctx *c, const struct cJSON *v);
void rules_parse_egress(struct rules_pctx *c, const struct cJSON *v);
void rules_parse_dns(struct rules_pctx *c, const struct cJSON *v);

/*
 * Resolves a workspace_secret template into out (size bytes, NUL-terminated),
 * reporting every problem at the current path. Returns the value length, or -EINVAL
 * after reporting, or -ENOMEM.
 */
int rules_template_resolve(struct rules_pctx *c, const char *tmpl, char *out,
                           size_t size);

/* Wipes and frees the secrets rules_template_resolve kept for the parse c. */
void rules_template_memo_free(struct rules_pctx *c);

#endif
