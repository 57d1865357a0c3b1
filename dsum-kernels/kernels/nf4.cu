// NF4 weights, mirrors dsum-core/src/quant/nf4.rs (Nf4Tensor::dequantize / dequant_ref) and
// quant/nf4_matmul.rs (Nf4Tensor::matmul). bitsandbytes' layout: the flat row-major tensor is cut
// into blocks of `blocksize` values that may run across rows; codes are packed two per byte, the
// FIRST element in the HIGH nibble; each block has an f32 absmax, either stored plainly or
// double-quantized (quant/dynamic_map.rs, DoubleQuant::dequantize).
//
// A weight's scale statistics are passed to every kernel as the same six arguments:
//   absmax            f32 per block, or null when double-quantized; then
//   absmax_codes      u8 per block, nested_absmax f32 per nested block, nested_code f32[256],
//   nested_blocksize, offset:  absmax[b] = nested_code[codes[b]] * nested_absmax[b / nbs] + offset.

// The 16 NF4 values (NF4_CODE in quant/nf4.rs) as f32 bit patterns, so no decimal parsing can
// change them; src/nf4.rs has a test that they equal dsum-core's table.
__constant__ u32 NF4_CODE_BITS[16] = {
    0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu,
    0xbdba7871u, 0x00000000u, 0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au,
    0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u};

// Lanes index the table with different nibbles: from __constant__ that access would be
// serialized, from shared memory the 16 words sit in 16 distinct banks (no conflicts).
// Every thread of the block must call this (it synchronizes), blockDim.x >= 16.
__device__ __forceinline__ void nf4_load_code(float* code) {
  if (threadIdx.x < 16) code[threadIdx.x] = __uint_as_float(NF4_CODE_BITS[threadIdx.x]);
  __syncthreads();
}

// The f32 scale of block `b`. The double-quantized value is rounded after the multiply and
// again after the add, as DoubleQuant::dequantize does (no fused multiply-add: bit-exact).
__device__ __forceinline__ float nf4_block_scale(size_t b, const float* absmax,
                                                 const u8* absmax_codes,
                                                 const float* nested_absmax,
                                                 const float* nested_code, int nested_blocksize,
                                                 float offset) {
  if (absmax != nullptr) return absmax[b];
  size_t nb = (nested_blocksize & (nested_blocksize - 1)) == 0
                  ? b >> (__ffs(nested_blocksize) - 1)  // 256 in practice: a shift
                  : b / (size_t)nested_blocksize;
  return __fadd_rn(__fmul_rn(nested_code[absmax_codes[b]], nested_absmax[nb]), offset);
}

#define NF4_SCALE(b) \
  nf4_block_scale((b), absmax, absmax_codes, nested_absmax, nested_code, nested_blocksize, offset)

__device__ __forceinline__ void nf4_store4(float* out, size_t i, float a, float b, float c,
                                           float d) {
  *reinterpret_cast<float4*>(out + i) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void nf4_store4(u16* out, size_t i, float a, float b, float c,
                                           float d) {
  uint2 p;
  p.x = (u32)f32_to_bf16(a) | ((u32)f32_to_bf16(b) << 16);  // lower address in the low half
  p.y = (u32)f32_to_bf16(c) | ((u32)f32_to_bf16(d) << 16);
  *reinterpret_cast<uint2*>(out + i) = p;
}
__device__ __forceinline__ void nf4_store1(float* out, size_t i, float v) { out[i] = v; }
__device__ __forceinline__ void nf4_store1(u16* out, size_t i, float v) { out[i] = f32_to_bf16(v); }

// out[i] = NF4[q_i] * absmax[i / blocksize], i < numel. Thread t decodes elements 4t..4t+3 from
// the two bytes 2t, 2t+1 (one aligned u16 load) and writes them with one 16- or 8-byte store,
// so a warp reads 64 contiguous bytes and writes 512 (f32) or 256 (bf16). Four values never
// straddle a block: block boundaries are multiples of blocksize (a power of two >= 32). The
// thread after the last full group writes the 1-3 leftover values one by one.
template <typename T>
__device__ __forceinline__ void nf4_dequantize(T* out, const u8* packed, const float* absmax,
                                               const u8* absmax_codes, const float* nested_absmax,
                                               const float* nested_code, int nested_blocksize,
                                               float offset, int numel, int blocksize) {
  __shared__ float code[16];
  nf4_load_code(code);
  int bshift = __ffs(blocksize) - 1;
  size_t groups = (size_t)numel / 4;
  size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t < groups) {
    size_t i = t * 4;
    u32 q = reinterpret_cast<const u16*>(packed)[t];  // byte 2t in the low half
    float s = NF4_SCALE(i >> bshift);
    nf4_store4(out, i, code[(q >> 4) & 15] * s, code[q & 15] * s, code[(q >> 12) & 15] * s,
               code[(q >> 8) & 15] * s);
  } else if (t == groups) {
    for (size_t i = groups * 4; i < (size_t)numel; ++i) {
      u32 byte = packed[i >> 1];
      u32 q = (i & 1) ? (byte & 15) : (byte >> 4);
      nf4_store1(out, i, code[q] * NF4_SCALE(i >> bshift));
    }
  }
}

extern "C" __global__ void nf4_dequantize_f32(float* out, const u8* packed, const float* absmax,
                                              const u8* absmax_codes, const float* nested_absmax,
                                              const float* nested_code, int nested_blocksize,
                                              float offset, int numel, int blocksize) {
  nf4_dequantize(out, packed, absmax, absmax_codes, nested_absmax, nested_code, nested_blocksize,
                 offset, numel, blocksize);
}

