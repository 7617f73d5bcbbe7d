/* The instruction peaks a pass is measured against (bench_engine --peak): how many GFLOP/s this
 * CPU's multiply-add instructions deliver on `threads` threads when nothing else limits them —
 * register-only loops of independent accumulators, no memory traffic. A benchmark helper, not a
 * kernel: it computes nothing anyone reads. */
#ifndef STOPCAL_PEAK_FLOPS_H
#define STOPCAL_PEAK_FLOPS_H

/* fp32: vfmadd231ps on the widest vectors the CPU has (AVX-512, else AVX2; < 0 if neither);
 * bf16: vdpbf16ps on 512-bit vectors (< 0 without AVX512_BF16). Each the best of `reps` timed
 * runs of about `seconds` each. */
void peak_flops(int threads, int reps, double seconds, double *fp32_gflops, double *bf16_gflops);

#endif
