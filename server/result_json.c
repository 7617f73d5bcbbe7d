/* Building the result object. Scores are computed in double from the fp32 logit so that
 * continue_score + stop_probability is 1 to the last digit a reader will see. */
#include "result_json.h"

#include <math.h>
#include <stdio.h>

double result_continue_score(double logit)
{
    /* Both branches avoid exp overflow for large |logit|. */
    return logit >= 0 ? 1.0 / (1.0 + exp(-logit)) : exp(logit) / (1.0 + exp(logit));
}

void result_from_logit(struct stopcal_result *r, const char *name, double logit, double threshold,
                       const char *precision)
{
    r->precision = precision;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->logit = logit;
    r->continue_score = result_continue_score(logit);
    r->stop_probability = 1.0 - r->continue_score;
    r->threshold = threshold;
    r->stop = r->continue_score < threshold;
    r->has_rms = 0;
    r->rms = 0;
    r->nonfinite_pixels = 0;
}

json_t *result_to_json(const struct stopcal_result *r)
{
    return json_pack("{s:s, s:f, s:f, s:s, s:f, s:f, s:o, s:I, s:s}", "name", r->name, "continue_score",
                     r->continue_score, "stop_probability", r->stop_probability, "decision",
                     r->stop ? "stop" : "continue", "threshold", r->threshold, "logit", r->logit,
                     "rms", r->has_rms ? json_real(r->rms) : json_null(), "nonfinite_pixels",
                     (json_int_t)r->nonfinite_pixels, "precision", r->precision ? r->precision : "fp32");
}

json_t *result_model_identity(const struct model *m)
{
    return json_pack("{s:s, s:s}", "name", m->config.name, "sha256", m->sha256);
}
