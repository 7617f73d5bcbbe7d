/* The DINOv3 forward pass of the engine against a plain C one written here from the references
 * (kernels/ref/): tokens [CLS, storage, patches] with no positional term, RoPE on the patch
 * tokens' q and k in every block, LayerScale, MLP or SwiGLU, final norm, head. Also that the
 * explain pass's attention probabilities are those of the rotated q and k (and differ from the
 * unrotated ones, so the check has teeth). Runs on whatever path the environment picks
 * (STOPCAL_CPU_GEMM/ATTENTION), at the model's input size and at one patch less.
 * Usage: test_vit_dinov3 MODEL.safetensors */
#include "../check.h"

#include "backend.h"
#include "model.h"
#include "ref_ops.h"
#include "rope_table.h"
#include "vit.h"

#include <string.h>
#include "../backend_env.h"

static unsigned long long rng = 31;

static float *tensor(const struct model *m, const char *fmt, int i)
{
    char name[96];
    snprintf(name, sizeof name, fmt, i);
    const struct model_tensor *t = model_find(m, name);
    CHECK(t != NULL, "tensor %s", name);
    if (!t)
        exit(1);
    float *out = malloc(model_tensor_numel(t) * sizeof *out);
    model_tensor_to_f32(t, out);
    return out;
}

/* The reference pass for one image: returns the logit; cls_probs (H, T) ← the last block's CLS
 * attention rows after RoPE, and unrotated (H, T) ← the same from the unrotated q and k. */
static double reference_forward(const struct model *m, const float *pixels, int S, float *cls_probs,
                                float *unrotated)
{
    const struct model_config *c = &m->config;
    const int D = c->embed_dim, H = c->num_heads, R = c->num_registers, P = c->patch_size, g = S / P;
    const int T = 1 + R + g * g, F = c->ffn_hidden_dim, FI = c->ffn == MODEL_FFN_MLP ? F : 2 * F;
    float *x = malloc(sizeof(float) * T * D), *h = malloc(sizeof(float) * T * D);
    float *qkv = malloc(sizeof(float) * T * 3 * D), *plain = malloc(sizeof(float) * T * 3 * D);
    float *att = malloc(sizeof(float) * T * D), *wide = malloc(sizeof(float) * T * FI);
    float *gated = malloc(sizeof(float) * T * F), *table = malloc(sizeof(float) * g * g * 64);
    float *periods = tensor(m, "rope.periods", 0), *cls = tensor(m, "cls_token", 0);
    float *reg = R ? tensor(m, "register_tokens", 0) : NULL;
    float *pw = tensor(m, "patch_embed.proj.weight", 0), *pb = tensor(m, "patch_embed.proj.bias", 0);
    rope_table_compute(table, periods, g, g);
    patch_embed_forward_ref(x, pixels, pw, pb, cls, reg, NULL, 1, S, P, D, R);
    const char *in = c->ffn == MODEL_FFN_MLP ? "fc1" : "w12", *out = c->ffn == MODEL_FFN_MLP ? "fc2" : "w3";
    char fmt[64];
    for (int i = 0; i < c->depth; i++) {
        float *n1w = tensor(m, "blocks.%d.norm1.weight", i), *n1b = tensor(m, "blocks.%d.norm1.bias", i);
        float *qw = tensor(m, "blocks.%d.attn.qkv.weight", i), *qb = tensor(m, "blocks.%d.attn.qkv.bias", i);
        float *ow = tensor(m, "blocks.%d.attn.proj.weight", i), *ob = tensor(m, "blocks.%d.attn.proj.bias", i);
        float *l1 = tensor(m, "blocks.%d.ls1.gamma", i), *l2 = tensor(m, "blocks.%d.ls2.gamma", i);
        float *n2w = tensor(m, "blocks.%d.norm2.weight", i), *n2b = tensor(m, "blocks.%d.norm2.bias", i);
        snprintf(fmt, sizeof fmt, "blocks.%%d.mlp.%s.weight", in);
        float *f1w = tensor(m, fmt, i);
        snprintf(fmt, sizeof fmt, "blocks.%%d.mlp.%s.bias", in);
        float *f1b = tensor(m, fmt, i);
        snprintf(fmt, sizeof fmt, "blocks.%%d.mlp.%s.weight", out);
        float *f2w = tensor(m, fmt, i);
        snprintf(fmt, sizeof fmt, "blocks.%%d.mlp.%s.bias", out);
        float *f2b = tensor(m, fmt, i);
        layernorm_forward_ref(h, x, n1w, n1b, T, D, D, c->layernorm_eps);
        linear_forward_ref(qkv, h, qw, qb, T, 3 * D, D, EPILOGUE_NONE);
        memcpy(plain, qkv, sizeof(float) * T * 3 * D);
        rope_forward_ref(qkv, table, 1, T, H, 1 + R);
        attention_forward_ref(att, qkv, 1, T, H);
        if (i == c->depth - 1) {
            attention_probs_ref(cls_probs, qkv, 1, T, H, 1, 0);
            attention_probs_ref(unrotated, plain, 1, T, H, 1, 0);
        }
        linear_forward_ref(h, att, ow, ob, T, D, D, EPILOGUE_NONE);
        layerscale_residual_ref(x, h, l1, T, D);
        layernorm_forward_ref(h, x, n2w, n2b, T, D, D, c->layernorm_eps);
        if (c->ffn == MODEL_FFN_MLP) {
            linear_forward_ref(wide, h, f1w, f1b, T, F, D, EPILOGUE_GELU);
            linear_forward_ref(h, wide, f2w, f2b, T, D, F, EPILOGUE_NONE);
        } else {
            linear_forward_ref(wide, h, f1w, f1b, T, 2 * F, D, EPILOGUE_NONE);
            swiglu_forward_ref(gated, wide, T, F);
            linear_forward_ref(h, gated, f2w, f2b, T, D, F, EPILOGUE_NONE);
        }
        layerscale_residual_ref(x, h, l2, T, D);
        float *bufs[] = {n1w, n1b, qw, qb, ow, ob, l1, l2, n2w, n2b, f1w, f1b, f2w, f2b};
        for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++)
            free(bufs[k]);
    }
    float *nw = tensor(m, "norm.weight", 0), *nb = tensor(m, "norm.bias", 0);
    float *h1w = tensor(m, "head.fc1.weight", 0), *h1b = tensor(m, "head.fc1.bias", 0);
    float *h2w = tensor(m, "head.fc2.weight", 0), *h2b = tensor(m, "head.fc2.bias", 0);
    float *hid = malloc(sizeof(float) * c->head_hidden_dim), logit;
    layernorm_forward_ref(h, x, nw, nb, 1, D, D, c->layernorm_eps);
    linear_forward_ref(hid, h, h1w, h1b, 1, c->head_hidden_dim, D, EPILOGUE_RELU);
    linear_forward_ref(&logit, hid, h2w, h2b, 1, 1, c->head_hidden_dim, EPILOGUE_NONE);
    float *bufs[] = {x, h, qkv, plain, att, wide, gated, table, periods, cls, reg, pw, pb, nw, nb, h1w, h1b, h2w, h2b, hid};
    for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++)
        free(bufs[k]);
    return logit;
}

