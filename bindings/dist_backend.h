/* dist_backend.h - what kdseg needs from MPI, as a table of functions.
 * bindings/mpi/kdseg_mpi.c, built into build/kdseg-mpi.so against Open MPI,
 * fills it in; kdseg loads that plugin only when an MPI launcher (mpirun,
 * srun) started it, so the kdseg binary itself does not need MPI. */
#ifndef KD_DIST_BACKEND_H
#define KD_DIST_BACKEND_H

typedef enum { KD_DIST_F32, KD_DIST_F64, KD_DIST_I32, KD_DIST_I64, KD_DIST_U8 } kd_dist_type;
typedef enum { KD_DIST_SUM, KD_DIST_MAX, KD_DIST_MIN } kd_dist_op;

typedef struct {
    int rank, size;
    int local_rank, local_size; /* among the processes of this node */
    /* Each returns 0, or nonzero with message() saying why. Every process
     * makes the same calls in the same order (MPI's collectives). */
    int (*all_reduce)(void *data, long count, kd_dist_type type, kd_dist_op op); /* in place */
    int (*broadcast)(void *data, long bytes, int root);
    int (*barrier)(void);
    /* A sum over all processes of a float buffer, in place, that runs while
     * the caller goes on; *request names it for test and wait. */
    int (*start_sum)(float *data, long count, int *request);
    int (*test)(int request, int *done); /* lets it progress */
    int (*wait)(int request);
    /* At exit: MPI_Finalize with status 0, else MPI_Abort(status), which
     * ends every process of the job. */
    void (*finish)(int status);
    const char *(*message)(void);
} kd_dist_backend;

/* The plugin's one symbol: initialises MPI and fills b, or returns nonzero
 * with a message in b->message(). */
typedef int (*kd_dist_open_fn)(kd_dist_backend *b);
#define KD_DIST_OPEN_SYMBOL "kd_dist_open"

#endif
