/* Parsing and validation of stopcal.config (models/FORMAT.md, format_version 1 to 3). Every field is
 * checked for presence, type and range, and the architecture for internal consistency, so the
 * engine never has to second-guess a loaded model. */
#include "model.h"
#include "error_message.h"

#include "family.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Refuse keys outside `allowed` so a typo in a hand-edited config never passes silently. */
static int check_keys(json_t *obj, const char *where, const char *const *allowed, char *err,
                      size_t errlen)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        int known = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0)
                known = 1;
        if (!known)
            return error_set(err, errlen, -1, "stopcal.config: unknown key \"%s\" in %s", key, where);
    }
    return 0;
}

static json_t *get_object(json_t *parent, const char *key, const char *where, char *err, size_t errlen)
{
    json_t *v = json_object_get(parent, key);
    if (!v || !json_is_object(v)) {
        error_set(err, errlen, -1, "stopcal.config: %s%s%s must be an object", where, *where ? "." : "", key);
        return NULL;
    }
    return v;
}

static int get_int(json_t *parent, const char *where, const char *key, int min, int max, int *out,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(parent, key);
    if (!v || !json_is_integer(v))
        return error_set(err, errlen, -1, "stopcal.config: %s.%s must be an integer", where, key);
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return error_set(err, errlen, -1, "stopcal.config: %s.%s = %lld is outside [%d, %d]", where, key,
                    (long long)x, min, max);
    *out = (int)x;
    return 0;
}

static int get_number(json_t *parent, const char *where, const char *key, double *out, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(parent, key);
    if (!v || !json_is_number(v))
        return error_set(err, errlen, -1, "stopcal.config: %s.%s must be a number", where, key);
    *out = json_number_value(v);
    if (!isfinite(*out))
        return error_set(err, errlen, -1, "stopcal.config: %s.%s must be finite", where, key);
    return 0;
}

static int get_string(json_t *parent, const char *where, const char *key, char *out, size_t outlen,
                      char *err, size_t errlen)
{
    json_t *v = json_object_get(parent, key);
    if (!v || !json_is_string(v))
        return error_set(err, errlen, -1, "stopcal.config: %s%s%s must be a string", where, *where ? "." : "",
                    key);
    const char *s = json_string_value(v);
    if (strlen(s) >= outlen)
        return error_set(err, errlen, -1, "stopcal.config: %s%s%s is longer than %zu characters", where,
                    *where ? "." : "", key, outlen - 1);
    snprintf(out, outlen, "%s", s);
    return 0;
}

static int get_triple(json_t *parent, const char *key, float out[3], int positive, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(parent, key);
    if (!v || !json_is_array(v) || json_array_size(v) != 3)
        return error_set(err, errlen, -1, "stopcal.config: preprocessing.%s must be an array of 3 numbers", key);
    for (int i = 0; i < 3; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_number(x) || !isfinite(json_number_value(x)))
            return error_set(err, errlen, -1, "stopcal.config: preprocessing.%s[%d] must be a number", key, i);
        out[i] = (float)json_number_value(x);
        if (positive && !(out[i] > 0))
            return error_set(err, errlen, -1, "stopcal.config: preprocessing.%s[%d] must be > 0", key, i);
    }
    return 0;
}

/* The architecture object: its keys, their types and ranges come from the family's description
 * (family.h); only the cross-key rules are here. */
