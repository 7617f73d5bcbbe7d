/* Expanding a family's tensor table for one config (family.h): shape expressions in the
 * description's symbols and the config's integer keys, the "when" conditions, blocks.{i}. */
#include "family.h"
#include "error_message.h"
#include "family_internal.h"

#include "model.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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
    const char *symbol = family_symbol_expr(name);
    if (symbol) {
        if (p->depth > 4)
            return error_set(p->err, p->errlen, -1, "symbol %s expands too deep", name);
        struct parser sub = {symbol, p->c, p->depth + 1, p->err, p->errlen};
        if (expr(&sub, v))
            return -1;
        skip(&sub);
        return *sub.s ? error_set(p->err, p->errlen, -1, "symbol %s: stray \"%s\"", name, sub.s) : 0;
    }
    const struct model_family *f = p->c->family;
    int known = 0;
    for (int k = 0; f && k < f->n_keys; k++)
        known |= strcmp(f->keys[k].name, name) == 0;
    if (known && family_int_value(p->c, name, v) == 0)
        return 0;
    return error_set(p->err, p->errlen, -1, "\"%s\" is not a symbol or an integer key of family %s", name,
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
            return error_set(p->err, p->errlen, -1, "missing ')'");
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
        return error_set(p->err, p->errlen, -1, "expected a number, a name or '(' at \"%s\"", p->s);
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
            return error_set(p->err, p->errlen, -1, "division by zero");
        if (op == '*' && r != 0 && (*v > (1LL << 40) / (r < 0 ? -r : r)))
            return error_set(p->err, p->errlen, -1, "a dimension overflows");
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
    char why[160];
    struct parser p = {text, c, 0, why, sizeof why};
    int rc = expr(&p, value);
    skip(&p);
    if (!rc && *p.s)
        rc = error_set(why, sizeof why, -1, "stray \"%s\"", p.s);
    if (rc)
        return error_set(err, errlen, -1, "architecture description: shape \"%s\": %s", text, why);
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
        return error_set(err, errlen, -1, "architecture description: condition \"%s\" is not SYM>N or key=value", when);
    memcpy(left, when, (size_t)(op - when));
    left[op - when] = 0;
    if (gt) {
        int64_t v;
        if (family_eval(left, c, &v, err, errlen))
            return -1;
        *yes = v > atoll(gt + 1);
        return 0;
    }
    const char *value = family_choice_value(c, left);
    if (!value)
        return error_set(err, errlen, -1, "architecture description: condition \"%s\" names no choice key", when);
    *yes = strcmp(value, eq + 1) == 0;
    return 0;
}

int family_tensors(const struct model_config *c, struct family_tensor **out, char *err, size_t errlen)
{
    const struct model_family *f = c->family;
    *out = NULL;
    if (!f)
        return error_set(err, errlen, -1, "the config names no family");
    size_t cap = (size_t)f->n_tensors * (size_t)(c->depth > 0 ? c->depth : 1);
    struct family_tensor *t = calloc(cap ? cap : 1, sizeof *t);
    if (!t)
        return error_set(err, errlen, -1, "out of memory expanding the tensor table");
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
