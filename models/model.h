/* The stopcal model file: a safetensors container whose __metadata__ carries stopcal.config
 * (models/FORMAT.md). model_open maps the file, validates every byte the engine will read, and
 * either returns a complete model or an error message naming the problem; nothing is half-loaded. */
#ifndef STOPCAL_MODEL_H
#define STOPCAL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_FORMAT_VERSION 3     /* what writers write; the reader accepts 1 to 3 */
#define MODEL_FORMAT_VERSION_MIN 1
#define MODEL_MAX_ALIASES 16
#define MODEL_HEAD_DIM 64 /* the attention head dimension of every DINOv2 and DINOv3 variant */

enum model_dtype { MODEL_F32, MODEL_F16, MODEL_BF16 };
enum model_ffn { MODEL_FFN_MLP, MODEL_FFN_SWIGLU };
enum model_pos_interp {
    MODEL_POS_BICUBIC_ANTIALIAS,    /* interpolate(size=g, bicubic, antialias=True): register models */
    MODEL_POS_BICUBIC_SCALE_FACTOR, /* interpolate(scale_factor=(g+0.1)/G, bicubic): the others */
};
enum model_profile { MODEL_PROFILE_CORTEXCHANGE_V2, MODEL_PROFILE_CORTEXCHANGE_V3 };
enum model_lora { MODEL_LORA_NONE, MODEL_LORA_MERGE, MODEL_LORA_DROP };
/* format_version 3, runtime.precision; MODEL_PRECISION_UNSET when the file has no runtime object. */
enum model_precision { MODEL_PRECISION_UNSET, MODEL_PRECISION_FP32, MODEL_PRECISION_BF16, MODEL_PRECISION_AUTO };

struct model_family; /* family.h: the architecture description of the config's family */

struct model_config {
    int format_version;
    char name[128];
    char version[64];
    /* architecture: the keys the family's description (models/families.json) names; the others
     * stay 0 (e.g. pos_embed_grid for dinov3, rope_base for dinov2) */
    const struct model_family *family;
    int embed_dim, depth, num_heads, ffn_hidden_dim, num_registers, patch_size, pos_embed_grid;
    int head_hidden_dim;
    enum model_ffn ffn;
    enum model_pos_interp pos_interp;
    float layernorm_eps;
    float rope_base; /* dinov3: recorded; the engine uses the stored rope.periods */
    /* input and preprocessing */
    int input_size; /* square side in pixels, a multiple of patch_size */
    enum model_profile profile;
    float mean[3], std[3];
    float noise_sigma;
    /* output */
    float threshold; /* default decision threshold on continue_score */
    enum model_lora lora;
    int lora_rank;
    double lora_alpha;
    /* format_version 2: other names requests may use for this model (e.g. "surf/dino_big_...") */
    char aliases[MODEL_MAX_ALIASES][128];
    int n_aliases;
    /* format_version 2, optional: SHA-256 (lowercase hex) of the data section recorded at write
     * time; "" when the file has none. */
    char tensor_data_sha256[65];
    /* format_version 3, optional "runtime" object: {"precision": "fp32"|"bf16"|"auto"}, the
     * precision the model runs in when the command line does not say (backend.h's
     * backend_options.model_precision resolves it). */
    enum model_precision precision;
};

/* A model name or alias as requests spell it: 1-127 bytes of letters, digits, '-', '_', '.', and '/'
 * between non-empty parts, none of them ".", "..", "versions", "ready" or "infer" (words of the /v2
 * paths, so that a name in a path is never ambiguous). Returns 0, or -1 with err. */
int model_name_check(const char *name, char *err, size_t errlen);

struct model_tensor {
    char name[96];
    enum model_dtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data; /* points into the mapping (or into `copy` when it was misaligned) */
    size_t nbytes;
    void *copy;       /* owned aligned copy, or NULL */
};

struct model {
    struct model_config config;
    char *config_json;  /* the stopcal.config string as stored, owned */
    char sha256[65];    /* hex digest of the whole file */
    /* 1: the data section matched the digest the file records (config.tensor_data_sha256);
     * 0: the file records none (format_version 1, or 2 without it), so a corrupted weight byte
     * would go unnoticed; model_digest_note() says so in words. A mismatch never loads. */
    int data_verified;
    char path[512];
    void *map;
    size_t map_len;
    struct model_tensor *tensors;
    int n_tensors;
};

/* Open and validate a model file. Returns 0, or -1 with a message in err (the model is left empty
 * and needs no model_close). */
int model_open(struct model *m, const char *path, char *err, size_t errlen);

/* Same, from bytes already in memory; the model copies what it keeps. For tests and fuzzing. */
int model_open_buffer(struct model *m, const void *bytes, size_t len, char *err, size_t errlen);

void model_close(struct model *m);

/* NULL when the tensor data was verified against the file's digest, else one sentence for a log
 * or a model listing saying that it could not be. */
const char *model_digest_note(const struct model *m);

/* The tensor with this name, or NULL. */
const struct model_tensor *model_find(const struct model *m, const char *name);

/* Number of elements of a tensor. */
size_t model_tensor_numel(const struct model_tensor *t);

/* Widen a tensor to fp32 into out (numel floats). F16 and BF16 widen exactly. */
void model_tensor_to_f32(const struct model_tensor *t, float *out);

/* Parse and validate a stopcal.config JSON string (models/FORMAT.md). Returns 0 or -1 with err. */
int model_config_parse(struct model_config *c, const char *json, char *err, size_t errlen);

/* Names of the preprocessing profile / pos interpolation as written in the file. */
const char *model_profile_name(enum model_profile p);
const char *model_lora_name(enum model_lora l);
/* "fp32", "bf16", "auto" as the file spells them; NULL for MODEL_PRECISION_UNSET. */
const char *model_precision_name(enum model_precision p);

#endif
