/* Fused CPU kernels of leukolearn (see __init__.py beside this file for what they compute).

   Written in the vector extensions that GCC and clang both accept (vector_size types,
   element-wise operators with scalars, subscripts, __builtin_convertvector), so that one
   source gives the fast path on Linux with GCC and on macOS with Apple clang alike. The
   lane permutations are the one place the two compilers spell differently: clang (and GCC
   from 12) has __builtin_shufflevector with constant indices, older GCC only
   __builtin_shuffle with an index vector; both give the same permutation, so the results
   do not depend on which is used. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* VW: float lanes per vector, the CPU's widest (AVX-512: 16, AVX2: 8, SSE / NEON: 4).
   The kernels were first written for 16 lanes only; on an AVX2 CPU (no AVX-512: most
   laptops, AMD before Zen 4) each 16-lane vector took two registers, the accumulators
   no longer fitted in the 16 registers and spilled, and training ran 2.5x slower than
   PyTorch's own layers (22.6 vs 12.5 ms per image-step on an AMD EPYC, benchmarks/README).
   OGH: output channels whose accumulators one pass of the forward and weight-gradient
   loops keeps in registers: 4 (16 vectors) where there are 32 registers (AVX-512, NEON),
   2 where there are 16. Both may be forced with -D (the tests build every width). The
   result depends on VW (the order of the partial sums), not on OGH. */
#ifndef VW
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif
#endif
#ifndef OGH
#if VW == 16 || defined(__aarch64__)
#define OGH 4
#else
#define OGH 2
#endif
#endif
#if OGH != 1 && OGH != 2 && OGH != 4
#error "OGH must be 1, 2 or 4 (it splits a group of 4 output channels)"
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
#define CW (2 * VW) /* columns of conv output per chunk: two vectors */

static inline vf ld(const float *p) { vf r; memcpy(&r, p, sizeof r); return r; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf sel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline float hsum(vf v) { float s = 0.f; for (int k = 0; k < VW; k++) s += v[k]; return s; }

#ifndef __has_builtin
#define __has_builtin(x) 0
#endif
/* even / odd lanes of the 2 * VW in (a, b): the two columns of each pooling window;
   LO / HI interleave a and b lane by lane back into 2 * VW columns. */
#if VW == 16
#define EVEN_IX 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define ODD_IX 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define LO_IX 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define HI_IX 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#elif VW == 8
#define EVEN_IX 0, 2, 4, 6, 8, 10, 12, 14
#define ODD_IX 1, 3, 5, 7, 9, 11, 13, 15
#define LO_IX 0, 8, 1, 9, 2, 10, 3, 11
#define HI_IX 4, 12, 5, 13, 6, 14, 7, 15
#elif VW == 4
#define EVEN_IX 0, 2, 4, 6
#define ODD_IX 1, 3, 5, 7
#define LO_IX 0, 4, 1, 5
#define HI_IX 2, 6, 3, 7
#else
#error "VW must be 4, 8 or 16"
#endif
#if __has_builtin(__builtin_shufflevector)
#define EVEN(a, b) __builtin_shufflevector(a, b, EVEN_IX)
#define ODD(a, b) __builtin_shufflevector(a, b, ODD_IX)
#define LO(a, b) __builtin_shufflevector(a, b, LO_IX)
#define HI(a, b) __builtin_shufflevector(a, b, HI_IX)
#else
static const vi EVEN_I = {EVEN_IX}, ODD_I = {ODD_IX}, LO_I = {LO_IX}, HI_I = {HI_IX};
#define EVEN(a, b) __builtin_shuffle(a, b, EVEN_I)
#define ODD(a, b) __builtin_shuffle(a, b, ODD_I)
#define LO(a, b) __builtin_shuffle(a, b, LO_I)
#define HI(a, b) __builtin_shuffle(a, b, HI_I)
#endif

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* one image (C, H, W) with strides (sc, sh) into a zero-padded (C, H, wb) buffer */
static void pad_image(const float *x, long sc, long sh, int C, int H, int W, int wb, float *buf) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++) {
            float *d = buf + ((long)c * H + y) * wb;
            memcpy(d, x + c * sc + y * sh, sizeof(float) * W);
            memset(d + W, 0, sizeof(float) * (wb - W));
        }
}

