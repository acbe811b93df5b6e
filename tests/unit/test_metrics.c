/*
 * Labelled counters (proxy/metrics.c): label values as the Prometheus text format
 * escapes them, and the bound on distinct labels, past which counts go to "_other".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/metrics.h"
#include "test.h"

/* A rule name may hold '"' and '\' (config.c refuses only control characters): each is
 * escaped, or the line would end the label early and a scraper would refuse the whole
 * exposition. A newline (not in a rule name, but a key is any string) is written \n. */
TEST(label_values_escaped)
{
  struct proxy_labels *l = calloc(1, sizeof(*l));
  struct strbuf b;

  ASSERT_NOT_NULL(l);
  strbuf_init(&b);
  proxy_labels_add(l, "say \"hi\"", 2);
  proxy_labels_add(l, "C:\\dir", 1);
  proxy_labels_add(l, "two\nlines", 1);
  proxy_labels_add(l, NULL, 1);
  proxy_labels_add(l, "say \"hi\"", 3);
  proxy_labels_write(&b, l, "m_total", "rule", "Help.");
  ASSERT(!b.oom);
  strbuf_add(&b, "", 0);
  ASSERT_STREQ(b.data, "# HELP m_total Help.\n# TYPE m_total counter\n"
                       "m_total{rule=\"say \\\"hi\\\"\"} 5\n"
                       "m_total{rule=\"C:\\\\dir\"} 1\n"
                       "m_total{rule=\"two\\nlines\"} 1\n"
                       "m_total{rule=\"\"} 1\n");
  strbuf_free(&b);
  free(l);
}

/* A config cannot grow the map past PROXY_LABELS_MAX: further keys are counted under
 * "_other", and keys already there go on counting on their own line. */
TEST(labels_bounded)
{
  struct proxy_labels *l = calloc(1, sizeof(*l));
  struct strbuf b;
  char key[32];
  int i;

  ASSERT_NOT_NULL(l);
  strbuf_init(&b);
  for (i = 0; i < PROXY_LABELS_MAX + 10; i++) {
    snprintf(key, sizeof(key), "r%d", i);
    proxy_labels_add(l, key, 1);
  }
  proxy_labels_add(l, "r0", 1);
  proxy_labels_add(l, "r300", 4);
  ASSERT_EQ(l->count, PROXY_LABELS_MAX);
  proxy_labels_write(&b, l, "m_total", "rule", "Help.");
  ASSERT(!b.oom);
  strbuf_add(&b, "", 0);
  ASSERT_CONTAINS(b.data, "m_total{rule=\"r0\"} 2\n");
  ASSERT_CONTAINS(b.data, "m_total{rule=\"r255\"} 1\n");
  ASSERT_NOT_CONTAINS(b.data, "rule=\"r256\"");
  ASSERT_CONTAINS(b.data, "m_total{rule=\"_other\"} 14\n");
  strbuf_free(&b);
  free(l);
}
