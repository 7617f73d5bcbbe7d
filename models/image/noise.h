/* Seeded Gaussian noise for the opt-in noise_sigma of the preprocessing (ARCHITECTURE.md §4): xoshiro256**
 * seeded through splitmix64, normal deviates by Marsaglia's polar method. The same seed gives the same
 * noise on every platform with an IEEE double libm. Not torch.randn's stream: the reference's noise
 * was never reproducible, so only its distribution is matched. */
#ifndef STOPCAL_NOISE_H
#define STOPCAL_NOISE_H

#include <stddef.h>
#include <stdint.h>

struct noise_rng {
    uint64_t s[4];
    double spare; /* the polar method makes deviates in pairs */
    int has_spare;
};

void noise_rng_seed(struct noise_rng *r, uint64_t seed);

/* A standard normal deviate. */
double noise_gaussian(struct noise_rng *r);

/* x[i] += sigma · N(0, 1) for i < n, from the generator for (seed, stream). Each stream is its own
 * fixed sequence, so the preprocessing can give every image row its own (stream = row) and make rows
 * in any order with the same result. */
void noise_add_gaussian(double *x, size_t n, double sigma, uint64_t seed, uint64_t stream);

#endif
