/* stopcal: the command-line client of stopcald (ARCHITECTURE.md §6b).
 *   stopcal predict FILE…      a table (or --json, --csv); exit 0, or 1 with a message on stderr
 *   stopcal should-stop FILE   exit 0 = stop, 1 = continue, 2 = error
 *   stopcal health             readiness of every server; exit 0 when at least one is ready
 *   stopcal models             the served models (or --json) */
#include "stopcal.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stopcal [options] predict FILE...\n"
            "       stopcal [options] should-stop FILE   (exit 0 = stop, 1 = continue, >= 2 = error)\n"
            "       stopcal [options] explain FILE [-o OUT.fits|OUT.png|OUT.json] [--rollout] [--heads all]\n"
            "                        where the model looked: the attention map (FITS on the image's pixel\n"
            "                        grid with its WCS, PNG overlay, or JSON on stdout without -o)\n"
            "       stopcal [options] health\n"
            "       stopcal [options] models\n"
            "Client of stopcald, the LOFAR self-calibration stop/continue classifier.\n\n"
            "  --url URL             server base URL; repeatable or comma-separated, tried in order (failover)\n"
            "                        (default: $STOPCAL_URL, else http://127.0.0.1:8080)\n"
            "  --model NAME          model to use (default: the server's default)\n"
            "  --threshold T         decision threshold on continue_score (default: the model's, 0.5)\n"
            "  --timeout S           seconds per attempt, whole request (default 120)\n"
            "  --connect-timeout S   seconds to connect (default 5)\n"
            "  --retries N           extra rounds over all servers on connection errors, 429 and 503 (default 3)\n"
            "  --api-key-file FILE   bearer token file (default: $STOPCAL_API_KEY)\n"
            "  --local-preprocess    decode and preprocess FITS here; send pixels over /v2 infer\n"
            "  --json | --csv        predict/models output format (default: a table)\n"
            "  --help, --version\n");
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* Returns 0, or −1 when a row could not be built (then nothing is printed: never fewer rows). */
static int print_json(const struct stopcal_response *r)
{
    json_t *results = json_array();
    for (int i = 0; i < r->n_results; i++) {
        const struct stopcal_image_result *x = &r->results[i];
        json_array_append_new(results,
                              json_pack("{s:s, s:f, s:f, s:s, s:f, s:f, s:o, s:I, s:o}", "name", x->name, "continue_score",
                                        x->continue_score, "stop_probability", x->stop_probability, "decision",
                                        x->stop ? "stop" : "continue", "threshold", x->threshold, "logit", x->logit,
                                        "rms", x->has_rms ? json_real(x->rms) : json_null(), "nonfinite_pixels",
                                        (json_int_t)x->nonfinite_pixels, "precision",
                                        x->precision[0] ? json_string(x->precision) : json_null()));
    }
    if (json_array_size(results) != (size_t)r->n_results) { /* a name that is not UTF-8 */
        json_decref(results);
        fprintf(stderr, "stopcal: cannot write %d results as JSON (a name is not valid UTF-8)\n", r->n_results);
        return -1;
    }
    json_t *doc = json_pack("{s:{s:s, s:s}, s:s, s:s, s:o}", "model", "name", r->model_name, "sha256", r->model_sha256,
                            "request_id", r->request_id, "server", r->server_url, "results", results);
    char *s = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(doc);
    if (!s) {
        fprintf(stderr, "stopcal: cannot write the results as JSON\n");
        return -1;
    }
    printf("%s\n", s);
    free(s);
    return 0;
}

static void csv_field(const char *s)
{
    if (strpbrk(s, ",\"\n\r")) {
        putchar('"');
        for (; *s; s++) {
            if (*s == '"')
                putchar('"');
            putchar(*s);
        }
        putchar('"');
    } else
        fputs(s, stdout);
}

