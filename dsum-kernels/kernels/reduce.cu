// Column sums, mirrors the `+=` over rows in the CPU backward passes (rmsnorm_backward's and
// layernorm_backward's dweight / dbias, linear_backward's dbias). Used to turn per-row gradient
// terms into a parameter gradient without atomics, so results are deterministic.

// out[C] += sum_r inp[r, c]. One thread per column; rows are summed in order.
extern "C" __global__ void sum_rows_acc_f32(float* out, const float* inp, int rows, int c) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  float s = 0.0f;
  for (int r = 0; r < rows; ++r) s += inp[(size_t)r * c + j];
  out[j] += s;
}
