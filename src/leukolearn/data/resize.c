/* Bicubic resizing of uint8 RGB images, bit-identical to Pillow's Image.resize(BICUBIC).

   fast_resize.py beside this file computes the filter coefficients exactly as Pillow does
   (in double, then rounded to int32 with 22 fractional bits) and passes them here as
   tables; this file only does Pillow's integer arithmetic, unchanged: each output value is
   clip8(((1 << 21) + sum_t in[first + t] * k[t]) >> 22), summed in int32, once along each
   axis, the first pass's uint8 result feeding the second. Integer sums are exact in any
   order, so vectorising them changes no pixel.

   The vertical pass combines whole rows: 32 bytes at a time of `count` rows, each row
   times its coefficient. The horizontal pass is made the same: a strip of STRIP rows is
   transposed into `lines` (one line of LINE bytes per image column, holding the strip's
   pixels), output column x combines lines first..first+count like rows, and the result is
   transposed back. With AVX2 (x86 built with -march=native) the 32-byte block is written
   in intrinsics; elsewhere it is a plain loop the compiler vectorises (NEON, SSE2). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BITS 22                /* Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2 */
#define HALF (1 << (BITS - 1)) /* rounding */
#define STRIP 32               /* rows per strip of the horizontal pass */
#define LINE (STRIP * 3)       /* bytes per line: three 32-byte blocks */

static inline uint8_t clip8(int32_t acc) {
    const int32_t v = acc >> BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

#if defined(__AVX2__)
#include <immintrin.h>
#define SIMD 1

/* d[0..32) = clip8 of the sum over t < n of p[t * stride + j] * k[t], j < 32 */
static inline void block32(const uint8_t *p, long stride, int n, const int32_t *k, uint8_t *d) {
    __m256i a0 = _mm256_set1_epi32(HALF), a1 = a0, a2 = a0, a3 = a0;
    for (int t = 0; t < n; t++, p += stride) {
        const __m256i c = _mm256_set1_epi32(k[t]);
#define ACC(a, o) a = _mm256_add_epi32(a, _mm256_mullo_epi32(_mm256_cvtepu8_epi32( \
                      _mm_loadl_epi64((const __m128i *)(p + (o)))), c))
        ACC(a0, 0);
        ACC(a1, 8);
        ACC(a2, 16);
        ACC(a3, 24);
#undef ACC
    }
    a0 = _mm256_srai_epi32(a0, BITS);
    a1 = _mm256_srai_epi32(a1, BITS);
    a2 = _mm256_srai_epi32(a2, BITS);
    a3 = _mm256_srai_epi32(a3, BITS);
    /* saturating packs are the clip to [0, 255]; the permute undoes their lane order */
    __m256i v = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
    v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)d, v);
}
#else
#define SIMD 0

static inline void block32(const uint8_t *p, long stride, int n, const int32_t *k, uint8_t *d) {
    int32_t acc[32];
    for (int j = 0; j < 32; j++) acc[j] = HALF;
    for (int t = 0; t < n; t++, p += stride) {
        const int32_t c = k[t];
        for (int j = 0; j < 32; j++) acc[j] += p[j] * c;
    }
    for (int j = 0; j < 32; j++) d[j] = clip8(acc[j]);
}
#endif

/* 1 when the AVX2 block was compiled in (for tests and benchmarks to report) */
int resize_rgb8_simd(void) { return SIMD; }

/* dst row i (width bytes) = combination of src rows bounds[2i] - off + t, t < bounds[2i+1],
   with the coefficients k[i * ks + t] */
static void vertical(const uint8_t *src, long src_stride, int width, int rows_out,
                     const int32_t *k, const int32_t *bounds, int ks, int off, uint8_t *dst,
                     long dst_stride) {
    for (int i = 0; i < rows_out; i++) {
        const uint8_t *s = src + (long)(bounds[2 * i] - off) * src_stride;
        const int n = bounds[2 * i + 1];
        const int32_t *kk = k + (long)i * ks;
        uint8_t *d = dst + (long)i * dst_stride;
        if (width >= 32) {
            for (int j = 0;; j += 32) {
                if (j > width - 32) j = width - 32; /* the last block overlaps the one before */
                block32(s + j, src_stride, n, kk, d + j);
                if (j == width - 32) break;
            }
            continue;
        }
        for (int j = 0; j < width; j++) {
            int32_t acc = HALF;
            for (int t = 0; t < n; t++) acc += s[t * src_stride + j] * kk[t];
            d[j] = clip8(acc);
        }
    }
}

static inline void put3(uint8_t *d, const uint8_t *s) { d[0] = s[0]; d[1] = s[1]; d[2] = s[2]; }
/* a pixel moved as 4 bytes: the 4th lands where the next pixel is written after it */
static inline void put4(uint8_t *d, const uint8_t *s) { memcpy(d, s, 4); }

/* The horizontal pass over `rows` rows of src (3 bytes a pixel, columns 0 to span used):
   dst pixel x of a row = combination of src pixels bounds[2x] - off + t, t < bounds[2x+1].
   lines: span * LINE + 1 bytes, result: cols_out * LINE bytes of scratch. */
