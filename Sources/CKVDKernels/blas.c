#include "kvd_kernels.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

// OpenBLAS is opened at first use rather than linked, for one reason: Debian's OpenBLAS picks its
// kernels when it is loaded, and on CPUs its detection does not know (virtual "Intel Xeon
// Processor" models among them) it falls back to the SSE3 "Prescott" kernel — a third of the AVX2
// kernel's speed. Before loading it we name the AVX2/FMA kernel ("Haswell") when the CPU has those
// instructions, unless the operator already chose one with OPENBLAS_CORETYPE. (The AVX-512 kernels
// are faster still but known to misbehave in older OpenBLAS builds on some CPUs, so not those.)

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);
typedef void (*threads_fn)(int);
typedef char *(*corename_fn)(void);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sgemm_fn sgemm;
static threads_fn set_threads;
static corename_fn corename;

static void load(void) {
#if defined(__x86_64__)
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        setenv("OPENBLAS_CORETYPE", "Haswell", 0);
#endif
    const char *names[] = {"libopenblas.so.0", "libopenblas.so", NULL};
    for (int i = 0; names[i] && !sgemm; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
        set_threads = (threads_fn)dlsym(h, "openblas_set_num_threads");
        corename = (corename_fn)dlsym(h, "openblas_get_corename");
    }
    // kvd parallelises over heads itself; BLAS threads on top would oversubscribe the cores.
    if (set_threads) set_threads(1);
}

int kvd_blas_available(void) {
    pthread_once(&once, load);
    return sgemm != NULL;
}

const char *kvd_blas_core(void) {
    pthread_once(&once, load);
    return corename ? corename() : "none";
}

void kvd_blas_set_threads(int n) {
    pthread_once(&once, load);
    if (set_threads) set_threads(n);
}

void kvd_sgemm_abt(int m, int n, int k, float alpha, const float *a, const float *b, float *c) {
    pthread_once(&once, load);
    // Row-major C[m][n] = alpha · A[m][k] · B[n][k]ᵀ (CblasRowMajor = 101, NoTrans = 111, Trans = 112).
    sgemm(101, 111, 112, m, n, k, alpha, a, k, b, k, 0.0f, c, n);
}
