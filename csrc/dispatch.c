/* dispatch.c -- the public kernels run the variant compiled for the best
 * instruction set this CPU has: baseline x86-64 (SSE2), AVX2 + FMA, or
 * AVX-512. The default build thus runs on any x86-64 and is fast on new ones;
 * other architectures have the baseline only. */
#include <string.h>
#include "internal.h"
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

/* The variants (kernels_f32*.c, kernels_f64*.c), typed by the API's own
 * function types, so that each has the API's signature by construction. */
fastrnn_forward_fn_f32 fastrnn_forward_f32_base, fastrnn_forward_f32_avx2,
    fastrnn_forward_f32_avx512;
fastrnn_backward_fn_f32 fastrnn_backward_f32_base, fastrnn_backward_f32_avx2,
    fastrnn_backward_f32_avx512;
fastrnn_forward_fn_f64 fastrnn_forward_f64_base, fastrnn_forward_f64_avx2,
    fastrnn_forward_f64_avx512;
fastrnn_backward_fn_f64 fastrnn_backward_f64_base, fastrnn_backward_f64_avx2,
    fastrnn_backward_f64_avx512;

/* The buffer sizes, from the layouts of the kernels (layer_impl.h); they
 * count elements, so one variant answers for all. */
size_t fastrnn_cache_size_f32_base(const fastrnn_layer *L);
size_t fastrnn_forward_work_size_f32_base(const fastrnn_layer *L, int training);
size_t fastrnn_backward_work_size_f32_base(const fastrnn_layer *L);

/* The FMA peak probes (gemm.h), float32 */
long fastrnn_fma_probe_f32_base(long, float *), fastrnn_fma_probe_f32_avx2(long, float *),
    fastrnn_fma_probe_f32_avx512(long, float *);

typedef struct {
    long (*fma_probe)(long, float *);
    fastrnn_forward_fn_f32 *forward_f32;
    fastrnn_backward_fn_f32 *backward_f32;
    fastrnn_forward_fn_f64 *forward_f64;
    fastrnn_backward_fn_f64 *backward_f64;
} kernel_table;

/* The kernels of each instruction set, indexed by FASTRNN_ISA_* */
static const kernel_table KERNELS[] = {
    [FASTRNN_ISA_BASELINE] = {fastrnn_fma_probe_f32_base,
                              fastrnn_forward_f32_base, fastrnn_backward_f32_base,
                              fastrnn_forward_f64_base, fastrnn_backward_f64_base},
#if defined(__x86_64__) && defined(__GNUC__)
    [FASTRNN_ISA_AVX2] = {fastrnn_fma_probe_f32_avx2,
                          fastrnn_forward_f32_avx2, fastrnn_backward_f32_avx2,
                          fastrnn_forward_f64_avx2, fastrnn_backward_f64_avx2},
    [FASTRNN_ISA_AVX512] = {fastrnn_fma_probe_f32_avx512,
                            fastrnn_forward_f32_avx512, fastrnn_backward_f32_avx512,
                            fastrnn_forward_f64_avx512, fastrnn_backward_f64_avx512},
#endif
};

static int isa_forced = -1;   /* fastrnn_set_isa; -1: the best the CPU has */

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

/* What this CPU and its OS let the variants use, from the CPUID instruction
 * and XGETBV, so that the answer needs nothing from the compiler's runtime
 * (__builtin_cpu_supports reads libgcc's or compiler-rt's data, which a
 * toolchain such as zig's does not fill in: every CPU was baseline there).
 * A feature counts only if the OS saves its registers on a context switch
 * (XCR0): a CPU with AVX-512 under an OS or hypervisor that leaves the zmm
 * state out must not run the AVX-512 kernels. */
static int detect_isa(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid_max(0, 0) < 7 || !__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return FASTRNN_ISA_BASELINE;
    const unsigned int leaf1_ecx = ecx;
    /* leaf 1 ecx: FMA (12), OSXSAVE (27: XGETBV may be used), AVX (28) */
    if (!(leaf1_ecx & (1u << 27)))
        return FASTRNN_ISA_BASELINE;
    unsigned int xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    const int os_avx = (xcr0_lo & 0x6u) == 0x6u;              /* xmm, ymm state */
    const int os_avx512 = os_avx && (xcr0_lo & 0xe0u) == 0xe0u; /* opmask, zmm 0-15 high, zmm 16-31 */
    __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx);
    /* leaf 7 ebx: AVX2 (5), AVX512F (16), AVX512VL (31) */
    const int avx2_fma = os_avx && (leaf1_ecx & (1u << 28)) && (leaf1_ecx & (1u << 12))
                         && (ebx & (1u << 5));
    if (avx2_fma && os_avx512 && (ebx & (1u << 16)) && (ebx & (1u << 31)))
        return FASTRNN_ISA_AVX512;
    return avx2_fma ? FASTRNN_ISA_AVX2 : FASTRNN_ISA_BASELINE;
}
#endif