static void horizontal(const uint8_t *src, long src_stride, int rows, int span, int cols_out,
                       const int32_t *k, const int32_t *bounds, int ks, int off, uint8_t *dst,
                       long dst_stride, uint8_t *lines, uint8_t *result) {
    for (int y0 = 0; y0 < rows; y0 += STRIP) {
        const int r_n = rows - y0 < STRIP ? rows - y0 : STRIP;
        const uint8_t *s0 = src + (long)y0 * src_stride;
        if (r_n < STRIP) memset(lines, 0, (size_t)span * LINE + 1); /* no undefined lanes */
        for (int x = 0; x < span - 1; x++) { /* the strip in, one image column per line */
            uint8_t *l = lines + (long)x * LINE;
            for (int r = 0; r < r_n; r++) put4(l + 3 * r, s0 + r * src_stride + 3 * x);
        }
        for (int r = 0; r < r_n; r++) /* the last column: no 4th byte to read */
            put3(lines + (long)(span - 1) * LINE + 3 * r, s0 + r * src_stride + 3 * (span - 1));
        for (int x = 0; x < cols_out; x++) { /* combine lines as rows */
            const uint8_t *l = lines + (long)(bounds[2 * x] - off) * LINE;
            const int n = bounds[2 * x + 1];
            const int32_t *kk = k + (long)x * ks;
            uint8_t *o = result + (long)x * LINE;
            block32(l, LINE, n, kk, o);
            block32(l + 32, LINE, n, kk, o + 32);
            block32(l + 64, LINE, n, kk, o + 64);
        }
        for (int r = 0; r < r_n; r++) { /* and back out, row by row */
            uint8_t *d = dst + (long)(y0 + r) * dst_stride;
            const uint8_t *o = result + 3 * r;
            for (int x = 0; x < cols_out - 1; x++) put4(d + 3 * x, o + (long)x * LINE);
            put3(d + 3 * (cols_out - 1), o + (long)(cols_out - 1) * LINE);
        }
    }
}

/* src (h, w, 3) with a row stride of src_stride bytes -> dst (oh, ow, 3), contiguous.
   kh, bh: the horizontal filter, ow rows of ksh coefficients and ow (first, count) pairs;
   kv, bv: the vertical one (oh rows, ksv). As Pillow: a pass runs only where the size
   changes; the first of two runs over the rows (or columns) the second reads;
   vertical_first picks Pillow's order. Returns 0, or -1 when memory ran out. */
int resize_rgb8(const uint8_t *src, long src_stride, int h, int w, uint8_t *dst, int oh,
                int ow, const int32_t *kh, const int32_t *bh, int ksh, const int32_t *kv,
                const int32_t *bv, int ksv, int vertical_first) {
    const int need_h = ow != w, need_v = oh != h;
    const long out_stride = (long)ow * 3;
    if (!need_h && !need_v) {
        for (int y = 0; y < h; y++) memcpy(dst + y * out_stride, src + y * src_stride, out_stride);
        return 0;
    }
    const int x0 = bh[0], x1 = bh[2 * (ow - 1)] + bh[2 * (ow - 1) + 1];
    const int y0 = bv[0], y1 = bv[2 * (oh - 1)] + bv[2 * (oh - 1) + 1];
    uint8_t *lines = NULL, *result = NULL, *tmp = NULL;
    int status = 0;
    if (need_h) {
        lines = malloc((size_t)w * LINE + 1 + (size_t)ow * LINE);
        if (!lines) return -1;
        result = lines + (size_t)w * LINE + 1;
    }
    if (!need_v) {
        horizontal(src, src_stride, h, w, ow, kh, bh, ksh, 0, dst, out_stride, lines, result);
    } else if (!need_h) {
        vertical(src, src_stride, w * 3, oh, kv, bv, ksv, 0, dst, out_stride);
    } else if (!vertical_first) {
        /* the horizontal pass over rows y0 to y1, those the vertical one reads */
        tmp = malloc((size_t)(y1 - y0) * out_stride);
        if (!tmp) {
            status = -1;
        } else {
            horizontal(src + (long)y0 * src_stride, src_stride, y1 - y0, w, ow, kh, bh, ksh, 0,
                       tmp, out_stride, lines, result);
            vertical(tmp, out_stride, ow * 3, oh, kv, bv, ksv, y0, dst, out_stride);
        }
    } else {
        /* the vertical pass over columns x0 to x1, those the horizontal one reads */
        const long tmp_stride = (long)(x1 - x0) * 3;
        tmp = malloc((size_t)oh * tmp_stride);
        if (!tmp) {
            status = -1;
        } else {
            vertical(src + 3 * x0, src_stride, (x1 - x0) * 3, oh, kv, bv, ksv, 0, tmp,
                     tmp_stride);
            horizontal(tmp, tmp_stride, oh, x1 - x0, ow, kh, bh, ksh, x0, dst, out_stride,
                       lines, result);
        }
    }
    free(tmp);
    free(lines);
    return status;
}