static int parse_architecture(struct model_config *c, json_t *arch, char *err, size_t errlen)
{
    const char *w = "architecture";
    char text[64];
    if (get_string(arch, w, "family", text, sizeof text, err, errlen))
        return -1;
    const struct model_family *f = family_find(text, err, errlen);
    if (!f)
        return -1;
    if (c->format_version < f->min_format_version)
        return error_set(err, errlen, -1, "stopcal.config: architecture.family \"%s\" needs format_version %d (the file "
                    "says %d)", text, f->min_format_version, c->format_version);
    c->family = f;
    const char *key;
    json_t *value;
    json_object_foreach(arch, key, value) {
        int known = strcmp(key, "family") == 0;
        for (int k = 0; k < f->n_keys && !known; k++)
            known = strcmp(f->keys[k].name, key) == 0;
        if (!known)
            return error_set(err, errlen, -1, "stopcal.config: unknown key \"%s\" in architecture (family %s)", key, f->name);
    }
    for (int k = 0; k < f->n_keys; k++) {
        const struct family_key *d = &f->keys[k];
        if (d->type == FAMILY_KEY_INT) {
            int v = 0;
            if (get_int(arch, w, d->name, (int)d->lo, (int)d->hi, &v, err, errlen) ||
                family_set_int(c, d->name, v, err, errlen))
                return -1;
        } else if (d->type == FAMILY_KEY_NUMBER) {
            double v = 0;
            if (get_number(arch, w, d->name, &v, err, errlen))
                return -1;
            if (!(v > d->lo && v < d->hi))
                return error_set(err, errlen, -1, "stopcal.config: architecture.%s must be in (%g, %g)", d->name, d->lo, d->hi);
            if (family_set_number(c, d->name, v, err, errlen))
                return -1;
        } else {
            if (get_string(arch, w, d->name, text, sizeof text, err, errlen))
                return -1;
            int ok = 0;
            char allowed[200] = "";
            for (int i = 0; i < d->n_values; i++) {
                ok |= strcmp(text, d->values[i]) == 0;
                size_t used = strlen(allowed);
                snprintf(allowed + used, sizeof allowed - used, "%s\"%s\"", i ? " or " : "", d->values[i]);
            }
            if (!ok)
                return error_set(err, errlen, -1, "stopcal.config: architecture.%s \"%s\" is not %s", d->name, text, allowed);
            if (family_set_choice(c, d->name, text, err, errlen))
                return -1;
        }
    }
    if (c->embed_dim != c->num_heads * MODEL_HEAD_DIM)
        return error_set(err, errlen, -1, "stopcal.config: architecture.embed_dim = %d must equal num_heads (%d) "
                    "x %d", c->embed_dim, c->num_heads, MODEL_HEAD_DIM);
    return 0;
}

/* format_version 3's optional runtime object. */
static int parse_runtime(struct model_config *c, json_t *root, char *err, size_t errlen)
{
    json_t *rt = json_object_get(root, "runtime");
    if (!rt)
        return 0;
    if (c->format_version < 3)
        return error_set(err, errlen, -1, "stopcal.config: runtime needs format_version 3 (the file says %d)",
                    c->format_version);
    static const char *const keys[] = {"precision", NULL};
    char text[16];
    if (!json_is_object(rt))
        return error_set(err, errlen, -1, "stopcal.config: runtime must be an object");
    if (check_keys(rt, "runtime", keys, err, errlen) ||
        get_string(rt, "runtime", "precision", text, sizeof text, err, errlen))
        return -1;
    if (strcmp(text, "fp32") == 0)
        c->precision = MODEL_PRECISION_FP32;
    else if (strcmp(text, "bf16") == 0)
        c->precision = MODEL_PRECISION_BF16;
    else if (strcmp(text, "auto") == 0)
        c->precision = MODEL_PRECISION_AUTO;
    else
        return error_set(err, errlen, -1, "stopcal.config: runtime.precision \"%s\" is not \"fp32\", \"bf16\" or \"auto\"",
                    text);
    return 0;
}

static int parse_preprocessing(struct model_config *c, json_t *pre, char *err, size_t errlen)
{
    static const char *const keys[] = {"profile", "mean", "std", "noise_sigma", NULL};
    char text[64];
    double sigma = 0;
    if (check_keys(pre, "preprocessing", keys, err, errlen) ||
        get_string(pre, "preprocessing", "profile", text, sizeof text, err, errlen))
        return -1;
    if (strcmp(text, "cortexchange-v2") == 0)
        c->profile = MODEL_PROFILE_CORTEXCHANGE_V2;
    else if (strcmp(text, "cortexchange-v3") == 0)
        c->profile = MODEL_PROFILE_CORTEXCHANGE_V3;
    else
        return error_set(err, errlen, -1, "stopcal.config: preprocessing.profile \"%s\" is not "
                    "\"cortexchange-v2\" or \"cortexchange-v3\"", text);
    if (get_triple(pre, "mean", c->mean, 0, err, errlen) ||
        get_triple(pre, "std", c->std, 1, err, errlen) ||
        get_number(pre, "preprocessing", "noise_sigma", &sigma, err, errlen))
        return -1;
    if (sigma < 0)
        return error_set(err, errlen, -1, "stopcal.config: preprocessing.noise_sigma must be >= 0");
    c->noise_sigma = (float)sigma;
    return 0;
}

