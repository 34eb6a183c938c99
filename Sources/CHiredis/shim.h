// hiredis' C API (Debian: libhiredis-dev; bookworm ships 0.14.1), imported into Swift as module
// CHiredis. Only the 0.14 synchronous API is used (see Sources/KVDRemote/Hiredis.swift).
// pkg-config's cflags put hiredis' own include directory on the path.
#include <hiredis.h>
