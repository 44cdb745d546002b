/* synth.c - SynthCity: procedurally drawn street scenes with Cityscapes
 * labelIds, so that the whole method can be run and measured without the
 * real data. A scene is painted far to near: sky, buildings with windows,
 * trees, ground, road in perspective with lanes, sidewalks and curbs, walls
 * and fences, poles with lights and signs, vehicles sized by their depth,
 * persons, riders on bicycles and motorcycles; then lighting, shadows, noise
 * and blur. Thin and small classes (poles, lights, signs, bicycles) come out
 * hard, as in the real data. Each scene depends only on (seed, index). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Cityscapes labelIds */
enum {
    EGO = 1, ROAD = 7, SIDEWALK = 8, BUILDING = 11, WALL = 12, FENCE = 13, POLE = 17,
    LIGHT = 19, SIGN = 20, VEGETATION = 21, TERRAIN = 22, SKY = 23, PERSON = 24, RIDER = 25,
    CAR = 26, TRUCK = 27, BUS = 28, MOTORCYCLE = 32, BICYCLE = 33,
};

typedef struct {
    int h, w;
    float *rgb; /* 3 x h x w, in [0, 1] */
    uint8_t *label;
    kd_rng *rng;
    uint32_t noise_seed;
} canvas;

typedef struct { float r, g, b; } color;

static float uniform(canvas *c, float lo, float hi) { return lo + (hi - lo) * kd_rng_uniform(c->rng); }
static int chance(canvas *c, float p) { return kd_rng_uniform(c->rng) < p; }

static float hash_noise(uint32_t seed, int x, int y) {
    uint32_t h = seed ^ (uint32_t)x * 0x9E3779B1u ^ (uint32_t)y * 0x85EBCA77u;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12, h *= 0x297A2D39u, h ^= h >> 15;
    return (float)(h & 0xFFFF) / 65535.0f - 0.5f;
}

static color jitter(canvas *c, color base, float amount) {
    return (color){base.r + uniform(c, -amount, amount), base.g + uniform(c, -amount, amount),
                   base.b + uniform(c, -amount, amount)};
}

static void put(canvas *c, int x, int y, color col, int label, float texture) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    float n = texture ? texture * hash_noise(c->noise_seed, x, y) : 0.0f;
    size_t i = (size_t)y * c->w + x, plane = (size_t)c->w * c->h;
    c->rgb[i] = col.r + n, c->rgb[plane + i] = col.g + n, c->rgb[2 * plane + i] = col.b + n;
    if (label >= 0) c->label[i] = (uint8_t)label;
}

static void rect(canvas *c, float x0, float y0, float x1, float y1, color col, int label, float texture) {
    int ax = (int)floorf(x0), ay = (int)floorf(y0), bx = (int)ceilf(x1), by = (int)ceilf(y1);
    if (ax < 0) ax = 0;
    if (ay < 0) ay = 0;
    if (bx > c->w) bx = c->w;
    if (by > c->h) by = c->h;
    for (int y = ay; y < by; y++)
        for (int x = ax; x < bx; x++) put(c, x, y, col, label, texture);
}

static void ellipse(canvas *c, float cx, float cy, float rx, float ry, color col, int label, float texture) {
    if (rx < 0.5f) rx = 0.5f;
    if (ry < 0.5f) ry = 0.5f;
    for (int y = (int)(cy - ry); y <= (int)(cy + ry) + 1; y++)
        for (int x = (int)(cx - rx); x <= (int)(cx + rx) + 1; x++) {
            float dx = (x + 0.5f - cx) / rx, dy = (y + 0.5f - cy) / ry;
            if (dx * dx + dy * dy <= 1) put(c, x, y, col, label, texture);
        }
}

