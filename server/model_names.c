/* Model names with '/', v2 path splitting, and the alias table (model_names.h). */
#include "model_names.h"

#include "config.h"
#include "batcher.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int reserved_segment(const char *s, size_t n)
{
    static const char *const words[] = {".", "..", "versions", "ready", "infer"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && memcmp(words[i], s, n) == 0)
            return 1;
    return 0;
}

int model_name_check(const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    if (n == 0 || n > 127)
        return fail(err, errlen, "'%s': a model name is 1 to 127 characters", name);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_./", name[i]))
            return fail(err, errlen, "'%s': a model name may hold letters, digits, '-', '_', '.' and '/' only", name);
    for (const char *seg = name;;) {
        const char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if (len == 0)
            return fail(err, errlen, "'%s': '/' must separate non-empty parts of a model name", name);
        if (reserved_segment(seg, len))
            return fail(err, errlen, "'%s': '%.*s' cannot be part of a model name (it is a word of the /v2 paths)",
                        name, (int)len, seg);
        if (!slash)
            return 0;
        seg = slash + 1;
    }
}

int model_aliases_apply(struct batcher *e, const struct server_config *cfg, char *err, size_t errlen)
{
    char why[512];
    for (int i = 0; i < cfg->n_aliases; i++) {
        const struct config_alias *a = &cfg->aliases[i];
        int target = batcher_find_model(e, a->target);
        if (target < 0) {
            char known[1024];
            model_names_known(e, known, sizeof known);
            return fail(err, errlen, "--alias %s=%s: no model '%s' is loaded (loaded: %s)", a->alias, a->target,
                        a->target, known);
        }
        if (batcher_add_alias(e, target, a->alias, why, sizeof why))
            return fail(err, errlen, "--alias %s=%s: %s", a->alias, a->target, why);
    }
    return 0;
}

void model_names_known(const struct batcher *e, char *out, size_t len)
{
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < batcher_model_count(e) && at < len; i++) {
        const struct batcher_model_info *m = batcher_model(e, i);
        at += (size_t)snprintf(out + at, len - at, "%s%s", i ? ", " : "", m->name);
        for (int k = 0; k < m->n_aliases && at < len; k++)
            at += (size_t)snprintf(out + at, len - at, "%s%s", k ? ", " : " (aliases: ", m->aliases[k]);
        if (m->n_aliases && at < len)
            at += (size_t)snprintf(out + at, len - at, ")");
    }
    if (at >= len && len > 4)
        memcpy(out + len - 4, "...", 4); /* cut short: say so */
}
