// A tiny HTTP endpoint for kvd's /metrics, on libmicrohttpd (Debian: libmicrohttpd-dev). This
// header keeps microhttpd.h out of Swift: the daemon sees only start, port and stop.
#ifndef KVD_HTTP_H
#define KVD_HTTP_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvd_http_server kvd_http_server;

/// Renders the body of GET /metrics on libmicrohttpd's thread. Returns malloc'd bytes that the
/// server frees once sent (NULL answers 500) and sets *length.
typedef char *(*kvd_http_render)(void *context, size_t *length);

/// Listens on `host` (an IPv4 or IPv6 literal) and `port` (0 = any free port) and serves
/// GET /metrics from `render` on a thread of its own. Returns NULL with a message in `error` when
/// the address is not a literal or the socket cannot be bound (e.g. the port is taken).
kvd_http_server *kvd_http_start(const char *host, uint16_t port, kvd_http_render render, void *context,
                                char *error, size_t error_size);

/// The port actually bound (the chosen one when started with port 0).
uint16_t kvd_http_port(const kvd_http_server *server);

/// Stops serving (waits for the server's thread) and frees the server.
void kvd_http_stop(kvd_http_server *server);

#endif