/* A ring (wheels): between radius r_in and r. */
static void ring(canvas *c, float cx, float cy, float r, float thickness, color col, int label) {
    for (int y = (int)(cy - r) - 1; y <= (int)(cy + r) + 1; y++)
        for (int x = (int)(cx - r) - 1; x <= (int)(cx + r) + 1; x++) {
            float d = sqrtf((x + 0.5f - cx) * (x + 0.5f - cx) + (y + 0.5f - cy) * (y + 0.5f - cy));
            if (d <= r && d >= r - thickness) put(c, x, y, col, label, 0);
        }
}

static void line(canvas *c, float x0, float y0, float x1, float y1, float width, color col, int label) {
    float len = fmaxf(fabsf(x1 - x0), fabsf(y1 - y0));
    int steps = (int)len + 1;
    for (int i = 0; i <= steps; i++) {
        float t = (float)i / steps, x = x0 + (x1 - x0) * t, y = y0 + (y1 - y0) * t;
        rect(c, x - width / 2, y - width / 2, x + width / 2, y + width / 2, col, label, 0);
    }
}

/* ---- the street's geometry: perspective from a horizon row and a vanishing point */

typedef struct {
    float horizon, vanish_x, bottom_center, road_half, walk; /* road_half, walk: at the bottom row */
} street;

static float depth_at(const canvas *c, const street *s, float y) { /* 0 at horizon, 1 at the bottom */
    return fmaxf(0.0f, (y - s->horizon) / (c->h - s->horizon));
}
static float center_at(const canvas *c, const street *s, float y) {
    return s->vanish_x + (s->bottom_center - s->vanish_x) * depth_at(c, s, y);
}

static void draw_sky_and_buildings(canvas *c, const street *s) {
    color top = jitter(c, (color){0.35f, 0.5f, 0.8f}, 0.08f), low = jitter(c, (color){0.75f, 0.82f, 0.9f}, 0.05f);
    for (int y = 0; y < c->h; y++) {
        float t = (float)y / c->h;
        color col = {top.r + (low.r - top.r) * t, top.g + (low.g - top.g) * t, top.b + (low.b - top.b) * t};
        for (int x = 0; x < c->w; x++) put(c, x, y, col, SKY, 0.02f);
    }
    /* building blocks across the width; their base a little under the horizon */
    float x = -uniform(c, 0, c->w * 0.1f);
    while (x < c->w) {
        float bw = uniform(c, 0.08f, 0.3f) * c->w, top_y = uniform(c, 0.02f, 0.85f) * s->horizon;
        float base = s->horizon + 2;
        if (chance(c, 0.15f)) { x += bw * 0.5f; continue; } /* a gap shows sky */
        color wall = jitter(c, chance(c, 0.5f) ? (color){0.55f, 0.5f, 0.45f} : (color){0.45f, 0.45f, 0.5f}, 0.1f);
        rect(c, x, top_y, x + bw, base, wall, BUILDING, 0.08f);
        color window = jitter(c, (color){0.2f, 0.25f, 0.3f}, 0.05f);
        float wx = fmaxf(3, bw / uniform(c, 5, 9)), wy = fmaxf(3, (base - top_y) / uniform(c, 4, 9));
        for (float yy = top_y + wy * 0.4f; yy + wy * 0.5f < base - wy * 0.3f; yy += wy)
            for (float xx = x + wx * 0.3f; xx + wx * 0.5f < x + bw; xx += wx)
                rect(c, xx, yy, xx + wx * 0.5f, yy + wy * 0.5f, window, BUILDING, 0.03f);
        x += bw;
    }
}

static void draw_tree(canvas *c, float x, float base, float scale) {
    color trunk = jitter(c, (color){0.35f, 0.25f, 0.15f}, 0.05f), leaves = jitter(c, (color){0.25f, 0.45f, 0.15f}, 0.08f);
    float height = scale * uniform(c, 0.6f, 1.0f);
    rect(c, x - scale * 0.03f, base - height * 0.55f, x + scale * 0.03f, base, trunk, VEGETATION, 0.05f);
    for (int k = 0; k < 4; k++)
        ellipse(c, x + uniform(c, -0.15f, 0.15f) * scale, base - height * uniform(c, 0.6f, 0.85f),
                scale * uniform(c, 0.15f, 0.28f), scale * uniform(c, 0.12f, 0.22f), leaves, VEGETATION, 0.15f);
}

