/* Reading the architecture description (family.h): parsed once, from the compiled-in bytes or
 * the test-only override, into fixed tables. family_fields.c maps its keys onto the config,
 * family_tensors.c expands its tensor table. */
#include "family.h"
#include "error_message.h"
#include "family_internal.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 8
#define MAX_SYMBOLS 16

/* ---- the description, parsed once ---- */

static struct {
    struct model_family families[MAX_FAMILIES];
    int n;
    char symbols[MAX_SYMBOLS][8];
    char symbol_expr[MAX_SYMBOLS][64];
    int n_symbols;
    char names[128];
    char error[256];
} desc;
static pthread_once_t desc_once = PTHREAD_ONCE_INIT;

static int copy_string(char *dst, size_t n, json_t *v, const char *what, char *err, size_t errlen)
{
    if (!json_is_string(v) || strlen(json_string_value(v)) >= n)
        return error_set(err, errlen, -1, "%s must be a string of fewer than %zu bytes", what, n);
    snprintf(dst, n, "%s", json_string_value(v));
    return 0;
}

static int parse_key(struct family_key *k, const char *name, json_t *spec, char *err, size_t errlen)
{
    snprintf(k->name, sizeof k->name, "%s", name);
    const char *type = json_string_value(json_object_get(spec, "type"));
    json_t *r;
    if (type && strcmp(type, "int") == 0 && json_is_array(r = json_object_get(spec, "range"))) {
        k->type = FAMILY_KEY_INT;
    } else if (type && strcmp(type, "number") == 0 && json_is_array(r = json_object_get(spec, "open_range"))) {
        k->type = FAMILY_KEY_NUMBER;
    } else if (type && strcmp(type, "choice") == 0) {
        k->type = FAMILY_KEY_CHOICE;
        json_t *values = json_object_get(spec, "values");
        size_t i;
        json_t *v;
        if (!json_is_array(values) || json_array_size(values) > FAMILY_MAX_CHOICES)
            return error_set(err, errlen, -1, "key %s: values must be a list of at most %d", name, FAMILY_MAX_CHOICES);
        json_array_foreach(values, i, v) {
            if (copy_string(k->values[k->n_values++], sizeof k->values[0], v, "a choice", err, errlen))
                return -1;
        }
        return 0;
    } else {
        return error_set(err, errlen, -1, "key %s: type must be int (with range), number (with open_range) or choice", name);
    }
    if (json_array_size(r) != 2 || !json_is_number(json_array_get(r, 0)) || !json_is_number(json_array_get(r, 1)))
        return error_set(err, errlen, -1, "key %s: a range is two numbers", name);
    k->lo = json_number_value(json_array_get(r, 0));
    k->hi = json_number_value(json_array_get(r, 1));
    return 0;
}

static int parse_tensor(struct family_tensor_spec *t, json_t *e, char *err, size_t errlen)
{
    static const char *const kinds[] = {"matrix", "patch", "vector", "host"};
    json_t *shape = json_object_get(e, "shape");
    if (copy_string(t->name, sizeof t->name, json_object_get(e, "name"), "a tensor name", err, errlen))
        return -1;
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 4)
        return error_set(err, errlen, -1, "tensor %s: shape must be a list of 1 to 4 expressions", t->name);
    t->ndim = (int)json_array_size(shape);
    for (int d = 0; d < t->ndim; d++)
        if (copy_string(t->shape[d], sizeof t->shape[d], json_array_get(shape, (size_t)d), "a shape expression",
                        err, errlen))
            return -1;
    const char *kind = json_string_value(json_object_get(e, "kind"));
    int k = -1;
    for (int i = 0; kind && i < 4; i++)
        if (strcmp(kind, kinds[i]) == 0)
            k = i;
    if (k < 0)
        return error_set(err, errlen, -1, "tensor %s: kind must be matrix, patch, vector or host", t->name);
    t->kind = (enum family_kind)k;
    json_t *slot = json_object_get(e, "slot"), *when = json_object_get(e, "when");
    if (slot && copy_string(t->slot, sizeof t->slot, slot, "a slot", err, errlen))
        return -1;
    if (when && copy_string(t->when, sizeof t->when, when, "a condition", err, errlen))
        return -1;
    json_t *dtype = json_object_get(e, "dtype");
    if (dtype && !(json_is_string(dtype) && strcmp(json_string_value(dtype), "F32") == 0))
        return error_set(err, errlen, -1, "tensor %s: dtype, where given, must be \"F32\"", t->name);
    t->f32_only = dtype != NULL;
    return 0;
}

