/* stopcal-infer: run a model offline, no server (DESIGN §6b). Images go through the engine in
 * batches of up to --max-batch; output is one line per image, or with --json one object
 * {"model", "stopcal_version", "results"} on stdout. */
#include "backend.h"
#include "model.h"
#include "result_json.h"
#include "vit.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct options {
    const char *model_path;
    const char *device;
    double threshold; /* < 0: the model's default */
    int json;
    int threads;
    int max_batch;
    int pixels_mode; /* inputs are raw fp32 tensors rather than FITS images */
    char **inputs;
    int n_inputs;
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
    fputs("usage: stopcal-infer --model FILE [--threshold T] [--device cpu|auto] [--threads N]\n"
          "                     [--max-batch N] [--json] IMAGE.fits...\n"
          "       stopcal-infer --model FILE [options] --pixels TENSOR.f32...\n"
          "Scores each image with the stop/continue classifier, without a server.\n"
          "  --pixels      inputs are already-preprocessed raw little-endian float32 tensors of\n"
          "                shape (3,S,S) or (1,S,S) (one channel is replicated), S = model input size\n"
          "  --threshold   decision threshold on continue_score (default: the model's, 0.5)\n"
          "  --json        one JSON object {\"model\", \"results\": [...]} instead of lines\n",
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
        {"pixels", no_argument, 0, 'p'},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (struct options){.device = "auto", .threshold = -1, .max_batch = 8};
    int c;
    while ((c = getopt_long(argc, argv, "m:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 't': o->threshold = parse_number("--threshold", optarg, 0, 1); break;
        case 'd': o->device = optarg; break;
        case 'j': o->threads = (int)parse_number("--threads", optarg, 1, 4096); break;
        case 'b': o->max_batch = (int)parse_number("--max-batch", optarg, 1, 4096); break;
        case 'J': o->json = 1; break;
        case 'p': o->pixels_mode = 1; break;
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
    if (strcmp(o->device, "auto") != 0 && strcmp(o->device, "cpu") != 0)
        die("--device %s: this build has only the cpu backend", o->device);
}

/* Read a raw (1|3, S, S) fp32 tensor into dst (3, S, S). */
static void read_pixels(const char *path, float *dst, int size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    size_t plane = (size_t)size * size;
    size_t got = fread(dst, sizeof(float), 3 * plane + 1, f);
    int read_error = ferror(f);
    fclose(f);
    if (read_error)
        die("%s: read error", path);
    if (got == plane) {
        memcpy(dst + plane, dst, plane * sizeof(float));
        memcpy(dst + 2 * plane, dst, plane * sizeof(float));
    } else if (got != 3 * plane) {
        die("%s: %zu floats, expected (3,%d,%d) = %zu or (1,%d,%d) = %zu", path, got, size, size,
            3 * plane, size, size, plane);
    }
}

int main(int argc, char **argv)
{
    struct options o;
    parse_options(&o, argc, argv);
    if (!o.pixels_mode)
        die("FITS input is not wired into this build yet; pass --pixels with preprocessed tensors");

    char err[512];
    struct model m;
    if (model_open(&m, o.model_path, err, sizeof err))
        die("%s: %s", o.model_path, err);
    struct backend be;
    if (backend_cpu_create(&be, o.threads, err, sizeof err))
        die("%s", err);
    struct vit *v;
    if (vit_create(&v, &m, &be, err, sizeof err))
        die("loading %s: %s", o.model_path, err);

    const int S = m.config.input_size;
    const double threshold = o.threshold >= 0 ? o.threshold : m.config.threshold;
    const int batch_cap = o.max_batch < o.n_inputs ? o.max_batch : o.n_inputs;
    float *pixels = malloc((size_t)batch_cap * 3 * S * S * sizeof(float));
    float *logits = malloc((size_t)batch_cap * sizeof(float));
    json_t *results = json_array();
    if (!pixels || !logits || !results)
        die("out of memory");

    for (int start = 0; start < o.n_inputs; start += batch_cap) {
        int n = o.n_inputs - start < batch_cap ? o.n_inputs - start : batch_cap;
        for (int i = 0; i < n; i++)
            read_pixels(o.inputs[start + i], pixels + (size_t)i * 3 * S * S, S);
        if (vit_forward(v, pixels, n, S, logits, err, sizeof err))
            die("inference failed: %s", err);
        for (int i = 0; i < n; i++) {
            struct stopcal_result r;
            result_from_logit(&r, o.inputs[start + i], logits[i], threshold);
            if (o.json) {
                if (json_array_append_new(results, result_to_json(&r)))
                    die("out of memory");
            } else {
                printf("%s\tcontinue_score=%.6f\tstop_probability=%.6f\tdecision=%s\tlogit=%.6f\n",
                       r.name, r.continue_score, r.stop_probability, r.stop ? "stop" : "continue",
                       r.logit);
            }
        }
    }
    if (o.json) {
        json_t *doc = json_pack("{s:o, s:s, s:o}", "model", result_model_identity(&m),
                                "stopcal_version", STOPCAL_VERSION, "results", results);
        if (!doc || json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9)) != 0)
            die("cannot write JSON output");
        fputc('\n', stdout);
        json_decref(doc);
    } else {
        json_decref(results);
    }
    free(pixels);
    free(logits);
    vit_destroy(v);
    backend_destroy(&be);
    model_close(&m);
    return 0;
}
