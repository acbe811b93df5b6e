/*
 * Labelled counters for the metrics endpoint.
 */
#include <stdio.h>
#include <string.h>

#include "proxy/metrics.h"

void proxy_labels_add(struct proxy_labels *l, const char *key, uint64_t n)
{
  size_t i;

  if (key == NULL)
    key = "";
  for (i = 0; i < l->count; i++) {
    if (strncmp(l->e[i].key, key, sizeof(l->e[i].key) - 1) == 0) {
      l->e[i].n += n;
      return;
    }
  }
  if (l->count == PROXY_LABELS_MAX) {
    l->other += n;
    return;
  }
  snprintf(l->e[l->count].key, sizeof(l->e[0].key), "%s", key);
  l->e[l->count].n = n;
  l->count++;
}

/* Label values are escaped as the exposition format requires. */
static void add_label_value(struct strbuf *b, const char *v)
{
  for (; *v != '\0'; v++) {
    if (*v == '\\' || *v == '"')
      strbuf_add(b, "\\", 1);
    if (*v == '\n') {
      strbuf_adds(b, "\\n");
      continue;
    }
    strbuf_add(b, v, 1);
  }
}

void proxy_labels_write(struct strbuf *b, const struct proxy_labels *l, const char *metric,
                        const char *label, const char *help)
{
  size_t i;

  strbuf_addf(b, "# HELP %s %s\n# TYPE %s counter\n", metric, help, metric);
  for (i = 0; i < l->count; i++) {
    strbuf_addf(b, "%s{%s=\"", metric, label);
    add_label_value(b, l->e[i].key);
    strbuf_addf(b, "\"} %llu\n", (unsigned long long)l->e[i].n);
  }
  if (l->other > 0)
    strbuf_addf(b, "%s{%s=\"_other\"} %llu\n", metric, label, (unsigned long long)l->other);
}
