/* bench_engine: time the CPU engine's forward pass in-process, and the machine's own sgemm rate.
 *
 * A benchmark, not a test: it asserts nothing. Driven by tests/bench/bench_engine.py (which runs
 * the peers too); usable alone:
 *
 *   bench_engine --model M.safetensors [--batch 8] [--threads 2] [--pixels P.f32]
 *                [--warmup 1] [--min-iters 3] [--max-iters 50] [--min-time 3]
 *   bench_engine --sgemm 4096 [--threads 2] [--min-iters 5]
 *   bench_engine --peak 1 [--threads 2]
 *   bench_engine --model M.safetensors --batch 1 --breakdown 1
 *
 * Model mode: opens the model, creates the CPU backend and the ViT (not timed), reserves buffers for
 * the batch, runs --warmup untimed passes, then timed passes of vit_forward until both --min-iters
 * and --min-time are reached (at most --max-iters). Reports the best and median pass, img/s from the
 * best pass, the FLOPs per image counted from the architecture (the same formula as the driver),
 * the peak RSS (getrusage ru_maxrss) and the resident set after the runs (VmRSS), and per pass the
 * time its threads waited for a CPU (run_delay_s: other processes on our cores).
 * --breakdown 1 then times each operation of one block alone, as the CPU backend runs it, at the
 * model's shapes with random data (best of ≥3 calls each, ×depth), to say where a pass goes.
 * Sgemm mode: C(N,N) = A(N,N)·B(N,N)ᵀ through cblas_sgemm (the layout our linear layers use) with
 * the same thread setup as the engine; best of the timed repetitions.
 * Peak mode: the multiply-add instructions' own rates on --threads threads, register-only
 * (peak_flops.h): fp32 FMA and, where the CPU has it, vdpbf16ps; the ceilings for the passes' GFLOP/s.
 *
 * Output: one JSON object on stdout; a readable line on stderr. */
#include "activations.h"
#include "attention.h"
#include "backend_cpu.h"
#include "layernorm.h"
#include "linear.h"
#include "linear_packed.h"
#include "model.h"
#include "peak_flops.h"
#include "threads.h"
#include "vit.h"

#include <cblas.h>
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

char *openblas_get_config(void);
char *openblas_get_corename(void);
int openblas_get_num_threads(void);

struct options {
    const char *model_path, *pixels_path;
    int batch, threads, warmup, min_iters, max_iters, sgemm_n, breakdown, peak;
    double min_time;
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_engine: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void usage(void)
{
    fputs("usage: bench_engine --model FILE [--batch N] [--threads N] [--pixels FILE] [--warmup N]\n"
          "                    [--min-iters N] [--max-iters N] [--min-time SECONDS]\n"
          "                    [--breakdown 1]\n"
          "       bench_engine --sgemm N [--threads N] [--warmup N] [--min-iters N]\n"
          "       bench_engine --peak 1 [--threads N]\n",
          stderr);
    exit(2);
}

static int parse_int(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 1000000)
        die("bad %s: %s", what, s);
    return (int)v;
}

static void parse_options(struct options *o, int argc, char **argv)
{
    *o = (struct options){.batch = 1, .threads = 2, .warmup = 1, .min_iters = 3, .max_iters = 50,
                          .min_time = 3.0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *val = argv[++i];
        if (!strcmp(a, "--model"))
            o->model_path = val;
        else if (!strcmp(a, "--pixels"))
            o->pixels_path = val;
        else if (!strcmp(a, "--batch"))
            o->batch = parse_int(val, a);
        else if (!strcmp(a, "--threads"))
            o->threads = parse_int(val, a);
        else if (!strcmp(a, "--warmup"))
            o->warmup = parse_int(val, a);
        else if (!strcmp(a, "--min-iters"))
            o->min_iters = parse_int(val, a);
        else if (!strcmp(a, "--max-iters"))
            o->max_iters = parse_int(val, a);
        else if (!strcmp(a, "--min-time"))
            o->min_time = atof(val);
        else if (!strcmp(a, "--breakdown"))
            o->breakdown = parse_int(val, a);
        else if (!strcmp(a, "--sgemm"))
            o->sgemm_n = parse_int(val, a);
        else if (!strcmp(a, "--peak"))
            o->peak = parse_int(val, a);
        else
            usage();
    }
    if (!!o->model_path + !!o->sgemm_n + !!o->peak != 1)
        usage();
    if (o->batch < 1 || o->min_iters < 1 || o->max_iters < o->min_iters)
        die("need batch ≥ 1 and 1 ≤ min-iters ≤ max-iters");
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss; /* KiB on Linux */
}

