/* DCF evaluation with AES-NI: the same keys, blocks and arithmetic as ringlet/protocols/dcf.py's
 * numpy evaluation (see its docstrings), element by element in chunks, GROUP elements' AES in flight.
 * Built twice (ringlet/protocols/fss/native.py): with -DRINGLET_VAES the blocks go four to a
 * 512-bit register (VAES + AVX-512F), otherwise one to a 128-bit one (AES-NI). Chunks are
 * independent: with OpenMP they run on ``threads`` threads.
 *
 * Layout (as dcf.KeyBatch keeps it): seed n×2 u64; cw_seed levels×n×2 u64; cw_t levels×2×⌈n/8⌉
 * bytes (bit e of row (level, side) at byte e/8, bit e%8); cw_v levels×p×n i64; cw_last p×n i64;
 * out p×n i64. A block is two u64 words, the low word first; tweaks go into the low word.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wmmintrin.h>
#include <emmintrin.h>
#ifdef RINGLET_VAES
#include <immintrin.h>
#endif

#define BMAX 2
#ifdef RINGLET_VAES
#define GROUP 16
#else
#define GROUP 4
#endif
#define CHUNK 4096

static __m128i expand_step(__m128i key, __m128i gen) {
    gen = _mm_shuffle_epi32(gen, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, gen);
}

static void key_schedule(const uint8_t *key, __m128i rk[11]) {
    rk[0] = _mm_loadu_si128((const __m128i *)key);
#define STEP(i, rcon) rk[i] = expand_step(rk[i - 1], _mm_aeskeygenassist_si128(rk[i - 1], rcon))
    STEP(1, 0x01); STEP(2, 0x02); STEP(3, 0x04); STEP(4, 0x08); STEP(5, 0x10);
    STEP(6, 0x20); STEP(7, 0x40); STEP(8, 0x80); STEP(9, 0x1b); STEP(10, 0x36);
#undef STEP
}

/* H(x) = AES_K(x) ^ x for m blocks, in place */
static inline void mmo(const __m128i rk[11], __m128i *b, int m) {
    int j0 = 0;
#ifdef RINGLET_VAES
    const int quads = m / 4;
    if (quads) {
        __m512i z[GROUP * (1 + BMAX) / 4], x[GROUP * (1 + BMAX) / 4], k;
        for (int j = 0; j < quads; j++) x[j] = z[j] = _mm512_loadu_si512((const void *)(b + 4 * j));
        k = _mm512_broadcast_i32x4(rk[0]);
        for (int j = 0; j < quads; j++) z[j] = _mm512_xor_si512(z[j], k);
        for (int r = 1; r < 10; r++) {
            k = _mm512_broadcast_i32x4(rk[r]);
            for (int j = 0; j < quads; j++) z[j] = _mm512_aesenc_epi128(z[j], k);
        }
        k = _mm512_broadcast_i32x4(rk[10]);
        for (int j = 0; j < quads; j++)
            _mm512_storeu_si512((void *)(b + 4 * j), _mm512_xor_si512(_mm512_aesenclast_epi128(z[j], k), x[j]));
        j0 = 4 * quads;
    }
#endif
    __m128i x[GROUP * (1 + BMAX)];
    for (int j = j0; j < m; j++) { x[j] = b[j]; b[j] = _mm_xor_si128(b[j], rk[0]); }
    for (int r = 1; r < 10; r++)
        for (int j = j0; j < m; j++) b[j] = _mm_aesenc_si128(b[j], rk[r]);
    for (int j = j0; j < m; j++) b[j] = _mm_xor_si128(_mm_aesenclast_si128(b[j], rk[10]), x[j]);
}

static inline __m128i block(uint64_t lo, uint64_t hi) {
    return _mm_set_epi64x((long long)hi, (long long)lo);
}