static void draw_ground(canvas *c, const street *s) {
    color grass = jitter(c, (color){0.45f, 0.55f, 0.3f}, 0.07f), asphalt = jitter(c, (color){0.33f, 0.32f, 0.35f}, 0.04f);
    color pavement = jitter(c, (color){0.62f, 0.58f, 0.56f}, 0.05f), curb = {0.78f, 0.77f, 0.75f};
    color lane = {0.9f, 0.9f, 0.88f};
    float dash_phase = uniform(c, 0, 1);
    for (int y = (int)s->horizon; y < c->h; y++) {
        float d = depth_at(c, s, y + 0.5f), cx = center_at(c, s, y + 0.5f);
        float half = s->road_half * d, walk = s->walk * d, curb_w = fmaxf(0.6f, 2.0f * d);
        for (int x = 0; x < c->w; x++) {
            float off = fabsf(x + 0.5f - cx);
            if (off < half) {
                /* dashed centre line: dashes shrink with depth (1 / d spacing in rows) */
                bool dash = off < fmaxf(0.4f, 1.2f * d) && fmodf(logf(d + 0.02f) * 6 + dash_phase, 1.0f) < 0.5f;
                put(c, x, y, dash ? lane : asphalt, ROAD, dash ? 0.02f : 0.06f);
            } else if (off < half + curb_w) {
                put(c, x, y, curb, SIDEWALK, 0.03f);
            } else if (off < half + walk) {
                put(c, x, y, pavement, SIDEWALK, 0.06f);
            } else {
                put(c, x, y, grass, TERRAIN, 0.12f);
            }
        }
    }
}

/* Along the outer edge of the sidewalk: walls, fences and trees at random depths. */
static void draw_roadside(canvas *c, const street *s) {
    int items = 2 + (int)(kd_rng_u32(c->rng) % 4);
    for (int i = 0; i < items; i++) {
        int side = chance(c, 0.5f) ? -1 : 1;
        float y = s->horizon + uniform(c, 0.05f, 0.6f) * (c->h - s->horizon);
        float d = depth_at(c, s, y), cx = center_at(c, s, y);
        float x = cx + side * (s->road_half + s->walk) * d;
        float kind = kd_rng_uniform(c->rng), length = uniform(c, 0.1f, 0.3f) * c->w * (0.3f + d);
        float x0 = side < 0 ? x - length : x, x1 = side < 0 ? x : x + length;
        if (kind < 0.35f) {
            color wall = jitter(c, (color){0.6f, 0.6f, 0.62f}, 0.06f);
            rect(c, x0, y - c->h * 0.12f * d - 2, x1, y, wall, WALL, 0.07f);
        } else if (kind < 0.7f) {
            color fence = jitter(c, (color){0.55f, 0.48f, 0.4f}, 0.06f);
            float top = y - c->h * 0.1f * d - 2, gap = fmaxf(2, 4 * d);
            rect(c, x0, top, x1, top + fmaxf(1, d * 1.5f), fence, FENCE, 0);
            rect(c, x0, y - fmaxf(1, d * 1.5f), x1, y, fence, FENCE, 0);
            for (float bx = x0; bx < x1; bx += gap) rect(c, bx, top, bx + fmaxf(1, d), y, fence, FENCE, 0);
        } else {
            draw_tree(c, x + side * c->w * 0.03f * d, y, c->h * (0.25f + 0.5f * d));
        }
    }
}

