/* Reading the architecture description (family.h): parsed once from the compiled-in bytes into
 * fixed tables, then expanded per config. The only lists here are the engine's side of the
 * contract: which config field an architecture key fills. */
#include "family.h"

#include "model.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 8
#define MAX_SYMBOLS 16

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- config fields the keys fill ---- */

static const struct { const char *key; size_t off; } INT_FIELDS[] = {
    {"embed_dim", offsetof(struct model_config, embed_dim)},
    {"depth", offsetof(struct model_config, depth)},
    {"num_heads", offsetof(struct model_config, num_heads)},
    {"ffn_hidden_dim", offsetof(struct model_config, ffn_hidden_dim)},
    {"num_registers", offsetof(struct model_config, num_registers)},
    {"patch_size", offsetof(struct model_config, patch_size)},
    {"pos_embed_grid", offsetof(struct model_config, pos_embed_grid)},
    {"head_hidden_dim", offsetof(struct model_config, head_hidden_dim)},
};
static const struct { const char *key; size_t off; } NUMBER_FIELDS[] = {
    {"layernorm_eps", offsetof(struct model_config, layernorm_eps)},
    {"rope_base", offsetof(struct model_config, rope_base)},
};
/* Choice values as the enums in model.h number them. */
static const struct { const char *key; const char *value; int code; size_t off; } CHOICES[] = {
    {"ffn", "mlp", MODEL_FFN_MLP, offsetof(struct model_config, ffn)},
    {"ffn", "swiglu", MODEL_FFN_SWIGLU, offsetof(struct model_config, ffn)},
    {"pos_embed_interpolation", "bicubic_antialias", MODEL_POS_BICUBIC_ANTIALIAS,
     offsetof(struct model_config, pos_interp)},
    {"pos_embed_interpolation", "bicubic_scale_factor", MODEL_POS_BICUBIC_SCALE_FACTOR,
     offsetof(struct model_config, pos_interp)},
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int family_set_int(struct model_config *c, const char *key, long long v, char *err, size_t errlen)
{
    for (size_t i = 0; i < COUNT(INT_FIELDS); i++)
        if (strcmp(INT_FIELDS[i].key, key) == 0) {
            *(int *)((char *)c + INT_FIELDS[i].off) = (int)v;
            return 0;
        }
    return fail(err, errlen, "stopcal.config: architecture.%s is described but this build has no field for it", key);
}

int family_set_number(struct model_config *c, const char *key, double v, char *err, size_t errlen)
{
    for (size_t i = 0; i < COUNT(NUMBER_FIELDS); i++)
        if (strcmp(NUMBER_FIELDS[i].key, key) == 0) {
            *(float *)((char *)c + NUMBER_FIELDS[i].off) = (float)v;
            return 0;
        }
    return fail(err, errlen, "stopcal.config: architecture.%s is described but this build has no field for it", key);
}

int family_set_choice(struct model_config *c, const char *key, const char *value, char *err, size_t errlen)
{
    for (size_t i = 0; i < COUNT(CHOICES); i++)
        if (strcmp(CHOICES[i].key, key) == 0 && strcmp(CHOICES[i].value, value) == 0) {
            *(int *)((char *)c + CHOICES[i].off) = CHOICES[i].code;
            return 0;
        }
    return fail(err, errlen, "stopcal.config: architecture.%s \"%s\" is described but this build does not know it",
                key, value);
}

static const char *choice_value(const struct model_config *c, const char *key)
{
    for (size_t i = 0; i < COUNT(CHOICES); i++)
        if (strcmp(CHOICES[i].key, key) == 0 && *(const int *)((const char *)c + CHOICES[i].off) == CHOICES[i].code)
            return CHOICES[i].value;
    return NULL;
}

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
        return fail(err, errlen, "%s must be a string of fewer than %zu bytes", what, n);
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
            return fail(err, errlen, "key %s: values must be a list of at most %d", name, FAMILY_MAX_CHOICES);
        json_array_foreach(values, i, v) {
            if (copy_string(k->values[k->n_values++], sizeof k->values[0], v, "a choice", err, errlen))
                return -1;
        }
        return 0;
    } else {
        return fail(err, errlen, "key %s: type must be int (with range), number (with open_range) or choice", name);
    }
    if (json_array_size(r) != 2 || !json_is_number(json_array_get(r, 0)) || !json_is_number(json_array_get(r, 1)))
        return fail(err, errlen, "key %s: a range is two numbers", name);
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
        return fail(err, errlen, "tensor %s: shape must be a list of 1 to 4 expressions", t->name);
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
        return fail(err, errlen, "tensor %s: kind must be matrix, patch, vector or host", t->name);
    t->kind = (enum family_kind)k;
    json_t *slot = json_object_get(e, "slot"), *when = json_object_get(e, "when");
    if (slot && copy_string(t->slot, sizeof t->slot, slot, "a slot", err, errlen))
        return -1;
    if (when && copy_string(t->when, sizeof t->when, when, "a condition", err, errlen))
        return -1;
    return 0;
}

