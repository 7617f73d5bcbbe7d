/* libFuzzer target over stopcald's configuration: the input's lines are the command line (after
 * argv[0]); lines of the form STOPCAL_NAME=value set that environment variable instead (unset
 * again afterwards). → config_parse. A refusal must say why; an accepted
 * configuration must hold values inside its documented ranges. Built and run by run_fuzz.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define FUZZ_MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The variables this input set, so exactly those are unset after it. */
static char *set_names[FUZZ_MAX_ARGS];
static int n_set;

static void set_var(const char *name, const char *value)
{
    if (n_set == FUZZ_MAX_ARGS || setenv(name, value, 1) != 0)
        return;
    set_names[n_set] = strdup(name);
    if (!set_names[n_set])
        abort();
    n_set++;
}

static void unset_vars(void)
{
    while (n_set > 0) {
        char *name = set_names[--n_set];
        if (unsetenv(name) != 0 || getenv(name))
            abort();
        free(name);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    char *argv[FUZZ_MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "stopcald";
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && argc <= FUZZ_MAX_ARGS;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (strncmp(line, "STOPCAL_", 8) == 0 && eq) {
            *eq = '\0';
            set_var(line, eq + 1);
        } else {
            argv[argc++] = line;
        }
    }
    argv[argc] = NULL;
    /* --help and --version print to stdout; keep the fuzzer's output readable. */
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w");
    if (!stdout)
        abort();
    struct server_config c;
    char err[512];
    err[0] = '\0';
    int rc = config_parse(&c, argc, argv, err, sizeof err);
    fclose(stdout);
    stdout = saved;
    if (rc < 0 && err[0] == '\0')
        abort();
    if (rc == 0) {
        if (c.n_models < 1 || c.n_models > CONFIG_MAX_MODELS || c.max_images > c.max_queue || c.port < 0 ||
            c.port > 65535 || !memchr(c.device, '\0', sizeof c.device) || !memchr(c.host, '\0', sizeof c.host))
            abort();
        for (int i = 0; i < c.n_models; i++)
            if (!c.models[i].path[0] || !memchr(c.models[i].path, '\0', sizeof c.models[i].path))
                abort();
    }
    unset_vars();
    free(text);
    return 0;
}
