// f32 <-> bf16 conversions, mirrors half::bf16::from_f32 / to_f32 (the prelude's round to
// nearest even, NaN kept quiet): activations going into a bf16 cuBLAS GEMM and back.

// out[i] = bf16(inp[i]), i < n.
extern "C" __global__ void to_bf16_f32(u16* out, const float* inp, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)n) out[i] = f32_to_bf16(inp[i]);
}

// out[i] = f32(inp[i]) (exact), i < n.
extern "C" __global__ void from_bf16_f32(float* out, const u16* inp, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)n) out[i] = bf16_to_f32(inp[i]);
}
