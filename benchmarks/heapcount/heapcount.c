/* heapcount: an LD_PRELOAD heap meter, so that C++ and Python processes are measured alike.
 *
 * It replaces malloc, free, calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign,
 * valloc and pvalloc with thin wrappers around glibc's own allocator (__libc_malloc & co.) and
 * keeps three process-wide counters: the bytes of heap blocks live now, the highest that has been
 * since the start (or the last reset), and the number of allocations. A block counts with its
 * usable size (malloc_usable_size), so what is counted is what the heap holds, whichever function
 * made it.
 *
 *   LD_PRELOAD=/path/libheapcount.so HEAPCOUNT_OUT=/tmp/heap-%p.txt ./program
 *
 * At exit it writes "peak_bytes=N current_bytes=N allocations=N" to the file named by
 * HEAPCOUNT_OUT ("%p" becomes the process id), or to stderr when HEAPCOUNT_OUT is "-".
 * A program may also read and reset the counters during its run (find the functions below with
 * dlsym(RTLD_DEFAULT, ...) in C/C++, or ctypes.CDLL(None) in Python) to meter one region:
 *
 *   heapcount_reset_peak(); int64_t base = heapcount_current_bytes();
 *   ... region ...
 *   int64_t region_peak = heapcount_peak_bytes() - base;
 *
 * Memory that a program maps itself (mmap) is not heap and is not counted: CPython's small-object
 * arenas are mapped that way, but tensors' storage (posix_memalign in LibTorch) and every large
 * Python object go through malloc. glibc only: it relies on the __libc_* entry points.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void* __libc_malloc(size_t size);
extern void __libc_free(void* ptr);
extern void* __libc_calloc(size_t n, size_t size);
extern void* __libc_realloc(void* ptr, size_t size);
extern void* __libc_memalign(size_t alignment, size_t size);
extern void* __libc_valloc(size_t size);
extern void* __libc_pvalloc(size_t size);

#define HC_EXPORT __attribute__((visibility("default")))

static _Atomic int64_t hc_current = 0;
static _Atomic int64_t hc_peak = 0;
static _Atomic int64_t hc_allocations = 0;

static void hc_add(void* ptr) {
  if (ptr == NULL) return;
  const int64_t n = (int64_t)malloc_usable_size(ptr);
  const int64_t now = atomic_fetch_add_explicit(&hc_current, n, memory_order_relaxed) + n;
  int64_t peak = atomic_load_explicit(&hc_peak, memory_order_relaxed);
  while (now > peak && !atomic_compare_exchange_weak_explicit(
                           &hc_peak, &peak, now, memory_order_relaxed, memory_order_relaxed)) {
  }
  atomic_fetch_add_explicit(&hc_allocations, 1, memory_order_relaxed);
}

static void hc_sub(void* ptr) {
  if (ptr == NULL) return;
  atomic_fetch_sub_explicit(&hc_current, (int64_t)malloc_usable_size(ptr), memory_order_relaxed);
}

/* ---- the allocation functions ---- */

HC_EXPORT void* malloc(size_t size) {
  void* p = __libc_malloc(size);
  hc_add(p);
  return p;
}

HC_EXPORT void free(void* ptr) {
  hc_sub(ptr);
  __libc_free(ptr);
}

HC_EXPORT void* calloc(size_t n, size_t size) {
  void* p = __libc_calloc(n, size);
  hc_add(p);
  return p;
}

HC_EXPORT void* realloc(void* ptr, size_t size) {
  if (ptr == NULL) return malloc(size);
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  const int64_t old = (int64_t)malloc_usable_size(ptr);
  void* p = __libc_realloc(ptr, size);
  if (p == NULL) return NULL; /* the old block is untouched and still counted */
  atomic_fetch_sub_explicit(&hc_current, old, memory_order_relaxed);
  hc_add(p);
  atomic_fetch_sub_explicit(&hc_allocations, 1, memory_order_relaxed); /* a resize, not a new one */
  return p;
}

HC_EXPORT void* reallocarray(void* ptr, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(ptr, total);
}

HC_EXPORT void* memalign(size_t alignment, size_t size) {
  void* p = __libc_memalign(alignment, size);
  hc_add(p);
  return p;
}

HC_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(alignment, size);
  if (p == NULL) return ENOMEM;
  hc_add(p);
  *out = p;
  return 0;
}

HC_EXPORT void* aligned_alloc(size_t alignment, size_t size) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    errno = EINVAL;
    return NULL;
  }
  return memalign(alignment, size);
}

HC_EXPORT void* valloc(size_t size) {
  void* p = __libc_valloc(size);
  hc_add(p);
  return p;
}

HC_EXPORT void* pvalloc(size_t size) {
  void* p = __libc_pvalloc(size);
  hc_add(p);
  return p;
}

/* ---- the control API ---- */

/** Bytes of heap blocks live now. */
HC_EXPORT int64_t heapcount_current_bytes(void) {
  return atomic_load(&hc_current);
}
/** Highest heapcount_current_bytes() since the start or the last heapcount_reset_peak(). */
HC_EXPORT int64_t heapcount_peak_bytes(void) {
  return atomic_load(&hc_peak);
}
/** Number of allocations made (resizes excluded). */
HC_EXPORT int64_t heapcount_allocations(void) {
  return atomic_load(&hc_allocations);
}
/** Sets the peak to the bytes live now, to meter a region from here. */
HC_EXPORT void heapcount_reset_peak(void) {
  atomic_store(&hc_peak, atomic_load(&hc_current));
}

/* ---- the report at exit ---- */

__attribute__((destructor)) static void hc_report(void) {
  const char* spec = getenv("HEAPCOUNT_OUT");
  if (spec == NULL || spec[0] == '\0') return;
  char line[160];
  const int len =
      snprintf(line, sizeof line, "peak_bytes=%lld current_bytes=%lld allocations=%lld\n",
               (long long)heapcount_peak_bytes(), (long long)heapcount_current_bytes(),
               (long long)heapcount_allocations());
  if (len <= 0) return;
  if (strcmp(spec, "-") == 0) {
    (void)!write(STDERR_FILENO, line, (size_t)len);
    return;
  }
  char path[4096];
  size_t o = 0;
  for (const char* s = spec; *s != '\0' && o + 24 < sizeof path; ++s) {
    if (s[0] == '%' && s[1] == 'p') {
      o += (size_t)snprintf(path + o, sizeof path - o, "%ld", (long)getpid());
      ++s;
    } else {
      path[o++] = *s;
    }
  }
  path[o] = '\0';
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  (void)!write(fd, line, (size_t)len);
  close(fd);
}
