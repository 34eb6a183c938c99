// libzmq's C API (Debian: libzmq3-dev), imported into Swift as module CZMQ.
#include <zmq.h>
