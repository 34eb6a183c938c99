/* A tiny test harness: CHECK records a failure and continues; TEST runs a function and prints
 * "ok - name" or "FAIL - name"; harness_summary prints "N passed, M failed". */
#ifndef KVD_TEST_HARNESS_H
#define KVD_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

static int h_passed, h_failed, h_case_failures;
static const char *h_case;

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            h_case_failures++;                                                         \
            printf("    %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);      \
            printf(__VA_ARGS__);                                                       \
            printf("\n");                                                              \
            fflush(stdout);                                                            \
        }                                                                              \
    } while (0)

/* CHECK that a kvd call returned `want`; prints the client's last error otherwise. */
#define CHECK_RC(client, got, want)                                                     \
    do {                                                                               \
        kvd_result h_got_ = (got), h_want_ = (want);                                   \
        CHECK(h_got_ == h_want_, "got %s, want %s (%s)", kvd_result_name(h_got_),       \
              kvd_result_name(h_want_), kvd_client_last_error(client));               \
    } while (0)

#define REQUIRE(cond, ...)                                                             \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            CHECK(cond, __VA_ARGS__);                                                  \
            return;                                                                    \
        }                                                                              \
    } while (0)

#define TEST(fn)                                                                       \
    do {                                                                               \
        h_case = #fn;                                                                  \
        h_case_failures = 0;                                                           \
        fn();                                                                          \
        if (h_case_failures) {                                                         \
            h_failed++;                                                                \
            printf("FAIL - %s\n", h_case);                                             \
        } else {                                                                       \
            h_passed++;                                                                \
            printf("ok - %s\n", h_case);                                               \
        }                                                                              \
        fflush(stdout);                                                                \
    } while (0)

static int harness_summary(void) {
    printf("%d passed, %d failed\n", h_passed, h_failed);
    fflush(stdout);
    return h_failed ? 1 : 0;
}

#endif
