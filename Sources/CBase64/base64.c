#include "cbase64.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <tmmintrin.h>
#define CB64_SSSE3 1
#endif

/* The tables are built by the preprocessor so that they are constant data, with no initialization
 * to race on between threads. */
#define CB64_R4(M, c) M(c), M((c) + 1), M((c) + 2), M((c) + 3)
#define CB64_R16(M, c) CB64_R4(M, c), CB64_R4(M, (c) + 4), CB64_R4(M, (c) + 8), CB64_R4(M, (c) + 12)
#define CB64_R64(M, c) CB64_R16(M, c), CB64_R16(M, (c) + 16), CB64_R16(M, (c) + 32), CB64_R16(M, (c) + 48)
#define CB64_R256(M, c) CB64_R64(M, c), CB64_R64(M, (c) + 64), CB64_R64(M, (c) + 128), CB64_R64(M, (c) + 192)
#define CB64_R4096(M)                                                                                       \
    CB64_R256(M, 0), CB64_R256(M, 256), CB64_R256(M, 512), CB64_R256(M, 768), CB64_R256(M, 1024),           \
        CB64_R256(M, 1280), CB64_R256(M, 1536), CB64_R256(M, 1792), CB64_R256(M, 2048), CB64_R256(M, 2304), \
        CB64_R256(M, 2560), CB64_R256(M, 2816), CB64_R256(M, 3072), CB64_R256(M, 3328), CB64_R256(M, 3584), \
        CB64_R256(M, 3840)

#define CB64_CHAR(x)                    \
    (char)((x) < 26    ? 'A' + (x)      \
           : (x) < 52  ? 'a' - 26 + (x) \
           : (x) < 62  ? '0' - 52 + (x) \
           : (x) == 62 ? '+'            \
                       : '/')
#define CB64_PAIR(x) {CB64_CHAR((x) >> 6), CB64_CHAR((x) & 63)}
/* The two characters of every 12-bit value: two lookups per group instead of four. */
static const char pairs[4096][2] = {CB64_R4096(CB64_PAIR)};

#define CB64_BAD 0xFFFFFFFFu
#define CB64_VALUE(c)                                        \
    ((c) >= 'A' && (c) <= 'Z'   ? (uint32_t)((c) - 'A')      \
     : (c) >= 'a' && (c) <= 'z' ? (uint32_t)((c) - 'a' + 26) \
     : (c) >= '0' && (c) <= '9' ? (uint32_t)((c) - '0' + 52) \
     : (c) == '+'               ? 62u                        \
     : (c) == '/'               ? 63u                        \
                                : CB64_BAD)
/* A character outside the alphabet sets every bit, so one test of the top byte of the OR of a
 * group's four entries catches it, and so does the test of the bits a padded group leaves unused. */
#define CB64_SHIFTED(c, shift) (CB64_VALUE(c) == CB64_BAD ? CB64_BAD : CB64_VALUE(c) << (shift))
#define CB64_D0(c) CB64_SHIFTED(c, 18)
#define CB64_D1(c) CB64_SHIFTED(c, 12)
#define CB64_D2(c) CB64_SHIFTED(c, 6)
#define CB64_D3(c) CB64_SHIFTED(c, 0)

static const uint32_t d0[256] = {CB64_R256(CB64_D0, 0)};
static const uint32_t d1[256] = {CB64_R256(CB64_D1, 0)};
static const uint32_t d2[256] = {CB64_R256(CB64_D2, 0)};
static const uint32_t d3[256] = {CB64_R256(CB64_D3, 0)};

/* Encodes in[i..<n] to out[o...], the final partial group with padding. */
static size_t encode_tail(const uint8_t *in, size_t i, size_t n, char *out, size_t o) {
    for (; n - i >= 3; i += 3, o += 4) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        const char *high = pairs[v >> 12], *low = pairs[v & 0xFFF];
        out[o] = high[0];
        out[o + 1] = high[1];
        out[o + 2] = low[0];
        out[o + 3] = low[1];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o] = pairs[v >> 12][0];
        out[o + 1] = pairs[v >> 12][1];
        out[o + 2] = n - i == 2 ? pairs[v & 0xFFF][0] : '=';
        out[o + 3] = '=';
        o += 4;
    }
    return o;
}

/* Decodes the groups in[i..<n], n - i a multiple of 4 and at least 4, to out[o...]; only the last
 * group may be padded. Returns the total written, or -1. */
