#ifndef WSGATE_CSYSTEM_H
#define WSGATE_CSYSTEM_H

#include <stddef.h>
#include <stdint.h>

/* Glibc's Swift overlay does not export epoll, eventfd or timerfd; these thin wrappers do. */

#define CS_EPOLLIN 0x001u
#define CS_EPOLLOUT 0x004u
#define CS_EPOLLERR 0x008u
#define CS_EPOLLHUP 0x010u
#define CS_EPOLLET 0x80000000u

typedef struct {
    uint32_t events;
    uint64_t token;
} cs_event;

int cs_epoll_create(void);
int cs_epoll_add(int epfd, int fd, uint32_t events, uint64_t token);
int cs_epoll_mod(int epfd, int fd, uint32_t events, uint64_t token);
int cs_epoll_del(int epfd, int fd);
/* Waits and copies up to max events into out; returns the count or -1 with errno set. */
int cs_epoll_wait(int epfd, cs_event *out, int max, int timeout_ms);

int cs_eventfd(void);
int cs_eventfd_signal(int fd);
int cs_eventfd_drain(int fd);

/* Listening socket bound with SO_REUSEADDR and SO_REUSEPORT, non-blocking, with TCP_NODELAY for
   the sockets it accepts. Returns fd or -errno. */
int cs_listen(const char *host, uint16_t port, int backlog);
/* accept4 non-blocking (TCP_NODELAY comes from the listener); the peer's address as text (as
   cs_peer_address, "" if it has none) into `address`. Returns fd or -errno. */
int cs_accept(int listen_fd, char *address, size_t address_len);
int cs_errno(void);

/* A sockaddr of `length` bytes, big enough for IPv4 and IPv6; a value type Swift can copy. */
typedef struct {
    uint32_t length;
    uint8_t bytes[128];
} cs_address;

/* getaddrinfo for a TCP connect (AF_UNSPEC, SOCK_STREAM, AI_ADDRCONFIG unless host is numeric).
   Fills up to max addresses, in getaddrinfo's order; returns the count (> 0) or -1 with `error`
   set to the reason (gai_strerror text, or "no addresses"). Blocking: call off the loop. */
int cs_resolve(const char *host, uint16_t port, cs_address *out, int max, char *error, size_t error_len);
/* Non-blocking connect: socket(SOCK_NONBLOCK|SOCK_CLOEXEC), TCP_NODELAY, connect. Returns the fd,
   connected or in progress (wait for writable, then cs_socket_error), or -errno. */
int cs_connect(const cs_address *address);
/* SO_ERROR of a socket: 0 when a non-blocking connect succeeded, else its errno. */
int cs_socket_error(int fd);
/* "1.2.3.4:80" or "[::1]:80" ("[fe80::1%2]:80" with a scope). */
void cs_address_text(const cs_address *address, char *buf, size_t len);
/* The port a bound socket got (for port 0). */
int cs_local_port(int fd);

/* The peer's IP address as text (IPv4 dotted, IPv6 without brackets; an IPv4-mapped IPv6 address
   as IPv4) into `out` (at least 46 bytes); 0, or -1 when the socket has no peer. */
int cs_peer_address(int fd, char *out, size_t out_len);

/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force afterwards
   (-1 when it cannot be read; RLIM_INFINITY as LONG_MAX). */
long cs_raise_nofile(void);

/* Sends `state` (e.g. "READY=1") to systemd's notify socket named by NOTIFY_SOCKET (a path, or
   an abstract name starting with '@'). 0 when sent or when not started by systemd, else -errno. */
int cs_sd_notify(const char *state);
/* Disable SIGPIPE process-wide so writes to closed sockets return EPIPE. */
void cs_ignore_sigpipe(void);
/* Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and threads it creates later). */
int cs_block_signals(void);
/* A non-blocking signalfd for those signals; cs_read_signal returns the next one, or 0 when none is pending. */
int cs_signalfd(void);
int cs_read_signal(int fd);

/* inotify: a non-blocking instance, a watch for changes to a folder's entries, and a drain that
   returns how many events were read (0 when none were pending, -1 on error). */
int cs_inotify_init(void);
int cs_inotify_watch_folder(int fd, const char *path);
int cs_inotify_drain(int fd);

#endif
