/*
 * The layer's three GEMMs (y = x·w, dx = g·wᵀ, dw = xᵀ·g; row-major, as the crate calls them)
 * on two OpenBLAS builds in one process: the system's (LP64, plain names) and another with
 * 64-bit integers and the `scipy_` prefix / `64_` suffix, e.g. the one numpy's wheel ships.
 *
 *   cc -O2 compare.c -o compare -ldl
 *   NEWLIB=$VENV/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-<hash>.so \
 *     ONLY=0|1 NT=2 ./compare f32|f64 BATCH IN OUT REPS
 *
 * ONLY=0 times the system library alone, ONLY=1 the other (alternate the two in separate
 * processes: idle OpenBLAS workers of one library spin on the cores while the other runs).
 * Without ONLY both run in alternation in this process. NT sets both libraries' threads.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*gemm32)(int, int, int, int, int, int, double, const void *, int, const void *, int,
                       double, void *, int);
typedef void (*sgemm32)(int, int, int, int, int, int, float, const void *, int, const void *, int,
                        float, void *, int);
typedef void (*gemm64)(int, int, int, long, long, long, double, const void *, long, const void *,
                       long, double, void *, long);
typedef void (*sgemm64)(int, int, int, long, long, long, float, const void *, long, const void *,
                        long, float, void *, long);

enum { ROW = 101, N = 111, T = 112 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* one of the three products: k = 0 forward, 1 dx, 2 dw */
static void product(int lib, int f64, void *fn, int k, long b, long i, long o, const void *x,
                    const void *w, const void *g, void *y, void *dx, void *dw) {
  int ta = k == 2 ? T : N, tb = k == 1 ? T : N;
  long m = k == 2 ? i : b, n = k == 1 ? i : o, kk = k == 0 ? i : (k == 1 ? o : b);
  const void *a = k == 0 ? x : (k == 1 ? g : x);
  const void *bb = k == 0 ? w : (k == 1 ? w : g);
  long lda = k == 1 ? o : i, ldb = o;
  void *c = k == 0 ? y : (k == 1 ? dx : dw);
  long ldc = k == 1 ? i : o;
  if (lib == 0 && f64)
    ((gemm32)fn)(ROW, ta, tb, m, n, kk, 1, a, lda, bb, ldb, 0, c, ldc);
  else if (lib == 0)
    ((sgemm32)fn)(ROW, ta, tb, m, n, kk, 1, a, lda, bb, ldb, 0, c, ldc);
  else if (f64)
    ((gemm64)fn)(ROW, ta, tb, m, n, kk, 1, a, lda, bb, ldb, 0, c, ldc);
  else
    ((sgemm64)fn)(ROW, ta, tb, m, n, kk, 1, a, lda, bb, ldb, 0, c, ldc);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: NEWLIB=... [ONLY=0|1] [NT=2] %s f32|f64 BATCH IN OUT REPS\n", argv[0]);
    return 2;
  }
  int f64 = strcmp(argv[1], "f64") == 0;
  long b = atol(argv[2]), i = atol(argv[3]), o = atol(argv[4]);
  int reps = atoi(argv[5]);
  int only = getenv("ONLY") ? atoi(getenv("ONLY")) : -1;
  int nt = getenv("NT") ? atoi(getenv("NT")) : 2;
  void *sys = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  void *other = getenv("NEWLIB") ? dlopen(getenv("NEWLIB"), RTLD_NOW | RTLD_LOCAL) : NULL;
  if (!getenv("NEWLIB")) {
    fprintf(stderr, "set NEWLIB to the other OpenBLAS\n");
    return 2;
  }
  if (!sys || !other) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  void *fn[2] = {dlsym(sys, f64 ? "cblas_dgemm" : "cblas_sgemm"),
                 dlsym(other, f64 ? "scipy_cblas_dgemm64_" : "scipy_cblas_sgemm64_")};
  char *(*config[2])(void) = {(char *(*)(void))dlsym(sys, "openblas_get_config"),
                              (char *(*)(void))dlsym(other, "scipy_openblas_get_config64_")};
  void (*threads0)(int) = (void (*)(int))dlsym(sys, "openblas_set_num_threads");
  void (*threads1)(long) = (void (*)(long))dlsym(other, "scipy_openblas_set_num_threads64_");
  if (!fn[0] || !fn[1] || !config[0] || !config[1] || !threads0 || !threads1) {
    fprintf(stderr, "a symbol is missing\n");
    return 1;
  }
  threads0(nt);
  threads1(nt);
  size_t es = f64 ? 8 : 4;
  char *x = malloc(b * i * es), *w = malloc(i * o * es), *g = malloc(b * o * es);
  char *y = malloc(b * o * es), *dx = malloc(b * i * es), *dw = malloc(i * o * es);
  /* small values of either precision, no subnormals */
  for (long e = 0; e < b * i; e++) f64 ? (((double *)x)[e] = e % 7 * 0.1) : (((float *)x)[e] = e % 7 * 0.1f);
  for (long e = 0; e < i * o; e++) f64 ? (((double *)w)[e] = e % 5 * 0.1) : (((float *)w)[e] = e % 5 * 0.1f);
  for (long e = 0; e < b * o; e++) f64 ? (((double *)g)[e] = e % 3 * 0.1) : (((float *)g)[e] = e % 3 * 0.1f);
  /* both libraries must compute the same products (same arguments, small exact inputs) */
  char *ref = malloc((b * o + b * i + i * o) * es);
  for (int lib = 0; lib < 2; lib++) {
    for (int k = 0; k < 3; k++) product(lib, f64, fn[lib], k, b, i, o, x, w, g, y, dx, dw);
    char *out[3] = {y, dx, dw};
    size_t len[3] = {b * o * es, b * i * es, i * o * es}, at = 0;
    for (int k = 0; k < 3; k++) {
      double worst = 0;
      for (size_t e = 0; lib == 1 && e < len[k] / es; e++) {
        double p = f64 ? ((double *)out[k])[e] : ((float *)out[k])[e];
        double q = f64 ? ((double *)(ref + at))[e] : ((float *)(ref + at))[e];
        double d = (p - q) / (1 + (q < 0 ? -q : q));
        worst = d < 0 ? (-d > worst ? -d : worst) : (d > worst ? d : worst);
      }
      if (lib == 0) memcpy(ref + at, out[k], len[k]);
      else if (worst > (f64 ? 1e-12 : 1e-4)) {
        fprintf(stderr, "the libraries disagree on product %d: %g\n", k, worst);
        return 1;
      }
      at += len[k];
    }
  }
  double t[2][3] = {{0}};
  for (int r = 0; r <= reps; r++)
    for (int lib = 0; lib < 2; lib++) {
      if (only >= 0 && only != lib) continue;
      for (int k = 0; k < 3; k++) {
        double t0 = now();
        product(lib, f64, fn[lib], k, b, i, o, x, w, g, y, dx, dw);
        if (r > 0) t[lib][k] += now() - t0; /* the first round warms up */
      }
    }
  const char *name[3] = {"y = x.w", "dx = g.wT", "dw = xT.g"};
  for (int lib = 0; lib < 2; lib++) {
    if (only >= 0 && only != lib) continue;
    printf("%s\n", config[lib]());
    double sum = 0;
    for (int k = 0; k < 3; k++) {
      printf("  %-10s %9.3f ms\n", name[k], t[lib][k] / reps * 1e3);
      sum += t[lib][k] / reps;
    }
    printf("  %-10s %9.3f ms\n", "sum", sum * 1e3);
  }
  return 0;
}
