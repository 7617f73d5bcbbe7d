/* The host emulation's runtime: thread-per-CUDA-thread launches with pthread barriers, a
 * malloc-backed "device", stream capture into replayable graphs, cuBLAS GEMMs on the CPU BLAS,
 * and error injection for tests. See cuda_emu.h for the model it follows. */
#include "cuda_emu.h"

#include "bf16.h"
#include "cuda_ops.h"

#include <cblas.h>
#include <pthread.h>

#include <cstdio>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace {

struct warp_ctx {
    pthread_barrier_t barrier;
    alignas(16) unsigned char slots[2][32][CUDA_EMU_WARP_SLOT_BYTES];
};

struct grid_ctx {
    pthread_barrier_t barrier; /* the block's __syncthreads, also the fence between blocks */
    dim3 grid, block;
    std::vector<warp_ctx *> warps;
    const std::function<void()> *body;
};

struct thread_state {
    grid_ctx *grid;
    warp_ctx *warp;
    int lane;
    int parity; /* which of the warp's two exchange buffers the next collective uses */
};
thread_local thread_state self;

std::mutex launch_mutex;  /* kernels' statics (__shared__) allow one running grid at a time */
std::mutex state_mutex;   /* the error state below */
cudaError_t last_error = cudaSuccess, sticky_error = cudaSuccess;
int failing_mallocs = 0;

cudaError_t record(cudaError_t e)
{
    std::lock_guard<std::mutex> lock(state_mutex);
    if (e != cudaSuccess && last_error == cudaSuccess)
        last_error = e;
    return e;
}

cudaError_t sticky()
{
    std::lock_guard<std::mutex> lock(state_mutex);
    return sticky_error;
}

/* One thread's share of a grid: every block in order, with the block barrier between blocks. */
void run_thread(grid_ctx *g, unsigned id)
{
    const unsigned bx = g->block.x, by = g->block.y;
    threadIdx = uint3{id % bx, (id / bx) % by, id / (bx * by)};
    blockDim = g->block;
    gridDim = g->grid;
    self.grid = g;
    self.warp = g->warps[id / 32];
    self.lane = (int)(id % 32);
    self.parity = 0;
    for (unsigned z = 0; z < g->grid.z; z++)
        for (unsigned y = 0; y < g->grid.y; y++)
            for (unsigned x = 0; x < g->grid.x; x++) {
                blockIdx = uint3{x, y, z};
                (*g->body)();
                /* No thread starts the next block while another still uses this one's shared
                 * memory (an early return skips straight to here, as a retired GPU thread). */
                pthread_barrier_wait(&g->barrier);
            }
}

/* The CUDA threads are OS threads kept from launch to launch (creating 128 threads per launch
 * would dominate the emulation's run time, more so under sanitizers). A launch publishes its grid
 * and a new generation; threads whose index is below the block size run it. */
struct thread_pool {
    std::mutex m;
    std::condition_variable work, done;
    unsigned long generation = 0;
    grid_ctx *job = nullptr;
    unsigned job_threads = 0, running = 0, size = 0;
};
/* Never destroyed: its threads wait on it until the process ends (destroying a condition variable
 * with waiters blocks exit). */
thread_pool &pool = *new thread_pool;

void *pool_thread(void *p)
{
    const unsigned id = (unsigned)(uintptr_t)p;
    unsigned long seen = 0;
    std::unique_lock<std::mutex> lock(pool.m);
    for (;;) {
        pool.work.wait(lock, [&] { return pool.generation != seen; });
        seen = pool.generation;
        if (id >= pool.job_threads)
            continue;
        grid_ctx *g = pool.job;
        lock.unlock();
        run_thread(g, id);
        lock.lock();
        if (--pool.running == 0)
            pool.done.notify_all();
    }
    return nullptr;
}