static void draw_pole(canvas *c, const street *s, float y) {
    int side = chance(c, 0.5f) ? -1 : 1;
    float d = depth_at(c, s, y), cx = center_at(c, s, y);
    float x = cx + side * (s->road_half + s->walk * 0.7f) * d, width = fmaxf(1.0f, 2.5f * d);
    float top = y - c->h * (0.2f + 0.35f * d);
    color grey = jitter(c, (color){0.4f, 0.4f, 0.42f}, 0.04f);
    rect(c, x - width / 2, top, x + width / 2, y, grey, POLE, 0.02f);
    float k = kd_rng_uniform(c->rng);
    if (k < 0.45f) { /* traffic light: dark box with one lit lamp */
        float bw = fmaxf(2, 5 * d), bh = fmaxf(4, 12 * d);
        rect(c, x - bw / 2, top, x + bw / 2, top + bh, (color){0.12f, 0.12f, 0.1f}, LIGHT, 0.02f);
        static const color lamps[3] = {{0.95f, 0.15f, 0.1f}, {0.95f, 0.75f, 0.1f}, {0.2f, 0.9f, 0.3f}};
        int lamp = (int)(kd_rng_u32(c->rng) % 3);
        ellipse(c, x, top + bh * (0.2f + 0.3f * lamp), bw * 0.3f, bw * 0.3f, lamps[lamp], LIGHT, 0);
    } else if (k < 0.85f) { /* traffic sign: a disc or a square, bright */
        float r = fmaxf(1.5f, 5 * d);
        color face = chance(c, 0.5f) ? (color){0.85f, 0.8f, 0.1f} : (color){0.2f, 0.35f, 0.8f};
        if (chance(c, 0.5f)) ellipse(c, x, top + r, r, r, face, SIGN, 0.03f);
        else rect(c, x - r, top, x + r, top + 2 * r, face, SIGN, 0.03f);
    }
}

typedef struct {
    float y; /* the bottom row: objects are painted far (small y) to near */
    int kind;
} object;

enum { OBJ_CAR, OBJ_TRUCK, OBJ_BUS, OBJ_PERSON, OBJ_BICYCLE, OBJ_MOTORCYCLE, OBJ_POLE };

static void shadow(canvas *c, float x0, float x1, float y, float depth) {
    for (int yy = (int)y; yy < (int)(y + fmaxf(1, 3 * depth)) && yy < c->h; yy++)
        for (int x = (int)fmaxf(0, x0); x < (int)fminf(c->w, x1); x++) {
            size_t i = (size_t)yy * c->w + x, plane = (size_t)c->w * c->h;
            for (int ch = 0; ch < 3; ch++) c->rgb[ch * plane + i] *= 0.55f;
        }
}

static void draw_vehicle(canvas *c, const street *s, float y, int kind) {
    float d = depth_at(c, s, y), cx = center_at(c, s, y);
    float lane = uniform(c, -0.8f, 0.8f) * s->road_half * d;
    float width = c->w * d * (kind == OBJ_CAR ? 0.32f : 0.42f);
    float height = width * (kind == OBJ_CAR ? 0.5f : kind == OBJ_TRUCK ? 0.85f : 0.95f);
    int label = kind == OBJ_CAR ? CAR : kind == OBJ_TRUCK ? TRUCK : BUS;
    float x0 = cx + lane - width / 2, x1 = x0 + width;
    static const color paints[6] = {{0.7f, 0.1f, 0.1f}, {0.1f, 0.2f, 0.6f}, {0.85f, 0.85f, 0.85f},
                                    {0.1f, 0.1f, 0.1f}, {0.5f, 0.5f, 0.55f}, {0.8f, 0.6f, 0.1f}};
    color body = jitter(c, paints[kd_rng_u32(c->rng) % 6], 0.05f), glass = {0.15f, 0.2f, 0.25f};
    shadow(c, x0 - width * 0.05f, x1 + width * 0.05f, y, d);
    if (kind == OBJ_CAR) {
        rect(c, x0, y - height * 0.55f, x1, y - height * 0.1f, body, label, 0.04f);
        rect(c, x0 + width * 0.15f, y - height, x1 - width * 0.15f, y - height * 0.5f, body, label, 0.04f);
        rect(c, x0 + width * 0.2f, y - height * 0.92f, x1 - width * 0.2f, y - height * 0.58f, glass, label, 0.02f);
    } else {
        rect(c, x0, y - height, x1, y - height * 0.08f, body, label, 0.04f);
        float rows = kind == OBJ_BUS ? 0.35f : 0.25f;
        rect(c, x0 + width * 0.08f, y - height * 0.92f, x1 - width * 0.08f, y - height * (0.92f - rows), glass, label, 0.02f);
        if (kind == OBJ_TRUCK) rect(c, x0 - width * 0.02f, y - height * 0.45f, x0 + width * 0.02f, y - height * 0.1f, glass, label, 0);
    }
    color tyre = {0.06f, 0.06f, 0.06f};
    rect(c, x0 + width * 0.08f, y - height * 0.14f, x0 + width * 0.22f, y, tyre, label, 0);
    rect(c, x1 - width * 0.22f, y - height * 0.14f, x1 - width * 0.08f, y, tyre, label, 0);
}