static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            v = atol(line + n + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Seconds this process's threads have spent runnable but waiting for a CPU (the second field of
 * /proc/self/task/TID/schedstat, summed over threads): other processes taking our cores show here,
 * pass by pass, however noisy the machine. -1 where the kernel does not say. */
static double run_delay_s(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    double total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        FILE *f = fopen(path, "r");
        unsigned long long run = 0, wait = 0;
        if (f) {
            if (fscanf(f, "%llu %llu", &run, &wait) == 2)
                total += 1e-9 * (double)wait;
            fclose(f);
        }
    }
    closedir(d);
    return total;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Standard normal pixels from a fixed xorshift stream (Box–Muller), like a preprocessed image. */
static void random_pixels(float *p, size_t n)
{
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i += 2) {
        double u[2];
        for (int j = 0; j < 2; j++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            u[j] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2.0 * log(u[0]));
        p[i] = (float)(r * cos(2 * M_PI * u[1]));
        if (i + 1 < n)
            p[i + 1] = (float)(r * sin(2 * M_PI * u[1]));
    }
}

/* Pixels for `batch` images: from a raw fp32 file holding at least one (3,S,S) image (images are
 * repeated when it holds fewer than batch), or random. */
static void load_pixels(float *dst, int batch, int S, const char *path)
{
    const size_t img = (size_t)3 * S * S;
    if (!path) {
        random_pixels(dst, img * batch);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        die("%s: cannot open", path);
    size_t got = fread(dst, sizeof(float), img * batch, f);
    fclose(f);
    if (got < img || got % img)
        die("%s: %zu floats is not a whole number of (3,%d,%d) images", path, got, S, S);
    for (size_t have = got / img; have < (size_t)batch; have++)
        memcpy(dst + have * img, dst + (have % (got / img)) * img, img * sizeof(float));
}

/* FLOPs of one image's forward pass as the engine computes it (multiply-adds count 2):
 * per block the four projections 2·T·D·(3D + D) and the FFN (MLP 2·T·D·2F; SwiGLU 2·T·D·3F),
 * attention 4·T²·D (Q·Kᵀ and P·V), the patch embedding 2·g²·3P²·D, the head on the CLS row only. */
static double flops_per_image(const struct model_config *c, int image_size)
{
    const double D = c->embed_dim, F = c->ffn_hidden_dim, P = c->patch_size, H = c->head_hidden_dim;
    const double g = image_size / c->patch_size, T = 1 + c->num_registers + g * g;
    const double ffn = c->ffn == MODEL_FFN_MLP ? 2 * F : 3 * F;
    const double block = 2 * T * D * (3 * D + D + ffn) + 4 * T * T * D;
    return c->depth * block + 2 * g * g * 3 * P * P * D + 2 * D * H + 2 * H;
}

static void print_openblas(void)
{
    printf("\"openblas_config\":\"%s\",\"openblas_core\":\"%s\",\"openblas_threads\":%d,",
           openblas_get_config(), openblas_get_corename(), openblas_get_num_threads());
}

static int run_sgemm(const struct options *o)
{
    threads_set_compute_threads(o->threads);
    const int n = o->sgemm_n;
    const size_t nn = (size_t)n * n;
    float *a = aligned_alloc(64, nn * sizeof(float)), *b = aligned_alloc(64, nn * sizeof(float));
    float *c = aligned_alloc(64, nn * sizeof(float));
    if (!a || !b || !c)
        die("out of memory for %d² sgemm", n);
    random_pixels(a, nn);
    random_pixels(b, nn);
    const double flops = 2.0 * n * (double)n * n;
    int reps = o->min_iters < 3 ? 3 : o->min_iters;
    double best = 1e30;
    for (int i = 0; i < o->warmup + reps; i++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now() - t0;
        if (i >= o->warmup && dt < best)
            best = dt;
    }
    printf("{\"mode\":\"sgemm\",\"n\":%d,\"threads\":%d,", n, o->threads);
    print_openblas();
    printf("\"reps\":%d,\"best_s\":%.6f,\"gflops\":%.2f,\"checksum\":%.6g}\n", reps, best,
           flops / best * 1e-9, (double)c[nn / 2]);
    fprintf(stderr, "sgemm %d³ (NT, %d threads, OpenBLAS %s): %.1f GFLOP/s (best of %d)\n", n,
            o->threads, openblas_get_corename(), flops / best * 1e-9, reps);
    free(a);
    free(b);
    free(c);
    return 0;
}

/* A rate as JSON: the number, or null where it was not measured (< 0). */
static void print_rate(const char *key, double gflops)
{
    if (gflops > 0)
        printf("\"%s\":%.2f", key, gflops);
    else
        printf("\"%s\":null", key);
}

static int run_peak(const struct options *o)
{
    double fp32, bf16;
    peak_flops(o->threads, 3, 0.3, &fp32, &bf16);
    printf("{\"mode\":\"peak\",\"threads\":%d,", o->threads);
    print_rate("fp32_fma_gflops", fp32);
    printf(",");
    print_rate("bf16_dot_gflops", bf16);
    printf("}\n");
    fprintf(stderr, "instruction peaks, %d threads: fp32 FMA %.1f GFLOP/s, vdpbf16ps %.1f GFLOP/s (< 0: absent)\n",
            o->threads, fp32, bf16);
    return 0;
}

/* ---- per-operation breakdown: one block's ops alone, as the CPU backend runs them ---- */

struct op_time {
    const char *name;
    double seconds; /* best single call */
    double flops;   /* of that call, 0 for element-wise ops */
};

#define TIME_OP(out, label, fl, stmt)                                     \
    do {                                                                  \
        double best_ = 1e30, spent_ = 0;                                  \
        for (int it_ = 0; it_ < 20 && (it_ < 4 || spent_ < 0.5); it_++) { \
            double t0_ = now();                                           \
            stmt;                                                         \
            double dt_ = now() - t0_;                                     \
            if (it_ > 0) { /* the first call is the warm-up */            \
                spent_ += dt_;                                            \
                best_ = dt_ < best_ ? dt_ : best_;                        \
            }                                                             \
        }                                                                 \
        (out) = (struct op_time){label, best_, fl};                       \
    } while (0)

static float *random_buffer(size_t n, float scale)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p)
        die("out of memory for the breakdown");
    random_pixels(p, n);
    for (size_t i = 0; i < n; i++)
        p[i] *= scale;
    return p;
}

