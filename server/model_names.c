/* Model names with '/', v2 path splitting, and the alias table (model_names.h). */
#include "model_names.h"
#include "error_message.h"

#include "config.h"
#include "batcher.h"
#include "log.h"
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int model_aliases_apply(struct batcher *e, const struct server_config *cfg, char *err, size_t errlen)
{
    char why[512];
    for (int i = 0; i < cfg->n_aliases; i++) {
        const struct config_alias *a = &cfg->aliases[i];
        int target = batcher_find_model(e, a->target);
        if (target < 0) {
            char known[1024];
            model_names_known(e, known, sizeof known);
            return error_set(err, errlen, -1, "--alias %s=%s: no model '%s' is loaded (loaded: %s)", a->alias, a->target,
                        a->target, known);
        }
        if (batcher_add_alias(e, target, a->alias, why, sizeof why))
            return error_set(err, errlen, -1, "--alias %s=%s: %s", a->alias, a->target, why);
    }
    for (int i = 0; i < batcher_model_count(e); i++) {
        const struct batcher_model_info *m = batcher_model(e, i);
        for (int k = 0; k < m->config.n_aliases; k++) {
            const char *alias = m->config.aliases[k];
            int now = batcher_find_model(e, alias);
            if (now == i && strcmp(m->name, alias) != 0)
                continue;
            int on_command_line = 0;
            for (int j = 0; j < cfg->n_aliases; j++)
                on_command_line |= strcmp(cfg->aliases[j].alias, alias) == 0;
            if (on_command_line) {
                log_msg("info", "%s: the alias '%s' recorded in the file is overridden by --alias", m->path, alias);
                continue;
            }
            if (now >= 0)
                return error_set(err, errlen, -1, "%s: the alias '%s' recorded in the file already names the model '%s' "
                            "(choose with --alias %s=NAME)", m->path, alias, batcher_model(e, now)->name, alias);
            if (batcher_add_alias(e, i, alias, why, sizeof why))
                return error_set(err, errlen, -1, "%s: alias '%s': %s", m->path, alias, why);
        }
    }
    return 0;
}

void model_names_known(const struct batcher *e, char *out, size_t len)
{
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < batcher_model_count(e) && at < len; i++) {
        const struct batcher_model_info *m = batcher_model(e, i);
        at += (size_t)snprintf(out + at, len - at, "%s%s", i ? ", " : "", m->name);
        for (int k = 0; k < m->n_aliases && at < len; k++)
            at += (size_t)snprintf(out + at, len - at, "%s%s", k ? ", " : " (aliases: ", m->aliases[k]);
        if (m->n_aliases && at < len)
            at += (size_t)snprintf(out + at, len - at, ")");
    }
    if (at >= len && len > 4)
        memcpy(out + len - 4, "...", 4); /* cut short: say so */
}
