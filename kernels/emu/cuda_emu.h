/* Host emulation of the CUDA subset our kernels use, so every kernel also compiles with the host
 * C++ compiler and runs in CI without a GPU (ARCHITECTURE.md §7). One OS thread per CUDA thread with real
 * barriers: __syncthreads is a barrier over the block, warp shuffles and the tensor-core wrappers
 * exchange values through a per-warp buffer and a barrier over the warp's 32 threads. Blocks run
 * one after another (so a function-level static is a faithful __shared__), launches are
 * serialised, and stream capture records launches, copies and GEMMs into a graph that
 * cudaGraphLaunch replays. The runtime and cuBLAS calls are C++ functions here, never the C
 * symbols of libcudart/libcublas, so a binary may link both builds. Error injection hooks let
 * tests drive the backend's out-of-memory and sticky-error paths. */
#ifndef STOPCAL_CUDA_EMU_H
#define STOPCAL_CUDA_EMU_H

#ifndef __cplusplus
#error "cuda_emu.h is C++: kernels are compiled as C++ by the host compiler"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
/* Blocks of a launch run one at a time, so a function-level static is shared by exactly the
 * threads of one block, as __shared__ memory is. */
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
/* Defined here (C++17 inline, constant-initialised) rather than extern: every use then reads the
 * TLS slot directly instead of through an init wrapper, which UBSan mistakes for a null access. */
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
static const int warpSize = 32;

/* ---- synchronisation inside a block ---- */
void __syncthreads();
void __syncwarp(unsigned mask = 0xffffffffu);

/* Bytes each lane may contribute to one warp-collective exchange. */
#define CUDA_EMU_WARP_SLOT_BYTES 256
/* Warp collective: every lane of the calling warp passes `bytes` of its own; returns the warp's
 * 32 contributions, lane L's at offset L * CUDA_EMU_WARP_SLOT_BYTES. The result stays valid until
 * this thread's next warp-collective call. All 32 lanes must call it (as with a full mask). */
const unsigned char *cuda_emu_warp_gather(const void *mine, size_t bytes);
int cuda_emu_lane();

template <typename T>
static inline T cuda_emu_shfl_from(T v, int (*src_of)(int lane, int arg), int arg, int width)
{
    const unsigned char *all = cuda_emu_warp_gather(&v, sizeof v);
    int lane = cuda_emu_lane(), base = lane & ~(width - 1);
    int src = src_of(lane & (width - 1), arg);
    if (src < 0 || src >= width)
        src = lane & (width - 1); /* out of range: the caller keeps its own value, as on the GPU */
    T out;
    memcpy(&out, all + (size_t)(base + src) * CUDA_EMU_WARP_SLOT_BYTES, sizeof out);
    return out;
}
static inline int cuda_emu_src_xor(int lane, int m) { return lane ^ m; }
static inline int cuda_emu_src_idx(int lane, int s) { (void)lane; return s; }
static inline int cuda_emu_src_down(int lane, int d) { return lane + d; }
static inline int cuda_emu_src_up(int lane, int d) { return lane - d; }

template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32)
{
    return cuda_emu_shfl_from(v, cuda_emu_src_xor, m, width);
}
template <typename T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32)
{
    return cuda_emu_shfl_from(v, cuda_emu_src_idx, src & (width - 1), width);
}
template <typename T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32)
{
    return cuda_emu_shfl_from(v, cuda_emu_src_down, (int)d, width);
}
template <typename T> static inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32)
{
    return cuda_emu_shfl_from(v, cuda_emu_src_up, (int)d, width);
}

/* ---- atomics (the GCC builtins, sequentially consistent) ---- */
static inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline float atomicAdd(float *p, float v)
{
    uint32_t *u = reinterpret_cast<uint32_t *>(p), old = __atomic_load_n(u, __ATOMIC_SEQ_CST), want;
    do {
        float f;
        memcpy(&f, &old, 4);
        f += v;
        memcpy(&want, &f, 4);
    } while (!__atomic_compare_exchange_n(u, &old, want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    float prev;
    memcpy(&prev, &old, 4);
    return prev;
}
static inline int atomicMax(int *p, int v)
{
    int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
static inline int atomicCAS(int *p, int compare, int v)
{
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}
static inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

/* ---- device math the host lacks (glibc already declares __expf) ---- */
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __fmul_rn(float a, float b) { return a * b; } /* a product never fused into an FMA */

/* ---- runtime API subset ---- */
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
    cudaErrorUnknown = 999,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02
#define cudaEventDefault 0x00

typedef struct cuda_emu_stream *cudaStream_t;
typedef struct cuda_emu_graph *cudaGraph_t;
typedef struct cuda_emu_graph_exec *cudaGraphExec_t;
typedef struct cuda_emu_event *cudaEvent_t;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor, multiProcessorCount, clockRate, memoryClockRate, memoryBusWidth;
};

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s = 0);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

/* Run (or, while `stream` is capturing, record) `body` once per CUDA thread of the grid. */
cudaError_t cuda_emu_launch(dim3 grid, dim3 block, cudaStream_t stream, std::function<void()> body);
/* Run now, or record into the capturing stream's graph: host-side work ordered with kernels. */
cudaError_t cuda_emu_enqueue(cudaStream_t stream, std::function<void()> work);

/* ---- cuBLAS subset: column-major GEMM on bf16/fp32 operands, fp32 compute ---- */
enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0 };
typedef struct cuda_emu_blas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *workspace, size_t bytes);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
/* C (m×n, ldc) = alpha·op(A)·op(B) + beta·C, column-major, as cuBLAS documents it. The emulation
 * widens the operands to fp32 (exact for bf16) and calls the CPU BLAS's sgemm. */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType_t Atype, int lda, const void *B,
                            cudaDataType_t Btype, int ldb, const void *beta, void *C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);

#endif