/* One of the BLAS attention's two GEMMs alone (0: Q·Kᵀ, 1: P·V), laid out and threaded as
 * kernels/cpu/attention_cpu.c runs them: tasks of (image, head, block of ≤ 256 query rows) shared among
 * the OpenMP threads, each with a single-threaded sgemm into its own block of score rows. Mirrors
 * that file (its block size included); keep the two in step. */
static void attention_gemms(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scores_all, int which)
{
    const int hd = 64, dim = heads * hd, qkv_stride = 3 * dim;
    const int block = tokens < 256 ? tokens : 256, blocks = (tokens + block - 1) / block;
    const long tasks = (long)batch * heads * blocks;
#pragma omp parallel for schedule(dynamic)
    for (long task = 0; task < tasks; task++) {
        const int b = (int)(task / ((long)heads * blocks)), h = (int)(task / blocks % heads);
        const int row0 = (int)(task % blocks) * block;
        const int rows = tokens - row0 < block ? tokens - row0 : block;
        float *scores = scores_all + (size_t)omp_get_thread_num() * block * tokens;
        const float *base = qkv + (long)b * tokens * qkv_stride;
        if (which == 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, tokens, hd, 0.125f,
                        base + (long)row0 * qkv_stride + h * hd, qkv_stride, base + dim + h * hd,
                        qkv_stride, 0.0f, scores, tokens);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, tokens, 1.0f, scores,
                        tokens, base + 2 * dim + h * hd, qkv_stride, 0.0f,
                        out + ((long)b * tokens + row0) * dim + h * hd, dim);
    }
}