static void print_csv(const struct stopcal_response *r)
{
    printf("name,continue_score,stop_probability,decision,threshold,logit,rms,nonfinite_pixels,model,model_sha256\n");
    for (int i = 0; i < r->n_results; i++) {
        const struct stopcal_image_result *x = &r->results[i];
        csv_field(x->name);
        printf(",%.9g,%.9g,%s,%.9g,%.9g,", x->continue_score, x->stop_probability, x->stop ? "stop" : "continue",
               x->threshold, x->logit);
        if (x->has_rms)
            printf("%.9g", x->rms);
        printf(",%ld,", x->nonfinite_pixels);
        csv_field(r->model_name);
        printf(",%s\n", r->model_sha256);
    }
}

static void print_table(const struct stopcal_response *r)
{
    printf("# model %s (sha256 %s), request %s, server %s\n", r->model_name, r->model_sha256, r->request_id,
           r->server_url);
    printf("%-40s %14s %16s %9s %9s\n", "NAME", "CONTINUE_SCORE", "STOP_PROBABILITY", "DECISION", "THRESHOLD");
    for (int i = 0; i < r->n_results; i++) {
        const struct stopcal_image_result *x = &r->results[i];
        printf("%-40s %14.6f %16.6f %9s %9.3g\n", x->name, x->continue_score, x->stop_probability,
               x->stop ? "stop" : "continue", x->threshold);
    }
}

static int cmd_models(stopcal_client *c, int json_out)
{
    char err[1024], *text;
    int rc = stopcal_models(c, &text, err, sizeof err);
    if (rc != STOPCAL_OK) {
        fprintf(stderr, "stopcal: %s\n", err);
        return 1;
    }
    if (json_out) {
        printf("%s\n", text);
        free(text);
        return 0;
    }
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    json_t *models = json_object_get(doc, "models"), *m;
    if (!json_is_array(models)) {
        fprintf(stderr, "stopcal: the server's model list is not understood\n");
        json_decref(doc);
        return 1;
    }
    printf("%-20s %-8s %-10s %-16s %-7s %s\n", "NAME", "DEFAULT", "INPUT_SIZE", "PROFILE", "BACKEND", "SHA256");
    size_t i;
    json_array_foreach(models, i, m)
    {
        const char *nm = json_string_value(json_object_get(m, "name"));
        const char *pr = json_string_value(json_object_get(m, "profile"));
        const char *be = json_string_value(json_object_get(m, "backend"));
        const char *sh = json_string_value(json_object_get(m, "sha256"));
        printf("%-20s %-8s %-10lld %-16s %-7s %s\n", nm ? nm : "?", json_is_true(json_object_get(m, "default")) ? "yes" : "no",
               (long long)json_integer_value(json_object_get(m, "input_size")), pr ? pr : "?", be ? be : "?",
               sh ? sh : "?");
    }
    json_decref(doc);
    return 0;
}

static int cmd_health(stopcal_client *c)
{
    int any = 0;
    for (int i = 0; i < stopcal_client_n_urls(c); i++) {
        char err[1024] = "";
        int rc = stopcal_health(c, i, err, sizeof err);
        printf("%s %s%s%s\n", stopcal_client_url(c, i), rc == 1 ? "ready" : rc == 0 ? "not-ready" : "unreachable",
               rc < 0 ? ": " : "", rc < 0 ? err : "");
        any |= rc == 1;
    }
    if (!any)
        fprintf(stderr, "stopcal: no server is ready\n");
    return any ? 0 : 1;
}

/* stopcal explain IMAGE [-o OUT.fits|OUT.png|OUT.json]: the format follows OUT's extension;
 * without -o the JSON goes to stdout. */