static ptrdiff_t decode_tail(const uint8_t *in, size_t i, size_t n, uint8_t *out, size_t o) {
    for (; n - i > 4; i += 4, o += 3) {
        uint32_t v = d0[in[i]] | d1[in[i + 1]] | d2[in[i + 2]] | d3[in[i + 3]];
        if (v > 0xFFFFFF) return -1;
        out[o] = (uint8_t)(v >> 16);
        out[o + 1] = (uint8_t)(v >> 8);
        out[o + 2] = (uint8_t)v;
    }
    /* The padding characters are never looked up ('=' is outside the alphabet); the masks test
     * validity and, for a padded group, that the unused low bits are zero (RFC 4648 3.5). */
    uint32_t v = d0[in[i]] | d1[in[i + 1]];
    if (in[i + 3] == '=' && in[i + 2] == '=') {
        if (v & 0xFF00FFFF) return -1;
        out[o] = (uint8_t)(v >> 16);
        return (ptrdiff_t)(o + 1);
    }
    v |= d2[in[i + 2]];
    if (in[i + 3] == '=') {
        if (v & 0xFF0000FF) return -1;
        out[o] = (uint8_t)(v >> 16);
        out[o + 1] = (uint8_t)(v >> 8);
        return (ptrdiff_t)(o + 2);
    }
    v |= d3[in[i + 3]];
    if (v > 0xFFFFFF) return -1;
    out[o] = (uint8_t)(v >> 16);
    out[o + 1] = (uint8_t)(v >> 8);
    out[o + 2] = (uint8_t)v;
    return (ptrdiff_t)(o + 3);
}

size_t cb64_encode_scalar(const uint8_t *in, size_t n, char *out) {
    return encode_tail(in, 0, n, out, 0);
}

ptrdiff_t cb64_decode_scalar(const char *in, size_t n, uint8_t *out) {
    if (n == 0) return 0;
    if (n % 4) return -1;
    return decode_tail((const uint8_t *)in, 0, n, out, 0);
}

#ifdef CB64_SSSE3

#define CB64_STEP __attribute__((target("ssse3"), always_inline)) static inline

/* Encodes the 12 bytes in[0..<12] (reading 16) to the 16 characters out[0..<16]. */
CB64_STEP void encode_step(const uint8_t *in, char *out) {
    /* Each 32-bit lane gets the bytes s1 s0 s2 s1 of its group s0 s1 s2: the low 16 bits then hold
     * s0:s1 (the first two indices at bits 15..10 and 9..4), the high 16 bits s1:s2 (the other two at
     * bits 11..6 and 5..0). */
    const __m128i spread = _mm_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
    /* Indices 0 and 2 move down to bits 5..0 of their 16-bit word (mulhi: >> 10 and >> 6), indices 1
     * and 3 up to bits 13..8 (mullo: << 4 and << 8), so each index lands in its own output byte. */
    const __m128i even_mask = _mm_set1_epi32(0x0FC0FC00);
    const __m128i even_mul = _mm_set1_epi32(0x04000040);
    const __m128i odd_mask = _mm_set1_epi32(0x003F03F0);
    const __m128i odd_mul = _mm_set1_epi32(0x01000010);
    /* Index classes: 0 for 0..25, 1 for 26..51, 2..13 for 52..63 (saturating - 51, plus one where
     * the index is above 25); the table holds each class's distance to its character. */
    const __m128i offsets = _mm_setr_epi8('A', 'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
                                          '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62, '/' - 63, 0, 0);
    __m128i x = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)in), spread);
    __m128i idx = _mm_or_si128(_mm_mulhi_epu16(_mm_and_si128(x, even_mask), even_mul),
                               _mm_mullo_epi16(_mm_and_si128(x, odd_mask), odd_mul));
    __m128i cls = _mm_sub_epi8(_mm_subs_epu8(idx, _mm_set1_epi8(51)), _mm_cmpgt_epi8(idx, _mm_set1_epi8(25)));
    _mm_storeu_si128((__m128i *)out, _mm_add_epi8(idx, _mm_shuffle_epi8(offsets, cls)));
}

/* Decodes the 16 characters in[0..<16] to out[0..<12], writing 16 bytes (the last 4 are junk).
 * Returns each character's offset to its value, zero for a character outside the alphabet. */
