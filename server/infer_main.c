/* stopcal-infer: run a model offline, no server (ARCHITECTURE.md §6b). Images go through the engine in
 * batches of up to --max-batch; output is one line per image, or with --json one object
 * {"model", "stopcal_version", "results"} on stdout. */
#include "backend.h"
#include "backend_registry.h"
#include "image.h"
#include "infer_explain.h"
#include "model.h"
#include "preprocess.h"
#include "result_json.h"
#include "vit.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct options {
    const char *model_path;
    const char *device;
    const char *precision; /* NULL: STOPCAL_PRECISION, else the model's default, else the device's */
    const char *profile; /* NULL: the model's */
    double threshold; /* < 0: the model's default */
    int json;
    int threads;
    int max_batch;
    int pixels_mode; /* inputs are raw fp32 tensors rather than FITS images */
    char **inputs;
    int n_inputs;
    struct infer_explain_options explain; /* explain.dir NULL: no explain pass */
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("stopcal-infer: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void usage(FILE *to)
{
    fputs("usage: stopcal-infer --model FILE [--profile P] [--threshold T] [--device auto|cpu|cuda:N]\n"
          "                     [--precision fp32|bf16|auto] [--threads N] [--max-batch N] [--json]\n"
          "                     IMAGE.fits...\n"
          "       stopcal-infer --model FILE [options] --pixels TENSOR.f32...\n"
          "Scores each image with the stop/continue classifier, without a server.\n"
          "  --pixels      inputs are already-preprocessed raw little-endian float32 tensors of\n"
          "                shape (3,S,S) or (1,S,S) (one channel is replicated), S = model input size\n"
          "  --profile     preprocessing profile: cortexchange-v2 or cortexchange-v3 (default:\n"
          "                the model's); FITS inputs only\n"
          "  --threshold   decision threshold on continue_score (default: the model's, 0.5)\n"
          "  --precision   fp32 (the CPU's default: parity with the fp32 reference), bf16 (CPUs\n"
          "                with AVX512_BF16; refused elsewhere) or auto (bf16 where it runs, is the\n"
          "                faster (AMD; Intel stays fp32) and the model allows it, else fp32); also STOPCAL_PRECISION; default: the model\n"
          "                file's runtime.precision, else the device's (CPU fp32, CUDA bf16)\n"
          "  --json        one JSON object {\"model\", \"results\": [...]} instead of lines\n"
          "  --explain DIR also say where the model looked: each result gets an \"explain\" object\n"
          "                (the last block's CLS attention per patch) and, for FITS inputs, DIR gets\n"
          "                NAME.attention.fits (on the input's pixel grid, with its WCS) and .png\n"
          "  --rollout     with --explain: also the attention rollout (NAME.rollout.fits/.png)\n"
          "  --heads H     with --explain: mean (default) or all (per-head grids, a FITS cube)\n",
          to);
}

static double parse_number(const char *flag, const char *text, double lo, double hi)
{
    char *end;
    errno = 0;
    double x = strtod(text, &end);
    if (errno || *end || end == text || !(x >= lo && x <= hi))
        die("%s %s: expected a number in [%g, %g]", flag, text, lo, hi);
    return x;
}

static void parse_options(struct options *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},     {"threshold", required_argument, 0, 't'},
        {"device", required_argument, 0, 'd'},    {"threads", required_argument, 0, 'j'},
        {"max-batch", required_argument, 0, 'b'}, {"json", no_argument, 0, 'J'},
        {"pixels", no_argument, 0, 'p'},          {"profile", required_argument, 0, 'P'},
        {"explain", required_argument, 0, 'E'},   {"rollout", no_argument, 0, 'R'},
        {"heads", required_argument, 0, 'H'},     {"precision", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (struct options){.device = "auto", .threshold = -1, .max_batch = 8};
    int c;
    while ((c = getopt_long(argc, argv, "m:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 't': o->threshold = parse_number("--threshold", optarg, 0, 1); break;
        case 'd': o->device = optarg; break;
        case 'x':
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16") && strcmp(optarg, "auto"))
                die("--precision %s: expected fp32, bf16 or auto", optarg);
            o->precision = optarg;
            break;
        case 'j': o->threads = (int)parse_number("--threads", optarg, 1, 4096); break;
        case 'b': o->max_batch = (int)parse_number("--max-batch", optarg, 1, 4096); break;
        case 'J': o->json = 1; break;
        case 'p': o->pixels_mode = 1; break;
        case 'P': o->profile = optarg; break;
        case 'E': o->explain.dir = optarg; break;
        case 'R': o->explain.rollout = 1; break;
        case 'H':
            if (strcmp(optarg, "mean") != 0 && strcmp(optarg, "all") != 0)
                die("--heads %s: expected mean or all", optarg);
            o->explain.all_heads = strcmp(optarg, "all") == 0;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (!o->model_path)
        die("--model FILE is required (see --help)");
    o->inputs = argv + optind;
    o->n_inputs = argc - optind;
    if (o->n_inputs == 0)
        die("no input images given (see --help)");
    if (o->profile && strcmp(o->profile, "cortexchange-v2") != 0 &&
        strcmp(o->profile, "cortexchange-v3") != 0)
        die("--profile %s: expected cortexchange-v2 or cortexchange-v3", o->profile);
    if ((o->explain.rollout || o->explain.all_heads) && !o->explain.dir)
        die("--rollout and --heads go with --explain DIR");
    if (o->explain.dir) {
        struct stat st;
        if (stat(o->explain.dir, &st) != 0 || !S_ISDIR(st.st_mode))
            die("--explain %s: not a directory", o->explain.dir);
    }
    if (o->profile && o->pixels_mode)
        die("--profile applies to FITS inputs; --pixels tensors are already preprocessed");
}

/* Read a raw (1|3, S, S) fp32 tensor into dst (3, S, S), refusing any other length. */
static void read_pixels(const char *path, float *dst, int size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    size_t plane = (size_t)size * size;
    size_t got = fread(dst, sizeof(float), 3 * plane, f);
    float extra;
    int longer = fread(&extra, 1, 1, f) == 1; /* probe without writing past dst */
    int read_error = ferror(f);
    fclose(f);
    if (read_error)
        die("%s: read error", path);
    if (got == plane && !longer) {
        memcpy(dst + plane, dst, plane * sizeof(float));
        memcpy(dst + 2 * plane, dst, plane * sizeof(float));
    } else if (got != 3 * plane || longer) {
        die("%s: %s%zu floats, expected (3,%d,%d) = %zu or (1,%d,%d) = %zu", path,
            longer ? "more than " : "", got, size, size, 3 * plane, size, size, plane);
    }
}

/* Decode and preprocess one FITS file into dst (3, S, S); fills rms and the non-finite count. */
static int read_fits(const char *path, float *dst, const struct model_config *cfg,
                     struct stopcal_result *r, char *err, size_t errlen)
{
    struct image_limits limits = image_limits_default();
    unsigned char *bytes;
    size_t len;
    int rc = image_read_file(path, limits.max_bytes, &bytes, &len, err, errlen);
    if (rc)
        return rc;
    struct preprocess_stats stats;
    rc = image_to_tensor(dst, bytes, len, &limits, cfg, 0, &stats, err, errlen);
    free(bytes);
    if (rc == 0) {
        r->has_rms = 1;
        r->rms = stats.rms;
        r->nonfinite_pixels = (long)stats.nonfinite_pixels;
    }
    return rc;
}

static void print_line(const struct stopcal_result *r)
{
    printf("%s\tcontinue_score=%.6f\tstop_probability=%.6f\tdecision=%s\tlogit=%.6f", r->name, r->continue_score,
           r->stop_probability, r->stop ? "stop" : "continue", r->logit);
    if (r->has_rms)
        printf("\trms=%.6g\tnonfinite_pixels=%ld", r->rms, r->nonfinite_pixels);
}

/* --explain: one image, its result (with "explain") appended to results or printed. */
static void explain_one(const struct options *o, struct vit *v, const struct model *m,
                        const struct model_config *cfg, double threshold, const char *precision,
                        const char *path, float *tensor, json_t *results)
{
    char err[512];
    struct stopcal_result r = {0};
    snprintf(r.name, sizeof r.name, "%s", path);
    r.precision = precision;
    struct image img = {0};
    unsigned char *bytes = NULL;
    size_t len = 0;
    if (o->pixels_mode) {
        read_pixels(path, tensor, cfg->input_size);
    } else {
        struct image_limits limits = image_limits_default();
        struct preprocess_stats stats;
        if (image_read_file(path, limits.max_bytes, &bytes, &len, err, sizeof err) ||
            image_decode(&img, bytes, len, &limits, err, sizeof err) ||
            preprocess_image(tensor, &img, cfg, 0, &stats, err, sizeof err))
            die("%s: %s", path, err);
        r.has_rms = 1;
        r.rms = stats.rms;
        r.nonfinite_pixels = (long)stats.nonfinite_pixels;
    }
    json_t *explain = NULL;
    if (infer_explain_image(v, m, cfg->input_size, tensor, o->pixels_mode ? NULL : &img, bytes, len, &o->explain,
                            threshold, &r, &explain, err, sizeof err))
        die("%s: explain: %s", path, err);
    image_free(&img);
    free(bytes);
    if (o->json) {
        json_t *obj = result_to_json(&r);
        if (!obj || json_object_set_new(obj, "explain", explain) || json_array_append_new(results, obj))
            die("out of memory");
        return;
    }
    print_line(&r);
    json_t *files = json_object_get(explain, "files");
    size_t k;
    json_t *f;
    json_array_foreach(files, k, f) printf("\t%s", json_string_value(f));
    putchar('\n');
    json_decref(explain);
}

int main(int argc, char **argv)
{
    struct options o;
    parse_options(&o, argc, argv);
    char err[512];
    struct model m;
    if (model_open(&m, o.model_path, err, sizeof err))
        die("%s: %s", o.model_path, err);
    const char *unverified = model_digest_note(&m);
    if (unverified && !o.json)
        fprintf(stderr, "stopcal-infer: %s: %s\n", o.model_path, unverified);
    struct backend be;
    char note[768];
    struct backend_options bo;
    backend_options_from_env(&bo);
    bo.threads = o.threads;
    if (o.precision)
        bo.precision = o.precision; /* the flag wins over STOPCAL_PRECISION */
    bo.model_precision = model_precision_name(m.config.precision);
    if (backend_create_for_device(&be, o.device, &bo, note, sizeof note, err, sizeof err))
        die("%s", err);
    if (note[0] && !o.json)
        fprintf(stderr, "stopcal-infer: %s\n", note);
    struct vit *v;
    if (vit_create(&v, &m, &be, err, sizeof err))
        die("loading %s: %s", o.model_path, err);

    const char *precision = backend_precision_name(be.precision);
    struct model_config cfg = m.config;
    if (o.profile)
        cfg.profile = strcmp(o.profile, "cortexchange-v3") == 0 ? MODEL_PROFILE_CORTEXCHANGE_V3
                                                                : MODEL_PROFILE_CORTEXCHANGE_V2;
    const int S = cfg.input_size;
    const double threshold = o.threshold >= 0 ? o.threshold : m.config.threshold;
    const int batch_cap = o.max_batch < o.n_inputs ? o.max_batch : o.n_inputs;
    float *pixels = malloc((size_t)batch_cap * 3 * S * S * sizeof(float));
    float *logits = malloc((size_t)batch_cap * sizeof(float));
    struct stopcal_result *batch_results = calloc((size_t)batch_cap, sizeof *batch_results);
    json_t *results = json_array();
    if (!pixels || !logits || !batch_results || !results)
        die("out of memory");

    if (o.explain.dir) { /* one explain pass per image */
        for (int i = 0; i < o.n_inputs; i++)
            explain_one(&o, v, &m, &cfg, threshold, precision, o.inputs[i], pixels, results);
        o.n_inputs = 0; /* the batched loop below has nothing left to do */
    }
    for (int start = 0; start < o.n_inputs; start += batch_cap) {
        int n = o.n_inputs - start < batch_cap ? o.n_inputs - start : batch_cap;
        int failed = -1;
        char image_err[512] = "";
        memset(batch_results, 0, (size_t)n * sizeof *batch_results);
        if (o.pixels_mode) {
            for (int i = 0; i < n; i++)
                read_pixels(o.inputs[start + i], pixels + (size_t)i * 3 * S * S, S);
        } else {
            /* Images are independent: decode and preprocess them side by side. */
#pragma omp parallel for schedule(dynamic)
            for (int i = 0; i < n; i++) {
                char e[512];
                if (read_fits(o.inputs[start + i], pixels + (size_t)i * 3 * S * S, &cfg,
                              &batch_results[i], e, sizeof e) != 0) {
#pragma omp critical
                    if (failed < 0 || i < failed) {
                        failed = i;
                        snprintf(image_err, sizeof image_err, "%s", e);
                    }
                }
            }
            if (failed >= 0)
                die("%s: %s", o.inputs[start + failed], image_err);
        }
        if (vit_forward(v, pixels, n, S, logits, err, sizeof err))
            die("inference failed: %s", err);
        for (int i = 0; i < n; i++) {
            struct stopcal_result r;
            result_from_logit(&r, o.inputs[start + i], logits[i], threshold, precision);
            r.has_rms = batch_results[i].has_rms;
            r.rms = batch_results[i].rms;
            r.nonfinite_pixels = batch_results[i].nonfinite_pixels;
            if (o.json) {
                if (json_array_append_new(results, result_to_json(&r)))
                    die("out of memory");
            } else {
                print_line(&r);
                putchar('\n');
            }
        }
    }
    if (o.json) {
        /* "backend" says which engine ran (cpu or cuda), so a test pinned to one can verify it;
         * "precision" what it computed in (each result says so too). */
        json_t *doc = json_pack("{s:o, s:s, s:s, s:s, s:o}", "model", result_model_identity(&m),
                                "stopcal_version", STOPCAL_VERSION, "backend", be.ops->name,
                                "precision", precision, "results", results);
        if (!doc || json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9)) != 0)
            die("cannot write JSON output");
        fputc('\n', stdout);
        json_decref(doc);
    } else {
        json_decref(results);
    }
    free(pixels);
    free(logits);
    free(batch_results);
    vit_destroy(v);
    backend_destroy(&be);
    model_close(&m);
    return 0;
}
