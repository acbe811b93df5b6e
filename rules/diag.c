/*
 * Validation diagnostics: a growable list of (JSON path, message) pairs.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"

void rules_diag_init(struct rules_diag *d)
{
  memset(d, 0, sizeof(*d));
}

void rules_diag_free(struct rules_diag *d)
{
  size_t i;

  for (i = 0; i < d->count; i++) {
    free(d->entries[i].path);
    free(d->entries[i].message);
  }
  free(d->entries);
  memset(d, 0, sizeof(*d));
}

int rules_diag_add(struct rules_diag *d, const char *path, const char *fmt, ...)
{
  struct rules_diag_entry *e;
  va_list ap;
  char *msg = NULL, *p = NULL;
  int n;

  if (d == NULL)
    return 0; /* the caller wants the verdict, not the messages */
  if (d->count == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;

    e = realloc(d->entries, cap * sizeof(*e));
    if (e == NULL)
      return -ENOMEM;
    d->entries = e;
    d->cap = cap;
  }
  va_start(ap, fmt);
  n = vasprintf(&msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -ENOMEM;
  p = strdup(path ? path : "");
  if (p == NULL) {
    free(msg);
    return -ENOMEM;
  }
  d->entries[d->count].path = p;
  d->entries[d->count].message = msg;
  d->count++;
  return 0;
}