static void draw_person(canvas *c, float x, float y, float height, int label) {
    static const color clothes[5] = {{0.15f, 0.15f, 0.2f}, {0.6f, 0.2f, 0.2f}, {0.2f, 0.4f, 0.6f},
                                     {0.7f, 0.7f, 0.6f}, {0.3f, 0.45f, 0.25f}};
    color shirt = jitter(c, clothes[kd_rng_u32(c->rng) % 5], 0.05f), legs = {0.15f, 0.15f, 0.2f};
    color skin = jitter(c, (color){0.85f, 0.65f, 0.5f}, 0.08f);
    float w = height * 0.28f;
    rect(c, x - w * 0.35f, y - height * 0.48f, x - w * 0.05f, y, legs, label, 0.03f);
    rect(c, x + w * 0.05f, y - height * 0.48f, x + w * 0.35f, y, legs, label, 0.03f);
    rect(c, x - w / 2, y - height * 0.85f, x + w / 2, y - height * 0.45f, shirt, label, 0.04f);
    ellipse(c, x, y - height * 0.92f, w * 0.28f, height * 0.08f, skin, label, 0.02f);
}

static void draw_rider(canvas *c, const street *s, float y, int kind) {
    float d = depth_at(c, s, y), cx = center_at(c, s, y);
    float x = cx + (chance(c, 0.5f) ? -1 : 1) * s->road_half * d * uniform(c, 0.6f, 0.95f);
    float wheel = c->h * 0.06f * d + 1, gap = wheel * 2.4f;
    int label = kind == OBJ_BICYCLE ? BICYCLE : MOTORCYCLE;
    color frame = kind == OBJ_BICYCLE ? jitter(c, (color){0.5f, 0.1f, 0.1f}, 0.1f) : (color){0.15f, 0.15f, 0.18f};
    draw_person(c, x, y - wheel * 1.3f, c->h * 0.22f * d + 3, RIDER);
    ring(c, x - gap / 2, y - wheel, wheel, fmaxf(1, wheel * (kind == OBJ_BICYCLE ? 0.25f : 0.5f)), (color){0.08f, 0.08f, 0.08f}, label);
    ring(c, x + gap / 2, y - wheel, wheel, fmaxf(1, wheel * (kind == OBJ_BICYCLE ? 0.25f : 0.5f)), (color){0.08f, 0.08f, 0.08f}, label);
    if (kind == OBJ_MOTORCYCLE) rect(c, x - gap * 0.35f, y - wheel * 2.0f, x + gap * 0.35f, y - wheel * 0.8f, frame, label, 0.03f);
    else line(c, x - gap / 2, y - wheel, x + gap * 0.1f, y - wheel * 2.0f, fmaxf(1, wheel * 0.2f), frame, label),
         line(c, x + gap / 2, y - wheel, x + gap * 0.1f, y - wheel * 2.0f, fmaxf(1, wheel * 0.2f), frame, label);
}

