/* libkvdclient CURVE keys: checking Z85 keys and reading `kvd keygen` key files. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

int kvd__z85_key_ok(const char *key) {
    if (!key || strlen(key) != 40) return 0;
    uint8_t raw[32];
    char again[41];
    /* Canonical only (re-encoding gives the same text), as the daemon requires. */
    int ok = zmq_z85_decode(raw, key) != NULL && zmq_z85_encode(again, raw, sizeof raw) != NULL &&
             memcmp(again, key, 40) == 0;
    explicit_bzero(raw, sizeof raw);
    explicit_bzero(again, sizeof again);
    return ok;
}

kvd_result kvd_curve_load_key(const char *path, char out[41], char *error, size_t error_size) {
#define LOAD_FAIL(code, ...)                                                     \
    do {                                                                         \
        if (error && error_size) snprintf(error, error_size, __VA_ARGS__);       \
        explicit_bzero(buf, sizeof buf);                                         \
        return (code);                                                           \
    } while (0)
    char buf[4096];
    if (error && error_size) error[0] = '\0';
    if (!path || !out) {
        if (error && error_size) snprintf(error, error_size, "kvd: kvd_curve_load_key: NULL argument");
        return KVD_ERR_ARGUMENT;
    }
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f) LOAD_FAIL(KVD_ERR_SYSTEM, "kvd: cannot read %s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) LOAD_FAIL(KVD_ERR_SYSTEM, "kvd: cannot read %s", path);
    buf[n] = '\0';
    /* The first non-empty line, without surrounding blanks. */
    char *line = buf;
    while (*line == ' ' || *line == '\t' || *line == '\r' || *line == '\n') line++;
    char *end = line;
    while (*end && *end != '\n' && *end != '\r') end++;
    while (end > line && (end[-1] == ' ' || end[-1] == '\t')) end--;
    *end = '\0';
    if (!kvd__z85_key_ok(line))
        LOAD_FAIL(KVD_ERR_ARGUMENT,
                  "kvd: %s does not hold a Z85 CURVE key (one line of 40 characters, as "
                  "`kvd keygen` writes)", path);
    memcpy(out, line, 41);
    explicit_bzero(buf, sizeof buf);
    return KVD_OK;
#undef LOAD_FAIL
}
