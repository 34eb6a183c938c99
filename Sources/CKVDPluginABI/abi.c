// The plugin ABI is a header only; this file gives SwiftPM a C target to import it from.
#include "kvd_plugin.h"