static void draw_pedestrian(canvas *c, const street *s, float y) {
    float d = depth_at(c, s, y), cx = center_at(c, s, y);
    float x = cx + (chance(c, 0.5f) ? -1 : 1) * (s->road_half + s->walk * uniform(c, 0.2f, 0.8f)) * d;
    draw_person(c, x, y, c->h * 0.3f * d + 3, PERSON);
}

static int by_depth(const void *a, const void *b) {
    float ya = ((const object *)a)->y, yb = ((const object *)b)->y;
    return (ya > yb) - (ya < yb);
}

static void draw_objects(canvas *c, const street *s) {
    object objects[40];
    int n = 0, wanted = 6 + (int)(kd_rng_u32(c->rng) % 14);
    for (int i = 0; i < wanted && n < 40; i++) {
        float k = kd_rng_uniform(c->rng);
        int kind = k < 0.3f ? OBJ_CAR : k < 0.36f ? OBJ_TRUCK : k < 0.4f ? OBJ_BUS : k < 0.6f ? OBJ_PERSON
                 : k < 0.68f ? OBJ_BICYCLE : k < 0.72f ? OBJ_MOTORCYCLE : OBJ_POLE;
        float lo = kind == OBJ_POLE ? 0.1f : 0.08f;
        objects[n++] = (object){s->horizon + uniform(c, lo, 0.95f) * (c->h - s->horizon), kind};
    }
    qsort(objects, (size_t)n, sizeof(object), by_depth);
    for (int i = 0; i < n; i++) {
        object o = objects[i];
        switch (o.kind) {
        case OBJ_CAR: case OBJ_TRUCK: case OBJ_BUS: draw_vehicle(c, s, o.y, o.kind); break;
        case OBJ_PERSON: draw_pedestrian(c, s, o.y); break;
        case OBJ_BICYCLE: case OBJ_MOTORCYCLE: draw_rider(c, s, o.y, o.kind); break;
        default: draw_pole(c, s, o.y); break;
        }
    }
}

