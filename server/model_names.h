/* Model names and aliases as requests spell them. A pipeline names its model the way cortExchange
 * does ("surf/dino_big_lora_..."), so names may hold '/': in a v2 path the route table's {model}
 * takes everything between "/v2/models/" and a known suffix (libmicrohttpd has already turned %2F
 * into '/', so a client may send the name encoded or not). Aliases map such names onto the served models; they
 * come from --alias ALIAS=NAME and from the model files themselves (models/FORMAT.md, version 2). */
#ifndef STOPCAL_SERVER_MODEL_NAMES_H
#define STOPCAL_SERVER_MODEL_NAMES_H

#include "model.h"

#include <stddef.h>

struct batcher;
struct server_config;

/* The rule for names and aliases is model_name_check (models/model.h). */

/* Register the --alias entries of cfg and the aliases recorded in each loaded model's file. A
 * command-line alias wins over a file's; an alias that names a loaded model, or that two files
 * claim for different models, is an error. Returns 0, or -1 with err. */
int model_aliases_apply(struct batcher *e, const struct server_config *cfg, char *err, size_t errlen);

/* "a, b (alias surf/x), c" for an error message naming what a request may ask for. */
void model_names_known(const struct batcher *e, char *out, size_t len);

#endif
