/*
 * Loading a proxy_config file for the command line (jail, serve, config check).
 */
#ifndef AUTHPROXY_CFGLOAD_H
#define AUTHPROXY_CFGLOAD_H

#include <stddef.h>
#include <stdio.h>

#include "rules/rules.h"

/* A config file is read whole up to this; rules_config_parse then holds it to
 * RULES_MAX_CONFIG_LEN and says so. */
#define PROXY_CONFIG_MAX_BYTES ((size_t)RULES_MAX_CONFIG_LEN)

/*
 * Reads a whole file ("-" for standard input) of at most `max` bytes into a
 * NUL-terminated malloc'd buffer. Intermediate buffers are wiped (the file may hold
 * secrets); wipe the result likewise. Returns 0 or a negative errno (-EFBIG over max).
 */
int proxy_read_file(const char *path, size_t max, char **data, size_t *len);

/*
 * Reads, parses, validates and resolves the proxy_config in path. On failure prints
 * every error as "PREFIX: PATH: MESSAGE" to errf and returns a negative errno.
 */
int proxy_load_config(const char *path, const struct rules_secrets *secrets,
                      const char *prefix, FILE *errf, struct rules_config **out);

#endif
