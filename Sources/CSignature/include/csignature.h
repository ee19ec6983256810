#ifndef CSIGNATURE_H
#define CSIGNATURE_H

#include <stddef.h>

/* JWS signatures (RFC 7518) checked with OpenSSL, for `jwt.verify`. No I/O, no state.
   `alg` is one of HS256 HS384 HS512 (key: the secret's bytes), RS256 RS384 RS512 (key: a PEM
   RSA public key), ES256 ES384 (key: a PEM EC public key on P-256 or P-384; the signature is
   R || S as JWS has it). Returns 1 when the signature is good, 0 when it is not, -1 when the key
   cannot be read or does not fit the algorithm, -2 for an algorithm not listed above. */
int csig_verify(const char *alg, const void *key, size_t key_len, const void *data, size_t data_len,
                const void *sig, size_t sig_len);

/* What kind of key `key` is: 1 an RSA public key, 2 an EC public key, 0 neither (not PEM, or
   another kind). */
int csig_public_key_kind(const void *key, size_t key_len);

#endif
