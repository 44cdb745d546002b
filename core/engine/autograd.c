/* autograd.c - the dynamic tape. Each op that needs a gradient records a node
 * holding edges to its inputs' nodes (or leaves) and the tensors its backward
 * needs. kd_backward orders the reachable nodes topologically, runs each
 * node's backward once its gradient is complete, and frees what it saved, so
 * memory returns to where it was before the forward.
 *
 * Nodes never hold the tensor they produced (that would be a cycle): an op
 * that needs its output saves a detached view of it. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local bool grad_enabled = true;

bool kd_grad_enabled(void) { return grad_enabled; }

bool kd_set_grad_enabled(bool enabled) {
    bool previous = grad_enabled;
    grad_enabled = enabled;
    return previous;
}

kd_node *kd_node_retain(kd_node *node) {
    if (node) node->refcount++;
    return node;
}

typedef struct {
    kd_node **items;
    int count, capacity;
} node_list;

static bool list_push(node_list *l, kd_node *n) {
    if (l->count == l->capacity) {
        int capacity = l->capacity ? l->capacity * 2 : 64;
        kd_node **grown = realloc(l->items, sizeof(kd_node *) * (size_t)capacity);
        if (!grown) return false;
        l->items = grown;
        l->capacity = capacity;
    }
    l->items[l->count++] = n;
    return true;
}

/* Iterative, so that releasing a long chain (x = x + 1 a million times in the
 * REPL) cannot overflow the C stack. */
void kd_node_release(kd_node *node) {
    node_list stack = {0};
    kd_node *n = node;
    while (n) {
        if (--n->refcount == 0) {
            for (int i = 0; i < n->n_inputs; i++) {
                kd_node *child = n->inputs[i].node;
                if (child && !list_push(&stack, child)) kd_node_release(child);
                kd_tensor_release(n->inputs[i].leaf);
            }
            for (int i = 0; i < KD_MAX_SAVED; i++) kd_tensor_release(n->saved[i]);
            kd_tensor_release(n->grad_accumulator);
            free(n);
        }
        n = stack.count ? stack.items[--stack.count] : NULL;
    }
    free(stack.items);
}

kd_node *kd_record(const char *op, kd_backward_fn backward, kd_tensor *out, int n_inputs,
                   kd_tensor *const *inputs, kd_status *status) {
    *status = KD_OK;
    if (!grad_enabled) return NULL;
    bool any = false;
    for (int i = 0; i < n_inputs; i++) any = any || kd_needs_grad(inputs[i]);
    if (!any) return NULL;
    kd_node *node = calloc(1, sizeof *node);
    if (!node) {
        *status = kd_fail(KD_ERR_MEMORY, "%s: cannot allocate a tape node", op);
        return NULL;
    }
    node->refcount = 1;
    node->pending = -1; /* -1: not visited by a backward in progress */
    node->op = op;
    node->backward = backward;
    node->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) {
        kd_tensor *t = inputs[i];
        kd_edge *e = &node->inputs[i];
        if (!t) continue;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        if (t->grad_fn) e->node = kd_node_retain(t->grad_fn);
        else if (t->requires_grad) e->leaf = kd_tensor_retain(t);
    }
    node->out_ndim = out->ndim;
    memcpy(node->out_shape, out->shape, sizeof node->out_shape);
    out->grad_fn = node;
    return node;
}

void kd_node_take_inputs(kd_node *node, int n) {
    kd_node *producer = node->inputs[0].node;
    for (int i = 0; i < n; i++) {
        node->inputs[i] = producer->inputs[i];
        kd_node_retain(producer->inputs[i].node);
        if (producer->inputs[i].leaf) kd_tensor_retain(producer->inputs[i].leaf);
    }
    node->n_inputs = n;
    kd_node_release(producer); /* the edge's reference; its output tensor keeps its own */
}

kd_status kd_node_save(kd_node *node, int slot, kd_tensor *t) {
    if (!t) return KD_OK;
    node->saved_version[slot] = t->storage->version;
    return kd_detach(t, &node->saved[slot]);
}

/* A saved tensor changed in place since the forward makes this node's
 * gradient wrong (PyTorch raises the same error). */
static kd_status check_saved_versions(const kd_node *n) {
    for (int i = 0; i < KD_MAX_SAVED; i++) {
        const kd_tensor *t = n->saved[i];
        if (t && t->storage->version != n->saved_version[i])
            return kd_fail(KD_ERR_STATE,
                           "backward: a %s tensor that %s saved for its gradient was changed in place after the "
                           "forward (fill_, copy_, set, axpby_, an optimizer step ...); change a clone instead, or "
                           "run the forward again", kd_shape_str(t), n->op);
    }
    return KD_OK;
}

