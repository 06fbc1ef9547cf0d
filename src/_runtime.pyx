# What the extension was built with and what the CPU offers, for fastbp.show_config().

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTBP_OPENMP 1
    #define FASTBP_OPENMP_VERSION _OPENMP
    static int fastbp_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTBP_OPENMP 0
    #define FASTBP_OPENMP_VERSION 0
    static int fastbp_omp_max_threads(void) { return 1; }
    #endif

    #if defined(__clang__)
    #define FASTBP_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTBP_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FASTBP_COMPILER "msvc"
    #else
    #define FASTBP_COMPILER "unknown"
    #endif

    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int fastbp_cpu_has(int which) {
        __builtin_cpu_init();
        switch (which) {
            case 0: return __builtin_cpu_supports("sse2");
            case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
            case 2: return __builtin_cpu_supports("avx512f");
        }
        return 0;
    }
    #else
    static int fastbp_cpu_has(int which) { return 0; }
    #endif
    """
    int FASTBP_OPENMP
    int FASTBP_OPENMP_VERSION
    const char* FASTBP_COMPILER
    int fastbp_omp_max_threads() nogil
    int fastbp_cpu_has(int which) nogil


def omp_max_threads():
    """OpenMP's current maximum thread count (1 in a serial build)."""
    return fastbp_omp_max_threads()


def build_info():
    """Facts about this build and this CPU, as a dict."""
    features = [name for code, name in enumerate(("sse2", "avx2+fma", "avx512f"))
                if fastbp_cpu_has(code)]
    return {
        "compiler": FASTBP_COMPILER.decode(),
        "openmp": bool(FASTBP_OPENMP),
        "openmp_version": FASTBP_OPENMP_VERSION,
        "omp_max_threads": fastbp_omp_max_threads(),
        "cpu_features": features,
    }
