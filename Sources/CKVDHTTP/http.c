// The /metrics endpoint on libmicrohttpd. kvd binds the listening socket itself (so a taken port
// or a bad address is reported with errno's words at start, not as a library log line) and hands
// it to libmicrohttpd, which serves it from one internal polling thread: never the ZeroMQ thread.
#define _GNU_SOURCE
#include "kvd_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct kvd_http_server {
    struct MHD_Daemon *daemon;
    kvd_http_render render;
    void *context;
    uint16_t port;
};

static enum MHD_Result respond(struct MHD_Connection *connection, unsigned int status, const char *type,
                               size_t length, void *body, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *response = MHD_create_response_from_buffer(length, body, mode);
    if (response == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result queued = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return queued;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **state) {
    (void)version;
    (void)upload_data;
    struct kvd_http_server *server = cls;
    static int first_call;
    // libmicrohttpd calls once when the headers are in, then again for any body: answer on the second.
    if (*state == NULL) {
        *state = &first_call;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;  // a body is never needed: drop it
        return MHD_YES;
    }
    static char text[] = "text/plain; charset=utf-8";
    if (strcmp(url, "/metrics") != 0) {
        static char not_found[] = "not found; kvd serves GET /metrics\n";
        return respond(connection, MHD_HTTP_NOT_FOUND, text, sizeof not_found - 1, not_found, MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static char not_allowed[] = "use GET /metrics\n";
        return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, text, sizeof not_allowed - 1, not_allowed,
                       MHD_RESPMEM_PERSISTENT);
    }
    size_t length = 0;
    char *body = server->render(server->context, &length);
    if (body == NULL) {
        static char failed[] = "kvd could not render its metrics\n";
        return respond(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, text, sizeof failed - 1, failed,
                       MHD_RESPMEM_PERSISTENT);
    }
    // The Prometheus text exposition format, version 0.0.4.
    return respond(connection, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", length, body,
                   MHD_RESPMEM_MUST_FREE);
}

static int listen_on(const char *host, uint16_t port, uint16_t *bound, char *error, size_t error_size) {
    struct sockaddr_storage address;
    memset(&address, 0, sizeof address);
    socklen_t length;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        length = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        length = sizeof *v6;
    } else {
        snprintf(error, error_size, "'%s' is not an IPv4 or IPv6 address", host);
        return -1;
    }
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(error, error_size, "socket: %s", strerror(errno));
        return -1;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // a restart need not wait for TIME_WAIT
    if (bind(fd, (struct sockaddr *)&address, length) != 0 || listen(fd, 16) != 0) {
        snprintf(error, error_size, "cannot listen on %s port %u: %s", host, (unsigned)port, strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t got = sizeof address;
    getsockname(fd, (struct sockaddr *)&address, &got);
    *bound = ntohs(address.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    return fd;
}

kvd_http_server *kvd_http_start(const char *host, uint16_t port, kvd_http_render render, void *context,
                                char *error, size_t error_size) {
    struct kvd_http_server *server = calloc(1, sizeof *server);
    if (server == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    server->render = render;
    server->context = context;
    int fd = listen_on(host, port, &server->port, error, error_size);
    if (fd < 0) {
        free(server);
        return NULL;
    }
    // One internal thread polls every connection: a scrape is one small response, so a thread per
    // connection would buy nothing. Few connections, short timeouts: only Prometheus scrapes here.
    server->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL, handle, server,
                                      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
                                      (unsigned int)16, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                                      MHD_OPTION_END);
    if (server->daemon == NULL) {
        snprintf(error, error_size, "libmicrohttpd could not start serving %s port %u", host, (unsigned)server->port);
        close(fd);
        free(server);
        return NULL;
    }
    return server;
}

uint16_t kvd_http_port(const kvd_http_server *server) { return server->port; }

void kvd_http_stop(kvd_http_server *server) {
    if (server == NULL) return;
    MHD_stop_daemon(server->daemon);  // also closes the listening socket it was given
    free(server);
}
