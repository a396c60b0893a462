/* A small HTTP/1.x server for `vgpuctl metrics --listen`: one connection at
 * a time, GET and HEAD only, every response closes the connection. */
#ifndef VGPU_TOOLS_HTTP_SERVE_H
#define VGPU_TOOLS_HTTP_SERVE_H

#include <stdio.h>

/* Writes the body of GET `path` to out. Returns the status: 200, or 404
 * for a path it does not serve (out is then ignored). */
typedef int (*http_handler)(const char *path, FILE *out, void *arg);

/* Listen on "ADDR:PORT" ("127.0.0.1:9394", ":9394" for every address,
 * "[::1]:9394"; port 0 picks a free one), print "listening on ADDR:PORT"
 * on stdout, and serve forever. Returns 2 with one line on stderr if the
 * address does not parse, 1 if it cannot be bound. */
int http_serve(const char *listen_addr, const char *content_type,
               http_handler handler, void *arg);

#endif
