/*
 * kvd-bench-client — the C client's side of kvd's benchmark suite (issue 7, sections 1, 2, 4).
 *
 *   kvd-bench-client rtt   --kvd EP --echo EP [--model M] [--n N] [--block B] [--warmup W]
 *                          [--tokens T] [--samples]
 *   kvd-bench-client data  --kvd EP --echo EP [--model M] [--mib 1,4,16,64] [--repeats R]
 *                          [--warmup W] [--samples]
 *   kvd-bench-client scale --kvd EP [--model M] --clients C [--sequences 1000]
 *                          (--seconds T | --ops N) [--kvd-pid PID] [--append-tokens 16]
 *                          [--max-tokens 64] [--keep 32] [--initial-tokens 32] [--samples]
 *   kvd-bench-client append --kvd EP --echo EP [--model M] [--steps 4000] [--block 200]
 *                          [--warmup 400] [--window 4] [--ahead 64] [--max-len 2048]
 *   Common: --timeout-ms MS (per request; default 30000).
 *
 * Every measured row is one JSON object on its own line on stdout, with at least "section",
 * "name", "transport", "bytes" and "unit". Latency rows: p50 / p99 / min / mean / max in µs.
 * Throughput rows: GB/s (1e9 bytes/s) of the best and the median repeat, plus the raw seconds
 * ("seconds" with --samples). Baselines (raw ZeroMQ echo through kvd-echo, memcpy) are measured in
 * the same run, interleaved with the kvd measurements, and the kvd rows carry the ratios.
 * Errors go to stderr; a failed setup exits with status 1, bad usage with 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

void usage(void) {
    fputs("usage:\n"
          "  kvd-bench-client rtt   --kvd EP --echo EP [--model M] [--n N] [--block B] "
          "[--warmup W] [--tokens T] [--samples]\n"
          "  kvd-bench-client data  --kvd EP --echo EP [--model M] [--mib 1,4,16,64] "
          "[--repeats R] [--warmup W] [--samples]\n"
          "  kvd-bench-client scale --kvd EP [--model M] --clients C [--sequences 1000] "
          "(--seconds T | --ops N) [--kvd-pid PID]\n"
          "                         [--append-tokens 16] [--max-tokens 64] [--keep 32] "
          "[--initial-tokens 32] [--samples]\n"
          "  kvd-bench-client append --kvd EP --echo EP [--model M] [--steps 4000] [--block 200] "
          "[--warmup 400] [--window 4] [--ahead 64] [--max-len 2048]\n"
          "  common: --timeout-ms MS (per request, default 30000)\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    opts o = {argc - 2, argv + 2, NULL};
    if (strcmp(argv[1], "rtt") == 0) return cmd_rtt(&o);
    if (strcmp(argv[1], "data") == 0) return cmd_data(&o);
    if (strcmp(argv[1], "scale") == 0) return cmd_scale(&o);
    if (strcmp(argv[1], "append") == 0) return cmd_append(&o);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage();
    }
    fprintf(stderr, "kvd-bench-client: unknown subcommand \"%s\"\n", argv[1]);
    usage();
}