CB64_STEP __m128i decode_step(const uint8_t *in, uint8_t *out) {
    /* A range test is an add that moves the range's top to 127 and one signed compare; the add is
     * a bijection on bytes, so nothing outside the range (0x80 and up included) lands in it. */
    const __m128i upper_shift = _mm_set1_epi8(127 - 'Z');
    const __m128i lower_shift = _mm_set1_epi8(127 - 'z');
    const __m128i letters_start = _mm_set1_epi8(127 - 26);
    const __m128i digit_shift = _mm_set1_epi8(127 - '9');
    const __m128i digits_start = _mm_set1_epi8(127 - 10);
    /* Every class's offset is non-zero, which is what makes zero mean "no class". */
    const __m128i upper_offset = _mm_set1_epi8(-'A');
    const __m128i lower_offset = _mm_set1_epi8(26 - 'a');
    const __m128i digit_offset = _mm_set1_epi8(52 - '0');
    const __m128i plus_offset = _mm_set1_epi8(62 - '+');
    const __m128i slash_offset = _mm_set1_epi8(63 - '/');
    /* Per 32-bit lane of values a b c d: a << 6 | b and c << 6 | d, then their 24-bit join, whose
     * bytes go out high first. */
    const __m128i pair = _mm_set1_epi32(0x01400140);
    const __m128i join = _mm_set1_epi32(0x00011000);
    const __m128i order = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    __m128i c = _mm_loadu_si128((const __m128i *)in);
    __m128i upper = _mm_cmpgt_epi8(_mm_add_epi8(c, upper_shift), letters_start);
    __m128i lower = _mm_cmpgt_epi8(_mm_add_epi8(c, lower_shift), letters_start);
    __m128i digit = _mm_cmpgt_epi8(_mm_add_epi8(c, digit_shift), digits_start);
    __m128i offset = _mm_or_si128(
        _mm_or_si128(_mm_and_si128(upper, upper_offset), _mm_and_si128(lower, lower_offset)),
        _mm_or_si128(_mm_and_si128(digit, digit_offset),
                     _mm_or_si128(_mm_and_si128(_mm_cmpeq_epi8(c, _mm_set1_epi8('+')), plus_offset),
                                  _mm_and_si128(_mm_cmpeq_epi8(c, _mm_set1_epi8('/')), slash_offset))));
    __m128i v = _mm_madd_epi16(_mm_maddubs_epi16(_mm_add_epi8(c, offset), pair), join);
    _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(v, order));
    return offset;
}

/* Two steps per turn of the loops halve the loops' own instructions. Every step's 16-byte load
 * stays inside the input. */
__attribute__((target("ssse3"))) static size_t encode_ssse3(const uint8_t *in, size_t n, char *out) {
    size_t i = 0, o = 0;
    for (; n - i >= 28; i += 24, o += 32) {
        encode_step(in + i, out + o);
        encode_step(in + i + 12, out + o + 16);
    }
    if (n - i >= 16) {
        encode_step(in + i, out + o);
        i += 12;
        o += 16;
    }
    return encode_tail(in, i, n, out, o);
}

/* The last group, the only one that may be padded, is left to the scalar code: a step's load stays
 * before it, and then the step's 16-byte store stays inside the n / 4 * 3 bytes of out. */
__attribute__((target("ssse3"))) static ptrdiff_t decode_ssse3(const uint8_t *in, size_t n, uint8_t *out) {
    /* The offsets' running minimum: one instruction per step rather than a test and a branch, at
     * the price of decoding a bad input to its end (its output is garbage, but within out). */
    __m128i least = _mm_set1_epi8(-1);
    size_t i = 0, o = 0;
    for (; n - i >= 40; i += 32, o += 24) {
        least = _mm_min_epu8(least, decode_step(in + i, out + o));
        least = _mm_min_epu8(least, decode_step(in + i + 16, out + o + 12));
    }
    if (n - i >= 24) {
        least = _mm_min_epu8(least, decode_step(in + i, out + o));
        i += 16;
        o += 12;
    }
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(least, _mm_setzero_si128()))) return -1;
    return decode_tail(in, i, n, out, o);
}

static int have_ssse3(void) {
    /* 0: not yet asked, 1: no, 2: yes. Threads that race here all store the same answer. */
    static int cached;
    int known = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (known == 0) {
        unsigned a, b, c, d;
        known = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSSE3) ? 2 : 1;
        __atomic_store_n(&cached, known, __ATOMIC_RELAXED);
    }
    return known == 2;
}

#endif

size_t cb64_encode(const uint8_t *in, size_t n, char *out) {
#ifdef CB64_SSSE3
    if (have_ssse3()) return encode_ssse3(in, n, out);
#endif
    return cb64_encode_scalar(in, n, out);
}

ptrdiff_t cb64_decode(const char *in, size_t n, uint8_t *out) {
    if (n == 0) return 0;
    if (n % 4) return -1;
#ifdef CB64_SSSE3
    if (have_ssse3()) return decode_ssse3((const uint8_t *)in, n, out);
#endif
    return decode_tail((const uint8_t *)in, 0, n, out, 0);
}
