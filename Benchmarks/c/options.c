#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ------------------------------------------------------------------------------------------- */
/* Options: --key value pairs (and a few flags) after the subcommand                            */

static int is_flag(const opts *o, const char *name, int *known) {
    size_t n = strlen(name);
    for (const char *const *a = o->allowed; *a; a++) {
        if (strncmp(*a, name, n) == 0 && ((*a)[n] == 0 || ((*a)[n] == '!' && (*a)[n + 1] == 0))) {
            *known = 1;
            return (*a)[n] == '!';
        }
    }
    *known = 0;
    return 0;
}

void opts_check(const opts *o) {
    for (int i = 0; i < o->argc; i++) {
        const char *a = o->argv[i];
        int known;
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "kvd-bench-client: unexpected argument \"%s\"\n", a);
            usage();
        }
        int flag = is_flag(o, a + 2, &known);
        if (!known) {
            fprintf(stderr, "kvd-bench-client: unknown option %s\n", a);
            usage();
        }
        if (!flag) {
            if (i + 1 >= o->argc) {
                fprintf(stderr, "kvd-bench-client: %s needs a value\n", a);
                usage();
            }
            i++;
        }
    }
}

const char *opt_str(const opts *o, const char *name, const char *def) {
    const char *found = def;
    for (int i = 0; i < o->argc; i++) {
        int known;
        int flag = is_flag(o, o->argv[i] + 2, &known);
        if (strcmp(o->argv[i] + 2, name) == 0 && !flag) found = o->argv[i + 1];
        if (!flag) i++;
    }
    return found;
}

int opt_flag(const opts *o, const char *name) {
    for (int i = 0; i < o->argc; i++) {
        int known;
        int flag = is_flag(o, o->argv[i] + 2, &known);
        if (flag && strcmp(o->argv[i] + 2, name) == 0) return 1;
        if (!flag) i++;
    }
    return 0;
}

const char *opt_required(const opts *o, const char *name) {
    const char *v = opt_str(o, name, NULL);
    if (!v) {
        fprintf(stderr, "kvd-bench-client: --%s is required\n", name);
        usage();
    }
    return v;
}

long long opt_int(const opts *o, const char *name, long long def, long long min) {
    const char *v = opt_str(o, name, NULL);
    if (!v) return def;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < min) {
        fprintf(stderr, "kvd-bench-client: --%s %s: expected an integer >= %lld\n", name, v, min);
        usage();
    }
    return x;
}

double opt_double(const opts *o, const char *name, double def) {
    const char *v = opt_str(o, name, NULL);
    if (!v) return def;
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x > 0)) {
        fprintf(stderr, "kvd-bench-client: --%s %s: expected a positive number\n", name, v);
        usage();
    }
    return x;
}
