#ifndef WSGATE_CTLS_H
#define WSGATE_CTLS_H

#include <stddef.h>

/* Thin wrappers for the parts of OpenSSL that Swift cannot call directly: macros over
   SSL_CTX_ctrl / SSL_ctrl, the ALPN selection callback, the error queue as text, dates of the
   leaf certificate, and the non-blocking I/O calls with their SSL_get_error classification done
   right after the call (errno must be read before anything else can change it).

   The OpenSSL types stay opaque here (Swift sees OpaquePointer, the same as through COpenSSL), so
   this header needs no OpenSSL include. */

struct ssl_ctx_st;
struct ssl_st;

/* ---- Context settings (macros in OpenSSL). Return 1 on success, 0 on failure. ---- */

int ctls_ctx_set_min_proto_version(struct ssl_ctx_st *ctx, int version);
int ctls_ctx_set_max_proto_version(struct ssl_ctx_st *ctx, int version);
/* Adds the SSL_MODE_* bits in `mode`; returns the resulting mode bitmask. */
long ctls_ctx_set_mode(struct ssl_ctx_st *ctx, long mode);
long ctls_ctx_get_mode(struct ssl_ctx_st *ctx);

/* Server ALPN: selects "http/1.1" when the client offers it; when the client offers ALPN but not
   http/1.1 the handshake goes on without an ALPN answer (SSL_TLSEXT_ERR_NOACK), and a client that
   offers no ALPN never reaches the callback. */
void ctls_ctx_select_http11_alpn(struct ssl_ctx_st *ctx);

/* SNI for a client connection (SSL_set_tlsext_host_name). Returns 1 on success. */
int ctls_set_sni(struct ssl_st *ssl, const char *name);

/* ---- Certificates ---- */

enum {
    CTLS_CERT_VALID = 0,
    CTLS_CERT_EXPIRED = 1,
    CTLS_CERT_NOT_YET_VALID = 2,
    /* No certificate in the context, or its dates cannot be read. */
    CTLS_CERT_UNKNOWN = 3,
};

/* Checks notBefore/notAfter of the context's leaf certificate against the current time
   (X509_cmp_current_time). For EXPIRED, `date` receives notAfter; for NOT_YET_VALID, notBefore;
   formatted as "2024-01-01 00:00:00 UTC". For VALID it receives notAfter. */
int ctls_ctx_certificate_validity(struct ssl_ctx_st *ctx, char *date, size_t date_len);

/* Makes loading an encrypted private key fail instead of prompting on the terminal;
   ctls_passphrase_requested then returns 1 (once) on the thread that tried. */
void ctls_ctx_refuse_passphrases(struct ssl_ctx_st *ctx);
int ctls_passphrase_requested(void);

/* 1 when the oldest or the newest error in the calling thread's queue (one failed call leaves
   the root cause first and what the caller made of it last) is of library `lib` (ERR_LIB_*), with
   reason `reason` (*_R_*) unless that is 0. Leaves the queue as it is. */
int ctls_error_queue_has(int lib, int reason);

/* Drains the calling thread's OpenSSL error queue into `buf` as "library: reason" entries joined
   by "; " (oldest first). When the queue is empty and sys_errno is non-zero, writes
   strerror(sys_errno) instead. Always NUL-terminates (when buf_len > 0); returns the length. */
size_t ctls_error_text(char *buf, size_t buf_len, int sys_errno);

/* ---- Non-blocking I/O ----
   Each call clears the error queue, makes one SSL_* call and classifies its result with
   SSL_get_error. On CTLS_FAILED the queue is left for ctls_error_text and *sys_errno holds errno
   when the failure was a system call error (0 otherwise). */

enum {
    CTLS_OK = 0,
    CTLS_WANT_READ = 1,
    CTLS_WANT_WRITE = 2,
    /* close_notify received, or the peer closed the TCP stream (EOF, with or without close_notify). */
    CTLS_CLOSED = 3,
    CTLS_FAILED = 4,
};

int ctls_handshake(struct ssl_st *ssl, int *sys_errno);
/* On CTLS_OK, *done holds the byte count (> 0). */
int ctls_read(struct ssl_st *ssl, void *buf, size_t count, size_t *done, int *sys_errno);
int ctls_write(struct ssl_st *ssl, const void *buf, size_t count, size_t *done, int *sys_errno);
/* One non-blocking SSL_shutdown: sends close_notify if the socket takes it. Returns SSL_shutdown's result. */
int ctls_shutdown(struct ssl_st *ssl);

#endif
