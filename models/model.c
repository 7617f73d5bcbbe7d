/* The safetensors reader: maps the file, checks the container byte by byte (header, dtypes,
 * offsets that tile the data section), then checks the tensor set and every shape against what
 * stopcal.config implies. Refusals name the problem; nothing is half-loaded. */
#include "model.h"
#include "error_message.h"

#include "family.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER_BYTES (100u << 20)

static size_t dtype_size(enum model_dtype d) { return d == MODEL_F32 ? 4 : 2; }

static int parse_dtype(const char *s, enum model_dtype *d)
{
    if (strcmp(s, "F32") == 0)
        *d = MODEL_F32;
    else if (strcmp(s, "F16") == 0)
        *d = MODEL_F16;
    else if (strcmp(s, "BF16") == 0)
        *d = MODEL_BF16;
    else
        return -1;
    return 0;
}

size_t model_tensor_numel(const struct model_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

/* ---- the tensor set a config implies: the family's table in the description (family.h) ---- */

static void format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

static int check_tensor_set(const struct model *m, char *err, size_t errlen)
{
    struct family_tensor *e;
    int n = family_tensors(&m->config, &e, err, errlen), rc = -1;
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        const struct model_tensor *t = model_find(m, e[i].name);
        if (!t) {
            error_set(err, errlen, -1, "missing tensor \"%s\" (the config implies it)", e[i].name);
            goto done;
        }
        int same = t->ndim == e[i].ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = t->shape[d] == e[i].shape[d];
        if (!same) {
            char have[96], want[96];
            format_shape(have, sizeof have, t->ndim, t->shape);
            format_shape(want, sizeof want, e[i].ndim, e[i].shape);
            error_set(err, errlen, -1, "tensor \"%s\" has shape %s but the config implies %s", t->name, have, want);
            goto done;
        }
        if (e[i].spec->f32_only && t->dtype != MODEL_F32) {
            error_set(err, errlen, -1, "tensor \"%s\" must be stored as F32 (it holds the values of a formula, "
                      "which a narrower type would move); this file stores it as %s", t->name,
                      t->dtype == MODEL_F16 ? "F16" : "BF16");
            goto done;
        }
    }
    for (int j = 0; j < m->n_tensors; j++) {
        int known = 0;
        for (int i = 0; i < n && !known; i++)
            known = strcmp(m->tensors[j].name, e[i].name) == 0;
        if (!known) {
            error_set(err, errlen, -1, "unexpected tensor \"%s\" (not part of the configured architecture)",
                 m->tensors[j].name);
            goto done;
        }
    }
    rc = 0;
done:
    free(e);
    return rc;
}

/* ---- the container ---- */

static int parse_tensor_entry(struct model_tensor *t, const char *name, json_t *v, char *err,
                              size_t errlen, size_t *begin, size_t *end)
{
    if (strlen(name) >= sizeof t->name)
        return error_set(err, errlen, -1, "tensor name \"%.40s...\" is too long", name);
    snprintf(t->name, sizeof t->name, "%s", name);
    json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offsets = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dtype) || !json_is_array(shape) ||
        !json_is_array(offsets))
        return error_set(err, errlen, -1, "tensor \"%s\": header entry needs dtype, shape and data_offsets", name);
    if (parse_dtype(json_string_value(dtype), &t->dtype))
        return error_set(err, errlen, -1, "tensor \"%s\": dtype \"%s\" is not supported (F32, F16 or BF16)", name,
                    json_string_value(dtype));
    if (json_array_size(shape) > 4)
        return error_set(err, errlen, -1, "tensor \"%s\": shape has %zu dimensions (at most 4)", name,
                    json_array_size(shape));
    t->ndim = (int)json_array_size(shape);
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *x = json_array_get(shape, (size_t)d);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > (1LL << 40))
            return error_set(err, errlen, -1, "tensor \"%s\": shape[%d] is not a valid dimension", name, d);
        t->shape[d] = json_integer_value(x);
        if (t->shape[d] != 0 && numel > SIZE_MAX / 8 / (size_t)t->shape[d])
            return error_set(err, errlen, -1, "tensor \"%s\": shape overflows", name);
        numel *= (size_t)t->shape[d];
    }
    json_t *b = json_array_get(offsets, 0), *e = json_array_get(offsets, 1);
    if (json_array_size(offsets) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < json_integer_value(b))
        return error_set(err, errlen, -1, "tensor \"%s\": data_offsets must be [begin, end] with 0 <= begin <= end "
                    "(offsets)", name);
    *begin = (size_t)json_integer_value(b);
    *end = (size_t)json_integer_value(e);
    t->nbytes = *end - *begin;
    if (t->nbytes != numel * dtype_size(t->dtype))
        return error_set(err, errlen, -1, "tensor \"%s\": byte length %zu does not match shape x dtype (%zu)", name,
                    t->nbytes, numel * dtype_size(t->dtype));
    return 0;
}

