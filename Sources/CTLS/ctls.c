#include "ctls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

int ctls_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

int ctls_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

long ctls_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }

long ctls_ctx_get_mode(SSL_CTX *ctx) { return SSL_CTX_get_mode(ctx); }

static const unsigned char http11[] = "http/1.1";

static int select_http11(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                         const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    /* `in` is the client's list: length-prefixed protocol names. */
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int n = in[i];
        if (n == 0 || n > inlen - i - 1) break; /* malformed: stop looking */
        if (n == sizeof http11 - 1 && memcmp(in + i + 1, http11, n) == 0) {
            *out = http11;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

void ctls_ctx_select_http11_alpn(SSL_CTX *ctx) { SSL_CTX_set_alpn_select_cb(ctx, select_http11, NULL); }

int ctls_set_sni(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

static void format_time(const ASN1_TIME *t, char *buf, size_t len) {
    if (len == 0) return;
    buf[0] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) return;
    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

int ctls_ctx_certificate_validity(SSL_CTX *ctx, char *date, size_t date_len) {
    if (date_len > 0) date[0] = 0;
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (leaf == NULL) return CTLS_CERT_UNKNOWN;
    const ASN1_TIME *notBefore = X509_get0_notBefore(leaf);
    const ASN1_TIME *notAfter = X509_get0_notAfter(leaf);
    /* X509_cmp_current_time: -1 when the time is before now, 1 when after, 0 on error. */
    int after = X509_cmp_current_time(notAfter);
    int before = X509_cmp_current_time(notBefore);
    if (after == 0 || before == 0) return CTLS_CERT_UNKNOWN;
    if (after < 0) {
        format_time(notAfter, date, date_len);
        return CTLS_CERT_EXPIRED;
    }
    if (before > 0) {
        format_time(notBefore, date, date_len);
        return CTLS_CERT_NOT_YET_VALID;
    }
    format_time(notAfter, date, date_len);
    return CTLS_CERT_VALID;
}

static _Thread_local int passphrase_requested;

static int refuse_passphrase(char *buf, int size, int rwflag, void *userdata) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    passphrase_requested = 1;
    return -1;
}

void ctls_ctx_refuse_passphrases(SSL_CTX *ctx) { SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase); }

int ctls_passphrase_requested(void) {
    int asked = passphrase_requested;
    passphrase_requested = 0;
    return asked;
}

static int error_is(unsigned long e, int lib, int reason) {
    return e != 0 && ERR_GET_LIB(e) == lib && (reason == 0 || ERR_GET_REASON(e) == reason);
}

int ctls_error_queue_has(int lib, int reason) {
    return error_is(ERR_peek_error(), lib, reason) || error_is(ERR_peek_last_error(), lib, reason);
}

size_t ctls_error_text(char *buf, size_t buf_len, int sys_errno) {
    if (buf_len == 0) return 0;
    size_t used = 0;
    buf[0] = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        const char *lib = ERR_lib_error_string(e);
        const char *reason = ERR_reason_error_string(e);
        char code[32];
        if (reason == NULL) {
            snprintf(code, sizeof code, "error %lu", (unsigned long)ERR_GET_REASON(e));
            reason = code;
        }
        if (used + 1 >= buf_len) continue; /* keep draining */
        int n = snprintf(buf + used, buf_len - used, "%s%s%s%s", used ? "; " : "", lib ? lib : "",
                         lib ? ": " : "", reason);
        if (n < 0) continue;
        used += (size_t)n < buf_len - used ? (size_t)n : buf_len - used - 1;
    }
    if (used == 0 && sys_errno != 0) {
        int n = snprintf(buf, buf_len, "%s", strerror(sys_errno));
        used = n < 0 ? 0 : ((size_t)n < buf_len ? (size_t)n : buf_len - 1);
    }
    return used;
}

/* Maps the result of one SSL_* call; `saved_errno` is errno right after the call. */
static int classify(SSL *ssl, int ret, int saved_errno, int *sys_errno) {
    *sys_errno = 0;
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_NONE:
        return CTLS_OK;
    case SSL_ERROR_WANT_READ:
        return CTLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return CTLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return CTLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            /* EOF (errno 0) is a close; anything else (ECONNRESET, EPIPE...) a failure. */
            if (saved_errno == 0) return CTLS_CLOSED;
            *sys_errno = saved_errno;
        }
        return CTLS_FAILED;
    case SSL_ERROR_SSL: {
        /* OpenSSL 3 reports a TCP EOF without close_notify this way. */
        unsigned long e = ERR_peek_error();
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return CTLS_CLOSED;
        }
        return CTLS_FAILED;
    }
    default:
        /* WANT_X509_LOOKUP, WANT_ASYNC...: never requested by this layer. */
        return CTLS_FAILED;
    }
}

int ctls_handshake(SSL *ssl, int *sys_errno) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    int saved = errno;
    if (ret == 1) {
        *sys_errno = 0;
        return CTLS_OK;
    }
    return classify(ssl, ret, saved, sys_errno);
}

int ctls_read(SSL *ssl, void *buf, size_t count, size_t *done, int *sys_errno) {
    *done = 0;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_read_ex(ssl, buf, count, done);
    int saved = errno;
    if (ret == 1) {
        *sys_errno = 0;
        return CTLS_OK;
    }
    return classify(ssl, ret, saved, sys_errno);
}

int ctls_write(SSL *ssl, const void *buf, size_t count, size_t *done, int *sys_errno) {
    *done = 0;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_write_ex(ssl, buf, count, done);
    int saved = errno;
    if (ret == 1) {
        *sys_errno = 0;
        return CTLS_OK;
    }
    return classify(ssl, ret, saved, sys_errno);
}

int ctls_shutdown(SSL *ssl) {
    ERR_clear_error();
    int ret = SSL_shutdown(ssl);
    ERR_clear_error();
    return ret;
}
