/* Between the three parts of the architecture description's reader (family.c, family_fields.c,
 * family_tensors.c); not for other users. */
#ifndef STOPCAL_FAMILY_INTERNAL_H
#define STOPCAL_FAMILY_INTERNAL_H

#include <stdint.h>

struct model_config;

/* The expression a description symbol stands for ("embed_dim / num_heads"), or NULL. */
const char *family_symbol_expr(const char *name);

/* The config's value of an integer architecture key: 0, or -1 for no such key. */
int family_int_value(const struct model_config *c, const char *key, int64_t *v);

/* The config's value of a choice key as the description spells it, or NULL. */
const char *family_choice_value(const struct model_config *c, const char *key);

#endif
