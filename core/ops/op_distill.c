/* op_distill.c - pair-wise (structured) distillation, after Liu et al.,
 * "Structured Knowledge Distillation for Semantic Segmentation" (CVPR 2019):
 * both feature maps are pooled into the same grid of M nodes; the student is
 * pushed to reproduce the teacher's cosine similarity between every pair.
 *
 * Per image, with nodes p_i (C values each) and r_i = sqrt(|p_i|^2 + eps):
 *   q_i = p_i / r_i,  S_ij = q_i . q_j,  loss = sum_n,i,j (S_s - S_t)^2 / (N M^2)
 *   dL/dS = G = 2 (S_s - S_t) / (N M^2)        (symmetric)
 *   dL/dq_i = 2 sum_j G_ij q_j
 *   dL/dp_i = dL/dq_i / r_i - p_i (p_i . dL/dq_i) / r_i^3
 * or, with the norm taken as a constant (the paper's code detaches it),
 *   dL/dp_i = dL/dq_i / r_i
 * kd_pairwise_distill pools by averaging over a grid; kd_pairwise_similarity
 * takes nodes pooled by the caller (the paper's max pooling, in Lua). */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

#define NORM_EPS 1e-8f

/* p: C x M (one image), q: M x C out, node-major so dot products are contiguous. */
static void normalise_nodes(const float *p, int C, int M, float *q, float *r) {
    for (int i = 0; i < M; i++) {
        double sq = 0;
        for (int c = 0; c < C; c++) sq += (double)p[(size_t)c * M + i] * p[(size_t)c * M + i];
        r[i] = sqrtf((float)sq + NORM_EPS);
        for (int c = 0; c < C; c++) q[(size_t)i * C + c] = p[(size_t)c * M + i] / r[i];
    }
}

static void similarity(const float *q, int C, int M, float *S) {
    for (int i = 0; i < M; i++)
        for (int j = i; j < M; j++) {
            float dot = 0;
            for (int c = 0; c < C; c++) dot += q[(size_t)i * C + c] * q[(size_t)j * C + c];
            S[(size_t)i * M + j] = S[(size_t)j * M + i] = dot;
        }
}

typedef struct {
    float *qs, *qt, *rs, *rt, *ss, *st;
} scratch;

static bool scratch_alloc(scratch *w, int cs, int ct, int M) {
    w->qs = malloc(sizeof(float) * (size_t)M * cs);
    w->qt = malloc(sizeof(float) * (size_t)M * ct);
    w->rs = malloc(sizeof(float) * (size_t)M);
    w->rt = malloc(sizeof(float) * (size_t)M);
    w->ss = malloc(sizeof(float) * (size_t)M * M);
    w->st = malloc(sizeof(float) * (size_t)M * M);
    return w->qs && w->qt && w->rs && w->rt && w->ss && w->st;
}

static void scratch_free(scratch *w) {
    free(w->qs), free(w->qt), free(w->rs), free(w->rt), free(w->ss), free(w->st);
}

/* One image's similarity matrices from its pooled student and teacher nodes. */
static void image_similarities(const kd_tensor *ps, const kd_tensor *pt, int n, scratch *w) {
    int cs = ps->shape[1], ct = pt->shape[1], M = ps->shape[2] * ps->shape[3];
    normalise_nodes(kd_f32(ps) + (size_t)n * cs * M, cs, M, w->qs, w->rs);
    normalise_nodes(kd_f32(pt) + (size_t)n * ct * M, ct, M, w->qt, w->rt);
    similarity(w->qs, cs, M, w->ss);
    similarity(w->qt, ct, M, w->st);
}

/* dL/dp for one side; the other side's gradient swaps Ss and St. */
static void node_gradient(const float *p, const float *q, const float *r, const float *Ss,
                          const float *St, float scale, int C, int M, bool detach_norm, float *gp) {
    for (int i = 0; i < M; i++) {
        float dot = 0;
        float dq[1024];
        float *dqi = C <= 1024 ? dq : malloc(sizeof(float) * (size_t)C);
        if (!dqi) continue; /* cannot happen for realistic widths; skip rather than crash */
        for (int c = 0; c < C; c++) dqi[c] = 0;
        for (int j = 0; j < M; j++) {
            /* 2 G_ij with G = 2 scale (S_s - S_t) */
            float gij = 4.0f * scale * (Ss[(size_t)i * M + j] - St[(size_t)i * M + j]);
            for (int c = 0; c < C; c++) dqi[c] += gij * q[(size_t)j * C + c];
        }
        if (detach_norm)
            for (int c = 0; c < C; c++) gp[(size_t)c * M + i] += dqi[c] / r[i];
        else {
            for (int c = 0; c < C; c++) dot += p[(size_t)c * M + i] * dqi[c];
            for (int c = 0; c < C; c++)
                gp[(size_t)c * M + i] += dqi[c] / r[i] - p[(size_t)c * M + i] * dot / (r[i] * r[i] * r[i]);
        }
        if (dqi != dq) free(dqi);
    }
}

/* Saved: pooled student, pooled teacher (N x C x gh x gw each); ints[0]:
 * whether the norms are constants. */
