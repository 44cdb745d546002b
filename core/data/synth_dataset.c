/* synth_dataset.c - writes SynthCity scenes to disk in the Cityscapes layout,
 * images in parallel (each scene depends only on its index, so the files are
 * the same whatever the thread count):
 *   leftImg8bit/<split>/synth/synth_<index>_000019_leftImg8bit.png
 *   gtFine/<split>/synth/..._gtFine_labelIds.png          (fine tiers)
 *   gtCoarse/<split>/synth/..._gtCoarse_labelIds.png      (coarse tiers)
 *   gtFineTrue/<split>/synth/..._gtFine_labelIds.png      (the true fine labels
 *       of coarse-only images: for measuring pseudo-labels, never for training) */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static kd_status write_scene(const kd_synthcity_job *job, int index) {
    kd_tensor *rgb, *fine, *coarse = NULL;
    kd_status s = kd_synth_scene(job->height, job->width, job->seed, (uint64_t)index, &rgb, &fine);
    if (s) return s;
    char path[4096], stem[64];
    snprintf(stem, sizeof stem, "synth_%06d_000019", index);
    snprintf(path, sizeof path, "%s/leftImg8bit/%s/synth/%s_leftImg8bit.png", job->root, job->split, stem);
    s = kd_png_write(path, rgb, NULL, 0);
    if (!s && job->fine) {
        snprintf(path, sizeof path, "%s/gtFine/%s/synth/%s_gtFine_labelIds.png", job->root, job->split, stem);
        s = kd_png_write(path, fine, NULL, 0);
    }
    if (!s && job->true_fine) {
        snprintf(path, sizeof path, "%s/gtFineTrue/%s/synth/%s_gtFine_labelIds.png", job->root, job->split, stem);
        s = kd_png_write(path, fine, NULL, 0);
    }
    if (!s && job->coarse) {
        s = kd_synth_coarse(fine, job->seed ^ (uint64_t)index * 0x2545F4914F6CDD1Dull, &coarse);
        snprintf(path, sizeof path, "%s/gtCoarse/%s/synth/%s_gtCoarse_labelIds.png", job->root, job->split, stem);
        if (!s) s = kd_png_write(path, coarse, NULL, 0);
    }
    kd_tensor_release(rgb), kd_tensor_release(fine), kd_tensor_release(coarse);
    return s;
}

kd_status kd_synthcity_write(const kd_synthcity_job *job) {
    if (job->count < 0 || job->first < 0)
        return kd_fail(KD_ERR_ARG, "synthcity: %d images from index %d", job->count, job->first);
    kd_status first_error = KD_OK;
    char message[1024] = "";
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < job->count; i++) {
        kd_status s;
#pragma omp atomic read
        s = first_error;
        if (s) continue; /* stop early once one image failed */
        s = write_scene(job, job->first + i);
        if (s) {
#pragma omp critical(synthcity_error)
            if (!first_error) {
                first_error = s;
                snprintf(message, sizeof message, "%s", kd_error_message());
            }
        }
    }
    if (first_error) return kd_fail(first_error, "%s", message);
    return KD_OK;
}