/* A random (n, k) linear weight uploaded through the backend, so it is laid out (packed or raw)
 * exactly as the engine's are. */
static void *bench_weight(struct backend *be, const float *host, int n, int k)
{
    void *w = be->ops->upload_weight(be, host, (size_t)n, (size_t)k, WEIGHT_MATRIX);
    if (!w)
        die("uploading a %d×%d weight: %s", n, k, be->error);
    return w;
}

/* A (rows, cols) activation the backend holds, as the engine would (a GEMM input when asked),
 * filled with random values. */
static void *bench_activation(struct backend *be, int rows, int cols, int gemm_input)
{
    const size_t n = (size_t)rows * cols;
    void *buf = gemm_input ? be->ops->alloc_gemm_input(be, (size_t)rows, (size_t)cols) : be->ops->alloc(be, n);
    float *host = random_buffer(n, 1.0f);
    if (!buf || be->ops->upload(be, buf, host, n))
        die("a %d×%d activation for the breakdown: %s", rows, cols, be->error);
    free(host);
    return buf;
}

/* A vector (bias, norm weight, LayerScale) uploaded as the engine uploads one: scale·random + offset. */
static void *bench_vector(struct backend *be, int n, float scale, float offset)
{
    float *host = random_buffer((size_t)n, scale);
    for (int i = 0; i < n; i++)
        host[i] += offset;
    void *v = be->ops->upload_weight(be, host, 1, (size_t)n, WEIGHT_VECTOR);
    if (!v)
        die("a vector for the breakdown: %s", be->error);
    free(host);
    return v;
}

