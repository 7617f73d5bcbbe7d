/* A small, fast, well-tested generator (xoshiro256**, Blackman & Vigna) and the polar method; kept
 * here rather than using rand_r/drand48 so the stream is ours, thread-local and identical everywhere. */
#include "noise.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(struct noise_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in (−1, 1) with 53 random bits. */
static double uniform_pm1(struct noise_rng *r)
{
    return (double)(next_u64(r) >> 11) * 0x1.0p-52 - 1.0;
}

void noise_rng_seed(struct noise_rng *r, uint64_t seed)
{
    uint64_t st = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&st);
    r->has_spare = 0;
    r->spare = 0.0;
}

double noise_gaussian(struct noise_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u, v, s;
    do {
        u = uniform_pm1(r);
        v = uniform_pm1(r);
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    r->spare = v * f;
    r->has_spare = 1;
    return u * f;
}

void noise_add_gaussian(double *x, size_t n, double sigma, uint64_t seed, uint64_t stream)
{
    struct noise_rng r;
    uint64_t mix = stream;
    noise_rng_seed(&r, seed ^ splitmix64(&mix));
    for (size_t i = 0; i < n; i++)
        x[i] += sigma * noise_gaussian(&r);
}
