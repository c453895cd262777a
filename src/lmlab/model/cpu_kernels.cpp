// lmlab's own CPU kernels, compiled on first use by lmlab/model/cpu_kernels.py.
//
// int8_linear: y = x @ (q * scale).T for x [M, K] with few rows (decoding), int8 q [N, K] and
// one fp32 scale per output row. Decoding a token reads every weight once, so this is a matter of
// streaming q from memory as fast as it comes: each thread takes a slice of the output rows, and
// each int8 weight row is widened to fp32 once per pass and multiplied with up to MB rows of x.
// torch's own kernel for this (_weight_int8pack_mm) reached 5.7-8.4 GB/s of weight at one row on
// a Zen 1 EPYC with AVX2 (2 threads), this one 10.5-12.5 (benchmarks/gemm_kernels.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

// Rows of x handled per pass over a weight row (each weight row is converted to fp32 once per pass).
constexpr int64_t MB = 4;

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// out[m] = sum_k x[m][k] * w[k] for mb (<= MB) rows of x, K a multiple of 16
template <int R>
inline void dots(const float* x, int64_t ldx, const int8_t* w, int64_t K, float* out) {
  __m256 a0[R], a1[R];
  for (int r = 0; r < R; ++r) { a0[r] = _mm256_setzero_ps(); a1[r] = _mm256_setzero_ps(); }
  for (int64_t k = 0; k < K; k += 16) {
    __m256 w0 = load8(w + k), w1 = load8(w + k + 8);
    for (int r = 0; r < R; ++r) {
      a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * ldx + k), a0[r]);
      a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * ldx + k + 8), a1[r]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(_mm256_add_ps(a0[r], a1[r]));
}
#endif

template <int R>
inline void dots_scalar(const float* x, int64_t ldx, const int8_t* w, int64_t K, float* out) {
  for (int r = 0; r < R; ++r) {
    float s = 0.f;
    for (int64_t k = 0; k < K; ++k) s += x[r * ldx + k] * static_cast<float>(w[k]);
    out[r] = s;
  }
}

template <int R>
inline void dots_any(const float* x, int64_t ldx, const int8_t* w, int64_t K, float* out) {
#if defined(__AVX2__) && defined(__FMA__)
  if (K % 16 == 0) return dots<R>(x, ldx, w, K, out);
#endif
  dots_scalar<R>(x, ldx, w, K, out);
}

template <typename T, typename S>
void int8_linear_impl(const T* X_in, const int8_t* Q, const S* scale, T* Y, int64_t M, int64_t K, int64_t N) {
  // x is small (M rows of K): widen it to fp32 once, not once per weight row
  std::vector<float> xs(M * K);
  for (int64_t i = 0; i < M * K; ++i) xs[i] = static_cast<float>(X_in[i]);
  const float* X = xs.data();
  // Split the output rows among threads: each streams its own slice of the weight once.
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    float out[MB];
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* w = Q + n * K;
      const float sn = static_cast<float>(scale[n]);
      for (int64_t m = 0; m < M; m += MB) {
        const int64_t r = std::min(MB, M - m);
        const float* xm = X + m * K;
        switch (r) {
          case 4: dots_any<4>(xm, K, w, K, out); break;
          case 3: dots_any<3>(xm, K, w, K, out); break;
          case 2: dots_any<2>(xm, K, w, K, out); break;
          default: dots_any<1>(xm, K, w, K, out); break;
        }
        for (int64_t i = 0; i < r; ++i) Y[(m + i) * N + n] = static_cast<T>(out[i] * sn);
      }
    }
  });
}

// x and scale come in fp32 or bf16 (the int8 format's activations and scales); the products are
// taken in fp32 and the result is returned in x's dtype.
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() == 2 && q.dim() == 2 && x.size(1) == q.size(1) && scale.numel() == q.size(0),
              "int8_linear: x [M, K], q [N, K], scale [N]");
  TORCH_CHECK(q.scalar_type() == at::kChar, "int8_linear: q must be int8");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "int8_linear: x fp32 or bf16");
  TORCH_CHECK(scale.scalar_type() == at::kFloat || scale.scalar_type() == at::kBFloat16,
              "int8_linear: scale fp32 or bf16");
  auto xc = x.contiguous();
  auto qc = q.contiguous();
  auto sc = scale.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = qc.size(0);
  auto y = at::empty({M, N}, xc.options());
  const int8_t* Q = qc.data_ptr<int8_t>();
  const bool bf16x = x.scalar_type() == at::kBFloat16, bf16s = scale.scalar_type() == at::kBFloat16;
  using bf16 = c10::BFloat16;
  if (bf16x && bf16s) int8_linear_impl(xc.data_ptr<bf16>(), Q, sc.data_ptr<bf16>(), y.data_ptr<bf16>(), M, K, N);
  else if (bf16x) int8_linear_impl(xc.data_ptr<bf16>(), Q, sc.data_ptr<float>(), y.data_ptr<bf16>(), M, K, N);
  else if (bf16s) int8_linear_impl(xc.data_ptr<float>(), Q, sc.data_ptr<bf16>(), y.data_ptr<float>(), M, K, N);
  else int8_linear_impl(xc.data_ptr<float>(), Q, sc.data_ptr<float>(), y.data_ptr<float>(), M, K, N);
  return y;
}

}  // namespace

TORCH_LIBRARY(lmlab_cpu, m) {
  m.def("int8_linear(Tensor x, Tensor q, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(lmlab_cpu, CPU, m) {
  m.impl("int8_linear", &int8_linear);
}