/* A backend op timed by the breakdown must have run: a refusal would be timed as instant. */
#define MUST(call)                                                                \
    do {                                                                          \
        if ((call) != 0)                                                          \
            die("breakdown: %s failed: %s", #call, be->error);                    \
    } while (0)

static void print_breakdown(struct backend *be, const struct model_config *c, int batch, int tokens,
                            double forward_s)
{
    if (c->ffn != MODEL_FFN_MLP)
        die("--breakdown covers MLP models only");
    const int D = c->embed_dim, F = c->ffn_hidden_dim, H = c->num_heads, T = tokens;
    const int rows = batch * T, wide = F > 3 * D ? F : 3 * D;
    const float dscale = 1.0f / sqrtf((float)D), fscale = 1.0f / sqrtf((float)F);
    /* The raw fp32 arrays the portable comparisons (BLAS attention, OpenBLAS sgemm) read. */
    float *wbuf = random_buffer((size_t)rows * wide, 1.0f), *att32 = random_buffer((size_t)rows * D, 1.0f);
    float *h32 = random_buffer((size_t)rows * D, 1.0f);
    float *qkv_w = random_buffer((size_t)3 * D * D, dscale), *proj_w = random_buffer((size_t)D * D, dscale);
    float *fc1_w = random_buffer((size_t)F * D, dscale), *fc2_w = random_buffer((size_t)D * F, fscale);
    void *qkv_wb = bench_weight(be, qkv_w, 3 * D, D), *proj_wb = bench_weight(be, proj_w, D, D);
    void *fc1_wb = bench_weight(be, fc1_w, F, D), *fc2_wb = bench_weight(be, fc2_w, D, F);
    /* The activations as the engine holds them: backend buffers, the GEMM inputs apart where the
     * backend keeps them in a form of its own (bf16), as kernels/vit.c reserves them. */
    const int apart = be->ops->alloc_gemm_input && be->gemm_inputs_apart;
    void *x = bench_activation(be, rows, D, 0), *h = bench_activation(be, rows, D, 0);
    void *qkv = bench_activation(be, rows, 3 * D, 0), *normed = bench_activation(be, rows, D, apart);
    void *attn = bench_activation(be, rows, D, apart), *hidden = bench_activation(be, rows, F, apart);
    void *bias = bench_vector(be, wide, 0.1f, 0.0f), *gamma = bench_vector(be, D, 0.5f, 0.0f);
    void *lnw = bench_vector(be, D, 0.1f, 1.0f);
    /* The op's own scratch (one block of score rows per thread), shared by the GEMM timings. */
    enum cpu_isa gemm_isa, att_isa;
    if (backend_cpu_isas(be, &gemm_isa, &att_isa))
        die("the breakdown times the CPU backend's ops");
    const size_t score_floats = attention_scratch_floats_cpu(att_isa, T) > attention_scratch_floats_cpu(CPU_ISA_NONE, T)
                                    ? attention_scratch_floats_cpu(att_isa, T)
                                    : attention_scratch_floats_cpu(CPU_ISA_NONE, T);
    float *scores = random_buffer(score_floats, 0.0f);
    const struct backend_ops *ops = be->ops;
    const int packed = gemm_isa != CPU_ISA_NONE, bf16 = be->precision == BACKEND_BF16;

    enum { N_OPS = 13 };
    struct op_time t[N_OPS];
    int n = 0;
    const double r = rows, d = D, f = F, tt = T;
    /* Lines starting with a space are shown for comparison and not added to the block's sum. */
    TIME_OP(t[n++], "layernorm (×2)", 0, MUST(ops->layernorm(be, normed, x, lnw, bias, rows, D, D, 1e-6f)));
    TIME_OP(t[n++], bf16 ? "qkv linear (bf16 kernel)"
                    : !packed ? "qkv linear (OpenBLAS)"
                    : gemm_isa == CPU_ISA_AVX2 ? "qkv linear (packed AVX2 kernel)"
                                               : "qkv linear (packed kernel)",
            2 * r * d * 3 * d,
            MUST(ops->linear(be, qkv, normed, qkv_wb, bias, rows, 3 * D, D, EPILOGUE_NONE)));
    /* The attention op as the engine runs it, then the portable fp32 BLAS form beside it and each
     * of that form's two GEMMs alone, run as it runs them. */
    TIME_OP(t[n++], bf16 ? "attention (fused bf16 kernel)"
                    : att_isa == CPU_ISA_NONE ? "attention (BLAS form)"
                    : att_isa == CPU_ISA_AVX2 ? "attention (fused AVX2 kernel)"
                                              : "attention (fused AVX-512 kernel)",
            4 * batch * tt * tt * d, MUST(ops->attention(be, attn, qkv, batch, T, H)));
    TIME_OP(t[n++], "  attention, BLAS form", 4 * batch * tt * tt * d,
            attention_forward_cpu(CPU_ISA_NONE, att32, wbuf, batch, T, H, scores, score_floats));
    TIME_OP(t[n++], "    of which Q·Kᵀ sgemm", 2 * batch * tt * tt * d,
            attention_gemms(att32, wbuf, batch, T, H, scores, 0));
    TIME_OP(t[n++], "    of which P·V sgemm", 2 * batch * tt * tt * d,
            attention_gemms(att32, wbuf, batch, T, H, scores, 1));
    TIME_OP(t[n++], "proj linear", 2 * r * d * d,
            MUST(ops->linear(be, h, attn, proj_wb, bias, rows, D, D, EPILOGUE_NONE)));
    TIME_OP(t[n++], "layerscale residual (×2)", 0, MUST(ops->layerscale_residual(be, x, h, gamma, rows, D)));
    TIME_OP(t[n++], "fc1 linear + GELU", 2 * r * d * f,
            MUST(ops->linear(be, hidden, normed, fc1_wb, bias, rows, F, D, EPILOGUE_GELU)));
    TIME_OP(t[n++], "  fc1 linear without GELU", 2 * r * d * f,
            MUST(ops->linear(be, hidden, normed, fc1_wb, bias, rows, F, D, EPILOGUE_NONE)));
    TIME_OP(t[n++], "fc2 linear", 2 * r * d * f,
            MUST(ops->linear(be, h, hidden, fc2_wb, bias, rows, D, F, EPILOGUE_NONE)));
    TIME_OP(t[n++], "  OpenBLAS sgemm, fc1 shape", 2 * r * d * f,
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, F, D, 1.0f, h32, D, fc1_w, D,
                        0.0f, wbuf, F));

    /* per forward pass: ops counted twice per block are the layernorms and layerscale residuals */
    double block = 0;
    printf("\"breakdown\":[");
    for (int i = 0; i < n; i++) {
        const int per_block = strstr(t[i].name, "(×2)") ? 2 : 1;
        const int counted = t[i].name[0] != ' ';
        double pass = t[i].seconds * per_block * c->depth;
        if (counted)
            block += pass;
        printf("%s{\"op\":\"%s\",\"call_s\":%.6f,\"per_pass_s\":%.6f,\"share\":%.4f,\"gflops\":%.1f}",
               i ? "," : "", t[i].name, t[i].seconds, pass, pass / forward_s,
               t[i].flops ? t[i].flops / t[i].seconds * 1e-9 : 0.0);
    }
    printf("],\"breakdown_sum_s\":%.6f,", block);
    fprintf(stderr, "breakdown, batch %d, %d tokens (best single call; per pass = ×%d blocks):\n",
            batch, T, c->depth);
    for (int i = 0; i < n; i++) {
        const int per_block = strstr(t[i].name, "(×2)") ? 2 : 1;
        double pass = t[i].seconds * per_block * c->depth;
        fprintf(stderr, "  %-34s %9.2f ms/pass %5.1f%%", t[i].name, pass * 1e3, 100 * pass / forward_s);
        if (t[i].flops)
            fprintf(stderr, "  %6.1f GFLOP/s", t[i].flops / t[i].seconds * 1e-9);
        fputc('\n', stderr);
    }
    fprintf(stderr, "  %-34s %9.2f ms/pass vs %.2f ms measured (patch embed, head, sync not included)\n",
            "sum of the block's ops", block * 1e3, forward_s * 1e3);
    float *bufs[] = {wbuf, att32, h32, qkv_w, proj_w, fc1_w, fc2_w, scores};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
    void *held[] = {qkv_wb, proj_wb, fc1_wb, fc2_wb, x, h, qkv, normed, attn, hidden, bias, gamma, lnw};
    for (size_t i = 0; i < sizeof held / sizeof *held; i++)
        ops->release(be, held[i]);
}

