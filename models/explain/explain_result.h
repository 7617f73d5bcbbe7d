/* What an explain pass found for one image, in the image's orientation (explain_map.h), and its
 * JSON form, shared by stopcald (/v1/explain) and stopcal-infer (--explain). */
#ifndef STOPCAL_EXPLAIN_RESULT_H
#define STOPCAL_EXPLAIN_RESULT_H

#include <jansson.h>

struct explain_result {
    int grid, heads, registers;
    float *heads_map;   /* (H, g, g) per head: the last block's attention from CLS to each patch */
    float *mean_map;    /* (g, g) its mean over the heads */
    float *rollout_map; /* (g, g) the rollout's CLS row on the patches, or NULL when not asked */
    double cls_self;    /* mean over heads of CLS → CLS */
    double patch_sum;   /* mean over heads of CLS → all patches */
    double *reg_heads;  /* (H, R) CLS → register r per head; NULL when R = 0 */
    double *reg_mean;   /* (R) */
    double rollout_cls, rollout_patch_sum; /* the rollout row's CLS and patch parts (rollout only) */
    double *rollout_reg; /* (R) */
};

/* From the engine's rows in token order (vit_explain): cls (H, T) and rollout (T) or NULL, with
 * T = 1 + registers + grid². Returns 0, or -1 when out of memory (r is then empty). */
int explain_result_init(struct explain_result *r, const float *cls, const float *rollout, int heads,
                        int registers, int grid);
void explain_result_free(struct explain_result *r);

/* {"grid", "heads", "registers", "orientation", "cls_attention": [[g]×g], "cls_self",
 *  "patch_sum", "register_attention": [R], and with all_heads "cls_attention_heads": [H][g][g] and
 *  "register_attention_heads": [H][R]; with a rollout "rollout": [[g]×g], "rollout_cls",
 *  "rollout_patch_sum", "rollout_registers": [R]}. NULL when out of memory. */
json_t *explain_result_json(const struct explain_result *r, int all_heads);

#endif
