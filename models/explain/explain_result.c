/* Token-order rows → image-order maps and the numbers reported beside them (explain_result.h). */
#include "explain_result.h"

#include <stdlib.h>
#include <string.h>

#include "explain_map.h"

void explain_result_free(struct explain_result *r)
{
    free(r->heads_map);
    free(r->mean_map);
    free(r->rollout_map);
    free(r->reg_heads);
    free(r->reg_mean);
    free(r->rollout_reg);
    memset(r, 0, sizeof *r);
}

int explain_result_init(struct explain_result *r, const float *cls, const float *rollout, int heads,
                        int registers, int grid)
{
    memset(r, 0, sizeof *r);
    const int R = registers, P = grid * grid, T = 1 + R + P;
    r->grid = grid;
    r->heads = heads;
    r->registers = R;
    r->heads_map = malloc((size_t)heads * P * sizeof(float));
    r->mean_map = malloc((size_t)P * sizeof(float));
    float *mean_tok = calloc((size_t)P, sizeof(float));
    double *mean_acc = calloc((size_t)P, sizeof(double));
    if (R) {
        r->reg_heads = calloc((size_t)heads * R, sizeof(double));
        r->reg_mean = calloc((size_t)R, sizeof(double));
    }
    if (rollout) {
        r->rollout_map = malloc((size_t)P * sizeof(float));
        r->rollout_reg = R ? calloc((size_t)R, sizeof(double)) : NULL;
    }
    if (!r->heads_map || !r->mean_map || !mean_tok || !mean_acc || (R && (!r->reg_heads || !r->reg_mean)) ||
        (rollout && (!r->rollout_map || (R && !r->rollout_reg)))) {
        free(mean_tok);
        free(mean_acc);
        explain_result_free(r);
        return -1;
    }
    for (int h = 0; h < heads; h++) {
        const float *row = cls + (size_t)h * T;
        explain_grid_to_image(row + 1 + R, grid, r->heads_map + (size_t)h * P);
        r->cls_self += row[0] / heads;
        for (int k = 0; k < R; k++) {
            r->reg_heads[(size_t)h * R + k] = row[1 + k];
            r->reg_mean[k] += row[1 + k] / (double)heads;
        }
        for (int p = 0; p < P; p++) {
            mean_acc[p] += row[1 + R + p];
            r->patch_sum += row[1 + R + p] / (double)heads;
        }
    }
    for (int p = 0; p < P; p++)
        mean_tok[p] = (float)(mean_acc[p] / heads);
    explain_grid_to_image(mean_tok, grid, r->mean_map);
    if (rollout) {
        explain_grid_to_image(rollout + 1 + R, grid, r->rollout_map);
        r->rollout_cls = rollout[0];
        for (int k = 0; k < R; k++)
            r->rollout_reg[k] = rollout[1 + k];
        for (int p = 0; p < P; p++)
            r->rollout_patch_sum += rollout[1 + R + p];
    }
    free(mean_tok);
    free(mean_acc);
    return 0;
}

static json_t *grid_json(const float *m, int g)
{
    json_t *rows = json_array();
    for (int y = 0; y < g && rows; y++) {
        json_t *row = json_array();
        for (int x = 0; x < g && row; x++)
            json_array_append_new(row, json_real(m[(size_t)y * g + x]));
        json_array_append_new(rows, row);
    }
    return rows;
}

static json_t *doubles_json(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n && a; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

json_t *explain_result_json(const struct explain_result *r, int all_heads)
{
    const int g = r->grid, P = g * g;
    json_t *o = json_pack("{s:i, s:i, s:i, s:s, s:o, s:f, s:f, s:o}", "grid", g, "heads", r->heads, "registers",
                          r->registers, "orientation",
                          "[row][column]: rows along the image's y axis (NAXIS2), columns along x (NAXIS1); "
                          "[0][0] is the patch holding FITS pixel (1,1)",
                          "cls_attention", grid_json(r->mean_map, g), "cls_self", r->cls_self, "patch_sum",
                          r->patch_sum, "register_attention", doubles_json(r->reg_mean, r->registers));
    if (!o)
        return NULL;
    if (all_heads) {
        json_t *hm = json_array(), *hr = json_array();
        for (int h = 0; h < r->heads; h++) {
            json_array_append_new(hm, grid_json(r->heads_map + (size_t)h * P, g));
            json_array_append_new(hr, doubles_json(r->reg_heads ? r->reg_heads + (size_t)h * r->registers : NULL,
                                                   r->registers));
        }
        json_object_set_new(o, "cls_attention_heads", hm);
        json_object_set_new(o, "register_attention_heads", hr);
    }
    if (r->rollout_map) {
        json_object_set_new(o, "rollout", grid_json(r->rollout_map, g));
        json_object_set_new(o, "rollout_cls", json_real(r->rollout_cls));
        json_object_set_new(o, "rollout_patch_sum", json_real(r->rollout_patch_sum));
        json_object_set_new(o, "rollout_registers", doubles_json(r->rollout_reg, r->registers));
    }
    return o;
}
