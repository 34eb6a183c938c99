// OpenBLAS's CBLAS interface (Debian: libopenblas-dev), imported into Swift as module COpenBLAS.
#include <cblas.h>
// Not in cblas.h on every distribution; OpenBLAS exports it.
void openblas_set_num_threads(int num_threads);