int ringlet_dcf_eval(int64_t n, int levels, int p, int party, const uint8_t *aes_key,
                     const uint64_t *seed, const uint64_t *x, const uint64_t *cw_seed,
                     const uint8_t *cw_t, const int64_t *cw_v, const int64_t *cw_last,
                     int64_t *out, int threads) {
    if (p < 1 || p > 2 * BMAX) return -1;
    const int b = (p + 1) / 2, nb = 1 + b;
    const int64_t row = (n + 7) / 8;
    __m128i rk[11];
    key_schedule(aes_key, rk);
    int failed = 0;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) reduction(|:failed)
    {
    uint64_t (*s)[2] = malloc(sizeof(uint64_t) * 2 * CHUNK);
    uint64_t *t = malloc(sizeof(uint64_t) * CHUNK);
    uint64_t (*v)[CHUNK] = malloc(sizeof(uint64_t) * 2 * BMAX * CHUNK);  /* mod 2^64: unsigned */
    if (!s || !t || !v) failed = 1;
#pragma omp for schedule(static)
    for (int64_t lo = 0; lo < n; lo += CHUNK) {
        if (failed) continue;
        const int64_t m = (n - lo < CHUNK) ? n - lo : CHUNK;
        for (int64_t e = 0; e < m; e++) {
            s[e][0] = seed[2 * (lo + e)]; s[e][1] = seed[2 * (lo + e) + 1];
            t[e] = (uint64_t)party;
        }
        for (int k = 0; k < p; k++) memset(v[k], 0, sizeof(uint64_t) * m);
        for (int i = 0; i < levels; i++) {
            const int shift = levels - 1 - i;
            const uint64_t *cws = cw_seed + (int64_t)i * n * 2;
            const uint8_t *tl = cw_t + ((int64_t)i * 2) * row;
            const int64_t *cwv = cw_v + (int64_t)i * p * n;
            for (int64_t g = 0; g < m; g += GROUP) {
                const int cnt = (m - g < GROUP) ? (int)(m - g) : GROUP;
                __m128i blk[GROUP * (1 + BMAX)];
                uint64_t side[GROUP];
                for (int q = 0; q < cnt; q++) {
                    const int64_t e = g + q;
                    side[q] = (x[lo + e] >> shift) & 1;
                    const uint64_t base = s[e][0] ^ side[q];
                    blk[q * nb] = block(base, s[e][1]);
                    for (int j = 0; j < b; j++) blk[q * nb + 1 + j] = block(base ^ (uint64_t)(2 * (j + 1)), s[e][1]);
                }
                mmo(rk, blk, cnt * nb);
                for (int q = 0; q < cnt; q++) {
                    const int64_t e = g + q, ge = lo + e;
                    uint64_t w[2 * BMAX];
                    _mm_storeu_si128((__m128i *)w, blk[q * nb + 1]);
                    if (b > 1) _mm_storeu_si128((__m128i *)(w + 2), blk[q * nb + 2]);
                    const uint64_t on = (uint64_t)0 - t[e];
                    for (int k = 0; k < p; k++) v[k][e] += w[k] + ((uint64_t)cwv[(int64_t)k * n + ge] & on);
                    uint64_t c[2];
                    _mm_storeu_si128((__m128i *)c, blk[q * nb]);
                    const uint64_t ct = c[0] & 1;
                    c[0] &= ~(uint64_t)1;
                    const uint64_t mask = (uint64_t)0 - t[e];
                    s[e][0] = c[0] ^ (cws[2 * ge] & mask);
                    s[e][1] = c[1] ^ (cws[2 * ge + 1] & mask);
                    const uint8_t *r = tl + (int64_t)side[q] * row;  /* no branch: side is random */
                    const uint64_t sel = (r[ge >> 3] >> (ge & 7)) & 1;
                    t[e] = ct ^ (t[e] & sel);
                }
            }
        }
        for (int64_t g = 0; g < m; g += GROUP) {  /* the leaf: B blocks H(s ^ (j, 1)) */
            const int cnt = (m - g < GROUP) ? (int)(m - g) : GROUP;
            __m128i blk[GROUP * (1 + BMAX)];
            for (int q = 0; q < cnt; q++)
                for (int j = 0; j < b; j++)
                    blk[q * b + j] = block(s[g + q][0] ^ (uint64_t)j, s[g + q][1] ^ 1);
            mmo(rk, blk, cnt * b);
            for (int q = 0; q < cnt; q++) {
                const int64_t e = g + q, ge = lo + e;
                uint64_t w[2 * BMAX];
                _mm_storeu_si128((__m128i *)w, blk[q * b]);
                if (b > 1) _mm_storeu_si128((__m128i *)(w + 2), blk[q * b + 1]);
                const uint64_t on = (uint64_t)0 - t[e];
                for (int k = 0; k < p; k++) {
                    const uint64_t val = v[k][e] + w[k] + ((uint64_t)cw_last[(int64_t)k * n + ge] & on);
                    out[(int64_t)k * n + ge] = (int64_t)(party ? (uint64_t)0 - val : val);
                }
            }
        }
    }
    free(s); free(t); free(v);
    }
    return failed ? -2 : 0;
}

/* which build this is: 2 = VAES + AVX-512F, 1 = AES-NI */
int ringlet_dcf_kind(void) {
#ifdef RINGLET_VAES
    return 2;
#else
    return 1;
#endif
}
