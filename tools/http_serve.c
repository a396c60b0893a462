/* Safe by being small: one connection at a time, the request (line and
 * headers) bounded to REQUEST_MAX bytes, CLIENT_MS for a client to send it
 * and CLIENT_MS to take the response (so a slow or silent client holds the
 * server at most that long), no body read, Connection: close, SIGPIPE
 * ignored and every send MSG_NOSIGNAL: a client that goes away costs
 * nothing. */
#define _GNU_SOURCE
#include "http_serve.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_MAX 4096
#define CLIENT_MS 5000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for events or the deadline passes. */
static bool wait_ready(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

/* Read until the blank line that ends the headers. Returns its length,
 * 0 if the client went quiet or away, -1 if it sent more than fits. */
static ssize_t read_request(int fd, char *buf, size_t cap)
{
    long long deadline = now_ms() + CLIENT_MS;
    size_t n = 0;
    while (n < cap - 1) {
        if (!wait_ready(fd, POLLIN, deadline))
            return 0;
        ssize_t got = recv(fd, buf + n, cap - 1 - n, MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (got <= 0)
            return 0;
        n += (size_t)got;
        buf[n] = '\0';
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
            return (ssize_t)n;
    }
    return -1;
}

static void send_all(int fd, const char *data, size_t len, long long deadline)
{
    while (len > 0 && wait_ready(fd, POLLOUT, deadline)) {
        ssize_t put = send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (put < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (put <= 0)
            return;
        data += put;
        len -= (size_t)put;
    }
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    default: return "Internal Server Error";
    }
}

static void respond(int fd, int status, const char *type, const char *body,
                    size_t len, bool head)
{
    char header[256];
    int n = snprintf(header, sizeof header,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                     status, reason(status), type, len,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "");
    long long deadline = now_ms() + CLIENT_MS;
    send_all(fd, header, (size_t)n, deadline);
    if (!head)
        send_all(fd, body, len, deadline);
}

static void respond_text(int fd, int status, const char *text)
{
    respond(fd, status, "text/plain; charset=utf-8", text, strlen(text), false);
}

/* One connection: read, answer, close. */
static void serve_one(int fd, const char *type, http_handler handler, void *arg)
{
    char req[REQUEST_MAX];
    ssize_t n = read_request(fd, req, sizeof req);
    if (n < 0) {
        respond_text(fd, 431, "request too large\n");
        return;
    }
    if (n == 0)
        return;
    char method[8], path[256], version[16];
    /* Widths bound every field; a longer path or method is a 400. */
    if (sscanf(req, "%7s %255s %15s", method, path, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0 || path[0] != '/') {
        respond_text(fd, 400, "bad request\n");
        return;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        respond_text(fd, 405, "GET or HEAD only\n");
        return;
    }
    path[strcspn(path, "?")] = '\0';
    char *body = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&body, &len);
    if (out == NULL) {
        respond_text(fd, 500, "out of memory\n");
        return;
    }
    int status = handler(path, out, arg);
    if (fclose(out) != 0 || body == NULL)
        status = 500;
    if (status == 200)
        respond(fd, 200, type, body, len, head);
    else
        respond_text(fd, status, status == 404 ? "not found; try /metrics\n"
                                               : "internal error\n");
    free(body);
}

/* "host:port" -> host (NULL for any, brackets of an IPv6 address removed)
 * and port, both in buf. */
static bool split_addr(const char *text, char *buf, size_t cap,
                       const char **host, const char **port)
{
    const char *colon = strrchr(text, ':');
    if (colon == NULL || strlen(text) >= cap || colon[1] == '\0' ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
        return false;
    strcpy(buf, text);
    char *h = buf, *c = buf + (colon - text);
    *c = '\0';
    *port = c + 1;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    } else if (strchr(h, ':')) {
        return false; /* an IPv6 address needs its brackets */
    }
    *host = h[0] ? h : NULL;
    return true;
}

static int bind_listener(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *list;
    int rc = getaddrinfo(host, port, &hints, &list);
    if (rc != 0) {
        fprintf(stderr, "vgpuctl: %s: %s\n", host ? host : "*", gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = list; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 16) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    if (fd < 0)
        fprintf(stderr, "vgpuctl: cannot listen on %s:%s: %s\n",
                host ? host : "*", port, strerror(err));
    return fd;
}

static void print_bound(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return;
    bool v6 = ss.ss_family == AF_INET6;
    printf("listening on %s%s%s:%s\n", v6 ? "[" : "", host, v6 ? "]" : "", port);
    fflush(stdout);
}

int http_serve(const char *listen_addr, const char *content_type,
               http_handler handler, void *arg)
{
    char buf[300];
    const char *host, *port;
    if (!split_addr(listen_addr, buf, sizeof buf, &host, &port)) {
        fprintf(stderr, "vgpuctl: --listen wants ADDR:PORT (127.0.0.1:9394, "
                        ":9394, [::1]:9394), not '%s'\n", listen_addr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = bind_listener(host, port);
    if (lfd < 0)
        return 1;
    print_bound(lfd);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                poll(NULL, 0, 100); /* out of descriptors: do not spin */
            continue;
        }
        serve_one(fd, content_type, handler, arg);
        close(fd);
    }
}