int fastrnn_best_isa(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* detected once: CPUID traps to the hypervisor in a virtual machine, and
     * every kernel call asks (a relaxed atomic: racing first callers store
     * the same value) */
    static int best = -1;
    int isa = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = detect_isa();
        __atomic_store_n(&best, isa, __ATOMIC_RELAXED);
    }
    return isa;
#else
    return FASTRNN_ISA_BASELINE;
#endif
}

int fastrnn_isa(void)
{
    return isa_forced >= 0 ? isa_forced : fastrnn_best_isa();
}

int fastrnn_set_isa(int isa)
{
    if (isa < -1 || isa > fastrnn_best_isa())
        return FASTRNN_ERR_ARGUMENT;   /* unknown, or not on this CPU */
    isa_forced = isa;
    return FASTRNN_OK;
}

/* Denormal numbers (below 1.2e-38 in float32) take a slow path in the FPU
 * on many CPUs: states that decay toward zero can make a call many times
 * slower. Each kernel call flushes them to zero (FTZ: results, DAZ: inputs)
 * and restores the caller's setting when it returns; the time loop's threads
 * inherit it (pthread_create copies the floating-point environment). Values
 * below the smallest normal number (1.2e-38 in float32, 2.2e-308 in float64)
 * become 0: an absolute change smaller than those. */
#if defined(__x86_64__) || defined(__i386__)
#define FTZ_DAZ 0x8040u   /* MXCSR bits: flush to zero (15), denormals are zero (6) */
typedef unsigned int fp_mode;
static fp_mode flush_denormals(void)
{
    fp_mode saved = _mm_getcsr();
    _mm_setcsr(saved | FTZ_DAZ);
    return saved;
}
static void restore_denormals(fp_mode saved) { _mm_setcsr(saved); }
#else
typedef int fp_mode;   /* other architectures: the caller's mode as it is */
static fp_mode flush_denormals(void) { return 0; }
static void restore_denormals(fp_mode saved) { (void)saved; }
#endif

/* What every kernel call sets for its duration: denormals flushed, BLAS serial */
static fp_mode enter_call(void)
{
    fastrnn_blas_serial_begin();
    return flush_denormals();
}

static void leave_call(fp_mode saved)
{
    restore_denormals(saved);
    fastrnn_blas_serial_end();
}

long fastrnn_fma_probe_f32(long iterations, float *sink)
{
    return KERNELS[fastrnn_isa()].fma_probe(iterations, sink);
}

size_t fastrnn_cache_size(const fastrnn_layer *L)
{
    return fastrnn_cache_size_f32_base(L);
}

/* The answer for the last layer asked in this thread is kept: a cell stepped
 * in a loop asks for the same one at every step, and the answer (the largest
 * of 16 layouts) cost more than the step's gate pass. Layers equal byte for
 * byte (the bindings zero them first) have the same work size. */
size_t fastrnn_forward_work_size(const fastrnn_layer *L, int training)
{
    static __thread fastrnn_layer last;
    static __thread int last_training = -1;
    static __thread size_t last_size;
    if (training != last_training || memcmp(L, &last, sizeof last) != 0) {
        last_size = fastrnn_forward_work_size_f32_base(L, training);
        last = *L;
        last_training = training;
    }
    return last_size;
}

size_t fastrnn_backward_work_size(const fastrnn_layer *L)
{
    return fastrnn_backward_work_size_f32_base(L);
}

/* The public entry points, one pair per precision: each runs the chosen
 * instruction set's kernel between enter_call and leave_call. */
#define DEFINE_ENTRY_POINTS(real, S)                                                          \
    int fastrnn_forward_##S(real *y, fastrnn_state_##S *state_n, real *cache, real *work,     \
                            const real *x, const fastrnn_state_##S *state0,                    \
                            const fastrnn_params_##S *W, const fastrnn_layer *L)               \
    {                                                                                         \
        fp_mode saved = enter_call();                                                         \
        int status = KERNELS[fastrnn_isa()].forward_##S(y, state_n, cache, work, x, state0,  \
                                                        W, L);                                \
        leave_call(saved);                                                                    \
        return status;                                                                        \
    }                                                                                         \
    int fastrnn_backward_##S(real *dx, fastrnn_state_##S *dstate0,                            \
                             const fastrnn_params_##S *dW, real *work, const real *dy,        \
                             const fastrnn_state_##S *dstate_n, const real *cache,            \
                             const real *x, const fastrnn_params_##S *W,                      \
                             const fastrnn_layer *L)                                          \
    {                                                                                         \
        fp_mode saved = enter_call();                                                         \
        int status = KERNELS[fastrnn_isa()].backward_##S(dx, dstate0, dW, work, dy, dstate_n, \
                                                         cache, x, W, L);                     \
        leave_call(saved);                                                                    \
        return status;                                                                        \
    }

DEFINE_ENTRY_POINTS(float, f32)
DEFINE_ENTRY_POINTS(double, f64)
