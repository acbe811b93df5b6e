/*
 * The arena a config lives in: a few chunks, wiped whole when the config is freed.
 *
 * Chunks start small (a typical config fits in one or two) and double, so a config
 * with hundreds of rules still costs a handful of allocations and wastes at most
 * about half of its last chunk.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_internal.h"

#define ARENA_FIRST_CHUNK 1024
#define ARENA_MAX_CHUNK (64 * 1024)
#define ARENA_ALIGN 8

struct rules_arena_chunk {
  struct rules_arena_chunk *next;
  size_t size; /* usable bytes in data */
  size_t used;
  /* Aligned storage follows the header. */
  _Alignas(ARENA_ALIGN) unsigned char data[];
};

static size_t align_up(size_t n)
{
  return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

void *rules_arena_alloc(struct rules_arena *a, size_t size)
{
  struct rules_arena_chunk *c = a->head;
  size_t want, csize;
  void *p;

  if (size > SIZE_MAX / 2)
    return NULL;
  want = align_up(size ? size : 1);
  if (c == NULL || c->size - c->used < want) {
    csize = c ? c->size * 2 : ARENA_FIRST_CHUNK;
    if (csize > ARENA_MAX_CHUNK)
      csize = ARENA_MAX_CHUNK;
    if (csize < want)
      csize = want;
    c = malloc(sizeof(*c) + csize);
    if (c == NULL)
      return NULL;
    memset(c, 0, sizeof(*c) + csize);
    c->size = csize;
    c->next = a->head;
    a->head = c;
    a->bytes += sizeof(*c) + csize;
  }
  p = c->data + c->used;
  c->used += want;
  return p;
}

int rules_arena_reserve(struct rules_arena *a, size_t size)
{
  struct rules_arena_chunk *c;

  if (a->head != NULL || size > SIZE_MAX / 2)
    return -EINVAL;
  size = align_up(size ? size : 1);
  c = malloc(sizeof(*c) + size);
  if (c == NULL)
    return -ENOMEM;
  memset(c, 0, sizeof(*c) + size);
  c->size = size;
  a->head = c;
  a->bytes = sizeof(*c) + size;
  return 0;
}

size_t rules_arena_used(const struct rules_arena *a)
{
  const struct rules_arena_chunk *c;
  size_t used = 0;

  for (c = a->head; c != NULL; c = c->next)
    used += c->used;
  return used;
}

void *rules_arena_array(struct rules_arena *a, size_t n, size_t size)
{
  if (size != 0 && n > SIZE_MAX / 2 / size)
    return NULL;
  return rules_arena_alloc(a, n * size);
}

char *rules_arena_strndup(struct rules_arena *a, const char *s, size_t len)
{
  char *p;

  if (len >= SIZE_MAX / 2)
    return NULL;
  p = rules_arena_alloc(a, len + 1);
  if (p == NULL)
    return NULL;
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

void rules_arena_free(struct rules_arena *a)
{
  struct rules_arena_chunk *c = a->head, *next;

  while (c != NULL) {
    next = c->next;
    /* The chunk may hold resolved secrets anywhere: wipe all of it. */
    explicit_bzero(c, sizeof(*c) + c->size);
    free(c);
    c = next;
  }
  a->head = NULL;
  a->bytes = 0;
}
