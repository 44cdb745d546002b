/* kdseg_mpi.c - the MPI plugin (build/kdseg-mpi.so): kd_dist_backend's
 * functions on Open MPI. Only the calling thread talks to MPI
 * (MPI_THREAD_FUNNELED): OpenMP and the loader's threads never do. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dist_backend.h"

static char message_text[MPI_MAX_ERROR_STRING + 128];
static MPI_Request *requests;
static int request_count, request_capacity;

static const char *message(void) { return message_text; }

/* 0, or 1 with the MPI error's text as the message */
static int check(int code, const char *what) {
    if (code == MPI_SUCCESS) return 0;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    snprintf(message_text, sizeof message_text, "%s: %.*s", what, len, text);
    return 1;
}

static MPI_Datatype mpi_type(kd_dist_type t) {
    switch (t) {
    case KD_DIST_F32: return MPI_FLOAT;
    case KD_DIST_F64: return MPI_DOUBLE;
    case KD_DIST_I32: return MPI_INT32_T;
    case KD_DIST_I64: return MPI_INT64_T;
    default: return MPI_UINT8_T;
    }
}

static MPI_Op mpi_op(kd_dist_op op) { return op == KD_DIST_MAX ? MPI_MAX : op == KD_DIST_MIN ? MPI_MIN : MPI_SUM; }

/* MPI counts are int: a long buffer goes in pieces of at most 2^30 elements */
#define PIECE (1L << 30)

static int all_reduce(void *data, long count, kd_dist_type type, kd_dist_op op) {
    int size;
    MPI_Type_size(mpi_type(type), &size);
    for (long at = 0; at < count; at += PIECE) {
        int n = (int)(count - at < PIECE ? count - at : PIECE);
        if (check(MPI_Allreduce(MPI_IN_PLACE, (char *)data + at * size, n, mpi_type(type), mpi_op(op), MPI_COMM_WORLD),
                  "MPI_Allreduce"))
            return 1;
    }
    return 0;
}

static int broadcast(void *data, long bytes, int root) {
    for (long at = 0; at < bytes; at += PIECE) {
        int n = (int)(bytes - at < PIECE ? bytes - at : PIECE);
        if (check(MPI_Bcast((char *)data + at, n, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast")) return 1;
    }
    return 0;
}

static int barrier(void) { return check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

static int start_sum(float *data, long count, int *request) {
    if (count > PIECE) {
        snprintf(message_text, sizeof message_text, "MPI_Iallreduce: %ld values in one bucket, at most %ld", count, PIECE);
        return 1;
    }
    if (request_count == request_capacity) {
        int capacity = request_capacity ? 2 * request_capacity : 64;
        MPI_Request *grown = realloc(requests, sizeof(MPI_Request) * (size_t)capacity);
        if (!grown) {
            snprintf(message_text, sizeof message_text, "MPI_Iallreduce: cannot allocate requests");
            return 1;
        }
        requests = grown, request_capacity = capacity;
    }
    /* requests are numbered per step: a test or wait of the last one frees the list */
    *request = request_count;
    return check(MPI_Iallreduce(MPI_IN_PLACE, data, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                &requests[request_count++]),
                 "MPI_Iallreduce");
}

static int test(int request, int *done) {
    if (request < 0 || request >= request_count) return *done = 1, 0;
    return check(MPI_Test(&requests[request], done, MPI_STATUS_IGNORE), "MPI_Test");
}

static int wait_for(int request) {
    if (request < 0 || request >= request_count) return 0;
    int failed = check(MPI_Wait(&requests[request], MPI_STATUS_IGNORE), "MPI_Wait");
    if (request == request_count - 1) request_count = 0; /* the step's last: all are done */
    return failed;
}

static void finish(int status) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
    MPI_Finalize();
}

int kd_dist_open(kd_dist_backend *b);
int kd_dist_open(kd_dist_backend *b) {
    memset(b, 0, sizeof *b);
    b->message = message;
    int provided = 0;
    if (check(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread")) return 1;
    /* errors come back as codes, turned into messages by the callers */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &b->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b->size);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, b->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &b->local_rank);
        MPI_Comm_size(node, &b->local_size);
        MPI_Comm_free(&node);
    } else {
        b->local_rank = b->rank, b->local_size = b->size;
    }
    b->all_reduce = all_reduce;
    b->broadcast = broadcast;
    b->barrier = barrier;
    b->start_sum = start_sum;
    b->test = test;
    b->wait = wait_for;
    b->finish = finish;
    return 0;
}
