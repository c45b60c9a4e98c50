/* Self-test of libheapcount.so: run with LD_PRELOAD=libheapcount.so (CTest does). It checks that
 * every allocation function is counted with at least the bytes asked for, that frees give them
 * back, and that the peak and its reset behave. Prints "N passed, N failed" and exits non-zero on
 * any failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t (*getter_t)(void);
typedef void (*reset_t)(void);

static int passed = 0, failed = 0;
#define CHECK(cond)                                             \
  do {                                                          \
    if (cond) {                                                 \
      ++passed;                                                 \
    } else {                                                    \
      ++failed;                                                 \
      fprintf(stderr, "FAILED line %d: %s\n", __LINE__, #cond); \
    }                                                           \
  } while (0)

int main(void) {
  getter_t current = (getter_t)dlsym(RTLD_DEFAULT, "heapcount_current_bytes");
  getter_t peak = (getter_t)dlsym(RTLD_DEFAULT, "heapcount_peak_bytes");
  getter_t allocations = (getter_t)dlsym(RTLD_DEFAULT, "heapcount_allocations");
  reset_t reset_peak = (reset_t)dlsym(RTLD_DEFAULT, "heapcount_reset_peak");
  if (!current || !peak || !allocations || !reset_peak) {
    fprintf(stderr, "heapcount is not loaded: run with LD_PRELOAD=.../libheapcount.so\n");
    printf("0 passed, 1 failed\n");
    return 1;
  }
  const int64_t MiB = 1 << 20;
  volatile char* sink;

  /* malloc / free */
  int64_t base = current();
  char* a = malloc((size_t)MiB);
  memset(a, 1, (size_t)MiB);
  CHECK(current() - base >= MiB);
  CHECK(current() - base < MiB + 4096);
  int64_t n0 = allocations();
  free(a);
  CHECK(current() == base);
  CHECK(allocations() == n0);

  /* the peak and its reset */
  reset_peak();
  CHECK(peak() == current());
  base = current();
  a = malloc((size_t)(4 * MiB));
  sink = a;
  free(a);
  char* b = malloc((size_t)MiB);
  sink = b;
  CHECK(peak() - base >= 4 * MiB);
  CHECK(current() - base >= MiB && current() - base < 2 * MiB);
  free(b);
  reset_peak();
  CHECK(peak() == base);

  /* calloc, realloc (growing, shrinking, to zero), reallocarray */
  base = current();
  a = calloc(1024, 1024);
  CHECK(a != NULL && a[MiB - 1] == 0);
  CHECK(current() - base >= MiB);
  n0 = allocations();
  a = realloc(a, (size_t)(3 * MiB));
  CHECK(current() - base >= 3 * MiB && current() - base < 3 * MiB + 8192);
  CHECK(allocations() == n0); /* a resize is not a new allocation */
  a = realloc(a, 100);
  CHECK(current() - base >= 100 && current() - base < 4096);
  a = reallocarray(a, 1024, 2048);
  CHECK(a != NULL && current() - base >= 2 * MiB);
  {
    /* overflow: refused, and the block is left as it was (and still counted) */
    volatile size_t huge = SIZE_MAX / 2;
    char* same = a;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"
    CHECK(reallocarray(a, huge, 4) == NULL);
    CHECK(current() - base >= 2 * MiB);
    free(same);
#pragma GCC diagnostic pop
  }
  CHECK(current() == base);
  a = realloc(NULL, 64); /* realloc(NULL) is malloc */
  CHECK(current() - base >= 64);
  free(a);
  CHECK(current() == base);

  /* aligned allocations */
  void* p = NULL;
  CHECK(posix_memalign(&p, 64, (size_t)MiB) == 0);
  CHECK(((uintptr_t)p % 64) == 0 && current() - base >= MiB);
  free(p);
  p = aligned_alloc(4096, (size_t)MiB);
  CHECK(p != NULL && ((uintptr_t)p % 4096) == 0 && current() - base >= MiB);
  free(p);
  p = memalign(256, 1000);
  CHECK(p != NULL && ((uintptr_t)p % 256) == 0 && current() - base >= 1000);
  free(p);
  p = valloc(5000);
  CHECK(p != NULL && current() - base >= 5000);
  free(p);
  CHECK(current() == base);
  CHECK(posix_memalign(&p, 3, 16) != 0); /* bad alignment: an error, nothing counted */
  CHECK(current() == base);
  free(NULL);
  CHECK(current() == base);
  (void)sink;

  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