static int run_model(const struct options *o)
{
    char err[512];
    double t_load = now();
    struct model m;
    if (model_open(&m, o->model_path, err, sizeof err))
        die("%s: %s", o->model_path, err);
    struct backend be;
    struct backend_options bo;
    backend_options_from_env(&bo);
    bo.threads = o->threads;
    if (backend_cpu_create(&be, &bo, err, sizeof err))
        die("%s", err);
    struct vit *v;
    if (vit_create(&v, &m, &be, err, sizeof err))
        die("loading %s: %s", o->model_path, err);
    const int S = m.config.input_size, B = o->batch;
    if (vit_reserve(v, B, S, err, sizeof err))
        die("reserve: %s", err);
    t_load = now() - t_load;

    float *pixels = malloc((size_t)B * 3 * S * S * sizeof(float));
    float *logits = malloc((size_t)B * sizeof(float));
    double *times = malloc((size_t)o->max_iters * sizeof(double));
    double *waits = malloc((size_t)o->max_iters * sizeof(double));
    if (!pixels || !logits || !times || !waits)
        die("out of memory");
    load_pixels(pixels, B, S, o->pixels_path);

    for (int i = 0; i < o->warmup; i++)
        if (vit_forward(v, pixels, B, S, logits, err, sizeof err))
            die("forward: %s", err);
    size_t allocs = be.ops->alloc_count(&be);
    int iters = 0;
    double total = 0;
    while (iters < o->max_iters && (iters < o->min_iters || total < o->min_time)) {
        double w0 = run_delay_s(), t0 = now();
        if (vit_forward(v, pixels, B, S, logits, err, sizeof err))
            die("forward: %s", err);
        times[iters] = now() - t0;
        waits[iters] = run_delay_s() - w0;
        total += times[iters++];
    }
    const size_t steady_allocs = be.ops->alloc_count(&be) - allocs;
    const long peak = peak_rss_kib(), rss = status_kib("VmRSS");
    const double flops = flops_per_image(&m.config, S);

    double *sorted = malloc((size_t)iters * sizeof(double));
    if (!sorted)
        die("out of memory");
    memcpy(sorted, times, (size_t)iters * sizeof(double));
    qsort(sorted, (size_t)iters, sizeof(double), cmp_double);
    const double best = sorted[0], worst = sorted[iters - 1];
    const double median = iters % 2 ? sorted[iters / 2] : 0.5 * (sorted[iters / 2 - 1] + sorted[iters / 2]);

    printf("{\"mode\":\"model\",\"model\":\"%s\",\"embed_dim\":%d,\"depth\":%d,\"registers\":%d,"
           "\"image_size\":%d,\"tokens\":%d,\"batch\":%d,\"threads\":%d,\"precision\":\"%s\",\"kernels\":\"%s\",",
           o->model_path, m.config.embed_dim, m.config.depth, m.config.num_registers, S,
           vit_tokens(v, S), B, o->threads, backend_precision_name(be.precision), backend_cpu_kernels(&be));
    print_openblas();
    printf("\"load_s\":%.3f,\"warmup\":%d,\"iters\":%d,\"times_s\":[", t_load, o->warmup, iters);
    for (int i = 0; i < iters; i++)
        printf("%s%.6f", i ? "," : "", times[i]);
    printf("],\"run_delay_s\":[");
    for (int i = 0; i < iters; i++)
        printf("%s%.6f", i ? "," : "", waits[i]);
    printf("],\"best_s\":%.6f,\"median_s\":%.6f,\"worst_s\":%.6f,\"img_per_s\":%.4f,"
           "\"img_per_s_median\":%.4f,\"flops_per_image\":%.6e,\"gflops\":%.2f,"
           "\"peak_rss_kib\":%ld,\"rss_after_kib\":%ld,\"steady_allocs\":%zu,"
           "\"backend_bytes\":%zu,\"logits\":[",
           best, median, worst, B / best, B / median, flops, flops * B / best * 1e-9, peak, rss,
           steady_allocs, be.ops->bytes_in_use(&be));
    for (int i = 0; i < B; i++)
        printf("%s%.7g", i ? "," : "", (double)logits[i]);
    printf("]");
    if (o->breakdown) {
        putchar(',');
        print_breakdown(&be, &m.config, B, vit_tokens(v, S), best);
        printf("\"breakdown_batch\":%d", B);
    }
    printf("}\n");
    fprintf(stderr,
            "%s: batch %d @%d, %d threads: best %.4f s, median %.4f s over %d passes → %.3f img/s, "
            "%.1f GFLOP/s; peak RSS %.0f MiB\n",
            o->model_path, B, S, o->threads, best, median, iters, B / best,
            flops * B / best * 1e-9, peak / 1024.0);

    free(sorted);
    free(times);
    free(waits);
    free(pixels);
    free(logits);
    vit_destroy(v);
    backend_destroy(&be);
    model_close(&m);
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    parse_options(&o, argc, argv);
    return o.sgemm_n ? run_sgemm(&o) : o.peak ? run_peak(&o) : run_model(&o);
}