// As nf4_dequantize_f32, each f32 value then rounded to bf16 (nearest even).
extern "C" __global__ void nf4_dequantize_bf16(u16* out, const u8* packed, const float* absmax,
                                               const u8* absmax_codes, const float* nested_absmax,
                                               const float* nested_code, int nested_blocksize,
                                               float offset, int numel, int blocksize) {
  nf4_dequantize(out, packed, absmax, absmax_codes, nested_absmax, nested_code, nested_blocksize,
                 offset, numel, blocksize);
}

// Weight rows per block of the fused GEMV: each x value loaded feeds this many rows.
#define NF4_GEMV_ROWS 4
// Input rows per launch (decoding: batch x beams); more go through dequantize + cuBLAS.
#define NF4_GEMV_MAX_M 4

// y[m, rows] = x[m, cols] · Wᵀ (+ bias[rows]) for m <= NF4_GEMV_MAX_M, W never materialized
// (Nf4Tensor::matmul's few-rows path). Block b computes rows 4b..4b+3 for every input row: its
// threads split the columns (blockDim.x a multiple of 32, at most 1024) and the partial sums meet
// in shared memory, so even a layer of 1024 rows keeps every SM streaming.
// When cols % 8 == 0 a thread takes 8 columns at a time: one aligned 4-byte load per weight row
// (8 codes, all in one block since flat offsets and block boundaries are multiples of 8) and two
// float4 loads per input row. Otherwise one value at a time (odd shapes, tests).
extern "C" __global__ void nf4_linear_forward_f32(
    float* __restrict__ y, const float* __restrict__ x, const u8* __restrict__ packed,
    const float* __restrict__ absmax, const u8* __restrict__ absmax_codes,
    const float* __restrict__ nested_absmax, const float* __restrict__ nested_code,
    int nested_blocksize, float offset, const float* __restrict__ bias, int m, int rows, int cols,
    int blocksize) {
  __shared__ float code[16];
  __shared__ float partial[32][NF4_GEMV_MAX_M * NF4_GEMV_ROWS];
  nf4_load_code(code);
  int bshift = __ffs(blocksize) - 1;
  int r0 = blockIdx.x * NF4_GEMV_ROWS;
  float acc[NF4_GEMV_MAX_M][NF4_GEMV_ROWS];
#pragma unroll
  for (int i = 0; i < NF4_GEMV_MAX_M; ++i)
#pragma unroll
    for (int w = 0; w < NF4_GEMV_ROWS; ++w) acc[i][w] = 0.0f;

  if ((cols & 7) == 0) {
    int groups = cols >> 3;
    for (int g = threadIdx.x; g < groups; g += blockDim.x) {
      int c = g << 3;
      float xv[NF4_GEMV_MAX_M][8];
#pragma unroll
      for (int i = 0; i < NF4_GEMV_MAX_M; ++i) {
        if (i < m) {
          const float4* xp = reinterpret_cast<const float4*>(x + (size_t)i * cols + c);
          float4 a = xp[0], b = xp[1];
          xv[i][0] = a.x; xv[i][1] = a.y; xv[i][2] = a.z; xv[i][3] = a.w;
          xv[i][4] = b.x; xv[i][5] = b.y; xv[i][6] = b.z; xv[i][7] = b.w;
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) xv[i][e] = 0.0f;
        }
      }
#pragma unroll
      for (int w = 0; w < NF4_GEMV_ROWS; ++w) {
        int r = r0 + w;
        if (r >= rows) break;  // the same for the whole block
        size_t f = (size_t)r * cols + c;
        u32 q = *reinterpret_cast<const u32*>(packed + (f >> 1));
        float s = NF4_SCALE(f >> bshift);
        float cv[8];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          cv[2 * j] = code[(q >> (8 * j + 4)) & 15];
          cv[2 * j + 1] = code[(q >> (8 * j)) & 15];
        }
#pragma unroll
        for (int i = 0; i < NF4_GEMV_MAX_M; ++i) {
          if (i < m) {
            float d = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; ++e) d = fmaf(cv[e], xv[i][e], d);
            acc[i][w] = fmaf(s, d, acc[i][w]);  // the block's scale once per 8 values
          }
        }
      }
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
#pragma unroll
      for (int w = 0; w < NF4_GEMV_ROWS; ++w) {
        int r = r0 + w;
        if (r >= rows) break;
        size_t f = (size_t)r * cols + c;
        u32 byte = packed[f >> 1];
        u32 q = (f & 1) ? (byte & 15) : (byte >> 4);
        float v = code[q] * NF4_SCALE(f >> bshift);  // the dequantized weight, as the CPU has it
#pragma unroll
        for (int i = 0; i < NF4_GEMV_MAX_M; ++i)
          if (i < m) acc[i][w] = fmaf(v, x[(size_t)i * cols + c], acc[i][w]);
      }
    }
  }

  // Reduce: warps first, then the warps' partial sums in shared memory, in a fixed order.
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < NF4_GEMV_MAX_M; ++i)
#pragma unroll
    for (int w = 0; w < NF4_GEMV_ROWS; ++w) {
      float v = warp_sum(acc[i][w]);
      if (lane == 0) partial[warp][i * NF4_GEMV_ROWS + w] = v;
    }
  __syncthreads();
  int t = threadIdx.x;
  if (t < NF4_GEMV_MAX_M * NF4_GEMV_ROWS) {
    int i = t / NF4_GEMV_ROWS, r = r0 + t % NF4_GEMV_ROWS;
    if (i < m && r < rows) {
      float s = 0.0f;
      for (int k = 0; k < nwarps; ++k) s += partial[k][t];
      if (bias != nullptr) s += bias[r];
      y[(size_t)i * rows + r] = s;
    }
  }
}