kd_status kd_finish_op(const char *op, kd_backward_fn backward, kd_tensor **out,
                       int n_inputs, kd_tensor *const *inputs, int n_saved,
                       kd_tensor *const *saved, kd_node **node) {
    kd_status s;
    kd_node *n = kd_record(op, backward, *out, n_inputs, inputs, &s);
    for (int i = 0; n && !s && i < n_saved; i++) s = kd_node_save(n, i, saved[i]);
    if (s) {
        kd_tensor_release(*out); /* releases n with it */
        *out = NULL;
        n = NULL;
    }
    if (node) *node = n;
    return s;
}

/* ---- backward ------------------------------------------------------------- */

/* Counts, for every node reachable from root, how many reachable nodes
 * consume it; a node runs when all its consumers have passed it gradient. */
static kd_status count_consumers(kd_node *root, node_list *seen) {
    node_list stack = {0};
    bool ok = list_push(seen, root) && list_push(&stack, root);
    root->pending = 0;
    while (ok && stack.count > 0) {
        kd_node *n = stack.items[--stack.count];
        for (int i = 0; i < n->n_inputs && ok; i++) {
            kd_node *child = n->inputs[i].node;
            if (!child) continue;
            if (child->pending < 0) { /* first visit */
                child->pending = 0;
                ok = list_push(seen, child) && list_push(&stack, child);
            }
            child->pending++;
        }
    }
    free(stack.items);
    return ok ? KD_OK : kd_fail(KD_ERR_MEMORY, "backward: cannot allocate the node list");
}

static kd_grad_ready_fn grad_ready_hook;
static void *grad_ready_ctx;

void kd_set_grad_ready_hook(kd_grad_ready_fn fn, void *ctx) {
    grad_ready_hook = fn;
    grad_ready_ctx = ctx;
}

/* For the hook: each leaf's grad_uses set to 0 (count false), or counting
 * the reachable nodes that consume it (count true, from 0). */
static void leaf_uses(const node_list *seen, bool count) {
    for (int i = 0; i < seen->count; i++) {
        kd_node *n = seen->items[i];
        for (int k = 0; k < n->n_inputs; k++) {
            kd_tensor *leaf = n->inputs[k].leaf;
            if (leaf) leaf->grad_uses = count ? leaf->grad_uses + 1 : 0;
        }
    }
}

static kd_status zeros_for_edge(const kd_edge *e, kd_tensor **out) {
    return kd_tensor_zeros_pending(e->ndim, e->shape, out);
}

static kd_status accumulate_leaf(kd_tensor *leaf, const kd_tensor *grad) {
    if (!leaf->grad) {
        kd_status s = kd_tensor_zeros(KD_F32, leaf->ndim, leaf->shape, &leaf->grad);
        if (s) return s;
    }
    return kd_axpby(leaf->grad, 1.0f, grad, 1.0f);
}

