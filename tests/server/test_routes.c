/* The route table's matcher: every row reachable by its own path, model names holding '/', the
 * {version} segment, 405 with the methods a path takes, 404 for paths no row serves. */
#include "../check.h"

#include "routes.h"

#include <string.h>

static const struct route *match(const char *method, const char *path, char *model, char *version,
                                 char *allow)
{
    return routes_match(method, path, model, 128, version, 64, allow, 32);
}

static void expect_route(const char *method, const char *path, const char *pattern, const char *model,
                         const char *version)
{
    char m[128], v[64], allow[32];
    const struct route *r = match(method, path, m, v, allow);
    CHECK(r && strcmp(r->pattern, pattern) == 0, "%s %s -> %s (got %s)", method, path, pattern,
          r ? r->pattern : "none");
    CHECK(strcmp(m, model) == 0, "%s %s: model '%s', want '%s'", method, path, m, model);
    CHECK(strcmp(v, version) == 0, "%s %s: version '%s', want '%s'", method, path, v, version);
}

static void test_every_row_is_reachable(void)
{
    for (int i = 0; i < routes_count(); i++) {
        const struct route *r = routes_at(i);
        char path[256] = "";
        /* the pattern with its placeholders filled in */
        for (const char *p = r->pattern; *p;) {
            if (strncmp(p, "{model}", 7) == 0)
                strcat(path, "some/model"), p += 7;
            else if (strncmp(p, "{version}", 9) == 0)
                strcat(path, "3"), p += 9;
            else
                strncat(path, p++, 1);
        }
        expect_route(r->method, path, r->pattern, strstr(r->pattern, "{model}") ? "some/model" : "",
                     strstr(r->pattern, "{version}") ? "3" : "");
        CHECK(r->handler && (strcmp(r->method, "GET") == 0 ? r->handler->get != NULL
                                                             : (r->handler->parse && r->handler->answer) ||
                                                                   r->handler->post),
              "%s %s has the handler its method needs", r->method, r->pattern);
    }
    CHECK(routes_index(NULL) == routes_count(), "unknown paths are counted as 'other'");
}

static void test_model_names_and_suffixes(void)
{
    expect_route("POST", "/v2/models/surf/dino_big_lora/infer", "/v2/models/{model}/infer", "surf/dino_big_lora", "");
    expect_route("GET", "/v2/models/surf/dino_big_lora/ready", "/v2/models/{model}/ready", "surf/dino_big_lora", "");
    expect_route("GET", "/v2/models/surf/dino_big_lora", "/v2/models/{model}", "surf/dino_big_lora", "");
    expect_route("GET", "/v2/models/a/versions/1", "/v2/models/{model}/versions/{version}", "a", "1");
    expect_route("POST", "/v2/models/a/b/versions/x/infer", "/v2/models/{model}/versions/{version}/infer", "a/b", "x");
    expect_route("GET", "/v2/models/a/b/versions/1/config", "/v2/models/{model}/versions/{version}/config", "a/b", "1");
    expect_route("GET", "/v2/models/a/b/stats", "/v2/models/{model}/stats", "a/b", "");
    expect_route("GET", "/v2/models/stats", "/v2/models/stats", "", "");
    expect_route("POST", "/v2/repository/index", "/v2/repository/index", "", "");
    expect_route("HEAD", "/v2/health/ready", "/v2/health/ready", "", "");
    expect_route("GET", "/v2/", "/v2", "", "");
    char m[128], v[64], allow[32];
    CHECK(!match("GET", "/v2/models//infer", m, v, allow) && !match("GET", "/v2/models/", m, v, allow),
          "an empty model name matches nothing");
    CHECK(!match("GET", "/nope", m, v, allow) && allow[0] == 0, "unknown path: 404");
    CHECK(!match("GET", "/v1/predict", m, v, allow) && strcmp(allow, "POST") == 0, "GET /v1/predict: 405 (%s)", allow);
    CHECK(!match("POST", "/v1/models", m, v, allow) && strcmp(allow, "GET, HEAD") == 0, "POST /v1/models: 405 (%s)", allow);
    CHECK(!match("GET", "/v2/models/a/infer", m, v, allow) && strcmp(allow, "POST") == 0,
          "GET on infer is a 405, not the metadata of a model named 'a/infer' (%s)", allow);
}

int main(void)
{
    test_every_row_is_reachable();
    test_model_names_and_suffixes();
    return test_report("test_routes");
}