/* the same from uint8 pixels with strides (sc, sh, sw), divided by 255 on the way */
static void pad_image_u8(const uint8_t *x, long sc, long sh, long sw, int C, int H, int W, int wb,
                         float *buf) {
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.f;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++) {
            float *d = buf + ((long)c * H + y) * wb;
            const uint8_t *r = x + c * sc + y * sh;
            for (int j = 0; j < W; j++) d[j] = lut[r[j * sw]];
            memset(d + W, 0, sizeof(float) * (wb - W));
        }
}

/* Conv3x3 (valid) + bias -> MaxPool 2x2 (first max wins, NaN wins) -> ReLU.
   x (B, C, H, W) with strides (sb, sc, sh), unit column stride; w (O, C, 3, 3); O % 4 == 0.
   out (B, O, P, Q) contiguous, P = (H-2)/2, Q = (W-2)/2; arg (same shape, may be NULL):
   the window position (0..3, row-major) that won. */
static void forward_images(const float *x, const uint8_t *xu8, long sb, long sc, long sh, long sw,
                           int b0, int b1, int C, int H, int W, const float *w,
                           const float *bias, int O, float *out, uint8_t *arg) {
    const int P = (H - 2) / 2, Q = (W - 2) / 2, nch = ceil_div(2 * Q, CW);
    const int wb = nch * CW + VW;
    float *xb = malloc(sizeof(float) * (size_t)C * H * wb);
    /* weights per group of 4 output channels: wp[((g * C + c) * 9 + kh * 3 + kw) * 4 + o] */
    float *wp = malloc(sizeof(float) * (size_t)O * C * 9);
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < 9; k++)
                wp[(((o / 4) * C + c) * 9 + k) * 4 + o % 4] = w[(o * C + c) * 9 + k];
    for (int b = b0; b < b1; b++) {
        if (xu8) pad_image_u8(xu8 + b * sb, sc, sh, sw, C, H, W, wb, xb);
        else pad_image(x + b * sb, sc, sh, C, H, W, wb, xb);
        for (int og = 0; og < O; og += OGH)
            for (int i = 0; i < P; i++)
                for (int ch = 0; ch < nch; ch++) {
                    const int j0 = ch * CW;
                    vf acc[OGH][2][2];
                    for (int o = 0; o < OGH; o++)
                        for (int r = 0; r < 2; r++)
                            acc[o][r][0] = acc[o][r][1] = (vf){} + bias[og + o];
                    for (int c = 0; c < C; c++) {
                        const float *row = xb + ((long)c * H + 2 * i) * wb + j0;
                        const float *wc = wp + ((og / 4) * C + c) * 36 + og % 4;
#pragma GCC unroll 3
                        for (int kh = 0; kh < 3; kh++)
#pragma GCC unroll 3
                            for (int kw = 0; kw < 3; kw++) {
                                const float *r0 = row + kh * wb + kw, *r1 = r0 + wb;
                                const vf a0 = ld(r0), a1 = ld(r0 + VW), b0 = ld(r1), b1 = ld(r1 + VW);
#pragma GCC unroll 4
                                for (int o = 0; o < OGH; o++) {
                                    const float wv = wc[(kh * 3 + kw) * 4 + o];
                                    acc[o][0][0] += wv * a0; acc[o][0][1] += wv * a1;
                                    acc[o][1][0] += wv * b0; acc[o][1][1] += wv * b1;
                                }
                            }
                    }
                    const int nj = Q - ch * VW < VW ? Q - ch * VW : VW;
                    for (int o = 0; o < OGH; o++) {
                        const vf p0 = EVEN(acc[o][0][0], acc[o][0][1]);
                        const vf p1 = ODD(acc[o][0][0], acc[o][0][1]);
                        const vf p2 = EVEN(acc[o][1][0], acc[o][1][1]);
                        const vf p3 = ODD(acc[o][1][0], acc[o][1][1]);
                        vf m = p0; vi k = (vi){};
                        vi g;
                        g = (p1 > m) | (p1 != p1); m = sel(g, p1, m); k = (k & ~g) | (g & 1);
                        g = (p2 > m) | (p2 != p2); m = sel(g, p2, m); k = (k & ~g) | (g & 2);
                        g = (p3 > m) | (p3 != p3); m = sel(g, p3, m); k = (k & ~g) | (g & 3);
                        m = sel(m < 0.f, (vf){}, m);
                        const long base = (((long)b * O + og + o) * P + i) * Q + ch * VW;
                        for (int v = 0; v < nj; v++) out[base + v] = m[v];
                        if (arg) for (int v = 0; v < nj; v++) arg[base + v] = (uint8_t)k[v];
                    }
                }
    }
    free(xb); free(wp);
}

