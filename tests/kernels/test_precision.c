/* How each backend resolves --precision (backend_options.precision and the model file's
 * runtime.precision), once, at creation:
 *   - the CPU: fp32 by default and for fp32; bf16 where the CPU has AVX512_BF16, refused with a
 *     message saying why elsewhere, or when a knob forces the AVX2/portable kernels; auto → bf16
 *     where it runs, is the faster (linear_bf16_faster_than_fp32) and the model does not pin fp32,
 *     else fp32, with a note when it passed over a bf16 it could run; the model's default applies
 *     only when nothing is asked; a bad word is refused naming what was expected;
 *   - the rule itself on every combination of what a backend can do (so the branch this CPU does
 *     not take is tested too): auto and the note;
 *   - the CUDA backend (through its emulation): bf16 whatever is asked, fp32 refused clearly;
 *   - the test-only bf16 backend on the emulating kernels reports bf16 and names its kernels.
 * Runs on every CPU: the expectations follow linear_bf16_supported(), and the line printed says
 * which branch this CPU took. */
#include "../check.h"

#include "backend.h"
#include "backend_cpu.h"
#include "backend_cuda.h"
#include "backend_precision.h"
#include "bf16_emulated.h"
#include "linear_bf16.h"

#include <string.h>

/* Create a CPU backend for (precision, model precision, gemm knob); returns 0 or -1 with err. */
static int cpu(const char *precision, const char *model, const char *gemm, enum backend_precision *got,
               char *note, size_t note_len, char *err, size_t errlen)
{
    struct backend_options o = {0};
    o.precision = precision;
    o.model_precision = model;
    o.cpu_gemm = gemm;
    o.threads = 1;
    struct backend be;
    err[0] = '\0';
    if (backend_cpu_create(&be, &o, err, errlen))
        return -1;
    *got = be.precision;
    snprintf(note, note_len, "%s", be.note);
    backend_destroy(&be);
    return 0;
}

static void expect(const char *precision, const char *model, const char *gemm, int ok,
                   enum backend_precision want, const char *message_part)
{
    char err[256], note[320];
    enum backend_precision got = BACKEND_FP32;
    const int rc = cpu(precision, model, gemm, &got, note, sizeof note, err, sizeof err);
    const char *p = precision ? precision : "(unset)", *m = model ? model : "(none)", *g = gemm ? gemm : "auto";
    if (ok) {
        CHECK(rc == 0, "precision %s, model %s, gemm %s: refused: %s", p, m, g, err);
        CHECK(rc != 0 || got == want, "precision %s, model %s, gemm %s: got %s, want %s", p, m, g,
              backend_precision_name(got), backend_precision_name(want));
        /* a note exactly where auto passed over a bf16 this CPU runs but runs slower */
        const int passed_over = linear_bf16_supported() && !linear_bf16_faster_than_fp32() && !gemm &&
                                got == BACKEND_FP32 &&
                                ((precision && strcmp(precision, "auto") == 0 && !(model && strcmp(model, "fp32") == 0)) ||
                                 (!precision && model && strcmp(model, "auto") == 0));
        CHECK(rc != 0 || (note[0] != '\0') == passed_over, "precision %s, model %s, gemm %s: note '%s'", p,
              m, g, note);
    } else {
        CHECK(rc != 0, "precision %s, model %s, gemm %s: accepted (%s), should be refused", p, m, g,
              backend_precision_name(got));
        CHECK(rc == 0 || strstr(err, message_part), "precision %s, model %s, gemm %s: message %s lacks '%s'", p,
              m, g, err, message_part);
        if (rc != 0)
            printf("  refused as it should be: %s\n", err);
    }
}