static int parse_lora(struct model_config *c, json_t *lora, char *err, size_t errlen)
{
    static const char *const keys[] = {"handling", "rank", "alpha", NULL};
    char text[16];
    if (check_keys(lora, "lora", keys, err, errlen) ||
        get_string(lora, "lora", "handling", text, sizeof text, err, errlen) ||
        get_int(lora, "lora", "rank", 0, 4096, &c->lora_rank, err, errlen) ||
        get_number(lora, "lora", "alpha", &c->lora_alpha, err, errlen))
        return -1;
    if (strcmp(text, "none") == 0)
        c->lora = MODEL_LORA_NONE;
    else if (strcmp(text, "merge") == 0)
        c->lora = MODEL_LORA_MERGE;
    else if (strcmp(text, "drop") == 0)
        c->lora = MODEL_LORA_DROP;
    else
        return error_set(err, errlen, -1, "stopcal.config: lora.handling \"%s\" is not none, merge or drop", text);
    return 0;
}

static int reserved_part(const char *s, size_t n)
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
        return error_set(err, errlen, -1, "'%s': a model name is 1 to 127 characters", name);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_./", name[i]))
            return error_set(err, errlen, -1, "'%s': a model name may hold letters, digits, '-', '_', '.' and '/' only", name);
    for (const char *part = name;;) {
        const char *slash = strchr(part, '/');
        size_t len = slash ? (size_t)(slash - part) : strlen(part);
        if (len == 0)
            return error_set(err, errlen, -1, "'%s': '/' must separate non-empty parts of a model name", name);
        if (reserved_part(part, len))
            return error_set(err, errlen, -1, "'%s': '%.*s' cannot be part of a model name (it is a word of the /v2 paths)",
                        name, (int)len, part);
        if (!slash)
            return 0;
        part = slash + 1;
    }
}

/* format_version 2: "aliases", a list of distinct model names. */
static int parse_aliases(struct model_config *c, json_t *list, char *err, size_t errlen)
{
    if (!json_is_array(list))
        return error_set(err, errlen, -1, "stopcal.config: aliases must be a list of strings");
    if (json_array_size(list) > MODEL_MAX_ALIASES)
        return error_set(err, errlen, -1, "stopcal.config: aliases holds %zu names (at most %d)", json_array_size(list),
                    MODEL_MAX_ALIASES);
    size_t i;
    json_t *v;
    char why[256];
    json_array_foreach(list, i, v) {
        const char *name = json_string_value(v);
        if (!name)
            return error_set(err, errlen, -1, "stopcal.config: aliases[%zu] is not a string", i);
        if (model_name_check(name, why, sizeof why))
            return error_set(err, errlen, -1, "stopcal.config: aliases[%zu] %s", i, why);
        for (int k = 0; k < c->n_aliases; k++)
            if (strcmp(c->aliases[k], name) == 0)
                return error_set(err, errlen, -1, "stopcal.config: aliases lists '%s' twice", name);
        snprintf(c->aliases[c->n_aliases++], sizeof c->aliases[0], "%s", name);
    }
    return 0;
}

/* format_version 2's optional tensor_data_sha256: 64 lowercase hex digits (model.c checks it
 * against the data section). A version 1 file cannot carry it: its readers would refuse the key. */
static int parse_data_digest(struct model_config *c, json_t *root, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, "tensor_data_sha256");
    if (!v)
        return 0;
    if (c->format_version < 2)
        return error_set(err, errlen, -1, "stopcal.config: tensor_data_sha256 needs format_version 2 (the file "
                    "says %d)", c->format_version);
    const char *hex = json_is_string(v) ? json_string_value(v) : NULL;
    int ok = hex && strlen(hex) == 64;
    for (int i = 0; ok && i < 64; i++)
        ok = (hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f');
    if (!ok)
        return error_set(err, errlen, -1, "stopcal.config: tensor_data_sha256 must be 64 lowercase hex digits");
    memcpy(c->tensor_data_sha256, hex, 65);
    return 0;
}