/* Gradients of block_forward for a pooled gradient gout (B, O, P, Q), strides (gsb, gsc,
   gsh). Adds into gw (O, C, 3, 3) and gb (O); writes gx (B, C, H, W) contiguous (C % 4 == 0)
   unless it is NULL. */
/* One row y' of the input gradient: gx[c][y'][j] = sum over o, kh, kw of
   w[o][c][kh][kw] * G[o][y'-kh][j-kw], with rows[o * 3 + kh] pointing at G[o][y'-kh] (or a
   row of zeros), each with 2 zero columns on its left. */
static void gx_row(const float *const *rows, const float *wq, int O, int C, int W, int valid,
                   int nchx, float *gxr, long plane) {
    for (int cg = 0; cg < C; cg += 4)
        for (int ch = 0; ch < nchx; ch++) {
            vf acc[4][2];
            for (int c = 0; c < 4; c++) acc[c][0] = acc[c][1] = (vf){};
            for (int o = 0; o < O; o++) {
                const float *wo = wq + ((cg / 4) * O + o) * 36;
#pragma GCC unroll 3
                for (int kh = 0; kh < 3; kh++) {
                    const float *gr = rows[o * 3 + kh] + ch * CW;
#pragma GCC unroll 3
                    for (int kw = 0; kw < 3; kw++) {
                        const vf a = ld(gr - kw), bq = ld(gr - kw + VW);
#pragma GCC unroll 4
                        for (int c = 0; c < 4; c++) {
                            const float wv = wo[(kh * 3 + kw) * 4 + c];
                            acc[c][0] += wv * a; acc[c][1] += wv * bq;
                        }
                    }
                }
            }
            const int n = W - ch * CW < CW ? W - ch * CW : CW;
            for (int c = 0; c < 4; c++) {
                float tmp[CW];
                st(tmp, acc[c][0]); st(tmp + VW, acc[c][1]);
                float *d = gxr + (cg + c) * plane + ch * CW;
                for (int v = 0; v < n; v++) d[v] = ch * CW + v < valid ? tmp[v] : 0.f;
            }
        }
    if (nchx * CW < W)
        for (int c = 0; c < C; c++) memset(gxr + c * plane + nchx * CW, 0, sizeof(float) * (W - nchx * CW));
}

/* Row by row, so that everything a row needs stays in the L1 cache: for pooled row i the
   gradient goes to the winners in two full-resolution rows (a ring of 4 rows per output
   channel), those rows add to the weight gradient, and the input-gradient rows that are
   complete then (2i, 2i+1) are written. */
