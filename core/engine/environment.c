/* environment.c - the KDSEG_* environment variables that choose a kernel or
 * a layout, in one table, so that every reader maps a value the same way
 * and a typo is an error rather than a silent default: the readers are
 * lazy (the first convolution reads KDSEG_CONV_ALGORITHM), so the host
 * checks them all at start-up with kd_environment_check. An empty value
 * reads as unset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

extern char **environ;

typedef struct {
    const char *name;
    const char *choices[4]; /* the first is what an unset variable means; NULL: any value */
} setting;

static const setting settings[] = {
    {"KDSEG_CONV", {"onednn", "im2col"}},
    {"KDSEG_CONV_ALGORITHM", {"winograd", "direct"}},
    {"KDSEG_CONV_PRECISION", {"f32", "bf16"}},
    {"KDSEG_LAYOUT", {"blocked", "nchw"}},
    {"KDSEG_OWN_WINOGRAD", {"auto", "always", "never"}},
    {"KDSEG_TRACEBACK", {NULL}}, /* the host's: any value but 0 shows every frame */
};

static const setting *find(const char *name, size_t length) {
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
        if (strlen(settings[i].name) == length && memcmp(settings[i].name, name, length) == 0) return &settings[i];
    return NULL;
}

static int index_of(const setting *s, const char *value) {
    for (int i = 0; i < 4 && s->choices[i]; i++)
        if (strcmp(s->choices[i], value) == 0) return i;
    return -1;
}

int kd_environment_choice(const char *name) {
    const setting *s = find(name, strlen(name));
    const char *value = getenv(name);
    if (!s || !value || !*value) return 0;
    int i = index_of(s, value);
    return i < 0 ? 0 : i; /* kd_environment_check has refused it where a host runs */
}

static void list_choices(const setting *s, char *out, size_t size) {
    size_t used = 0;
    for (int i = 0; i < 4 && s->choices[i] && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s%s", i == 0 ? "" : ", ", s->choices[i],
                                 i == 0 ? " (the default)" : "");
}

kd_status kd_environment_check(void) {
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "KDSEG_", 6) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        const setting *s = find(*e, (size_t)(eq - *e));
        if (!s) {
            char known[256];
            size_t used = 0;
            for (size_t i = 0; i < sizeof settings / sizeof *settings && used < sizeof known; i++)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", settings[i].name);
            return kd_fail(KD_ERR_ARG, "%.*s is not a kdseg setting (the settings: %s)", (int)(eq - *e), *e, known);
        }
        if (s->choices[0] && eq[1] && index_of(s, eq + 1) < 0) { /* empty reads as unset */
            char choices[256];
            list_choices(s, choices, sizeof choices);
            return kd_fail(KD_ERR_ARG, "%s='%s' is not one of its choices: %s", s->name, eq + 1, choices);
        }
    }
    return KD_OK;
}
