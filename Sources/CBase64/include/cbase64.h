#ifndef WSGATE_CBASE64_H
#define WSGATE_CBASE64_H

#include <stddef.h>
#include <stdint.h>

/* Standard base64 (RFC 4648 section 4) with padding. */

/* Writes ((n + 2) / 3) * 4 characters to out and returns that count. */
size_t cb64_encode(const uint8_t *in, size_t n, char *out);

/* Strict: n a multiple of 4, padding only in the last group, the bits a padded group does not use
 * zero, nothing outside the alphabet. Returns the number of bytes written to out, or -1 if the input
 * is not canonical base64 (out's contents are then unspecified). Whatever the input, nothing is
 * written past out[n / 4 * 3 - 1]. */
ptrdiff_t cb64_decode(const char *in, size_t n, uint8_t *out);

/* The portable code alone, whatever the CPU offers: for tests that compare it with the vector code. */
size_t cb64_encode_scalar(const uint8_t *in, size_t n, char *out);
ptrdiff_t cb64_decode_scalar(const char *in, size_t n, uint8_t *out);

#endif