static int parse_family(struct model_family *f, const char *name, json_t *obj, char *err, size_t errlen)
{
    static const char *const stages[FAMILY_STAGES] = {"per_resolution", "embed", "block", "head"};
    snprintf(f->name, sizeof f->name, "%s", name);
    json_t *mfv = json_object_get(obj, "min_format_version"), *arch = json_object_get(obj, "architecture");
    json_t *tensors = json_object_get(obj, "tensors"), *forward = json_object_get(obj, "forward");
    if (!json_is_integer(mfv) || !json_is_object(arch) || !json_is_array(tensors) || !json_is_object(forward))
        return error_set(err, errlen, -1, "family %s needs min_format_version, architecture, tensors and forward", name);
    f->min_format_version = (int)json_integer_value(mfv);
    const char *key;
    json_t *v;
    json_object_foreach(arch, key, v) {
        if (f->n_keys == FAMILY_MAX_KEYS)
            return error_set(err, errlen, -1, "family %s: more than %d keys", name, FAMILY_MAX_KEYS);
        if (parse_key(&f->keys[f->n_keys++], key, v, err, errlen))
            return -1;
    }
    size_t i;
    json_array_foreach(tensors, i, v) {
        if (f->n_tensors == FAMILY_MAX_TENSORS)
            return error_set(err, errlen, -1, "family %s: more than %d tensors", name, FAMILY_MAX_TENSORS);
        if (parse_tensor(&f->tensors[f->n_tensors++], v, err, errlen))
            return -1;
    }
    for (int s = 0; s < FAMILY_STAGES; s++) {
        json_t *list = json_object_get(forward, stages[s]);
        if (!json_is_array(list) || json_array_size(list) > FAMILY_MAX_STEPS)
            return error_set(err, errlen, -1, "family %s: forward.%s must be a list of at most %d steps", name, stages[s],
                        FAMILY_MAX_STEPS);
        json_array_foreach(list, i, v) {
            if (copy_string(f->steps[s][f->n_steps[s]++], sizeof f->steps[0][0], v, "a step", err, errlen))
                return -1;
        }
    }
    return 0;
}

static void parse_description(void)
{
    char err[200];
    const char *path = getenv("STOPCAL_TEST_ONLY_FAMILIES");
    json_error_t jerr;
    json_t *root = path && *path ? json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)
                                 : json_loadb((const char *)family_description_bytes, family_description_size,
                                              JSON_REJECT_DUPLICATES, &jerr);
    const char *src = path && *path ? path : "models/families.json (compiled in)";
    if (!root) {
        snprintf(desc.error, sizeof desc.error, "%s: %s (line %d)", src, jerr.text, jerr.line);
        return;
    }
    json_t *families = json_object_get(root, "families"), *symbols = json_object_get(root, "symbols");
    const char *key;
    json_t *v;
    int rc = 0;
    if (!json_is_object(families) || !json_is_object(symbols)) {
        rc = error_set(err, sizeof err, -1, "needs the objects families and symbols");
    } else {
        json_object_foreach(symbols, key, v) {
            if (desc.n_symbols == MAX_SYMBOLS || strlen(key) >= sizeof desc.symbols[0] ||
                copy_string(desc.symbol_expr[desc.n_symbols], sizeof desc.symbol_expr[0], v, "a symbol", err,
                            sizeof err)) {
                rc = error_set(err, sizeof err, -1, "symbol %s is not a short name for a short expression", key);
                break;
            }
            snprintf(desc.symbols[desc.n_symbols++], sizeof desc.symbols[0], "%s", key);
        }
        json_object_foreach(families, key, v) {
            if (rc)
                break;
            if (desc.n == MAX_FAMILIES || strlen(key) >= sizeof desc.families[0].name) {
                rc = error_set(err, sizeof err, -1, "too many families or too long a name (%s)", key);
                break;
            }
            rc = parse_family(&desc.families[desc.n++], key, v, err, sizeof err);
            size_t used = strlen(desc.names);
            snprintf(desc.names + used, sizeof desc.names - used, "%s\"%s\"", used ? " or " : "", key);
        }
    }
    if (rc) {
        snprintf(desc.error, sizeof desc.error, "%s: %s", src, err);
        desc.n = 0;
    }
    json_decref(root);
}

const struct model_family *family_find(const char *name, char *err, size_t errlen)
{
    pthread_once(&desc_once, parse_description);
    if (desc.error[0]) {
        error_set(err, errlen, -1, "the architecture description is broken: %s", desc.error);
        return NULL;
    }
    for (int i = 0; i < desc.n; i++)
        if (strcmp(desc.families[i].name, name) == 0)
            return &desc.families[i];
    error_set(err, errlen, -1, "stopcal.config: architecture.family \"%s\" is not supported (%s)", name, desc.names);
    return NULL;
}

const char *family_names(void)
{
    pthread_once(&desc_once, parse_description);
    return desc.names;
}

const char *family_symbol_expr(const char *name)
{
    pthread_once(&desc_once, parse_description);
    for (int i = 0; i < desc.n_symbols; i++)
        if (strcmp(desc.symbols[i], name) == 0)
            return desc.symbol_expr[i];
    return NULL;
}