static void backward_images(const float *x, long sb, long sc, long sh, int b0, int b1, int C,
                            int H, int W, const float *w, int O, const float *out,
                            const uint8_t *arg, const float *gout, long gsb, long gsc, long gsh,
                            vf *lanes, vf *blanes, float *gx) {
    const int P = (H - 2) / 2, Q = (W - 2) / 2, nch = ceil_div(2 * Q, CW);
    const int wb = nch * CW + VW;                 /* padded input row */
    const int nchx = ceil_div(2 * Q + 2, CW);     /* chunks of an input-gradient row */
    const int qpad = ceil_div(Q, VW) * VW;
    const int span = nchx * CW > 2 * qpad ? nchx * CW : 2 * qpad;
    const int gwid = span + 4 + VW;               /* gradient row: 2 zero columns on the left */
    float *xb = malloc(sizeof(float) * (size_t)C * H * wb);
    float *G = calloc((size_t)O * 4 * gwid, sizeof(float));  /* ring: row y in slot y % 4 */
    float *Z = calloc(gwid, sizeof(float));                   /* a row of zeros */
    float *gq = calloc(qpad, sizeof(float)), *yq = calloc(qpad, sizeof(float));
    uint8_t *kq = calloc(qpad, 1);
    const float **rows = malloc(sizeof(float *) * O * 3);
    float *wq = malloc(sizeof(float) * (size_t)O * (C + 3) * 9);
    if (gx)  /* weights per group of 4 input channels: wq[((g * O + o) * 9 + k) * 4 + c] */
        for (int o = 0; o < O; o++)
            for (int c = 0; c < C; c++)
                for (int k = 0; k < 9; k++)
                    wq[(((c / 4) * O + o) * 9 + k) * 4 + c % 4] = w[(o * C + c) * 9 + k];
    const long plane = (long)H * W;
    for (int b = b0; b < b1; b++) {
        pad_image(x + b * sb, sc, sh, C, H, W, wb, xb);
        float *gxb = gx ? gx + (long)b * C * plane : NULL;
        for (int i = 0; i < P; i++) {
            /* 1. the pooled gradient, masked by the ReLU, to the winner of each window */
            for (int o = 0; o < O; o++) {
                const long base = (((long)b * O + o) * P + i) * Q;
                memcpy(gq, gout + b * gsb + o * gsc + i * gsh, sizeof(float) * Q);
                memcpy(yq, out + base, sizeof(float) * Q);
                memcpy(kq, arg + base, Q);
                float *g0 = G + ((long)o * 4 + (2 * i) % 4) * gwid + 2;
                float *g1 = G + ((long)o * 4 + (2 * i + 1) % 4) * gwid + 2;
                for (int j = 0; j < qpad; j += VW) {
                    vf gv = ld(gq + j), yv = ld(yq + j);
                    vi kv;
                    for (int v = 0; v < VW; v++) kv[v] = kq[j + v];
                    gv = sel(yv <= 0.f, (vf){}, gv);
                    blanes[o] += gv;
                    const vf e0 = sel(kv == 0, gv, (vf){}), e1 = sel(kv == 1, gv, (vf){});
                    const vf e2 = sel(kv == 2, gv, (vf){}), e3 = sel(kv == 3, gv, (vf){});
                    st(g0 + 2 * j, LO(e0, e1));
                    st(g0 + 2 * j + VW, HI(e0, e1));
                    st(g1 + 2 * j, LO(e2, e3));
                    st(g1 + 2 * j + VW, HI(e2, e3));
                }
            }
            /* 2. weight gradient from these two rows */
            for (int r = 0; r < 2; r++) {
                const int y = 2 * i + r;
                for (int og = 0; og < O; og += OGH) {
                    const float *gr[OGH];
                    for (int o = 0; o < OGH; o++) gr[o] = G + ((long)(og + o) * 4 + y % 4) * gwid + 2;
                    for (int c = 0; c < C; c++)
                        for (int kh = 0; kh < 3; kh++) {
                            const float *xr = xb + ((long)c * H + y + kh) * wb;
                            vf acc[OGH][3];
                            for (int o = 0; o < OGH; o++) acc[o][0] = acc[o][1] = acc[o][2] = (vf){};
                            for (int j = 0; j < nch * CW; j += VW) {
                                const vf x0 = ld(xr + j), x1 = ld(xr + j + 1), x2 = ld(xr + j + 2);
#pragma GCC unroll 4
                                for (int o = 0; o < OGH; o++) {
                                    const vf gv = ld(gr[o] + j);
                                    acc[o][0] += gv * x0; acc[o][1] += gv * x1; acc[o][2] += gv * x2;
                                }
                            }
                            for (int o = 0; o < OGH; o++)
                                for (int kw = 0; kw < 3; kw++)
                                    lanes[(((og + o) * C + c) * 3 + kh) * 3 + kw] += acc[o][kw];
                        }
                }
            }
            /* 3. input-gradient rows 2i and 2i+1: they need gradient rows up to 2i+1 */
            if (gxb)
                for (int r = 0; r < 2; r++) {
                    const int y = 2 * i + r;
                    for (int o = 0; o < O; o++)
                        for (int kh = 0; kh < 3; kh++)
                            rows[o * 3 + kh] = y - kh < 0 ? Z + 2
                                : G + ((long)o * 4 + (y - kh) % 4) * gwid + 2;
                    gx_row(rows, wq, O, C, W, 2 * Q + 2, nchx, gxb + (long)y * W, plane);
                }
        }
        if (gxb) {
            for (int y = 2 * P; y < 2 * P + 2; y++) {  /* rows fed by the last two only */
                for (int o = 0; o < O; o++)
                    for (int kh = 0; kh < 3; kh++)
                        rows[o * 3 + kh] = y - kh >= 2 * P ? Z + 2
                            : G + ((long)o * 4 + (y - kh) % 4) * gwid + 2;
                gx_row(rows, wq, O, C, W, 2 * Q + 2, nchx, gxb + (long)y * W, plane);
            }
            for (int c = 0; c < C; c++)  /* rows no output depends on */
                memset(gxb + c * plane + (long)(2 * P + 2) * W, 0,
                       sizeof(float) * (size_t)(H - 2 * P - 2) * W);
        }
    }
    free(xb); free(G); free(Z); free(gq); free(yq); free(kq); free(rows); free(wq);
}