kd_status kd_backward(kd_tensor *root, const kd_tensor *grad) {
    if (!kd_needs_grad(root))
        return kd_fail(KD_ERR_STATE,
                       "backward: tensor %s does not require grad and has no grad_fn",
                       kd_shape_str(root));
    if (root->dtype != KD_F32)
        return kd_fail(KD_ERR_DTYPE, "backward: tensor must be float32, got %s",
                       kd_dtype_name(root->dtype));
    if (grad && (grad->dtype != KD_F32 || kd_numel(grad) != kd_numel(root)))
        return kd_fail(KD_ERR_SHAPE, "backward: gradient %s does not match tensor %s",
                       kd_shape_str(grad), kd_shape_str(root));
    if (!grad && kd_numel(root) != 1)
        return kd_fail(KD_ERR_SHAPE,
                       "backward: tensor %s has more than one element; pass a gradient",
                       kd_shape_str(root));
    kd_tensor *seed;
    kd_status s = grad ? kd_tensor_new(KD_F32, root->ndim, root->shape, &seed)
                       : kd_tensor_full(KD_F32, root->ndim, root->shape, 1.0, &seed);
    if (s) return s;
    /* a blocked gradient of the root's shape seeds the backward as it is
     * stored (the blocked layout's ops read it so), without converting it */
    int block = grad ? kd_blocked(grad) : 0;
    bool same_shape = grad && grad->ndim == 4 && root->ndim == 4 && memcmp(grad->shape, root->shape, 4 * sizeof(int)) == 0;
    if (block && same_shape) {
        memcpy(kd_data_as_stored(seed), kd_data_as_stored(grad), sizeof(float) * kd_numel(root));
        kd_set_blocked(seed, block);
    } else if (grad)
        memcpy(kd_f32(seed), kd_f32(grad), sizeof(float) * kd_numel(root));

    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        s = accumulate_leaf(root, seed);
        kd_tensor_release(seed);
        if (!s && grad_ready_hook) s = grad_ready_hook(root, grad_ready_ctx);
        return s;
    }
    kd_node *top = root->grad_fn;
    if (top->released) {
        kd_tensor_release(seed);
        return kd_fail(KD_ERR_STATE, "backward: the graph through %s was already freed "
                                     "by an earlier backward", top->op);
    }
    node_list seen = {0};
    s = count_consumers(top, &seen);
    if (s) {
        for (int i = 0; i < seen.count; i++) seen.items[i]->pending = -1;
        kd_tensor_release(seed);
        free(seen.items);
        return s;
    }
    node_list ready = {0};
    for (int i = 0; i < seen.count; i++) kd_node_retain(seen.items[i]);
    kd_grad_ready_fn hook = grad_ready_hook;
    if (hook) {
        leaf_uses(&seen, false);
        leaf_uses(&seen, true);
    }
    top->grad_accumulator = seed;
    list_push(&ready, top);

    while (ready.count > 0 && !s) {
        kd_node *n = ready.items[--ready.count];
        if (n->released) {
            s = kd_fail(KD_ERR_STATE, "backward: the graph through %s was already freed "
                                      "by an earlier backward", n->op);
            break;
        }
        kd_tensor *grads[KD_MAX_INPUTS] = {0};
        kd_tensor *leaf_tmp[KD_MAX_INPUTS] = {0};
        for (int i = 0; i < n->n_inputs && !s; i++) {
            kd_edge *e = &n->inputs[i];
            if (e->node) {
                if (!e->node->grad_accumulator) s = zeros_for_edge(e, &e->node->grad_accumulator);
                grads[i] = e->node->grad_accumulator;
            } else if (e->leaf) {
                /* Into a fresh buffer, then added: a leaf's existing grad may be
                 * shared with the user, and a failed backward must not half-add. */
                s = zeros_for_edge(e, &leaf_tmp[i]);
                grads[i] = leaf_tmp[i];
            }
        }
        if (!s) {
            if (!n->grad_accumulator)
                s = kd_tensor_zeros_pending(n->out_ndim, n->out_shape, &n->grad_accumulator);
            if (!s) s = check_saved_versions(n);
            if (!s) s = n->backward(n, n->grad_accumulator, grads);
        }
        for (int i = 0; i < n->n_inputs; i++) {
            if (!s && leaf_tmp[i]) {
                kd_tensor *leaf = n->inputs[i].leaf;
                s = accumulate_leaf(leaf, leaf_tmp[i]);
                if (!s && hook && --leaf->grad_uses == 0) s = hook(leaf, grad_ready_ctx);
            }
            kd_tensor_release(leaf_tmp[i]);
        }
        if (s) break;
        /* Free what the tape saved; keep edges only as long as children wait. */
        for (int i = 0; i < KD_MAX_SAVED; i++) {
            kd_tensor_release(n->saved[i]);
            n->saved[i] = NULL;
        }
        kd_tensor_release(n->grad_accumulator);
        n->grad_accumulator = NULL;
        n->released = true;
        for (int i = 0; i < n->n_inputs; i++) {
            kd_node *child = n->inputs[i].node;
            if (child && --child->pending == 0) list_push(&ready, child);
        }
    }
    /* Whatever happened, no node keeps a gradient buffer or a stale count, and
     * processed nodes drop their edges so their inputs' memory can go. */
    if (hook) leaf_uses(&seen, false);
    for (int i = 0; i < seen.count; i++) {
        kd_node *n = seen.items[i];
        kd_tensor_release(n->grad_accumulator);
        n->grad_accumulator = NULL;
        n->pending = -1;
    }
    for (int i = 0; i < seen.count; i++) {
        kd_node *n = seen.items[i];
        if (n->released) {
            int unused = 0;
            kd_node *children[KD_MAX_INPUTS];
            for (int k = 0; k < n->n_inputs; k++) {
                if (n->inputs[k].node) children[unused++] = n->inputs[k].node;
                n->inputs[k].node = NULL;
                kd_tensor_release(n->inputs[k].leaf);
                n->inputs[k].leaf = NULL;
            }
            for (int k = 0; k < unused; k++) kd_node_release(children[k]);
        }
    }
    for (int i = 0; i < seen.count; i++) kd_node_release(seen.items[i]);
    free(seen.items);
    free(ready.items);
    return s;
}