void run_grid(dim3 grid, dim3 block, const std::function<void()> &body)
{
    std::lock_guard<std::mutex> launch(launch_mutex);
    const unsigned n = block.x * block.y * block.z;
    grid_ctx g;
    g.grid = grid;
    g.block = block;
    g.body = &body;
    pthread_barrier_init(&g.barrier, nullptr, n);
    for (unsigned w = 0; w < n / 32; w++) {
        warp_ctx *wc = new warp_ctx;
        pthread_barrier_init(&wc->barrier, nullptr, 32);
        g.warps.push_back(wc);
    }
    std::unique_lock<std::mutex> lock(pool.m);
    if (pool.size < n) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1u << 20);
        for (; pool.size < n; pool.size++) {
            pthread_t t;
            if (pthread_create(&t, &attr, pool_thread, (void *)(uintptr_t)pool.size)) {
                fprintf(stderr, "cuda_emu: cannot create thread %u of %u\n", pool.size, n);
                abort(); /* the barriers would wait forever: a broken invariant of the test machine */
            }
            pthread_detach(t);
        }
        pthread_attr_destroy(&attr);
    }
    pool.job = &g;
    pool.job_threads = pool.running = n;
    pool.generation++;
    pool.work.notify_all();
    pool.done.wait(lock, [] { return pool.running == 0; });
    pool.job = nullptr;
    lock.unlock();
    for (warp_ctx *wc : g.warps) {
        pthread_barrier_destroy(&wc->barrier);
        delete wc;
    }
    pthread_barrier_destroy(&g.barrier);
}

} /* namespace */

struct cuda_emu_graph {
    std::vector<std::function<void()>> nodes;
};
struct cuda_emu_graph_exec {
    std::vector<std::function<void()>> nodes;
};
struct cuda_emu_stream {
    cuda_emu_graph *capture; /* non-null while capturing */
};
struct cuda_emu_event {
    int unused;
};
struct cuda_emu_blas {
    cudaStream_t stream;
};

void __syncthreads() { pthread_barrier_wait(&self.grid->barrier); }
void __syncwarp(unsigned) { pthread_barrier_wait(&self.warp->barrier); }
int cuda_emu_lane() { return self.lane; }

const unsigned char *cuda_emu_warp_gather(const void *mine, size_t bytes)
{
    if (bytes > CUDA_EMU_WARP_SLOT_BYTES)
        abort();
    /* Two buffers used in turn: a lane can only write the buffer of collective n+2 after every
     * lane has reached collective n+1, that is, after every lane has finished reading n. */
    unsigned char(*slots)[CUDA_EMU_WARP_SLOT_BYTES] = self.warp->slots[self.parity];
    self.parity ^= 1;
    memcpy(slots[self.lane], mine, bytes);
    pthread_barrier_wait(&self.warp->barrier);
    return &slots[0][0];
}

cudaError_t cuda_emu_enqueue(cudaStream_t s, std::function<void()> work)
{
    if (cudaError_t e = sticky())
        return record(e);
    if (s && s->capture) {
        s->capture->nodes.push_back(std::move(work));
        return cudaSuccess;
    }
    work();
    return cudaSuccess;
}

cudaError_t cuda_emu_launch(dim3 grid, dim3 block, cudaStream_t s, std::function<void()> body)
{
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n % 32 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535)
        return record(cudaErrorInvalidConfiguration);
    return record(cuda_emu_enqueue(s, [grid, block, body]() { run_grid(grid, block, body); }));
}