#if VW == 16 && defined(__AVX512F__)
#include <immintrin.h>
static inline vf gather(const float *p, vi o) {
    __m512i oi; memcpy(&oi, &o, 64);
    __m512 r = _mm512_i32gather_ps(oi, p, 4);
    vf out; memcpy(&out, &r, 64); return out;
}
#elif VW == 8 && defined(__AVX2__)
#include <immintrin.h>
static inline vf gather(const float *p, vi o) {
    __m256i oi; memcpy(&oi, &o, 32);
    __m256 r = _mm256_i32gather_ps(p, oi, 4);
    vf out; memcpy(&out, &r, 32); return out;
}
#else
static inline vf gather(const float *p, vi o) {
    vf r; for (int v = 0; v < VW; v++) r[v] = p[o[v]]; return r;
}
#endif

/* Random flips + rotation of uint8 images, as F.affine_grid + F.grid_sample(bilinear,
   padding_mode="border", align_corners=False) would do them on the images / 255.
   src (N, C, H, W) uint8 with strides (sn, sc, sh); rows idx (B); theta (B, 2, 3).
   dst (B, C, OH, OW) contiguous: the top-left OH x OW of the H x W result. */
static void augment_images(const uint8_t *src, long sn, long sc, long sh, const int64_t *idx,
                           int b0, int b1, int C, int H, int W, const float *theta, int OH,
                           int OW, float *dst) {
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.f;
    float *plane = malloc(sizeof(float) * (size_t)C * H * W);
    vf lane;
    for (int v = 0; v < VW; v++) lane[v] = (float)v;
    for (int b = b0; b < b1; b++) {
        const float *t = theta + 6 * b;
        const uint8_t *s = src + idx[b] * sn;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++) {
                const uint8_t *r = s + c * sc + y * sh;
                float *d = plane + ((long)c * H + y) * W;
                for (int x = 0; x < W; x++) d[x] = lut[r[x]];
            }
        for (int i = 0; i < OH; i++) {
            const float yn = (float)(2 * i + 1 - H) / (float)H;
            const float cx = t[1] * yn + t[2], cy = t[4] * yn + t[5];
            for (int j = 0; j < OW; j += VW) {
                const vf xn = ((lane + (float)j) * 2.f + (float)(1 - W)) / (float)W;
                const vf gx = t[0] * xn + cx, gy = t[3] * xn + cy;
                vf ix = ((gx + 1.f) * (float)W - 1.f) * 0.5f, iy = ((gy + 1.f) * (float)H - 1.f) * 0.5f;
                ix = sel(ix < 0.f, (vf){}, ix); ix = sel(ix > (float)(W - 1), (vf){} + (float)(W - 1), ix);
                iy = sel(iy < 0.f, (vf){}, iy); iy = sel(iy > (float)(H - 1), (vf){} + (float)(H - 1), iy);
                const vi x0 = __builtin_convertvector(ix, vi), y0 = __builtin_convertvector(iy, vi);
                const vf fx0 = __builtin_convertvector(x0, vf), fy0 = __builtin_convertvector(y0, vf);
                const vi dx = -(x0 + 1 < W), dy = -(y0 + 1 < H) * W;
                const vi o00 = y0 * W + x0, o01 = o00 + dx, o10 = o00 + dy, o11 = o10 + dx;
                const vf ax = fx0 + 1.f - ix, bx = ix - fx0, ay = fy0 + 1.f - iy, by = iy - fy0;
                const vf nw = ax * ay, ne = bx * ay, sw = ax * by, se = bx * by;
                const int n = OW - j < VW ? OW - j : VW;
                for (int c = 0; c < C; c++) {
                    const float *p = plane + (long)c * H * W;
                    const vf r = gather(p, o00) * nw + gather(p, o01) * ne + gather(p, o10) * sw
                                  + gather(p, o11) * se;
                    float *d = dst + (((long)b * C + c) * OH + i) * OW + j;
                    if (n == VW) st(d, r); else for (int v = 0; v < n; v++) d[v] = r[v];
                }
            }
        }
    }
    free(plane);
}

