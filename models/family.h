/* The architecture description of each model family (models/families.json, compiled in at build
 * time as family_description_bytes): its architecture keys with their types and ranges, its tensor
 * table (names, shapes as expressions in the config's symbols, weight kind, engine slot, condition)
 * and its forward steps. The config parser, the tensor-set check and the engine's upload and
 * forward pass all read it from here; models/stopcal_model.py reads the same bytes. */
#ifndef STOPCAL_FAMILY_H
#define STOPCAL_FAMILY_H

#include <stddef.h>
#include <stdint.h>

struct model_config;

#define FAMILY_MAX_KEYS 24
#define FAMILY_MAX_TENSORS 64
#define FAMILY_MAX_STEPS 24
#define FAMILY_MAX_CHOICES 8

enum family_key_type { FAMILY_KEY_INT, FAMILY_KEY_NUMBER, FAMILY_KEY_CHOICE };
enum family_kind { FAMILY_KIND_MATRIX, FAMILY_KIND_PATCH, FAMILY_KIND_VECTOR, FAMILY_KIND_HOST };
enum family_stage { FAMILY_PER_RESOLUTION, FAMILY_EMBED, FAMILY_BLOCK, FAMILY_HEAD, FAMILY_STAGES };

struct family_key {
    char name[40];
    enum family_key_type type;
    double lo, hi; /* int: [lo, hi]; number: (lo, hi) */
    char values[FAMILY_MAX_CHOICES][40];
    int n_values;
};

struct family_tensor_spec {
    char name[96];  /* "blocks.{i}.…" repeats over the blocks */
    char shape[4][40];
    int ndim;
    enum family_kind kind;
    char slot[32];  /* "" = no slot: uploaded, not used by a step */
    char when[40];  /* "" = always; "SYM>INT" or "key=value" */
    int f32_only;   /* "dtype": "F32": stored in F32 whatever the file's dtype (values of a formula,
                       such as RoPE periods, that bf16 would move, not learned weights) */
};

struct model_family {
    char name[32];
    int min_format_version;
    struct family_key keys[FAMILY_MAX_KEYS]; /* "family" itself not included */
    int n_keys;
    struct family_tensor_spec tensors[FAMILY_MAX_TENSORS];
    int n_tensors;
    char steps[FAMILY_STAGES][FAMILY_MAX_STEPS][32];
    int n_steps[FAMILY_STAGES];
};

/* One tensor a config implies. block: its block index, -1 outside the blocks. spec: its row. */
struct family_tensor {
    char name[96];
    int ndim;
    int64_t shape[4];
    int block;
    const struct family_tensor_spec *spec;
};

/* The bytes compiled in (families_data.c, generated from models/families.json). */
extern const unsigned char family_description_bytes[];
extern const size_t family_description_size;

/* The description in use: the compiled-in bytes, or the file STOPCAL_TEST_ONLY_FAMILIES names
 * (tests only). Parsed once; NULL with err when it is broken (a build error, tests catch it). */
const struct model_family *family_find(const char *name, char *err, size_t errlen);

/* Names of all families, for messages: "dinov2", "dinov3" joined with " or ". */
const char *family_names(void);

/* Store one architecture key's JSON-checked value in the config: ints and numbers by key name,
 * choices by value. Returns 0, or -1 when the key is not one the engine knows (err). */
int family_set_int(struct model_config *c, const char *key, long long v, char *err, size_t errlen);
int family_set_number(struct model_config *c, const char *key, double v, char *err, size_t errlen);
int family_set_choice(struct model_config *c, const char *key, const char *value, char *err, size_t errlen);

/* Every tensor the config implies, in the description's order, blocks expanded. *out is malloc'ed
 * (free it). Returns the count, or -1 with err. */
int family_tensors(const struct model_config *c, struct family_tensor **out, char *err, size_t errlen);

/* A shape expression's value for this config (exposed for tests). Returns 0 or -1 with err. */
int family_eval(const char *expr, const struct model_config *c, int64_t *value, char *err, size_t errlen);

#endif
