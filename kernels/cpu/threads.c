/* CPU budget discovery. Containers and Slurm both restrict CPUs without changing what nproc-style
 * core counts report, and oversubscribed BLAS threads are the classic way to lose half the speed. */
#include "threads.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

void openblas_set_num_threads(int num_threads);

/* cgroup v2 "cpu.max": "max 100000" or "<quota> <period>". */
static int cgroup_cpu_limit(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (!f)
        return 0;
    char quota[32];
    long period = 0;
    int limit = 0;
    if (fscanf(f, "%31s %ld", quota, &period) == 2 && period > 0 && quota[0] != 'm') {
        double cpus = atof(quota) / (double)period;
        limit = cpus < 1 ? 1 : (int)ceil(cpus);
    }
    fclose(f);
    return limit;
}

int threads_available_cpus(void)
{
    int n = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set);
    int quota = cgroup_cpu_limit();
    if (quota > 0 && quota < n)
        n = quota;
    const char *slurm = getenv("SLURM_CPUS_PER_TASK");
    if (slurm) {
        int s = atoi(slurm);
        if (s > 0 && s < n)
            n = s;
    }
    return n;
}

void threads_set_compute_threads(int n)
{
    if (n < 1)
        n = 1;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}
