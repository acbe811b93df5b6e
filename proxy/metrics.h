/*
 * Prometheus text metrics. Counters live in struct proxy_ctx (plain integers on the
 * loop's thread); labelled counters (by reason, by rule) in bounded maps whose
 * overflow is counted under the label "_other" so a hostile config cannot grow them.
 */
#ifndef AUTHPROXY_METRICS_H
#define AUTHPROXY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/strbuf.h"

#define PROXY_LABELS_MAX 256

struct proxy_labels {
  struct {
    char key[64];
    uint64_t n;
  } e[PROXY_LABELS_MAX];
  size_t count;
  uint64_t other;
};

/* Adds n to the counter for key (truncated to 63 bytes). */
void proxy_labels_add(struct proxy_labels *l, const char *key, uint64_t n);

/* Writes one metric family: "# HELP", "# TYPE counter", a line per label. */
void proxy_labels_write(struct strbuf *b, const struct proxy_labels *l, const char *metric,
                        const char *label, const char *help);

#endif