struct span { size_t begin, end; int index; };

static int compare_spans(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* The tensors must tile the data section exactly: sorted, no overlap, no gap, no tail. */
static int check_tiling(struct model *m, struct span *spans, size_t data_len, char *err, size_t errlen)
{
    qsort(spans, (size_t)m->n_tensors, sizeof *spans, compare_spans);
    size_t expected = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const char *name = m->tensors[spans[i].index].name;
        if (spans[i].end > data_len)
            return error_set(err, errlen, -1, "truncated: tensor \"%s\" ends at data offset %zu but the file holds "
                        "only %zu data bytes", name, spans[i].end, data_len);
        if (spans[i].begin < expected)
            return error_set(err, errlen, -1, "offsets: tensor \"%s\" [%zu, %zu) overlaps the tensor before it", name,
                        spans[i].begin, spans[i].end);
        if (spans[i].begin > expected)
            return error_set(err, errlen, -1, "offsets: %zu unused bytes before tensor \"%s\"",
                        spans[i].begin - expected, name);
        expected = spans[i].end;
    }
    if (expected != data_len)
        return error_set(err, errlen, -1, "offsets: %zu trailing bytes after the last tensor", data_len - expected);
    return 0;
}

static int parse_metadata(struct model *m, json_t *meta, char *err, size_t errlen)
{
    json_t *cfg = json_is_object(meta) ? json_object_get(meta, "stopcal.config") : NULL;
    if (!cfg || !json_is_string(cfg))
        return error_set(err, errlen, -1, "no stopcal.config string in __metadata__: not a stopcal model file "
                    "(convert it with stopcal-convert)");
    m->config_json = strdup(json_string_value(cfg));
    if (!m->config_json)
        return error_set(err, errlen, -1, "out of memory");
    return model_config_parse(&m->config, m->config_json, err, errlen);
}

static int parse_container(struct model *m, char *err, size_t errlen)
{
    const unsigned char *bytes = m->map;
    if (m->map_len < 8)
        return error_set(err, errlen, -1, "truncated: the file is %zu bytes, shorter than the 8-byte header length",
                    m->map_len);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | bytes[i];
    if (header_len > MAX_HEADER_BYTES || header_len > m->map_len - 8)
        return error_set(err, errlen, -1, "header length %llu runs past the end of the %zu-byte file%s",
                    (unsigned long long)header_len, m->map_len,
                    header_len > m->map_len - 8 && header_len <= MAX_HEADER_BYTES ? " (truncated?)" : "");
    json_error_t jerr;
    json_t *root = json_loadb((const char *)bytes + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return error_set(err, errlen, -1, "header is not valid JSON: %s (column %d)", jerr.text, jerr.column);
    int rc = -1;
    struct span *spans = NULL;
    if (!json_is_object(root)) {
        error_set(err, errlen, -1, "header is not a JSON object");
        goto done;
    }
    size_t n = json_object_size(root);
    json_t *meta = json_object_get(root, "__metadata__");
    if (meta)
        n--;
    m->tensors = calloc(n ? n : 1, sizeof *m->tensors);
    spans = calloc(n ? n : 1, sizeof *spans);
    if (!m->tensors || !spans) {
        error_set(err, errlen, -1, "out of memory reading the header");
        goto done;
    }
    const char *key;
    json_t *value;
    const unsigned char *data = bytes + 8 + header_len;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        struct model_tensor *t = &m->tensors[m->n_tensors];
        struct span *s = &spans[m->n_tensors];
        if (parse_tensor_entry(t, key, value, err, errlen, &s->begin, &s->end))
            goto done;
        s->index = m->n_tensors++;
    }
    if (check_tiling(m, spans, m->map_len - 8 - (size_t)header_len, err, errlen))
        goto done;
    /* Only now are the offsets known to lie inside the file. */
    for (int i = 0; i < m->n_tensors; i++)
        m->tensors[spans[i].index].data = data + spans[i].begin;
    if (parse_metadata(m, meta, err, errlen) || check_tensor_set(m, err, errlen))
        goto done;
    rc = 0;
done:
    free(spans);
    json_decref(root);
    return rc;
}