/* ---- runtime ---- */
cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : record(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int *device)
{
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int)
{
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "host emulation");
    prop->totalGlobalMem = (size_t)1 << 34;
    prop->major = 9;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = nullptr;
    if (cudaError_t e = sticky())
        return record(e);
    {
        std::lock_guard<std::mutex> lock(state_mutex);
        if (failing_mallocs > 0) {
            failing_mallocs--;
            if (last_error == cudaSuccess)
                last_error = cudaErrorMemoryAllocation;
            return cudaErrorMemoryAllocation;
        }
    }
    *p = aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    return *p ? cudaSuccess : record(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void *p)
{
    free(p);
    return sticky();
}
cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    return *p ? cudaSuccess : record(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = (size_t)1 << 34;
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind)
{
    if (cudaError_t e = sticky())
        return record(e);
    memcpy(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind, cudaStream_t s)
{
    return cuda_emu_enqueue(s, [dst, src, bytes]() { memcpy(dst, src, bytes); });
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s)
{
    return cuda_emu_enqueue(s, [dst, value, bytes]() { memset(dst, value, bytes); });
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new cuda_emu_stream{nullptr};
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (s)
        delete s->capture;
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (s && s->capture)
        return record(cudaErrorStreamCaptureUnsupported);
    return record(sticky());
}
cudaError_t cudaDeviceSynchronize() { return record(sticky()); }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
    if (!s || s->capture)
        return record(cudaErrorInvalidValue);
    if (cudaError_t e = sticky())
        return record(e);
    s->capture = new cuda_emu_graph;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph)
{
    *graph = nullptr;
    if (!s || !s->capture)
        return record(cudaErrorInvalidValue);
    *graph = s->capture;
    s->capture = nullptr;
    return record(sticky());
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long)
{
    *exec = new cuda_emu_graph_exec{graph->nodes};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    for (const auto &node : exec->nodes) {
        cudaError_t e = cuda_emu_enqueue(s, node);
        if (e)
            return e;
    }
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = new cuda_emu_event{0};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return record(sticky()); }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return record(sticky()); }
cudaError_t cudaGetLastError()
{
    std::lock_guard<std::mutex> lock(state_mutex);
    cudaError_t e = sticky_error ? sticky_error : last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError()
{
    std::lock_guard<std::mutex> lock(state_mutex);
    return sticky_error ? sticky_error : last_error;
}
const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorUnknown: return "cudaErrorUnknown";
    }
    return "cudaError?";
}
const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    default: return cudaGetErrorName(e);
    }
}

/* ---- cuBLAS ---- */
cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new cuda_emu_blas{nullptr};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }

namespace {

/* A column-major rows×cols operand (leading dimension ld) widened to fp32 with the same ld. */
std::vector<float> widen(const void *p, cudaDataType_t type, int rows, int cols, int ld)
{
    std::vector<float> out((size_t)ld * (size_t)cols, 0.0f);
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) {
            size_t i = (size_t)c * (size_t)ld + (size_t)r;
            out[i] = type == CUDA_R_16BF ? bf16_to_float(static_cast<const uint16_t *>(p)[i])
                                         : static_cast<const float *>(p)[i];
        }
    return out;
}

} /* namespace */

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType_t Atype, int lda, const void *B,
                            cudaDataType_t Btype, int ldb, const void *beta, void *C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t)
{
    const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    if (!h || m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1) || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (sticky())
        return CUBLAS_STATUS_EXECUTION_FAILED;
    const float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
    cudaError_t e = cuda_emu_enqueue(h->stream, [=]() {
        if (m == 0 || n == 0)
            return;
        std::vector<float> a = widen(A, Atype, a_rows, a_cols, lda), b = widen(B, Btype, b_rows, b_cols, ldb);
        std::vector<float> c = be != 0.0f ? widen(C, Ctype, m, n, ldc) : std::vector<float>((size_t)ldc * n, 0.0f);
        if (k > 0)
            cblas_sgemm(CblasColMajor, transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                        transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, al, a.data(), lda, b.data(),
                        ldb, be, c.data(), ldc);
        else
            for (float &v : c)
                v *= be;
        for (int col = 0; col < n; col++)
            for (int r = 0; r < m; r++) {
                size_t i = (size_t)col * (size_t)ldc + (size_t)r;
                if (Ctype == CUDA_R_16BF)
                    static_cast<uint16_t *>(C)[i] = bf16_from_float(c[i]);
                else
                    static_cast<float *>(C)[i] = c[i];
            }
    });
    return e ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}

/* ---- error injection, for tests ---- */
extern "C" void cuda_emu_fail_next_mallocs(int n)
{
    std::lock_guard<std::mutex> lock(state_mutex);
    failing_mallocs = n;
}

extern "C" void cuda_emu_set_sticky_error(int on)
{
    std::lock_guard<std::mutex> lock(state_mutex);
    sticky_error = on ? cudaErrorIllegalAddress : cudaSuccess;
    if (!on)
        last_error = cudaSuccess;
}
