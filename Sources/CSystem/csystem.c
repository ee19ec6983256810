#define _GNU_SOURCE
#include "csystem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int cs_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = token;
    return epoll_ctl(epfd, op, fd, &ev);
}

int cs_epoll_add(int epfd, int fd, uint32_t events, uint64_t token) { return ctl(epfd, EPOLL_CTL_ADD, fd, events, token); }
int cs_epoll_mod(int epfd, int fd, uint32_t events, uint64_t token) { return ctl(epfd, EPOLL_CTL_MOD, fd, events, token); }
int cs_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int cs_epoll_wait(int epfd, cs_event *out, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        out[i].events = evs[i].events;
        out[i].token = evs[i].data.u64;
    }
    return n;
}

int cs_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cs_eventfd_signal(int fd) {
    uint64_t one = 1;
    return (int)write(fd, &one, sizeof one);
}

int cs_eventfd_drain(int fd) {
    uint64_t value;
    return (int)read(fd, &value, sizeof value);
}

int cs_listen(const char *host, uint16_t port, int backlog) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) return -EINVAL;
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { err = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        /* Set once here: Linux copies a listener's options into the sockets it accepts, which
           spares a setsockopt per connection. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd >= 0 ? fd : -(err ? err : EINVAL);
}

/* Dotted IPv4 from its four bytes. Written out here: glibc's inet_ntop formats IPv4 with sprintf,
   which cost more than the rest of accepting a connection in user space. */
static int format_ipv4(const unsigned char *octets, char *out, size_t out_len) {
    if (out_len < INET_ADDRSTRLEN) return -1;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = octets[i];
        if (v >= 100) *p++ = (char)('0' + v / 100);
        if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
    return 0;
}

/* An IP address as text: IPv4 dotted, IPv6 without brackets, an IPv4-mapped IPv6 address as IPv4. */
static int format_address(const struct sockaddr_storage *address, char *out, size_t out_len) {
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)address;
        return format_ipv4((const unsigned char *)&v4->sin_addr, out, out_len);
    }
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)address;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return format_ipv4(&v6->sin6_addr.s6_addr[12], out, out_len);
        return inet_ntop(AF_INET6, &v6->sin6_addr, out, (socklen_t)out_len) ? 0 : -1;
    }
    return -1;
}

int cs_accept(int listen_fd, char *address, size_t address_len) {
    struct sockaddr_storage peer;
    peer.ss_family = AF_UNSPEC; /* "" should the kernel give no address */
    socklen_t length = sizeof peer;
    int fd = accept4(listen_fd, (struct sockaddr *)&peer, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    if (format_address(&peer, address, address_len) != 0 && address_len > 0) address[0] = 0;
    return fd;
}

int cs_errno(void) { return errno; }

long cs_raise_nofile(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    if (limit.rlim_cur < limit.rlim_max) {
        struct rlimit raised = {limit.rlim_max, limit.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit.rlim_cur = limit.rlim_max;
    }
    return limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > (rlim_t)LONG_MAX ? LONG_MAX : (long)limit.rlim_cur;
}

int cs_sd_notify(const char *state) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0') return 0;
    size_t length = strlen(path);
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (length >= sizeof address.sun_path) return -ENAMETOOLONG;
    memcpy(address.sun_path, path, length);
    if (address.sun_path[0] == '@') address.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&address,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length));
    int error = sent < 0 ? errno : 0;
    close(fd);
    return -error;
}

int cs_peer_address(int fd, char *out, size_t out_len) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    if (getpeername(fd, (struct sockaddr *)&address, &length) != 0) return -1;
    return format_address(&address, out, out_len);
}

static int is_numeric_host(const char *host) {
    struct in6_addr scratch;
    return inet_pton(AF_INET, host, &scratch) == 1 || inet_pton(AF_INET6, host, &scratch) == 1;
}

int cs_resolve(const char *host, uint16_t port, cs_address *out, int max, char *error, size_t error_len) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* AI_ADDRCONFIG keeps AAAA answers away from hosts without IPv6 (and A from IPv6-only ones);
       a literal address is what the user asked for, so it is returned as it is, without DNS. */
    hints.ai_flags = AI_NUMERICSERV | (is_numeric_host(host) ? AI_NUMERICHOST : AI_ADDRCONFIG);
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(error, error_len, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    int count = 0;
    for (struct addrinfo *ai = res; ai && count < max; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof out->bytes) continue;
        out[count].length = (uint32_t)ai->ai_addrlen;
        memcpy(out[count].bytes, ai->ai_addr, ai->ai_addrlen);
        count++;
    }
    freeaddrinfo(res);
    if (count == 0) {
        snprintf(error, error_len, "no addresses");
        return -1;
    }
    return count;
}

/* The bytes of a cs_address are not aligned for sockaddr_in6; copies are. */
static struct sockaddr_storage storage_of(const cs_address *address) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, address->bytes, address->length <= sizeof ss ? address->length : sizeof ss);
    return ss;
}

int cs_connect(const cs_address *address) {
    struct sockaddr_storage ss = storage_of(address);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* An interrupted non-blocking connect goes on in the background, like one in progress. */
    if (connect(fd, (struct sockaddr *)&ss, (socklen_t)address->length) == 0 || errno == EINPROGRESS || errno == EINTR) return fd;
    int err = errno;
    close(fd);
    return -err;
}

int cs_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

void cs_address_text(const cs_address *address, char *buf, size_t len) {
    if (len == 0) return;
    buf[0] = 0;
    struct sockaddr_storage ss = storage_of(address);
    char host[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof host) == NULL) return;
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host) == NULL) return;
        if (in6->sin6_scope_id != 0) {
            snprintf(buf, len, "[%s%%%u]:%u", host, (unsigned)in6->sin6_scope_id, (unsigned)ntohs(in6->sin6_port));
        } else {
            snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
        }
    }
}

int cs_local_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

void cs_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

static sigset_t handled_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
}

int cs_block_signals(void) {
    sigset_t set = handled_signals();
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int cs_signalfd(void) {
    sigset_t set = handled_signals();
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int cs_read_signal(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    return n == (ssize_t)sizeof info ? (int)info.ssi_signo : 0;
}

int cs_inotify_init(void) { return inotify_init1(IN_NONBLOCK | IN_CLOEXEC); }

int cs_inotify_watch_folder(int fd, const char *path) {
    return inotify_add_watch(fd, path, IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
}

int cs_inotify_drain(int fd) {
    char buffer[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    int events = 0;
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n <= 0) return (n < 0 && errno != EAGAIN) ? -1 : events;
        for (char *p = buffer; p < buffer + n;) {
            struct inotify_event *event = (struct inotify_event *)p;
            events++;
            p += sizeof *event + event->len;
        }
    }
}