/* Lighting, cast shadows, sensor noise and a light blur; then to uint8. */
static void finish(canvas *c, uint8_t *out) {
    float gain = uniform(c, 0.65f, 1.25f), tint[3];
    for (int ch = 0; ch < 3; ch++) tint[ch] = uniform(c, 0.92f, 1.08f);
    size_t plane = (size_t)c->w * c->h;
    /* a diagonal band of shadow across the lower half, as from a building */
    float sx = uniform(c, -0.5f, 1.0f) * c->w, slope = uniform(c, -1.5f, 1.5f), sw = uniform(c, 0.1f, 0.4f) * c->w;
    bool has_shadow = chance(c, 0.6f);
    float noise = uniform(c, 0.01f, 0.05f);
    uint32_t seed = kd_rng_u32(c->rng);
    float *tmp = malloc(sizeof(float) * plane);
    for (int ch = 0; ch < 3; ch++) {
        float *p = c->rgb + ch * plane;
        for (int y = 0; y < c->h; y++)
            for (int x = 0; x < c->w; x++) {
                float v = p[(size_t)y * c->w + x] * gain * tint[ch];
                float edge = sx + slope * (y - c->h / 2.0f);
                if (has_shadow && y > c->h / 3 && x > edge && x < edge + sw) v *= 0.6f;
                p[(size_t)y * c->w + x] = v + noise * hash_noise(seed + (uint32_t)ch, x, y) * 2;
            }
        if (tmp) { /* 3-tap blur, horizontal then vertical, weights 1 2 1 */
            for (int y = 0; y < c->h; y++)
                for (int x = 0; x < c->w; x++) {
                    int l = x > 0 ? x - 1 : x, r = x + 1 < c->w ? x + 1 : x;
                    tmp[(size_t)y * c->w + x] = 0.25f * p[(size_t)y * c->w + l] + 0.5f * p[(size_t)y * c->w + x] + 0.25f * p[(size_t)y * c->w + r];
                }
            for (int y = 0; y < c->h; y++)
                for (int x = 0; x < c->w; x++) {
                    int u = y > 0 ? y - 1 : y, dn = y + 1 < c->h ? y + 1 : y;
                    p[(size_t)y * c->w + x] = 0.25f * tmp[(size_t)u * c->w + x] + 0.5f * tmp[(size_t)y * c->w + x] + 0.25f * tmp[(size_t)dn * c->w + x];
                }
        }
        for (size_t i = 0; i < plane; i++) {
            float v = p[i] * 255.0f + 0.5f;
            out[ch * plane + i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    free(tmp);
}

static uint64_t scene_seed(uint64_t seed, uint64_t index) {
    return seed * 0x9E3779B97F4A7C15ull ^ (index + 1) * 0xD1B54A32D192ED03ull;
}

kd_status kd_synth_scene(int height, int width, uint64_t seed, uint64_t index, kd_tensor **rgb,
                         kd_tensor **label_ids) {
    if (height < 16 || width < 16 || height > 4096 || width > 4096)
        return kd_fail(KD_ERR_ARG, "synth_scene: size %dx%d must be 16 to 4096 on each side", height, width);
    int rgb_shape[3] = {3, height, width}, label_shape[2] = {height, width};
    kd_status s = kd_tensor_new(KD_U8, 3, rgb_shape, rgb);
    if (s) return s;
    if ((s = kd_tensor_zeros(KD_U8, 2, label_shape, label_ids))) {
        kd_tensor_release(*rgb);
        return s;
    }
    float *canvas_rgb = malloc(sizeof(float) * 3 * (size_t)height * width);
    if (!canvas_rgb) {
        kd_tensor_release(*rgb), kd_tensor_release(*label_ids);
        return kd_fail(KD_ERR_MEMORY, "synth_scene: cannot allocate a %dx%d canvas", height, width);
    }
    kd_rng rng;
    kd_rng_seed(&rng, scene_seed(seed, index));
    canvas c = {height, width, canvas_rgb, kd_u8(*label_ids), &rng, kd_rng_u32(&rng)};
    street st;
    st.horizon = uniform(&c, 0.36f, 0.5f) * height;
    st.vanish_x = uniform(&c, 0.35f, 0.65f) * width;
    st.bottom_center = st.vanish_x + uniform(&c, -0.2f, 0.2f) * width;
    st.road_half = uniform(&c, 0.45f, 0.75f) * width;
    st.walk = st.road_half + uniform(&c, 0.15f, 0.35f) * width;
    st.walk -= st.road_half; /* sidewalk width beyond the road edge, at the bottom */
    draw_sky_and_buildings(&c, &st);
    for (int i = 0, trees = (int)(kd_rng_u32(&rng) % 4); i < trees; i++)
        draw_tree(&c, uniform(&c, 0, 1) * width, st.horizon + 3, height * uniform(&c, 0.25f, 0.45f));
    draw_ground(&c, &st);
    draw_roadside(&c, &st);
    draw_objects(&c, &st);
    if (chance(&c, 0.4f)) { /* the ego car's bonnet: labelled, then ignored by training */
        float top = height * uniform(&c, 0.9f, 0.96f);
        color bonnet = jitter(&c, (color){0.1f, 0.1f, 0.12f}, 0.03f);
        for (int y = (int)top; y < height; y++)
            for (int x = 0; x < width; x++) {
                float bend = 0.04f * height * (2.0f * x / width - 1) * (2.0f * x / width - 1);
                if (y >= top + bend) put(&c, x, y, bonnet, EGO, 0.02f);
            }
    }
    finish(&c, kd_u8(*rgb));
    free(canvas_rgb);
    return KD_OK;
}

/* ---- coarse labels ---------------------------------------------------------
 * gtCoarse is drawn by hand as rough polygons inside each region: pixels near
 * a boundary stay unlabeled (0), small regions and thin classes are mostly
 * skipped, and now and then a whole region is left out. Every kept pixel
 * keeps its fine label, so coarse and fine never disagree. */

/* Marks the 4-connected region of start with id; its pixels go to pixels[]. */
static int flood(const uint8_t *label, int h, int w, int start, int *stack, int *member, int id,
                 int *pixels) {
    int top = 0, count = 0;
    stack[top++] = start;
    member[start] = id;
    while (top) {
        int p = stack[--top], y = p / w, x = p % w;
        pixels[count++] = p;
        int nb[4] = {x > 0 ? p - 1 : -1, x + 1 < w ? p + 1 : -1, y > 0 ? p - w : -1, y + 1 < h ? p + w : -1};
        for (int k = 0; k < 4; k++)
            if (nb[k] >= 0 && member[nb[k]] < 0 && label[nb[k]] == label[p]) {
                member[nb[k]] = id;
                stack[top++] = nb[k];
            }
    }
    return count;
}

kd_status kd_synth_coarse(const kd_tensor *fine, uint64_t seed, kd_tensor **coarse) {
    kd_status s = kd_check_dtype("synth_coarse", "fine labels", fine, KD_U8);
    if (s) return s;
    if (fine->ndim != 2) return kd_fail(KD_ERR_SHAPE, "synth_coarse: fine labels %s must be H x W", kd_shape_str(fine));
    int h = fine->shape[0], w = fine->shape[1], n = h * w;
    if ((s = kd_tensor_zeros(KD_U8, 2, fine->shape, coarse))) return s;
    const uint8_t *f = kd_u8(fine);
    uint8_t *out = kd_u8(*coarse);
    int *member = malloc(sizeof(int) * (size_t)n), *stack = malloc(sizeof(int) * (size_t)n);
    int *pixels = malloc(sizeof(int) * (size_t)n);
    uint8_t *near = calloc((size_t)n, 1);
    if (!member || !stack || !near || !pixels) {
        free(member), free(stack), free(near), free(pixels);
        kd_tensor_release(*coarse);
        return kd_fail(KD_ERR_MEMORY, "synth_coarse: cannot allocate work buffers");
    }
    /* near[p]: a different label lies within `margin` pixels (square window) */
    int margin = (h + w) / 100 + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int p = y * w + x;
            if ((x + 1 < w && f[p + 1] != f[p]) || (y + 1 < h && f[p + w] != f[p])) {
                for (int yy = y - margin; yy <= y + margin + 1; yy++)
                    for (int xx = x - margin; xx <= x + margin + 1; xx++)
                        if (yy >= 0 && yy < h && xx >= 0 && xx < w) near[yy * w + xx] = 1;
            }
        }
    for (int p = 0; p < n; p++) member[p] = -1;
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    int min_area = n / 150 + 10;
    for (int p = 0, id = 0; p < n; p++) {
        if (member[p] >= 0) continue;
        int area = flood(f, h, w, p, stack, member, id, pixels);
        int label = f[p];
        bool thin = label == POLE || label == LIGHT || label == SIGN || label == BICYCLE || label == MOTORCYCLE;
        bool keep = label != 0 && label != EGO && area >= min_area && kd_rng_uniform(&rng) > (thin ? 0.85f : 0.12f);
        for (int k = 0; keep && k < area; k++)
            if (!near[pixels[k]]) out[pixels[k]] = (uint8_t)label;
        id++;
    }
    free(member), free(stack), free(near), free(pixels);
    return KD_OK;
}
