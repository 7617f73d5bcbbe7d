/* The engine's side of the architecture keys (family.h): which config field each key fills, and
 * what each choice value means. The description says which keys a family has and their ranges;
 * this table is the only list of fields, and a described key without a field is an error. */
#include "family.h"
#include "error_message.h"
#include "family_internal.h"

#include "model.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>


#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

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

int family_set_int(struct model_config *c, const char *key, long long v, char *err, size_t errlen)
{
    for (size_t i = 0; i < COUNT(INT_FIELDS); i++)
        if (strcmp(INT_FIELDS[i].key, key) == 0) {
            *(int *)((char *)c + INT_FIELDS[i].off) = (int)v;
            return 0;
        }
    return error_set(err, errlen, -1, "stopcal.config: architecture.%s is described but this build has no field for it", key);
}

int family_set_number(struct model_config *c, const char *key, double v, char *err, size_t errlen)
{
    for (size_t i = 0; i < COUNT(NUMBER_FIELDS); i++)
        if (strcmp(NUMBER_FIELDS[i].key, key) == 0) {
            *(float *)((char *)c + NUMBER_FIELDS[i].off) = (float)v;
            return 0;
        }
    return error_set(err, errlen, -1, "stopcal.config: architecture.%s is described but this build has no field for it", key);
}

int family_set_choice(struct model_config *c, const char *key, const char *value, char *err, size_t errlen)
{
    for (size_t i = 0; i < COUNT(CHOICES); i++)
        if (strcmp(CHOICES[i].key, key) == 0 && strcmp(CHOICES[i].value, value) == 0) {
            *(int *)((char *)c + CHOICES[i].off) = CHOICES[i].code;
            return 0;
        }
    return error_set(err, errlen, -1, "stopcal.config: architecture.%s \"%s\" is described but this build does not know it",
                key, value);
}

const char *family_choice_value(const struct model_config *c, const char *key)
{
    for (size_t i = 0; i < COUNT(CHOICES); i++)
        if (strcmp(CHOICES[i].key, key) == 0 && *(const int *)((const char *)c + CHOICES[i].off) == CHOICES[i].code)
            return CHOICES[i].value;
    return NULL;
}

int family_int_value(const struct model_config *c, const char *key, int64_t *v)
{
    for (size_t i = 0; i < COUNT(INT_FIELDS); i++)
        if (strcmp(INT_FIELDS[i].key, key) == 0) {
            *v = *(const int *)((const char *)c + INT_FIELDS[i].off);
            return 0;
        }
    return -1;
}
