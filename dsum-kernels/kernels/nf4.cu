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

// Sixteen values from their eight packed bytes (byte j of the pair holds values 2j, 2j+1, the
// first in the high nibble), each multiplied by the block's scale.
__device__ __forceinline__ void nf4_decode16(const float* code, uint2 q, float s, float* v) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = code[(q.x >> (8 * j + 4)) & 15] * s;
    v[2 * j + 1] = code[(q.x >> (8 * j)) & 15] * s;
    v[8 + 2 * j] = code[(q.y >> (8 * j + 4)) & 15] * s;
    v[8 + 2 * j + 1] = code[(q.y >> (8 * j)) & 15] * s;
  }
}

// Stores of a thread's G consecutive values. f32 takes G = 4 (one float4: a warp's store covers
// 512 contiguous bytes); bf16 takes G = 16 (two 16-byte stores): measured on an H200, f32 with
// 16 values per thread streamed at 45% of copy bandwidth, bf16 with 4 at 62%, each at 80-85%
// the other way.
__device__ __forceinline__ void nf4_store(float* out, size_t i, const float* v) {
  *reinterpret_cast<float4*>(out + i) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void nf4_store(u16* out, size_t i, const float* v) {
  u32 p[8];
#pragma unroll
  for (int k = 0; k < 8; ++k)  // the lower address in the low half
    p[k] = (u32)f32_to_bf16(v[2 * k]) | ((u32)f32_to_bf16(v[2 * k + 1]) << 16);
  uint4* o = reinterpret_cast<uint4*>(out + i);
  o[0] = make_uint4(p[0], p[1], p[2], p[3]);
  o[1] = make_uint4(p[4], p[5], p[6], p[7]);
}
__device__ __forceinline__ void nf4_store1(float* out, size_t i, float v) { out[i] = v; }
__device__ __forceinline__ void nf4_store1(u16* out, size_t i, float v) { out[i] = f32_to_bf16(v); }

// out[i] = NF4[q_i] * absmax[i / blocksize], i < numel. Thread t decodes elements Gt..Gt+G-1
// from the G/2 bytes at G/2·t (one aligned 2- or 8-byte load) and writes them with one or two
// 16-byte stores (nf4_store). G values never straddle a block: block boundaries are multiples
// of blocksize (a power of two >= 32). The thread after the last full group writes the 1..G-1
// leftover values one by one.
template <typename T, int G>
__device__ __forceinline__ void nf4_dequantize(T* out, const u8* packed, const float* absmax,
                                               const u8* absmax_codes, const float* nested_absmax,
                                               const float* nested_code, int nested_blocksize,
                                               float offset, int numel, int blocksize) {
  static_assert(G == 4 || G == 16, "4 or 16 values per thread");
  __shared__ float code[16];
  nf4_load_code(code);
  int bshift = __ffs(blocksize) - 1;
  size_t groups = (size_t)numel / G;
  size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t < groups) {
    size_t i = t * G;
    float s = NF4_SCALE(i >> bshift);
    float v[G];
    if constexpr (G == 16) {
      nf4_decode16(code, reinterpret_cast<const uint2*>(packed)[t], s, v);
    } else {
      u32 q = reinterpret_cast<const u16*>(packed)[t];  // byte 2t in the low half
      v[0] = code[(q >> 4) & 15] * s, v[1] = code[q & 15] * s;
      v[2] = code[(q >> 12) & 15] * s, v[3] = code[(q >> 8) & 15] * s;
    }
    nf4_store(out, i, v);
  } else if (t == groups) {
    for (size_t i = groups * G; i < (size_t)numel; ++i) {
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
  nf4_dequantize<float, 4>(out, packed, absmax, absmax_codes, nested_absmax, nested_code,
                           nested_blocksize, offset, numel, blocksize);
}

// As nf4_dequantize_f32, each f32 value then rounded to bf16 (nearest even).
extern "C" __global__ void nf4_dequantize_bf16(u16* out, const u8* packed, const float* absmax,
                                               const u8* absmax_codes, const float* nested_absmax,
                                               const float* nested_code, int nested_blocksize,
                                               float offset, int numel, int blocksize) {
  nf4_dequantize<u16, 16>(out, packed, absmax, absmax_codes, nested_absmax, nested_code,
                          nested_blocksize, offset, numel, blocksize);
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
// float4 loads per input row. Otherwise one value at a time (odd shapes, tests). One input row
// with columns in 32s (batch-1 decoding of every real model) takes nf4_linear32_m1_f32 below.
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
  for (int i = 0; i < NF4_GEMV_MAX_M; ++i) {
    if (i >= m) break;
#pragma unroll
    for (int w = 0; w < NF4_GEMV_ROWS; ++w) {
      float v = warp_sum(acc[i][w]);
      if (lane == 0) partial[warp][i * NF4_GEMV_ROWS + w] = v;
    }
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

// nf4_linear_forward_f32 for cols % 32 == 0 and a fixed input-row count M (the loops over M
// unroll). Same blocks of NF4_GEMV_ROWS rows, but a thread takes 32 columns at a time: each
// weight row's 16 bytes in one load, all NF4_GEMV_ROWS loads issued before any arithmetic, so
// 64 bytes per thread are in flight (the 4-byte loads above reach ~10% of copy bandwidth). 32
// values never straddle a block. The block's scale multiplies each row's 32-term sum once.
template <int M>
__device__ __forceinline__ void nf4_linear32(float* __restrict__ y, const float* __restrict__ x,
                                             const u8* __restrict__ packed,
                                             const float* __restrict__ absmax,
                                             const u8* __restrict__ absmax_codes,
                                             const float* __restrict__ nested_absmax,
                                             const float* __restrict__ nested_code,
                                             int nested_blocksize, float offset,
                                             const float* __restrict__ bias, int rows, int cols,
                                             int blocksize) {
  __shared__ float code[16];
  __shared__ float partial[32][M * NF4_GEMV_ROWS];
  nf4_load_code(code);
  int bshift = __ffs(blocksize) - 1;
  int r0 = blockIdx.x * NF4_GEMV_ROWS;
  float acc[M][NF4_GEMV_ROWS];
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int w = 0; w < NF4_GEMV_ROWS; ++w) acc[i][w] = 0.0f;

  int groups = cols >> 5;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    int c = g << 5;
    u32 q[NF4_GEMV_ROWS][4];  // row w's columns 8k..8k+7 in q[w][k]
    float s[NF4_GEMV_ROWS];
#pragma unroll
    for (int w = 0; w < NF4_GEMV_ROWS; ++w) {
      int r = min(r0 + w, rows - 1);  // past the last row: a harmless re-read, never stored
      size_t f = (size_t)r * cols + c;
      uint4 v = __ldg(reinterpret_cast<const uint4*>(packed + (f >> 1)));
      q[w][0] = v.x, q[w][1] = v.y, q[w][2] = v.z, q[w][3] = v.w;
      s[w] = NF4_SCALE(f >> bshift);
    }
    float d[M][NF4_GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int w = 0; w < NF4_GEMV_ROWS; ++w) d[i][w] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float xv[M][8];
#pragma unroll
      for (int i = 0; i < M; ++i) {
        const float4* xp = reinterpret_cast<const float4*>(x + (size_t)i * cols + c + 8 * k);
        float4 a = xp[0], b = xp[1];
        xv[i][0] = a.x, xv[i][1] = a.y, xv[i][2] = a.z, xv[i][3] = a.w;
        xv[i][4] = b.x, xv[i][5] = b.y, xv[i][6] = b.z, xv[i][7] = b.w;
      }
      // Each decoded weight is read from shared memory once and used for all M input rows.
#pragma unroll
      for (int w = 0; w < NF4_GEMV_ROWS; ++w)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float hi = code[(q[w][k] >> (8 * j + 4)) & 15], lo = code[(q[w][k] >> (8 * j)) & 15];
#pragma unroll
          for (int i = 0; i < M; ++i) {
            d[i][w] = fmaf(hi, xv[i][2 * j], d[i][w]);
            d[i][w] = fmaf(lo, xv[i][2 * j + 1], d[i][w]);
          }
        }
    }
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int w = 0; w < NF4_GEMV_ROWS; ++w) acc[i][w] = fmaf(s[w], d[i][w], acc[i][w]);
  }

  // Reduce as nf4_linear_forward_f32 does: warps, then their partial sums in a fixed order.
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int w = 0; w < NF4_GEMV_ROWS; ++w) {
      float v = warp_sum(acc[i][w]);
      if (lane == 0) partial[warp][i * NF4_GEMV_ROWS + w] = v;
    }
  __syncthreads();
  int t = threadIdx.x;
  if (t < M * NF4_GEMV_ROWS) {
    int i = t / NF4_GEMV_ROWS, r = r0 + t % NF4_GEMV_ROWS;
    if (r < rows) {
      float sum = 0.0f;
      for (int k = 0; k < nwarps; ++k) sum += partial[k][t];
      if (bias != nullptr) sum += bias[r];
      y[(size_t)i * rows + r] = sum;
    }
  }
}

#define NF4_LINEAR32(M)                                                                        \
  extern "C" __global__ void nf4_linear32_m##M##_f32(                                          \
      float* __restrict__ y, const float* __restrict__ x, const u8* __restrict__ packed,       \
      const float* __restrict__ absmax, const u8* __restrict__ absmax_codes,                   \
      const float* __restrict__ nested_absmax, const float* __restrict__ nested_code,          \
      int nested_blocksize, float offset, const float* __restrict__ bias, int rows, int cols,  \
      int blocksize) {                                                                         \
    nf4_linear32<M>(y, x, packed, absmax, absmax_codes, nested_absmax, nested_code,            \
                    nested_blocksize, offset, bias, rows, cols, blocksize);                    \
  }
// Only M = 1 (batch-1 decoding) is built: on an H200, M = 4 ran at 263 GB/s on q_proj against
// 286 for nf4_linear_forward_f32, whose registers do not grow with M (88 against 164).
NF4_LINEAR32(1)
