/*
 * The OCI runtime hook (`authproxy oci-hook`, ocihook.c): the pure parts, for tests.
 */
#ifndef AUTHPROXY_OCIHOOK_H
#define AUTHPROXY_OCIHOOK_H

#include <stddef.h>

#define PROXY_OCI_ANNOTATION_CONFIG "io.authproxy.config"
#define PROXY_OCI_ANNOTATION_FILE "io.authproxy.config-file"
#define PROXY_OCI_DEFAULT_CONFIG_DIR "/etc/authproxy/configs"

struct cJSON;

/* The container state a runtime writes to a hook's standard input. */
struct proxy_oci_state {
  struct cJSON *root;        /* owned; the strings below point into it */
  const char *id;
  long pid;                  /* 0 when absent (poststop) */
  const char *config_name;   /* annotation io.authproxy.config, or NULL */
  const char *config_file;   /* annotation io.authproxy.config-file, or NULL */
};

/*
 * Parses the state JSON (strict): ociVersion and id (strings) are required, pid
 * too when need_pid (a positive integer), annotations must be an object of strings.
 * The two annotations are checked: io.authproxy.config must be a daemon name,
 * io.authproxy.config-file a bare file name (see proxy_oci_file_name_ok), and at most
 * one may be set. Returns 0 (free st with proxy_oci_state_free) or -EINVAL with the
 * reason in err.
 */
int proxy_oci_parse_state(const char *json, size_t len, int need_pid,
                          struct proxy_oci_state *st, char *err, size_t errsz);

void proxy_oci_state_free(struct proxy_oci_state *st);

/*
 * 1 if name may be looked up in the config directory: [A-Za-z0-9][A-Za-z0-9_.-]*, at
 * most 255 bytes. No '/', so an annotation never names a file outside the directory.
 */
int proxy_oci_file_name_ok(const char *name);

#endif