static void test_cpu(void)
{
    const int bf16 = linear_bf16_supported(), faster = linear_bf16_faster_than_fp32();
    printf("  this CPU %s AVX512_BF16: bf16 %s, auto %s\n", bf16 ? "has" : "lacks",
           bf16 ? "runs" : "is refused",
           !bf16 ? "falls back to fp32" : faster ? "is bf16 (the faster here)" : "stays fp32 (bf16 is slower here)");
    CHECK(bf16 || !faster, "bf16 cannot be the faster where it cannot run");
    const enum backend_precision best = bf16 && faster ? BACKEND_BF16 : BACKEND_FP32;
    expect(NULL, NULL, NULL, 1, BACKEND_FP32, "");   /* the default stays fp32 */
    expect("", NULL, NULL, 1, BACKEND_FP32, "");
    expect("fp32", NULL, NULL, 1, BACKEND_FP32, "");
    expect("auto", NULL, NULL, 1, best, "");
    expect("bf16", NULL, NULL, bf16, BACKEND_BF16, "AVX512_BF16");
    /* the model file's default: only when nothing is asked, and it is named when refused */
    expect(NULL, "fp32", NULL, 1, BACKEND_FP32, "");
    expect(NULL, "auto", NULL, 1, best, "");
    expect(NULL, "bf16", NULL, bf16, BACKEND_BF16, "runtime.precision");
    expect("fp32", "bf16", NULL, 1, BACKEND_FP32, "");
    expect("auto", "fp32", NULL, 1, BACKEND_FP32, ""); /* a model pinned to fp32 keeps auto there */
    expect("auto", "bf16", NULL, 1, best, "");
    /* knobs forcing the kernels without a bf16 form: bf16 refused naming the knob, auto → fp32 */
    if (cpu_isa_supported(CPU_ISA_AVX2)) {
        expect("bf16", NULL, "avx2", 0, BACKEND_BF16, "STOPCAL_CPU_GEMM=avx2");
        expect("auto", NULL, "avx2", 1, BACKEND_FP32, "");
    }
    expect("bf16", NULL, "blas", 0, BACKEND_BF16, "STOPCAL_CPU_GEMM=blas");
    expect("auto", NULL, "blas", 1, BACKEND_FP32, "");
    expect("fp32", NULL, "blas", 1, BACKEND_FP32, "");
    /* words it does not know */
    expect("fp16", NULL, NULL, 0, BACKEND_FP32, "expected fp32, bf16 or auto");
    expect(NULL, "half", NULL, 0, BACKEND_FP32, "runtime.precision half");
}

/* The rule on every combination: fp32/bf16 possible or not, bf16 faster or not, asked or the
 * model's. */
static void resolve(const char *asked, const char *model, int fp32, int bf16, int faster,
                    enum backend_precision want, const char *note_part)
{
    const struct backend_options o = {.precision = asked, .model_precision = model};
    const struct backend_precision_caps caps = {.fp32 = fp32, .why_no_fp32 = "has no fp32", .bf16 = bf16,
                                                .why_no_bf16 = "has no bf16", .bf16_faster = faster,
                                                .why_bf16_slower = "bf16 is slower on this test CPU"};
    enum backend_precision got = want == BACKEND_FP32 ? BACKEND_BF16 : BACKEND_FP32;
    char note[320] = "stale", err[256] = "";
    const int rc = backend_precision_resolve(&o, "test", &caps, &got, note, sizeof note, err, sizeof err);
    const char *a = asked ? asked : "(unset)", *m = model ? model : "(none)";
    CHECK(rc == 0 && got == want, "asked %s, model %s, fp32 %d bf16 %d faster %d: rc %d %s, got %s", a, m,
          fp32, bf16, faster, rc, err, backend_precision_name(got));
    if (note_part)
        CHECK(strstr(note, note_part) && strstr(note, "bf16 is slower on this test CPU") &&
                  strstr(note, "--precision bf16"),
              "asked %s, model %s: note '%s' lacks '%s'", a, m, note, note_part);
    else
        CHECK(note[0] == '\0', "asked %s, model %s, fp32 %d bf16 %d faster %d: unexpected note '%s'", a, m, fp32,
              bf16, faster, note);
}