int model_config_parse(struct model_config *c, const char *json, char *err, size_t errlen)
{
    static const char *const keys[] = {"format_version", "name", "version", "architecture", "input",
                                       "preprocessing", "output", "lora", "provenance", "aliases",
                                       "tensor_data_sha256", "runtime", NULL};
    json_error_t jerr;
    memset(c, 0, sizeof *c);
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return error_set(err, errlen, -1, "stopcal.config is not valid JSON: %s (line %d)", jerr.text, jerr.line);
    int rc = -1;
    json_t *arch, *input, *pre, *out, *lora;
    if (!json_is_object(root)) {
        error_set(err, errlen, -1, "stopcal.config must be a JSON object");
        goto done;
    }
    if (check_keys(root, "the top level", keys, err, errlen) ||
        get_int(root, "config", "format_version", 0, 1 << 30, &c->format_version, err, errlen))
        goto done;
    if (c->format_version < MODEL_FORMAT_VERSION_MIN || c->format_version > MODEL_FORMAT_VERSION) {
        error_set(err, errlen, -1, "stopcal.config: format_version %d is not supported (this build reads %d to %d)",
             c->format_version, MODEL_FORMAT_VERSION_MIN, MODEL_FORMAT_VERSION);
        goto done;
    }
    json_t *aliases = json_object_get(root, "aliases");
    if (aliases && c->format_version < 2) {
        error_set(err, errlen, -1, "stopcal.config: unknown key \"aliases\" in the top level (it needs format_version 2)");
        goto done;
    }
    if (aliases && parse_aliases(c, aliases, err, errlen))
        goto done;
    if (parse_data_digest(c, root, err, errlen) || parse_runtime(c, root, err, errlen))
        goto done;
    if (get_string(root, "", "name", c->name, sizeof c->name, err, errlen) ||
        get_string(root, "", "version", c->version, sizeof c->version, err, errlen))
        goto done;
    if (!(arch = get_object(root, "architecture", "", err, errlen)) ||
        parse_architecture(c, arch, err, errlen))
        goto done;
    if (!(input = get_object(root, "input", "", err, errlen)))
        goto done;
    static const char *const input_keys[] = {"size", NULL};
    if (check_keys(input, "input", input_keys, err, errlen) ||
        get_int(input, "input", "size", 1, 8192, &c->input_size, err, errlen))
        goto done;
    if (c->input_size % c->patch_size != 0) {
        error_set(err, errlen, -1, "stopcal.config: input.size = %d is not a multiple of patch_size %d",
             c->input_size, c->patch_size);
        goto done;
    }
    if (!(pre = get_object(root, "preprocessing", "", err, errlen)) ||
        parse_preprocessing(c, pre, err, errlen))
        goto done;
    if (!(out = get_object(root, "output", "", err, errlen)))
        goto done;
    static const char *const output_keys[] = {"logit", "threshold", NULL};
    char logit[32];
    double threshold = 0;
    if (check_keys(out, "output", output_keys, err, errlen) ||
        get_string(out, "output", "logit", logit, sizeof logit, err, errlen) ||
        get_number(out, "output", "threshold", &threshold, err, errlen))
        goto done;
    if (strcmp(logit, "continue") != 0) {
        error_set(err, errlen, -1, "stopcal.config: output.logit \"%s\" is not \"continue\"", logit);
        goto done;
    }
    if (!(threshold > 0 && threshold < 1)) {
        error_set(err, errlen, -1, "stopcal.config: output.threshold must be in (0, 1)");
        goto done;
    }
    c->threshold = (float)threshold;
    if (!(lora = get_object(root, "lora", "", err, errlen)) || parse_lora(c, lora, err, errlen))
        goto done;
    if (!get_object(root, "provenance", "", err, errlen))
        goto done;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

const char *model_profile_name(enum model_profile p)
{
    return p == MODEL_PROFILE_CORTEXCHANGE_V3 ? "cortexchange-v3" : "cortexchange-v2";
}

const char *model_lora_name(enum model_lora l)
{
    return l == MODEL_LORA_MERGE ? "merge" : l == MODEL_LORA_DROP ? "drop" : "none";
}

const char *model_precision_name(enum model_precision p)
{
    return p == MODEL_PRECISION_FP32 ? "fp32" : p == MODEL_PRECISION_BF16 ? "bf16" : p == MODEL_PRECISION_AUTO ? "auto" : NULL;
}