/* F32 tensors are used in place when aligned; the rest is copied once. */
static int align_tensors(struct model *m, char *err, size_t errlen)
{
    for (int i = 0; i < m->n_tensors; i++) {
        struct model_tensor *t = &m->tensors[i];
        if (((uintptr_t)t->data & 3) == 0)
            continue;
        t->copy = malloc(t->nbytes ? t->nbytes : 1);
        if (!t->copy)
            return error_set(err, errlen, -1, "out of memory copying tensor \"%s\"", t->name);
        memcpy(t->copy, t->data, t->nbytes);
        t->data = t->copy;
    }
    return 0;
}

/* The data section against the digest the writer recorded (format_version 2): one flipped bit in
 * a weight on shared storage would otherwise load and serve wrong answers. Run after every
 * structural check, so a malformed file is refused for what is wrong with it. */
static int verify_data_digest(struct model *m, char *err, size_t errlen)
{
    const char *want = m->config.tensor_data_sha256;
    if (!want[0])
        return 0;
    const unsigned char *bytes = m->map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | bytes[i];
    char got[65];
    sha256_hex(bytes + 8 + header_len, m->map_len - 8 - (size_t)header_len, got);
    if (strcmp(got, want) != 0)
        return error_set(err, errlen, -1, "corrupted: the tensor data hashes to SHA-256 %.16s... but the file "
                    "recorded %.16s... when it was written (a damaged or altered copy); refusing it",
                    got, want);
    m->data_verified = 1;
    return 0;
}

static int finish_open(struct model *m, char *err, size_t errlen)
{
    if (parse_container(m, err, errlen) || verify_data_digest(m, err, errlen) ||
        align_tensors(m, err, errlen)) {
        model_close(m);
        return -1;
    }
    sha256_hex(m->map, m->map_len, m->sha256);
    return 0;
}

const char *model_digest_note(const struct model *m)
{
    if (m->data_verified)
        return NULL;
    return m->config.format_version < 2
               ? "no tensor data digest (a format_version 1 file): a corrupted weight cannot be detected; "
                 "rewrite it with stopcal-convert or stopcal-genmodel to record one"
               : "no tensor data digest recorded in this file: a corrupted weight cannot be detected";
}

int model_open(struct model *m, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set(err, errlen, -1, "cannot open model %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return error_set(err, errlen, -1, "model %s is not a regular file", path);
    }
    m->map_len = (size_t)st.st_size;
    if (m->map_len > 0) {
        m->map = mmap(NULL, m->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->map == MAP_FAILED) {
            m->map = NULL;
            close(fd);
            return error_set(err, errlen, -1, "cannot map model %s: %s", path, strerror(errno));
        }
    }
    close(fd);
    return finish_open(m, err, errlen);
}

int model_open_buffer(struct model *m, const void *bytes, size_t len, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "(memory)");
    /* Anonymous mapping so model_close releases both kinds the same way. */
    if (len > 0) {
        m->map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m->map == MAP_FAILED) {
            m->map = NULL;
            return error_set(err, errlen, -1, "out of memory for a %zu-byte model", len);
        }
        memcpy(m->map, bytes, len);
    }
    m->map_len = len;
    return finish_open(m, err, errlen);
}

void model_close(struct model *m)
{
    for (int i = 0; i < m->n_tensors; i++)
        free(m->tensors[i].copy);
    free(m->tensors);
    free(m->config_json);
    if (m->map)
        munmap(m->map, m->map_len);
    memset(m, 0, sizeof *m);
}

const struct model_tensor *model_find(const struct model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | mantissa << 13;
    } else if (exponent != 0) {
        bits = sign | (exponent + 112) << 23 | mantissa << 13;
    } else if (mantissa == 0) {
        bits = sign;
    } else { /* subnormal: renormalise */
        int shift = 0;
        while (!(mantissa & 0x400)) {
            mantissa <<= 1;
            shift++;
        }
        bits = sign | (uint32_t)(113 - shift) << 23 | (mantissa & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void model_tensor_to_f32(const struct model_tensor *t, float *out)
{
    size_t n = model_tensor_numel(t);
    const unsigned char *p = t->data;
    if (t->dtype == MODEL_F32) {
        memcpy(out, p, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t v = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        if (t->dtype == MODEL_BF16) {
            uint32_t bits = (uint32_t)v << 16;
            memcpy(&out[i], &bits, 4);
        } else {
            out[i] = half_to_float(v);
        }
    }
}
