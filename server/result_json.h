/* The one result object (ARCHITECTURE.md §6), the same in stopcald, stopcal-infer --json and the client:
 * {"name", "continue_score", "stop_probability", "decision", "threshold", "logit", "rms",
 *  "nonfinite_pixels", "precision"}; precision is what the logit was computed in ("fp32", "bf16"). */
#ifndef STOPCAL_RESULT_JSON_H
#define STOPCAL_RESULT_JSON_H

#include "model.h"

#include <jansson.h>

struct stopcal_result {
    char name[256];
    double logit;
    double continue_score;   /* sigmoid(logit): the reference's "continue" score */
    double stop_probability; /* 1 − continue_score */
    double threshold;
    int stop;                /* continue_score < threshold */
    int has_rms;             /* 0 when the input was already-preprocessed pixels */
    double rms;
    long nonfinite_pixels;
    const char *precision;   /* backend_precision_name() of the backend that ran: "fp32", "bf16" */
};

/* sigmoid(logit), the continue score, without exp overflow for large |logit|. */
double result_continue_score(double logit);

/* Fill the scores and decision from a logit computed in precision ("fp32", "bf16"). */
void result_from_logit(struct stopcal_result *r, const char *name, double logit, double threshold,
                       const char *precision);

/* New JSON object for r (caller owns the reference), or NULL when out of memory. */
json_t *result_to_json(const struct stopcal_result *r);

/* {"name", "sha256"} of a model, so every answer can be traced to its exact weights. */
json_t *result_model_identity(const struct model *m);

#endif
