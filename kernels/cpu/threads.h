/* How many CPUs this process may really use: the affinity mask, the cgroup CPU quota and
 * SLURM_CPUS_PER_TASK, whichever is smallest — never the machine's core count. */
#ifndef STOPCAL_THREADS_H
#define STOPCAL_THREADS_H

/* Always ≥ 1. */
int threads_available_cpus(void);

/* Set the thread count used by OpenBLAS and by our OpenMP loops to the same n, so the two never
 * oversubscribe the cores. */
void threads_set_compute_threads(int n);

#endif
