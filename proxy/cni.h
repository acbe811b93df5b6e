/*
 * authproxy as a CNI plugin (CNI spec 1.0.0, also 0.3.0, 0.3.1 and 0.4.0), meant to be
 * chained after the standard loopback plugin. The pure parts, without I/O, so that unit
 * tests and a fuzz target can drive them: the network configuration from stdin, the
 * ADD result, and the error and VERSION documents. cni.c runs the commands.
 */
#ifndef AUTHPROXY_CNI_H
#define AUTHPROXY_CNI_H

#include <stddef.h>

struct cJSON;

/* Well-known error codes of the CNI spec, and the plugin's own (100 and up). */
enum proxy_cni_code {
  PROXY_CNI_ERR_VERSION = 1,        /* incompatible CNI version */
  PROXY_CNI_ERR_FIELD = 2,          /* unsupported field in the network configuration */
  PROXY_CNI_ERR_UNKNOWN = 3,        /* container unknown or does not exist */
  PROXY_CNI_ERR_ENV = 4,            /* invalid necessary environment variables */
  PROXY_CNI_ERR_IO = 5,             /* I/O failure (reading stdin) */
  PROXY_CNI_ERR_DECODE = 6,         /* failed to decode content (stdin is not JSON) */
  PROXY_CNI_ERR_CONFIG = 7,         /* invalid network configuration */
  PROXY_CNI_ERR_AGAIN = 11,         /* try again later (daemon stopping, no answer) */
  PROXY_CNI_ERR_DAEMON_DOWN = 100,  /* nothing listens on the control socket */
  PROXY_CNI_ERR_REJECTED = 101,     /* the daemon rejected the proxy_config */
  PROXY_CNI_ERR_ATTACH = 102,       /* the daemon could not attach (or detach) */
  PROXY_CNI_ERR_NOT_ATTACHED = 103, /* CHECK: the namespace is not served */
};

#define PROXY_CNI_VERSIONS "0.3.0", "0.3.1", "0.4.0", "1.0.0"
#define PROXY_CNI_NAMESERVER "127.0.0.53"

struct proxy_cni_error {
  char version[33];    /* the configuration's cniVersion once read ("" before) */
  int code;
  char msg[160];       /* short */
  char details[4096];  /* longer: what was wrong and how to fix it */
};

/* The plugin's network configuration (the object the runtime writes to stdin). */
struct proxy_cni_conf {
  struct cJSON *root;                  /* owned; every pointer below points into it */
  const char *version;                 /* cniVersion */
  const char *control;                 /* control socket */
  const struct cJSON *proxy_config;    /* exactly one of these three */
  const char *proxy_config_file;
  const char *proxy_config_name;
  const struct cJSON *prev_result;     /* may be NULL */
};

/* Fills e (code, short message, printf-style details) and returns -EINVAL. */
int proxy_cni_fail(struct proxy_cni_error *e, int code, const char *msg, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

/* The plugin out of memory: error 5 (I/O), which a runtime retries, whatever it was
 * doing; not the daemon's answer nor its absence, nor the input's fault. what, when
 * given, names the step ("check: out of memory"). Returns what proxy_cni_fail does. */
int proxy_cni_oom(struct proxy_cni_error *e, const char *what);

/* 1 if version is one the plugin speaks. */
int proxy_cni_version_supported(const char *version);

/*
 * Parses the network configuration (json, len bytes; strict JSON). Known keys: the
 * CNI ones (cniVersion, name, type, args, runtimeConfig, prevResult, capabilities,
 * ipMasq, ipam, dns; all but the first three ignored) and the plugin's: control (an
 * absolute socket path, default /run/authproxy/control.sock) and exactly one of
 * proxy_config (an object), proxy_config_file (an absolute path) or proxy_config_name
 * (a name stored with PUT /v1/configs/NAME). Any other key is error 2, naming it and
 * its value (an object or array only by its type: it may be a misspelled inline config
 * holding opaque values). Returns 0 (free c with proxy_cni_conf_free) or -EINVAL/-ENOMEM
 * with e set.
 */
int proxy_cni_parse_conf(const char *json, size_t len, struct proxy_cni_conf *c,
                         struct proxy_cni_error *e);

/* Frees the tree (wiping it: an inline proxy_config may hold opaque values). */
void proxy_cni_conf_free(struct proxy_cni_conf *c);

/*
 * The ADD result: prevResult passed through with cniVersion set to the configuration's
 * and dns.nameservers set to [PROXY_CNI_NAMESERVER] (its other dns keys kept); without
 * a prevResult (authproxy first or alone in the chain), a result holding only that
 * dns. Returns malloc'd JSON text, NULL when out of memory.
 */
char *proxy_cni_add_result(const struct proxy_cni_conf *c);

/* The error document {"cniVersion", "code", "msg", "details"}; NULL when out of memory. */
char *proxy_cni_error_json(const char *version, const struct proxy_cni_error *e);

/* The VERSION document for the cniVersion the runtime sent (NULL: 1.0.0). */
char *proxy_cni_version_json(const char *version);

/*
 * Checks the CNI environment for command (ADD, DEL, CHECK) as the spec requires:
 * CNI_CONTAINERID (a valid container id), CNI_IFNAME (a valid interface name) and, but
 * for DEL, CNI_NETNS (an absolute path). getenv_fn reads a variable (getenv in the
 * plugin, a table in tests). Returns 0 or -EINVAL with error 4 naming the variables.
 */
int proxy_cni_check_env(const char *command, const char *(*getenv_fn)(const char *name),
                        struct proxy_cni_error *e);

#endif