static int cmd_explain(stopcal_client *c, const char *image, const char *out, int all_heads, int rollout)
{
    const char *format = "json";
    const char *dot = out ? strrchr(out, '.') : NULL;
    if (out) {
        if (dot && (!strcasecmp(dot, ".fits") || !strcasecmp(dot, ".fit") || !strcasecmp(dot, ".fts")))
            format = "fits";
        else if (dot && !strcasecmp(dot, ".png"))
            format = "png";
        else if (!dot || strcasecmp(dot, ".json")) {
            fprintf(stderr, "stopcal: explain -o %s: name a .fits, .png or .json file\n", out);
            return 1;
        }
    }
    char err[1024] = "", *body;
    size_t len;
    int rc = stopcal_explain_file(c, image, format, all_heads, rollout, &body, &len, err, sizeof err);
    if (rc != STOPCAL_OK) {
        fprintf(stderr, "stopcal: %s: %s\n", stopcal_strerror(rc), err);
        return 1;
    }
    FILE *f = out ? fopen(out, "wb") : stdout;
    if (!f) {
        fprintf(stderr, "stopcal: cannot write %s\n", out);
        free(body);
        return 1;
    }
    size_t put = fwrite(body, 1, len, f);
    int bad = put != len || (out ? fclose(f) : fflush(f)) != 0;
    int newline = len && body[len - 1] == '\n';
    free(body);
    if (bad) {
        fprintf(stderr, "stopcal: write failed: %s\n", out ? out : "stdout");
        return 1;
    }
    if (out)
        fprintf(stderr, "stopcal: %s: %s map written to %s (%zu bytes)\n", image,
                rollout ? "rollout" : "attention", out, len);
    else if (!newline)
        putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_URL = 256, O_MODEL, O_THRESHOLD, O_TIMEOUT, O_CTIMEOUT, O_RETRIES, O_KEYFILE, O_LOCAL, O_JSON, O_CSV,
           O_HELP, O_VERSION, O_ROLLOUT, O_HEADS };
    static const struct option longopts[] = {
        {"url", required_argument, 0, O_URL},
        {"model", required_argument, 0, O_MODEL},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"connect-timeout", required_argument, 0, O_CTIMEOUT},
        {"retries", required_argument, 0, O_RETRIES},
        {"api-key-file", required_argument, 0, O_KEYFILE},
        {"local-preprocess", no_argument, 0, O_LOCAL},
        {"json", no_argument, 0, O_JSON},
        {"csv", no_argument, 0, O_CSV},
        {"help", no_argument, 0, O_HELP},
        {"version", no_argument, 0, O_VERSION},
        {"output", required_argument, 0, 'o'},
        {"rollout", no_argument, 0, O_ROLLOUT},
        {"heads", required_argument, 0, O_HEADS},
        {0, 0, 0, 0},
    };
    /* should-stop reports errors as 2; find the command first so option errors use its convention */
    int fail_rc = 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "should-stop"))
            fail_rc = 2;
    struct stopcal_options o;
    stopcal_options_default(&o);
    const char *urls[64];
    int n_urls = 0, json_out = 0, csv_out = 0, opt, rollout = 0, all_heads = 0;
    const char *out = NULL;
    double v;
    while ((opt = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        switch (opt) {
        case O_URL:
            if (n_urls == 64) {
                fprintf(stderr, "stopcal: too many --url\n");
                return fail_rc;
            }
            urls[n_urls++] = optarg;
            break;
        case O_MODEL: o.model = optarg; break;
        case O_THRESHOLD:
            if (parse_double(optarg, &v) || !(v >= 0 && v <= 1)) {
                fprintf(stderr, "stopcal: --threshold must be a number in [0, 1], not '%s'\n", optarg);
                return fail_rc;
            }
            o.threshold = v;
            break;
        case O_TIMEOUT:
        case O_CTIMEOUT:
            if (parse_double(optarg, &v) || !(v > 0 && v < 1e6)) {
                fprintf(stderr, "stopcal: --%s must be a positive number of seconds, not '%s'\n",
                        opt == O_TIMEOUT ? "timeout" : "connect-timeout", optarg);
                return fail_rc;
            }
            if (opt == O_TIMEOUT)
                o.timeout_ms = (long)(v * 1000 + 0.5);
            else
                o.connect_timeout_ms = (long)(v * 1000 + 0.5);
            break;
        case O_RETRIES:
            if (parse_double(optarg, &v) || !(v >= 0 && v <= 100) || v != (int)v) {
                fprintf(stderr, "stopcal: --retries must be an integer in [0, 100], not '%s'\n", optarg);
                return fail_rc;
            }
            o.retries = (int)v;
            break;
        case O_KEYFILE: o.api_key_file = optarg; break;
        case O_LOCAL: o.local_preprocess = 1; break;
        case O_JSON: json_out = 1; break;
        case 'o': out = optarg; break;
        case O_ROLLOUT: rollout = 1; break;
        case O_HEADS:
            if (strcmp(optarg, "mean") && strcmp(optarg, "all")) {
                fprintf(stderr, "stopcal: --heads must be mean or all, not '%s'\n", optarg);
                return fail_rc;
            }
            all_heads = !strcmp(optarg, "all");
            break;
        case O_CSV: csv_out = 1; break;
        case O_HELP: usage(stdout); return 0;
        case O_VERSION: printf("stopcal %s\n", STOPCAL_VERSION); return 0;
        default: usage(stderr); return fail_rc;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[optind++];
    if (!o.api_key_file && getenv("STOPCAL_API_KEY_FILE") && *getenv("STOPCAL_API_KEY_FILE"))
        o.api_key_file = getenv("STOPCAL_API_KEY_FILE");
    o.urls = urls;
    o.n_urls = n_urls;
    int is_predict = !strcmp(cmd, "predict"), is_stop = !strcmp(cmd, "should-stop");
    int is_explain = !strcmp(cmd, "explain");
    if (!is_predict && !is_stop && !is_explain && strcmp(cmd, "health") && strcmp(cmd, "models")) {
        fprintf(stderr, "stopcal: unknown command '%s' (predict, should-stop, explain, health, models)\n", cmd);
        return 1;
    }
    if (is_explain && argc - optind != 1) {
        fprintf(stderr, "stopcal: explain takes exactly one FITS file (and -o OUT.fits|OUT.png|OUT.json)\n");
        return 1;
    }
    if ((out || rollout || all_heads) && !is_explain) {
        fprintf(stderr, "stopcal: -o, --rollout and --heads go with explain\n");
        return fail_rc;
    }
    if (is_stop && argc - optind != 1) {
        fprintf(stderr, "stopcal: should-stop takes exactly one FITS file\n");
        return 2;
    }
    if (is_predict && argc - optind < 1) {
        fprintf(stderr, "stopcal: predict needs at least one FITS file\n");
        return 1;
    }
    if (!is_predict && !is_stop && !is_explain && argc - optind != 0) {
        fprintf(stderr, "stopcal: %s takes no arguments\n", cmd);
        return 1;
    }
    if (json_out && csv_out) {
        fprintf(stderr, "stopcal: --json and --csv are exclusive\n");
        return fail_rc;
    }
    char err[1024] = "";
    stopcal_client *c;
    int rc = stopcal_client_new(&c, &o, err, sizeof err);
    if (rc != STOPCAL_OK) {
        fprintf(stderr, "stopcal: %s\n", err[0] ? err : stopcal_strerror(rc));
        return fail_rc;
    }
    int status;
    if (is_explain)
        status = cmd_explain(c, argv[optind], out, all_heads, rollout);
    else if (!strcmp(cmd, "health"))
        status = cmd_health(c);
    else if (!strcmp(cmd, "models"))
        status = cmd_models(c, json_out);
    else {
        struct stopcal_response r;
        rc = stopcal_predict_files(c, (const char *const *)argv + optind, argc - optind, &r, err, sizeof err);
        if (rc != STOPCAL_OK) {
            fprintf(stderr, "stopcal: %s: %s\n", stopcal_strerror(rc), err);
            status = fail_rc;
        } else if (is_stop) {
            if (r.n_results != 1) {
                fprintf(stderr, "stopcal: expected one result, got %d\n", r.n_results);
                status = 2;
            } else {
                const struct stopcal_image_result *x = &r.results[0];
                status = x->stop ? 0 : 1;
                if (json_out && print_json(&r))
                    status = 2;
                else if (!json_out)
                    printf("%s %s (continue_score %.6f, threshold %.3g)\n", x->name, x->stop ? "stop" : "continue",
                           x->continue_score, x->threshold);
            }
        } else {
            status = 0;
            if (json_out)
                status = print_json(&r) ? fail_rc : 0;
            else if (csv_out)
                print_csv(&r);
            else
                print_table(&r);
        }
        stopcal_response_free(&r);
    }
    stopcal_client_free(c);
    return status;
}
