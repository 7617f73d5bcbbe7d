/* An explain result made into the files a user gets: the FITS map on the input's pixel grid (with
 * its WCS) and the PNG picture. Shared by stopcald and stopcal-infer. */
#ifndef STOPCAL_EXPLAIN_OUTPUT_H
#define STOPCAL_EXPLAIN_OUTPUT_H

#include <stddef.h>

#include "explain_result.h"
#include "image.h"

struct explain_output_meta {
    const char *model, *sha256;
    double continue_score, threshold;
    const char *decision;
};

/* rollout: map the rollout instead of the last block's CLS attention (r must have one);
 * all_heads: one plane per head (last block only). img: the decoded input; bytes/len: its FITS
 * file (gzip allowed, inflated under max_bytes) for the WCS. On 0, *out (malloc'd) holds *out_len
 * bytes; -1 with err otherwise. */
int explain_make_fits(const struct explain_result *r, int rollout, int all_heads, const struct image *img,
                      const void *bytes, size_t len, size_t max_bytes, const struct explain_output_meta *meta,
                      unsigned char **out, size_t *out_len, char *err, size_t errlen);

int explain_make_png(const struct explain_result *r, int rollout, const struct image *img,
                     const struct explain_output_meta *meta, unsigned char **out, size_t *out_len, char *err,
                     size_t errlen);

/* Bytes explain_make_fits / explain_make_png hold at once for an image of w × h pixels (for the
 * server's memory budget). */
size_t explain_output_bytes(long long width, long long height, int planes);

#endif
