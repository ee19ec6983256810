#include "csignature.h"

#include <string.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

static EVP_PKEY *read_public_key(const void *key, size_t key_len) {
    BIO *bio = BIO_new_mem_buf(key, (int)key_len);
    if (bio == NULL) return NULL;
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    return pkey;
}

int csig_public_key_kind(const void *key, size_t key_len) {
    if (key_len > 64 * 1024) return 0;
    EVP_PKEY *pkey = read_public_key(key, key_len);
    if (pkey == NULL) return 0;
    int id = EVP_PKEY_get_base_id(pkey);
    EVP_PKEY_free(pkey);
    return id == EVP_PKEY_RSA ? 1 : id == EVP_PKEY_EC ? 2 : 0;
}

static int verify_hmac(const EVP_MD *md, const void *key, size_t key_len, const void *data, size_t data_len,
                       const void *sig, size_t sig_len) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(md, key, (int)key_len, data, data_len, mac, &mac_len) == NULL) return -1;
    return sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

/* JWS carries an ECDSA signature as R || S, each `half` bytes; OpenSSL wants DER. */
static unsigned char *ecdsa_der(const unsigned char *sig, size_t half, int *der_len) {
    ECDSA_SIG *ecdsa = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL);
    BIGNUM *s = BN_bin2bn(sig + half, (int)half, NULL);
    unsigned char *der = NULL;
    if (ecdsa != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(ecdsa, r, s)) {
        r = s = NULL; /* owned by ecdsa now */
        *der_len = i2d_ECDSA_SIG(ecdsa, &der);
        if (*der_len <= 0) der = NULL;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(ecdsa);
    return der;
}

static int verify_public(const EVP_MD *md, int want_id, int bits, const void *key, size_t key_len,
                         const void *data, size_t data_len, const unsigned char *sig, size_t sig_len) {
    EVP_PKEY *pkey = read_public_key(key, key_len);
    if (pkey == NULL) return -1;
    int result = -1;
    unsigned char *der = NULL;
    EVP_MD_CTX *ctx = NULL;
    if (EVP_PKEY_get_base_id(pkey) != want_id) goto done;
    if (want_id == EVP_PKEY_EC) {
        if (EVP_PKEY_get_bits(pkey) != bits) goto done;
        size_t half = (size_t)(bits + 7) / 8;
        result = 0;
        if (sig_len != 2 * half) goto done;
        int der_len = 0;
        if ((der = ecdsa_der(sig, half, &der_len)) == NULL) goto done;
        sig = der;
        sig_len = (size_t)der_len;
    }
    result = 0;
    ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) == 1 &&
        EVP_DigestVerify(ctx, sig, sig_len, data, data_len) == 1)
        result = 1;
done:
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    EVP_PKEY_free(pkey);
    return result;
}

int csig_verify(const char *alg, const void *key, size_t key_len, const void *data, size_t data_len,
                const void *sig, size_t sig_len) {
    const unsigned char *s = sig;
    if (strcmp(alg, "HS256") == 0) return verify_hmac(EVP_sha256(), key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "HS384") == 0) return verify_hmac(EVP_sha384(), key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "HS512") == 0) return verify_hmac(EVP_sha512(), key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "RS256") == 0) return verify_public(EVP_sha256(), EVP_PKEY_RSA, 0, key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "RS384") == 0) return verify_public(EVP_sha384(), EVP_PKEY_RSA, 0, key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "RS512") == 0) return verify_public(EVP_sha512(), EVP_PKEY_RSA, 0, key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "ES256") == 0) return verify_public(EVP_sha256(), EVP_PKEY_EC, 256, key, key_len, data, data_len, s, sig_len);
    if (strcmp(alg, "ES384") == 0) return verify_public(EVP_sha384(), EVP_PKEY_EC, 384, key, key_len, data, data_len, s, sig_len);
    return -2;
}