static int parse_family(struct model_family *f, const char *name, json_t *obj, char *err, size_t errlen)
{
    static const char *const stages[FAMILY_STAGES] = {"per_resolution", "embed", "block", "head"};
    snprintf(f->name, sizeof f->name, "%s", name);
    json_t *mfv = json_object_get(obj, "min_format_version"), *arch = json_object_get(obj, "architecture");
    json_t *tensors = json_object_get(obj, "tensors"), *forward = json_object_get(obj, "forward");
    if (!json_is_integer(mfv) || !json_is_object(arch) || !json_is_array(tensors) || !json_is_object(forward))
        return fail(err, errlen, "family %s needs min_format_version, architecture, tensors and forward", name);
    f->min_format_version = (int)json_integer_value(mfv);
    const char *key;
    json_t *v;
    json_object_foreach(arch, key, v) {
        if (f->n_keys == FAMILY_MAX_KEYS)
            return fail(err, errlen, "family %s: more than %d keys", name, FAMILY_MAX_KEYS);
        if (parse_key(&f->keys[f->n_keys++], key, v, err, errlen))
            return -1;
    }
    size_t i;
    json_array_foreach(tensors, i, v) {
        if (f->n_tensors == FAMILY_MAX_TENSORS)
            return fail(err, errlen, "family %s: more than %d tensors", name, FAMILY_MAX_TENSORS);
        if (parse_tensor(&f->tensors[f->n_tensors++], v, err, errlen))
            return -1;
    }
    for (int s = 0; s < FAMILY_STAGES; s++) {
        json_t *list = json_object_get(forward, stages[s]);
        if (!json_is_array(list) || json_array_size(list) > FAMILY_MAX_STEPS)
            return fail(err, errlen, "family %s: forward.%s must be a list of at most %d steps", name, stages[s],
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
        rc = fail(err, sizeof err, "needs the objects families and symbols");
    } else {
        json_object_foreach(symbols, key, v) {
            if (desc.n_symbols == MAX_SYMBOLS || strlen(key) >= sizeof desc.symbols[0] ||
                copy_string(desc.symbol_expr[desc.n_symbols], sizeof desc.symbol_expr[0], v, "a symbol", err,
                            sizeof err)) {
                rc = fail(err, sizeof err, "symbol %s is not a short name for a short expression", key);
                break;
            }
            snprintf(desc.symbols[desc.n_symbols++], sizeof desc.symbols[0], "%s", key);
        }
        json_object_foreach(families, key, v) {
            if (rc)
                break;
            if (desc.n == MAX_FAMILIES || strlen(key) >= sizeof desc.families[0].name) {
                rc = fail(err, sizeof err, "too many families or too long a name (%s)", key);
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
        fail(err, errlen, "the architecture description is broken: %s", desc.error);
        return NULL;
    }
    for (int i = 0; i < desc.n; i++)
        if (strcmp(desc.families[i].name, name) == 0)
            return &desc.families[i];
    fail(err, errlen, "stopcal.config: architecture.family \"%s\" is not supported (%s)", name, desc.names);
    return NULL;
}

const char *family_names(void)
{
    pthread_once(&desc_once, parse_description);
    return desc.names;
}

/* ---- expressions ---- */

struct parser {
    const char *s;
    const struct model_config *c;
    int depth; /* symbols expand into expressions; bounded so a cycle is an error */
    char *err;
    size_t errlen;
};

static int expr(struct parser *p, int64_t *v);

static void skip(struct parser *p)
{
    while (isspace((unsigned char)*p->s))
        p->s++;
}

static int name_value(struct parser *p, const char *name, int64_t *v)
{
    for (int i = 0; i < desc.n_symbols; i++)
        if (strcmp(desc.symbols[i], name) == 0) {
            if (p->depth > 4)
                return fail(p->err, p->errlen, "symbol %s expands too deep", name);
            struct parser sub = {desc.symbol_expr[i], p->c, p->depth + 1, p->err, p->errlen};
            if (expr(&sub, v))
                return -1;
            skip(&sub);
            return *sub.s ? fail(p->err, p->errlen, "symbol %s: stray \"%s\"", name, sub.s) : 0;
        }
    const struct model_family *f = p->c->family;
    int known = 0;
    for (int k = 0; f && k < f->n_keys; k++)
        known |= strcmp(f->keys[k].name, name) == 0;
    for (size_t i = 0; known && i < COUNT(INT_FIELDS); i++)
        if (strcmp(INT_FIELDS[i].key, name) == 0) {
            *v = *(const int *)((const char *)p->c + INT_FIELDS[i].off);
            return 0;
        }
    return fail(p->err, p->errlen, "\"%s\" is not a symbol or an integer key of family %s", name,
                f ? f->name : "(none)");
}

static int atom(struct parser *p, int64_t *v)
{
    skip(p);
    if (*p->s == '(') {
        p->s++;
        if (expr(p, v))
            return -1;
        skip(p);
        if (*p->s != ')')
            return fail(p->err, p->errlen, "missing ')'");
        p->s++;
        return 0;
    }
    if (isdigit((unsigned char)*p->s)) {
        *v = 0;
        while (isdigit((unsigned char)*p->s) && *v < (1LL << 40))
            *v = *v * 10 + (*p->s++ - '0');
        return 0;
    }
    char name[40];
    size_t n = 0;
    while ((isalnum((unsigned char)*p->s) || *p->s == '_') && n + 1 < sizeof name)
        name[n++] = *p->s++;
    name[n] = 0;
    if (!n)
        return fail(p->err, p->errlen, "expected a number, a name or '(' at \"%s\"", p->s);
    return name_value(p, name, v);
}

static int term(struct parser *p, int64_t *v)
{
    if (atom(p, v))
        return -1;
    for (;;) {
        skip(p);
        char op = *p->s;
        if (op != '*' && op != '/')
            return 0;
        p->s++;
        int64_t r;
        if (atom(p, &r))
            return -1;
        if (op == '/' && r == 0)
            return fail(p->err, p->errlen, "division by zero");
        if (op == '*' && r != 0 && (*v > (1LL << 40) / (r < 0 ? -r : r)))
            return fail(p->err, p->errlen, "a dimension overflows");
        *v = op == '*' ? *v * r : *v / r;
    }
}

static int expr(struct parser *p, int64_t *v)
{
    if (term(p, v))
        return -1;
    for (;;) {
        skip(p);
        char op = *p->s;
        if (op != '+' && op != '-')
            return 0;
        p->s++;
        int64_t r;
        if (term(p, &r))
            return -1;
        *v = op == '+' ? *v + r : *v - r;
    }
}

int family_eval(const char *text, const struct model_config *c, int64_t *value, char *err, size_t errlen)
{
    pthread_once(&desc_once, parse_description);
    char why[160];
    struct parser p = {text, c, 0, why, sizeof why};
    int rc = expr(&p, value);
    skip(&p);
    if (!rc && *p.s)
        rc = fail(why, sizeof why, "stray \"%s\"", p.s);
    if (rc)
        return fail(err, errlen, "architecture description: shape \"%s\": %s", text, why);
    return 0;
}

/* "SYM>INT" or "key=value". */
static int holds(const char *when, const struct model_config *c, int *yes, char *err, size_t errlen)
{
    *yes = 1;
    if (!*when)
        return 0;
    char left[40];
    const char *gt = strchr(when, '>'), *eq = strchr(when, '=');
    const char *op = gt ? gt : eq;
    if (!op || (size_t)(op - when) >= sizeof left)
        return fail(err, errlen, "architecture description: condition \"%s\" is not SYM>N or key=value", when);
    memcpy(left, when, (size_t)(op - when));
    left[op - when] = 0;
    if (gt) {
        int64_t v;
        if (family_eval(left, c, &v, err, errlen))
            return -1;
        *yes = v > atoll(gt + 1);
        return 0;
    }
    const char *value = choice_value(c, left);
    if (!value)
        return fail(err, errlen, "architecture description: condition \"%s\" names no choice key", when);
    *yes = strcmp(value, eq + 1) == 0;
    return 0;
}

int family_tensors(const struct model_config *c, struct family_tensor **out, char *err, size_t errlen)
{
    const struct model_family *f = c->family;
    *out = NULL;
    if (!f)
        return fail(err, errlen, "the config names no family");
    size_t cap = (size_t)f->n_tensors * (size_t)(c->depth > 0 ? c->depth : 1);
    struct family_tensor *t = calloc(cap ? cap : 1, sizeof *t);
    if (!t)
        return fail(err, errlen, "out of memory expanding the tensor table");
    int n = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const struct family_tensor_spec *s = &f->tensors[i];
        int yes;
        if (holds(s->when, c, &yes, err, errlen))
            goto bad;
        if (!yes)
            continue;
        int64_t shape[4];
        for (int d = 0; d < s->ndim; d++)
            if (family_eval(s->shape[d], c, &shape[d], err, errlen))
                goto bad;
        const char *at = strstr(s->name, "{i}");
        const int blocks = at ? c->depth : 1;
        for (int b = 0; b < blocks; b++) {
            struct family_tensor *e = &t[n++];
            if (at)
                snprintf(e->name, sizeof e->name, "%.*s%d%s", (int)(at - s->name), s->name, b, at + 3);
            else
                snprintf(e->name, sizeof e->name, "%s", s->name);
            e->ndim = s->ndim;
            memcpy(e->shape, shape, sizeof shape);
            e->block = at ? b : -1;
            e->spec = s;
        }
    }
    *out = t;
    return n;
bad:
    free(t);
    return -1;
}