static void check_at(const struct model *m, struct vit *v, int S)
{
    const int H = m->config.num_heads, T = vit_tokens(v, S);
    float *pixels = malloc(sizeof(float) * 3 * S * S), *cls = malloc(sizeof(float) * H * T);
    float *want = malloc(sizeof(float) * H * T), *plain = malloc(sizeof(float) * H * T), logit, explained;
    for (int i = 0; i < 3 * S * S; i++)
        pixels[i] = test_uniform(&rng, -2, 2);
    char err[256];
    const double ref = reference_forward(m, pixels, S, want, plain);
    CHECK(vit_forward(v, pixels, 1, S, &logit, err, sizeof err) == 0, "%s", err);
    CHECK(vit_explain(v, pixels, S, &explained, cls, NULL, err, sizeof err) == 0, "%s", err);
    double worst = 0, moved = 0;
    for (int i = 0; i < H * T; i++) {
        worst = fmax(worst, fabs((double)cls[i] - want[i]));
        moved = fmax(moved, fabs((double)want[i] - plain[i]));
    }
    printf("  %s at %d px (%d tokens): logit engine %.7f reference %.7f (|Δ| %.2g); explain |Δ CLS "
           "attention| %.2g, RoPE moves it by %.2g\n", m->config.name, S, T, logit, ref, fabs(logit - ref), worst, moved);
    CHECK(fabs(logit - ref) <= 1e-4 * (1 + fabs(ref)), "logit %.7f vs reference %.7f", logit, ref);
    CHECK(fabs(explained - ref) <= 1e-4 * (1 + fabs(ref)), "explain logit %.7f vs reference %.7f", explained, ref);
    CHECK(worst <= 1e-5, "explain: CLS attention after RoPE differs from the reference by %.3g", worst);
    CHECK(moved > 100 * 1e-5, "RoPE changes the CLS attention (by %.3g), so the check above can tell", moved);
    free(pixels), free(cls), free(want), free(plain);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    char err[512];
    struct model m;
    if (model_open(&m, argv[1], err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    CHECK(strcmp(m.config.name, "") != 0 && model_find(&m, "rope.periods") && !model_find(&m, "pos_embed"),
          "a dinov3 model: rope.periods, no pos_embed");
    struct backend be;
    struct vit *v;
    CHECK(backend_cpu_create(&be, env_options(), err, sizeof err) == 0, "%s", err);
    CHECK(vit_create(&v, &m, &be, err, sizeof err) == 0, "%s", err);
    CHECK(vit_uploaded_tensors(v) == m.n_tensors, "the engine took all %d tensors (%d)", m.n_tensors,
          vit_uploaded_tensors(v));
    const int S = m.config.input_size, P = m.config.patch_size;
    check_at(&m, v, S);
    check_at(&m, v, S - P); /* another grid: the RoPE table is recomputed */
    check_at(&m, v, S);     /* and back */
    vit_destroy(v);
    backend_destroy(&be);
    model_close(&m);
    return test_report("test_vit_dinov3");
}
