/* A prediction request after its body has arrived: its route's parser turns the body into images
 * (a worker thread) → each FITS image is preprocessed (workers, in parallel) → the batcher's queue
 * → the batch → the route's answer (built on the inference thread, queued by the HTTP thread).
 * api_v1.c and api_v2.c fill a job; this module runs it. */
#ifndef STOPCAL_SERVER_JOB_H
#define STOPCAL_SERVER_JOB_H

#include "result_json.h"
#include "server.h"

struct job_image {
    struct batcher_item item;
    struct job *job;
    const unsigned char *bytes; /* FITS bytes inside the request body (or inflated); NULL for pixels */
    size_t len;
    unsigned char *inflated;    /* a gzip FITS file inflated by the server, within the budget */
    char name[256];
    float *tensor; /* (3, S, S) inside job->tensors */
    int has_rms;
    double rms;
    long nonfinite;
    int prep_status; /* HTTP status of a preprocessing failure; 0 = fine */
    char prep_err[320];
    struct batcher_explain explain; /* /v1/explain: what the batcher fills for this image */
};

struct job {
    struct request *rq;
    struct server *srv;
    int model;
    int size; /* S */
    double threshold;
    int n;
    struct job_image *images;
    float *tensors;
    atomic_int pending; /* preprocessing tasks, then batcher items, not finished yet */
    /* v2 only */
    json_t *v2_id;     /* the request's "id", echoed */
    int want_score, want_logit;
    int binary_score, binary_logit;
    double t_body, t_prep_done;
    float *explain_rows; /* /v1/explain: every image's batcher_explain rows, owned */
};

/* How a request fails: the HTTP status and the message of its {"error"} body. */
struct failure {
    int status;
    char msg[512];
};

/* Fill f and return −1. */
int failf(struct failure *f, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

const struct batcher_model_info *job_model(const struct job *j);

/* Room for n images of the model: the tensors, and extra_bytes more of the memory budget (a bound
 * on the decoded FITS pixels). 0, or −1 with the answer in f (503). */
int job_alloc_images(struct job *j, int n, long long extra_bytes, struct failure *f);

/* The memory a FITS file of len bytes may take while it is decoded. */
long long job_fits_decode_estimate(const struct server_config *cfg, size_t len);

/* Image i's result object, and the queue and inference times of the whole job. */
void job_fill_result(const struct job *j, int i, struct stopcal_result *r);
void job_timing(const struct job *j, double *queue, double *infer);

/* Start the work for a complete POST body (on a worker thread): the request's route parses it. */
void job_start(void *request);
/* Free the job attached to rq (HTTP thread, when the request completes). */
void job_free(struct request *rq);

#endif
