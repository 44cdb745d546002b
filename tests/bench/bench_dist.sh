#!/bin/sh
# Data-parallel throughput here, and on paper for clusters (make bench).
# Runs tests/bench/bench_dist.lua as one process on 1 and on 2 threads and
# as 2 ranks of 1 thread (mpirun), then tests/bench/dist_estimate.lua turns
# the measured step times, communication times and gradient sizes into
# estimates for 8 and 64 nodes on a 25 Gbit/s network. JSON lines.
cd "$(dirname "$0")/../.." || exit 1
kdseg=${KDSEG:-build/kdseg}
if ! command -v mpirun > /dev/null || [ ! -f "$(dirname "$kdseg")/kdseg-mpi.so" ]; then
    echo '{"bench":"dist_step","skipped":"no mpirun or kdseg-mpi.so (make installs Open MPI and builds it)"}'
    exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp); trap 'rm -f "$out"' EXIT
"$kdseg" --threads 1 tests/bench/bench_dist.lua | tee -a "$out"
"$kdseg" --threads 2 tests/bench/bench_dist.lua | tee -a "$out"
mpirun -np 2 --oversubscribe "$kdseg" --threads 1 tests/bench/bench_dist.lua | tee -a "$out"
"$kdseg" tests/bench/dist_estimate.lua "$out"