static kd_status similarity_loss_backward(kd_node *node, const kd_tensor *grad_output,
                                          kd_tensor *const *grad_inputs) {
    const kd_tensor *ps = node->saved[0], *pt = node->saved[1];
    int N = ps->shape[0], cs = ps->shape[1], ct = pt->shape[1], M = ps->shape[2] * ps->shape[3];
    float scale = kd_f32(grad_output)[0] / ((float)N * M * M);
    scratch w;
    if (!scratch_alloc(&w, cs, ct, M)) {
        scratch_free(&w);
        return kd_fail(KD_ERR_MEMORY, "pairwise_distill backward: cannot allocate %d x %d matrices", M, M);
    }
    for (int n = 0; n < N; n++) {
        image_similarities(ps, pt, n, &w);
        if (grad_inputs[0])
            node_gradient(kd_f32(ps) + (size_t)n * cs * M, w.qs, w.rs, w.ss, w.st, scale, cs, M, node->ints[0],
                          kd_f32(grad_inputs[0]) + (size_t)n * cs * M);
        if (grad_inputs[1])
            node_gradient(kd_f32(pt) + (size_t)n * ct * M, w.qt, w.rt, w.st, w.ss, scale, ct, M, node->ints[0],
                          kd_f32(grad_inputs[1]) + (size_t)n * ct * M);
    }
    scratch_free(&w);
    return KD_OK;
}

/* The M x M similarities grow as the square of the nodes: past this many
 * nodes a request is a mistake (the papers pool to a handful), not a job. */
#define MAX_NODES 4096

static kd_status similarity_loss(kd_tensor *ps, kd_tensor *pt, bool detach_norm, kd_tensor **out) {
    int N = ps->shape[0], cs = ps->shape[1], ct = pt->shape[1], M = ps->shape[2] * ps->shape[3];
    if (M > MAX_NODES)
        return kd_fail(KD_ERR_SHAPE, "pairwise_distill: %d x %d = %d nodes, at most %d (pool the features first)",
                       ps->shape[2], ps->shape[3], M, MAX_NODES);
    int one[1] = {1};
    kd_status s = kd_tensor_new(KD_F32, 1, one, out);
    if (s) return s;
    scratch w;
    if (!scratch_alloc(&w, cs, ct, M)) {
        scratch_free(&w);
        kd_tensor_release(*out);
        *out = NULL;
        return kd_fail(KD_ERR_MEMORY, "pairwise_distill: cannot allocate %d x %d matrices", M, M);
    }
    double total = 0;
    for (int n = 0; n < N; n++) {
        image_similarities(ps, pt, n, &w);
        for (size_t i = 0; i < (size_t)M * M; i++) total += (double)(w.ss[i] - w.st[i]) * (w.ss[i] - w.st[i]);
    }
    scratch_free(&w);
    kd_f32(*out)[0] = (float)(total / ((double)N * M * M));
    kd_tensor *inputs[2] = {ps, pt};
    kd_node *node;
    s = kd_finish_op("pairwise_distill", similarity_loss_backward, out, 2, inputs, 2, inputs, &node);
    if (node) node->ints[0] = detach_norm;
    return s;
}

/* Both maps float32 N x C x H x W; what: how messages name them. */
static kd_status check_maps(const char *op, const char *student_what, const kd_tensor *student,
                            const char *teacher_what, const kd_tensor *teacher) {
    kd_status s;
    if ((s = kd_check_f32(op, student_what, student)) || (s = kd_check_f32(op, teacher_what, teacher)) ||
        (s = kd_check_ndim(op, student_what, student, 4)) || (s = kd_check_ndim(op, teacher_what, teacher, 4)))
        return s;
    return KD_OK;
}

kd_status kd_pairwise_distill(kd_tensor *student, kd_tensor *teacher, int grid_h, int grid_w,
                              kd_tensor **out) {
    const char *op = "pairwise_distill";
    kd_status s = check_maps(op, "student features", student, "teacher features", teacher);
    if (s) return s;
    if (student->shape[0] != teacher->shape[0] || student->shape[0] < 1)
        return kd_fail(KD_ERR_SHAPE, "%s: student %s and teacher %s must have the same batch", op,
                       kd_shape_str(student), kd_shape_str(teacher));
    /* a grid finer than the features would compare repeated cells */
    int h = student->shape[2] < teacher->shape[2] ? student->shape[2] : teacher->shape[2];
    int w = student->shape[3] < teacher->shape[3] ? student->shape[3] : teacher->shape[3];
    if (grid_h < 1 || grid_w < 1 || grid_h > h || grid_w > w)
        return kd_fail(KD_ERR_SHAPE, "%s: grid %dx%d must be at least 1x1 and at most the features %s and %s", op,
                       grid_h, grid_w, kd_shape_str(student), kd_shape_str(teacher));
    kd_tensor *ps = NULL, *pt = NULL;
    if ((s = kd_adaptive_avg_pool2d(student, grid_h, grid_w, &ps)) ||
        (s = kd_adaptive_avg_pool2d(teacher, grid_h, grid_w, &pt))) {
        kd_tensor_release(ps);
        return s;
    }
    s = similarity_loss(ps, pt, false, out);
    kd_tensor_release(ps);
    kd_tensor_release(pt);
    return s;
}

kd_status kd_pairwise_similarity(kd_tensor *student_nodes, kd_tensor *teacher_nodes, bool detach_norm,
                                 kd_tensor **out) {
    const char *op = "pairwise_similarity";
    kd_status s = check_maps(op, "student nodes", student_nodes, "teacher nodes", teacher_nodes);
    if (s) return s;
    if (student_nodes->shape[0] != teacher_nodes->shape[0] || student_nodes->shape[2] != teacher_nodes->shape[2] ||
        student_nodes->shape[3] != teacher_nodes->shape[3])
        return kd_fail(KD_ERR_SHAPE, "%s: student %s and teacher %s must have the same batch and grid", op,
                       kd_shape_str(student_nodes), kd_shape_str(teacher_nodes));
    return similarity_loss(student_nodes, teacher_nodes, detach_norm, out);
}
