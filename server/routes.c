/* The route table and the matcher (routes.h). */
#include "routes.h"

#include <stdio.h>
#include <string.h>

extern const struct api_handler api_v1_predict, api_v1_explain, api_page, api_v2_infer;
extern const struct api_handler api_list_models, api_openapi, api_server_metadata, api_model_metadata,
    api_model_ready, api_model_config, api_model_stats, api_all_stats, api_repository_index, api_health_live,
    api_health_ready, api_metrics;

/* Order matters where patterns overlap: a model name may hold '/', so "/v2/models/a/ready" is the
 * readiness of "a" because that row comes before the metadata row, which would read it as the
 * metadata of "a/ready"; "/v2/models/stats" (every model's, as Triton has it) comes before all. */
static const struct route table[] = {
    {"POST", "/v1/predict", 0, 1, &api_v1_predict},
    {"POST", "/v1/explain", 0, 1, &api_v1_explain},
    {"GET", "/", 1, 0, &api_page}, /* no data in it: served without the key, which it asks for */
    {"GET", "/v1/models", 0, 0, &api_list_models},
    {"GET", "/v1/openapi.json", 0, 0, &api_openapi},
    {"GET", "/v2/health/live", 1, 0, &api_health_live},
    {"GET", "/v2/health/ready", 1, 0, &api_health_ready},
    {"GET", "/v2", 0, 0, &api_server_metadata},
    {"POST", "/v2/repository/index", 0, 0, &api_repository_index},
    {"GET", "/v2/models/stats", 0, 0, &api_all_stats},
    {"POST", "/v2/models/{model}/versions/{version}/infer", 0, 0, &api_v2_infer},
    {"GET", "/v2/models/{model}/versions/{version}/ready", 0, 0, &api_model_ready},
    {"GET", "/v2/models/{model}/versions/{version}/config", 0, 0, &api_model_config},
    {"GET", "/v2/models/{model}/versions/{version}/stats", 0, 0, &api_model_stats},
    {"GET", "/v2/models/{model}/versions/{version}", 0, 0, &api_model_metadata},
    {"POST", "/v2/models/{model}/infer", 0, 0, &api_v2_infer},
    {"GET", "/v2/models/{model}/ready", 0, 0, &api_model_ready},
    {"GET", "/v2/models/{model}/config", 0, 0, &api_model_config},
    {"GET", "/v2/models/{model}/stats", 0, 0, &api_model_stats},
    {"GET", "/v2/models/{model}", 0, 0, &api_model_metadata},
    {"GET", "/metrics", 0, 0, &api_metrics},
};
enum { N_ROUTES = sizeof table / sizeof *table };

int routes_count(void) { return N_ROUTES; }
const struct route *routes_at(int i) { return i >= 0 && i < N_ROUTES ? &table[i] : NULL; }
int routes_index(const struct route *r) { return r ? (int)(r - table) : N_ROUTES; }

struct capture {
    const char *model, *version;
    size_t model_len, version_len;
};

/* Does path (from a '/') match pat (from a '/')? Literal segments must be equal; {version} takes one
 * non-empty segment; {model} one or more, the fewest that let the rest match. */
static int match_from(const char *pat, const char *path, struct capture *cap)
{
    if (!*pat)
        return !*path;
    if (*pat != '/' || *path != '/')
        return 0;
    pat++, path++;
    const char *pat_end = strchr(pat, '/'), *seg_end = strchr(path, '/');
    size_t pat_len = pat_end ? (size_t)(pat_end - pat) : strlen(pat);
    const char *pat_rest = pat + pat_len;
    size_t seg_len = seg_end ? (size_t)(seg_end - path) : strlen(path);
    if (pat_len == 7 && strncmp(pat, "{model}", 7) == 0) {
        if (seg_len == 0)
            return 0; /* a name never starts with '/' */
        for (const char *end = path + seg_len;;) { /* end: just past the segments tried so far */
            if (match_from(pat_rest, end, cap)) {
                cap->model = path;
                cap->model_len = (size_t)(end - path);
                return 1;
            }
            if (!*end)
                return 0;
            const char *next = strchr(end + 1, '/');
            end = next ? next : end + strlen(end);
        }
    }
    if (pat_len == 9 && strncmp(pat, "{version}", 9) == 0) {
        if (seg_len == 0 || !match_from(pat_rest, path + seg_len, cap))
            return 0;
        cap->version = path;
        cap->version_len = seg_len;
        return 1;
    }
    return seg_len == pat_len && strncmp(pat, path, pat_len) == 0 && match_from(pat_rest, path + seg_len, cap);
}

static void copy_part(char *dst, size_t len, const char *src, size_t n)
{
    if (!len)
        return;
    if (n >= len)
        n = len - 1;
    memcpy(dst, src ? src : "", src ? n : 0);
    dst[src ? n : 0] = 0;
}

static int method_is(const char *route_method, const char *method)
{
    return strcmp(route_method, method) == 0 || (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

const struct route *routes_match(const char *method, const char *path, char *model, size_t model_len,
                                 char *version, size_t version_len, char *allow, size_t allow_len)
{
    copy_part(model, model_len, "", 0);
    copy_part(version, version_len, "", 0);
    copy_part(allow, allow_len, "", 0);
    /* "/v2/" is "/v2": one trailing slash is not a different resource. */
    char trimmed[1024];
    size_t n = strlen(path);
    if (n > 1 && path[n - 1] == '/' && n < sizeof trimmed) {
        memcpy(trimmed, path, n - 1);
        trimmed[n - 1] = 0;
        path = trimmed;
    }
    const struct route *first = NULL; /* the first row whose pattern matches: the resource */
    struct capture cap = {0};
    for (int i = 0; i < N_ROUTES && !first; i++) {
        struct capture c = {0};
        if (match_from(table[i].pattern, path, &c))
            first = &table[i], cap = c;
    }
    if (!first)
        return NULL;
    size_t at = 0;
    for (int i = 0; i < N_ROUTES; i++) {
        if (strcmp(table[i].pattern, first->pattern) != 0)
            continue;
        if (method_is(table[i].method, method)) {
            copy_part(model, model_len, cap.model, cap.model_len);
            copy_part(version, version_len, cap.version, cap.version_len);
            return &table[i];
        }
        if (at < allow_len)
            at += (size_t)snprintf(allow + at, allow_len - at, "%s%s", at ? ", " : "",
                                   strcmp(table[i].method, "GET") == 0 ? "GET, HEAD" : table[i].method);
    }
    return NULL;
}