/* ---- entry points: images split over up to `threads` POSIX threads -------------------- */
typedef struct {
    int kind, b0, b1;
    const float *x; const uint8_t *xu8; long sb, sc, sh, sw; int C, H, W;
    const float *w, *bias; int O;
    float *out; uint8_t *arg;                                           /* forward */
    const float *yout; const uint8_t *yarg; const float *gout; long gsb, gsc, gsh;
    vf *lanes; size_t nl; float *gx;                                   /* backward */
    const uint8_t *src; const int64_t *idx; const float *theta; int OH, OW; float *dst;
} Task;

static void *run_task(void *p) {
    Task *t = p;
    if (t->kind == 0)
        forward_images(t->x, t->xu8, t->sb, t->sc, t->sh, t->sw, t->b0, t->b1, t->C, t->H, t->W,
                       t->w, t->bias, t->O, t->out, t->arg);
    else if (t->kind == 1)
        backward_images(t->x, t->sb, t->sc, t->sh, t->b0, t->b1, t->C, t->H, t->W, t->w, t->O,
                        t->yout, t->yarg, t->gout, t->gsb, t->gsc, t->gsh, t->lanes,
                        t->lanes + (size_t)t->O * t->C * 9, t->gx);
    else
        augment_images(t->src, t->sb, t->sc, t->sh, t->idx, t->b0, t->b1, t->C, t->H, t->W,
                       t->theta, t->OH, t->OW, t->dst);
    return NULL;
}

#define MAX_THREADS 64
static int split_count(int threads, int B) {
    int n = threads < B ? threads : B;
    if (n > MAX_THREADS) n = MAX_THREADS;
    return n < 1 ? 1 : n;
}

/* Runs `base` on n contiguous image ranges, one per thread (the caller's included); task k
   gets partial sums lanes + k * nl. */