static void test_rule(void)
{
    for (int faster = 0; faster <= 1; faster++) {
        const enum backend_precision fast = faster ? BACKEND_BF16 : BACKEND_FP32;
        resolve("auto", NULL, 1, 1, faster, fast, faster ? NULL : "--precision auto: fp32");
        resolve(NULL, "auto", 1, 1, faster, fast, faster ? NULL : "runtime.precision auto: fp32");
        resolve("auto", "bf16", 1, 1, faster, fast, faster ? NULL : "--precision auto: fp32");
        resolve("auto", "fp32", 1, 1, faster, BACKEND_FP32, NULL); /* the model's pin: no note */
        resolve("auto", NULL, 1, 0, faster, BACKEND_FP32, NULL);   /* cannot run bf16: nothing passed over */
        resolve("bf16", NULL, 1, 1, faster, BACKEND_BF16, NULL);   /* asked for: runs, slower or not */
        resolve(NULL, "bf16", 1, 1, faster, BACKEND_BF16, NULL);
        resolve("fp32", NULL, 1, 1, faster, BACKEND_FP32, NULL);
        resolve(NULL, NULL, 1, 1, faster, BACKEND_FP32, NULL);
        resolve("auto", NULL, 0, 1, faster, BACKEND_BF16, NULL); /* no fp32 (CUDA): bf16 whatever */
        resolve("auto", "fp32", 0, 1, faster, BACKEND_BF16, NULL);
    }
    printf("  auto: bf16 only where it runs and is the faster; a note where it passed over bf16\n");
}

static void test_cpu_reports_what_it_chose(void)
{
    char err[256];
    struct backend be;
    struct backend_options o = {.precision = "fp32", .threads = 1};
    CHECK(backend_cpu_create(&be, &o, err, sizeof err) == 0, "%s", err);
    CHECK(be.precision == BACKEND_FP32 && strstr(backend_cpu_kernels(&be), "bf16") == NULL, "fp32: %s",
          backend_cpu_kernels(&be));
    backend_destroy(&be);
    CHECK(backend_cpu_create_bf16_with(&be, &o, &cpu_bf16_emulated, err, sizeof err) == 0, "%s", err);
    CHECK(be.precision == BACKEND_BF16 && strcmp(backend_precision_name(be.precision), "bf16") == 0,
          "the emulated bf16 backend reports bf16");
    CHECK(strcmp(backend_cpu_kernels(&be), "gemm bf16-ref, attention bf16-ref") == 0, "kernels: %s",
          backend_cpu_kernels(&be));
    printf("  test backend cpu-bf16-ref: %s\n", backend_cpu_kernels(&be));
    backend_destroy(&be);
}

static void test_cuda(void)
{
    struct { const char *precision, *model; int ok; const char *part; } cases[] = {
        {NULL, NULL, 1, ""},   {"bf16", NULL, 1, ""}, {"auto", NULL, 1, ""},   {"auto", "fp32", 1, ""},
        {NULL, "bf16", 1, ""}, {"fp32", NULL, 0, "bf16 only"}, {NULL, "fp32", 0, "runtime.precision fp32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct backend_options o = {.precision = cases[i].precision, .model_precision = cases[i].model,
                                    .cuda_graphs = 0};
        struct backend be;
        char err[256] = "";
        const int rc = backend_cuda_emu_create(&be, &o, err, sizeof err);
        const char *p = cases[i].precision ? cases[i].precision : "(unset)";
        if (cases[i].ok) {
            CHECK(rc == 0 && be.precision == BACKEND_BF16, "cuda precision %s: rc %d, %s", p, rc, err);
        } else {
            CHECK(rc != 0 && strstr(err, cases[i].part) && strstr(err, "--device cpu"),
                  "cuda precision %s: rc %d, message '%s' lacks '%s'", p, rc, err, cases[i].part);
            printf("  cuda refused as it should be: %s\n", err);
        }
        if (rc == 0)
            backend_destroy(&be);
    }
}

int main(void)
{
    test_rule();
    test_cpu();
    test_cpu_reports_what_it_chose();
    test_cuda();
    return test_report("precision");
}
