// Writes fixtures/ggml-quants/dequant.bin: blocks of Q4_0, Q8_0, Q4_K, Q5_K and Q6_K with the values
// ggml's own dequantize_row_* gives for them (libggml-base.so of node-llama-cpp's llama.cpp build).
// Half the blocks are random bytes (every bit pattern of the quants and scales; the f16 scales set
// to random finite values), half come from ggml's reference quantizers on random floats.
// Build and run: scripts/ggml-dequant-fixture.sh. Output per type:
//   u32 ggml type, u32 blocks, u32 bytes per block, blocks × bytes, blocks·elems × f32 (ggml's values)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*dequant_fn)(const void *, float *, int64_t);
typedef void (*quant_fn)(const float *, void *, int64_t);
void dequantize_row_q4_0(const void *, float *, int64_t);
void dequantize_row_q8_0(const void *, float *, int64_t);
void dequantize_row_q4_K(const void *, float *, int64_t);
void dequantize_row_q5_K(const void *, float *, int64_t);
void dequantize_row_q6_K(const void *, float *, int64_t);
void quantize_row_q4_0_ref(const float *, void *, int64_t);
void quantize_row_q8_0_ref(const float *, void *, int64_t);
void quantize_row_q4_K_ref(const float *, void *, int64_t);
void quantize_row_q5_K_ref(const float *, void *, int64_t);
void quantize_row_q6_K_ref(const float *, void *, int64_t);

static uint64_t state = 0x9E3779B97F4A7C15ull;
static uint32_t next(void) {
  state ^= state << 13; state ^= state >> 7; state ^= state << 17;
  return (uint32_t)(state >> 11);
}
static float uniform(void) { return (next() & 0xFFFFFF) / 16777216.0f; }
// A finite f16 in ±[2^-14, 2^1): exponent field 1..15, any mantissa and sign.
static uint16_t random_half(void) {
  return (uint16_t)(((next() & 1) << 15) | ((1 + next() % 15) << 10) | (next() & 0x3FF));
}

struct spec { int type, elems, bytes; int half_at[2]; int halves; dequant_fn dq; quant_fn q; };

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s OUT\n", argv[0]); return 2; }
  const struct spec specs[] = {
    {2, 32, 18, {0, 0}, 1, dequantize_row_q4_0, quantize_row_q4_0_ref},
    {8, 32, 34, {0, 0}, 1, dequantize_row_q8_0, quantize_row_q8_0_ref},
    {12, 256, 144, {0, 2}, 2, dequantize_row_q4_K, quantize_row_q4_K_ref},
    {13, 256, 176, {0, 2}, 2, dequantize_row_q5_K, quantize_row_q5_K_ref},
    {14, 256, 210, {208, 0}, 1, dequantize_row_q6_K, quantize_row_q6_K_ref},
  };
  FILE *f = fopen(argv[1], "wb");
  if (!f) { perror(argv[1]); return 1; }
  for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
    const struct spec *p = &specs[s];
    const uint32_t nrand = 8, nquant = 8, n = nrand + nquant;
    uint8_t *blocks = malloc((size_t)n * p->bytes);
    float *x = malloc((size_t)nquant * p->elems * sizeof(float));
    float *y = malloc((size_t)n * p->elems * sizeof(float));
    for (uint32_t b = 0; b < nrand; b++) {
      uint8_t *blk = blocks + (size_t)b * p->bytes;
      for (int i = 0; i < p->bytes; i++) blk[i] = (uint8_t)next();
      for (int h = 0; h < p->halves; h++) {
        const uint16_t v = random_half();
        memcpy(blk + p->half_at[h], &v, 2);
      }
    }
    // Weight-like rows: Gaussian-ish values with a few outliers, per block a different scale.
    for (uint32_t i = 0; i < nquant * (uint32_t)p->elems; i++) {
      float g = uniform() + uniform() + uniform() - 1.5f;
      if (next() % 97 == 0) g *= 8;
      x[i] = g * (0.01f + (i / p->elems) * 0.05f);
    }
    p->q(x, blocks + (size_t)nrand * p->bytes, (int64_t)nquant * p->elems);
    p->dq(blocks, y, (int64_t)n * p->elems);
    const uint32_t head[3] = {(uint32_t)p->type, n, (uint32_t)p->bytes};
    fwrite(head, 4, 3, f);
    fwrite(blocks, p->bytes, n, f);
    fwrite(y, sizeof(float), (size_t)n * p->elems, f);
    free(blocks); free(x); free(y);
  }
  return fclose(f) == 0 ? 0 : 1;
}