static void run_split(const Task *base, int B, int n) {
    Task tasks[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < n; k++) {
        tasks[k] = *base;
        tasks[k].b0 = (int)((long)B * k / n);
        tasks[k].b1 = (int)((long)B * (k + 1) / n);
        if (base->lanes) tasks[k].lanes = base->lanes + base->nl * k;
    }
    for (int k = 1; k < n; k++) started[k] = pthread_create(&tid[k], NULL, run_task, &tasks[k]) == 0;
    run_task(&tasks[0]);
    for (int k = 1; k < n; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else run_task(&tasks[k]);
    }
}

void block_forward(const float *x, long sb, long sc, long sh, int B, int C, int H, int W,
                   const float *w, const float *bias, int O, float *out, uint8_t *arg,
                   int threads) {
    const Task base = {.kind = 0, .x = x, .sb = sb, .sc = sc, .sh = sh, .C = C, .H = H, .W = W,
                       .w = w, .bias = bias, .O = O, .out = out, .arg = arg};
    run_split(&base, B, split_count(threads, B));
}

/* block_forward reading uint8 pixels x (B, C, H, W) with strides (sb, sc, sh, sw) as x / 255
   (e.g. images stored (B, H, W, C): sc = 1, sw = C); no winners kept: inference only. */
void block_forward_u8(const uint8_t *x, long sb, long sc, long sh, long sw, int B, int C, int H,
                      int W, const float *w, const float *bias, int O, float *out, int threads) {
    const Task base = {.kind = 0, .xu8 = x, .sb = sb, .sc = sc, .sh = sh, .sw = sw, .C = C,
                       .H = H, .W = W, .w = w, .bias = bias, .O = O, .out = out};
    run_split(&base, B, split_count(threads, B));
}

/* Gradients of block_forward for a pooled gradient gout (B, O, P, Q) with strides (gsb,
   gsc, gsh): adds into gw (O, C, 3, 3) and gb (O); writes gx (B, C, H, W) contiguous unless
   it is NULL (then C may be anything, else C % 4 == 0). Each thread sums into its own
   partial sums, added in a fixed order afterwards: the result depends on `threads` only. */
void block_backward(const float *x, long sb, long sc, long sh, int B, int C, int H, int W,
                    const float *w, int O, const float *out, const uint8_t *arg,
                    const float *gout, long gsb, long gsc, long gsh, float *gw, float *gb,
                    float *gx, int threads) {
    const int n = split_count(threads, B);
    const size_t nl = (size_t)O * C * 9 + O;
    /* aligned_alloc wants a size that is a multiple of the alignment (macOS enforces it) */
    const size_t bytes = (sizeof(vf) * nl * n + 63) / 64 * 64;
    vf *lanes = aligned_alloc(64, bytes);
    memset(lanes, 0, bytes);
    const Task base = {.kind = 1, .x = x, .sb = sb, .sc = sc, .sh = sh, .C = C, .H = H, .W = W,
                       .w = w, .O = O, .yout = out, .yarg = arg, .gout = gout, .gsb = gsb,
                       .gsc = gsc, .gsh = gsh, .lanes = lanes, .nl = nl, .gx = gx};
    run_split(&base, B, n);
    for (int k = 1; k < n; k++)
        for (size_t q = 0; q < nl; q++) lanes[q] += lanes[nl * k + q];
    for (int q = 0; q < O * C * 9; q++) gw[q] += hsum(lanes[q]);
    for (int o = 0; o < O; o++) gb[o] += hsum(lanes[(size_t)O * C * 9 + o]);
    free(lanes);
}

void augment_u8(const uint8_t *src, long sn, long sc, long sh, const int64_t *idx, int B, int C,
                int H, int W, const float *theta, int OH, int OW, float *dst, int threads) {
    const Task base = {.kind = 2, .src = src, .sb = sn, .sc = sc, .sh = sh, .idx = idx, .C = C,
                       .H = H, .W = W, .theta = theta, .OH = OH, .OW = OW, .dst = dst};
    run_split(&base, B, split_count(threads, B));
}
