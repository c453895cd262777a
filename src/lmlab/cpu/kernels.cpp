// lmlab's own CPU kernels, compiled on first use by lmlab/model/cpu_kernels.py.
//
// int8_linear: y = x @ (q * scale).T for x [M, K] with few rows (decoding), int8 q [N, K] and one
// scale per output row. Decoding a token reads every weight once, so the work is streaming q from
// memory with as few instructions per weight as possible:
//  - each row of x is rounded once to int16 with its own scale (its largest magnitude / 8191:
//    a relative error of 1e-4, far below the bf16 activations of the int8 format), so that 16
//    weights take one widening (int8 -> int16) and one multiply-add into int32 pairs (vpmaddwd),
//    against two widenings, two conversions and two fp32 FMAs;
//  - each thread takes blocks of output rows and streams its part of q from memory once; a block
//    of q (~8 KB) meets every row of x while it is in L1, MB rows of x at a time.
// The int32 sums are exact (|sum| <= K * 127 * 8191 fits for K <= 32768), so the AVX2 path and
// the plain C++ one give the same numbers.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX2__)
constexpr bool VEC = true;
#else
constexpr bool VEC = false;
#endif

constexpr int64_t MB = 4;      // rows of x per pass over a weight row
// Weight rows ahead to prefetch: DRAM-bound rows streamed at 10-15 GB/s without, 14-17 with 8
// (a 49k x 576 head, 2 threads, Zen 1).
constexpr int64_t PF = 8;
constexpr float XMAX = 8191.f; // int16 range used for x (2 * 127 * 8191 per vpmaddwd lane)

#if defined(__AVX2__)
inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// out[r] = sum_k x[r][k] * w[k] for R rows of x, K a multiple of 32
template <int R>
inline void dots(const int16_t* x, int64_t K, const int8_t* w, int32_t* out) {
  __m256i a0[R], a1[R];
  for (int r = 0; r < R; ++r) { a0[r] = _mm256_setzero_si256(); a1[r] = _mm256_setzero_si256(); }
  for (int64_t k = 0; k < K; k += 32) {
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k)));
    const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k + 16)));
    for (int r = 0; r < R; ++r) {
      const int16_t* xr = x + r * K + k;
      a0[r] = _mm256_add_epi32(a0[r], _mm256_madd_epi16(w0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr))));
      a1[r] = _mm256_add_epi32(a1[r], _mm256_madd_epi16(w1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + 16))));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(_mm256_add_epi32(a0[r], a1[r]));
}
#endif

template <int R>
inline void dots_any(const int16_t* x, int64_t K, const int8_t* w, int32_t* out) {
#if defined(__AVX2__)
  if (K % 32 == 0) return dots<R>(x, K, w, out);
#endif
  for (int r = 0; r < R; ++r) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += static_cast<int32_t>(x[r * K + k]) * w[k];
    out[r] = s;
  }
}

#if defined(__AVX2__)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline float hmax(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  return *std::max_element(lanes, lanes + 8);
}
inline __m256 load8(const c10::BFloat16* p) {  // bf16 is the top half of an fp32
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

// Each row of x as int16 with its own scale (largest magnitude / XMAX): xq [M, K], sx [M]. The
// vector path rounds as the plain one (to nearest, ties to even), so both give the same xq.
template <typename T>
void quantise_rows(const T* X, int64_t M, int64_t K, std::vector<int16_t>& xq, std::vector<float>& sx) {
  xq.resize(M * K);
  sx.resize(M);
  for (int64_t m = 0; m < M; ++m) {
    const T* x = X + m * K;
    int16_t* q = xq.data() + m * K;
    int64_t k = 0;
    float amax = 0.f;
#if defined(__AVX2__)
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vmax = _mm256_setzero_ps();
    for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(load8(x + k), nosign));
    amax = hmax(vmax);
#endif
    for (; k < K; ++k) amax = std::max(amax, std::abs(static_cast<float>(x[k])));
    sx[m] = amax > 0.f ? amax / XMAX : 1.f;
    const float inv = 1.f / sx[m];
    k = 0;
#if defined(__AVX2__)
    const __m256 vinv = _mm256_set1_ps(inv);
    for (; k + 16 <= K; k += 16) {
      const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(load8(x + k), vinv));
      const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(load8(x + k + 8), vinv));
      // packs works within 128-bit lanes: put the 8 + 8 results back in order
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8));
    }
#endif
    for (; k < K; ++k) q[k] = static_cast<int16_t>(std::nearbyint(static_cast<float>(x[k]) * inv));
  }
}

inline void prefetch_row(const void* p, int64_t bytes) {
#if defined(__AVX2__)
  for (int64_t i = 0; i < bytes; i += 64) _mm_prefetch(static_cast<const char*>(p) + i, _MM_HINT_T0);
#endif
}

template <typename T, typename S>
void int8_linear_impl(const T* X, const int8_t* Q, const S* scale, T* Y, int64_t M, int64_t K, int64_t N) {
  std::vector<int16_t> xq;
  std::vector<float> sx;
  quantise_rows(X, M, K, xq, sx);
  // Threads take blocks of NB weight rows (~8 KB); each block meets every group of MB rows of x
  // while both sit in L1. Weight rows are prefetched on the first pass over a block, the one
  // that reads them from memory. (Zen 1, 4-32 rows: 10-20% faster than one pass of x per weight
  // row, which reads x from L2 each time; the same at 1-2 rows.)
  const int64_t NB = std::max<int64_t>(1, 8192 / K);
  at::parallel_for(0, (N + NB - 1) / NB, 1, [&](int64_t b0, int64_t b1) {
    int32_t out[MB];
    const int64_t last = std::min(N, b1 * NB);  // this thread's rows end here
    for (int64_t n0 = b0 * NB; n0 < last; n0 += NB) {
      const int64_t n1 = std::min(last, n0 + NB);
      for (int64_t m = 0; m < M; m += MB) {
        const int64_t r = std::min(MB, M - m);
        const int16_t* xm = xq.data() + m * K;
        for (int64_t n = n0; n < n1; ++n) {
          const int8_t* w = Q + n * K;
          if (m == 0 && n + PF < last) prefetch_row(w + PF * K, K);
          switch (r) {
            case 4: dots_any<4>(xm, K, w, out); break;
            case 3: dots_any<3>(xm, K, w, out); break;
            case 2: dots_any<2>(xm, K, w, out); break;
            default: dots_any<1>(xm, K, w, out); break;
          }
          const float sn = static_cast<float>(scale[n]);
          for (int64_t i = 0; i < r; ++i) Y[(m + i) * N + n] = static_cast<T>(static_cast<float>(out[i]) * sx[m + i] * sn);
        }
      }
    }
  });
}

// x and scale come in fp32 or bf16 (the int8 format's activations and scales); the result is
// returned in x's dtype.
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() == 2 && q.dim() == 2 && x.size(1) == q.size(1) && scale.numel() == q.size(0),
              "int8_linear: x [M, K], q [N, K], scale [N]");
  TORCH_CHECK(q.scalar_type() == at::kChar, "int8_linear: q must be int8");
  TORCH_CHECK(q.size(1) <= 32768, "int8_linear: at most 32768 inputs (int32 sums)");
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

// decode_attention: softmax(q k^T * scale) v for one query per row (a decode step), with grouped
// key/value heads (query head h reads kv head h / (H / Hkv)) and an optional boolean mask of the
// keys each row may see. torch's fused attention spends ~70 us per layer on this on a Zen 1 EPYC
// (its blocking is made for long queries); one pass over each row's keys takes a few.
#if defined(__AVX2__)
// exp of 8 floats: 2^n * exp(r) with n = round(x / ln 2), r = x - n ln 2 split in two parts, and
// Cephes' degree-6 polynomial for exp(r), |r| <= ln 2 / 2 (about 1 ulp); inputs below -87 give
// ~1e-38, not 0, so callers blend masked keys to 0 themselves.
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#endif

// s[l] = exp(s[l] - mx), 0 where s[l] is -inf (a masked key); returns the sum
inline float exp_shifted(float* s, int64_t L, float mx) {
  constexpr float NEG = -std::numeric_limits<float>::infinity();
  float sum = 0.f;
  int64_t l = 0;
#if defined(__AVX2__)
  __m256 vsum = _mm256_setzero_ps();
  const __m256 vmx = _mm256_set1_ps(mx), vneg = _mm256_set1_ps(NEG);
  for (; l + 8 <= L; l += 8) {
    const __m256 x = _mm256_loadu_ps(s + l);
    const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(x, vneg, _CMP_EQ_OQ), exp8(_mm256_sub_ps(x, vmx)));
    _mm256_storeu_ps(s + l, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  sum = hsum(vsum);
#endif
  for (; l < L; ++l) {
    s[l] = s[l] == NEG ? 0.f : std::exp(s[l] - mx);
    sum += s[l];
  }
  return sum;
}

// Attention reads keys and values 16 at a time as two fp32 vectors. From bf16 that takes two
// unpacks, which leave the values in the order order16() gives (0-3, 8-11 | 4-7, 12-15) instead of
// two widenings and two shifts; the query and the output use the same order, so dot products and
// sums are unchanged.
template <typename T>
constexpr int64_t order16(int64_t j) {
  if constexpr (std::is_same_v<T, float>) return j;
  else return j < 4 || j >= 12 ? j : (j < 8 ? j + 4 : j - 4);
}

#if defined(__AVX2__)
inline void load16(const float* p, __m256& a, __m256& b) { a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8); }
inline void load16(const c10::BFloat16* p, __m256& a, __m256& b) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), z = _mm256_setzero_si256();
  a = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, x));
  b = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, x));
}
#endif

// s[l] = q . k[l] for the L keys k[l] = k + l * ks (D values each); q in order16 when D % 16 == 0.
// Four keys at a time: one accumulator per key keeps four FMA chains in flight.
template <typename T>
inline void scores(const float* q, const T* k, int64_t ks, int64_t L, int64_t D, float* s) {
  int64_t l = 0;
#if defined(__AVX2__)
  if (D % 16 == 0) {
    __m256 x, y;
    for (; l + 4 <= L; l += 4) {
      const T* k0 = k + l * ks;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t d = 0; d < D; d += 16) {
        const __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
        load16(k0 + d, x, y), a0 = _mm256_fmadd_ps(q1, y, _mm256_fmadd_ps(q0, x, a0));
        load16(k0 + ks + d, x, y), a1 = _mm256_fmadd_ps(q1, y, _mm256_fmadd_ps(q0, x, a1));
        load16(k0 + 2 * ks + d, x, y), a2 = _mm256_fmadd_ps(q1, y, _mm256_fmadd_ps(q0, x, a2));
        load16(k0 + 3 * ks + d, x, y), a3 = _mm256_fmadd_ps(q1, y, _mm256_fmadd_ps(q0, x, a3));
      }
      s[l] = hsum(a0), s[l + 1] = hsum(a1), s[l + 2] = hsum(a2), s[l + 3] = hsum(a3);
    }
    for (; l < L; ++l) {
      __m256 a = _mm256_setzero_ps();
      for (int64_t d = 0; d < D; d += 16) {
        load16(k + l * ks + d, x, y);
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), y, _mm256_fmadd_ps(_mm256_loadu_ps(q + d), x, a));
      }
      s[l] = hsum(a);
    }
    return;
  }
#endif
  for (; l < L; ++l) {
    float a = 0.f;
    for (int64_t d = 0; d < D; ++d) a += q[d] * static_cast<float>(k[l * ks + d]);
    s[l] = a;
  }
}

// out = sum_l p[l] * v[l] over the keys with p[l] != 0, v[l] = v + l * vs (D values each); out in
// order16 when D % 16 == 0. With D = 64 the sums stay in eight registers.
template <typename T>
inline void weighted_values(const float* p, const T* v, int64_t vs, int64_t L, int64_t D, float* out) {
#if defined(__AVX2__)
  if (D == 64) {
    __m256 a[8];
    for (auto& x : a) x = _mm256_setzero_ps();
    for (int64_t l = 0; l < L; ++l) {
      if (p[l] == 0.f) continue;
      const __m256 w = _mm256_set1_ps(p[l]);
      const T* vl = v + l * vs;
      for (int j = 0; j < 4; ++j) {
        __m256 x, y;
        load16(vl + 16 * j, x, y);
        a[2 * j] = _mm256_fmadd_ps(w, x, a[2 * j]), a[2 * j + 1] = _mm256_fmadd_ps(w, y, a[2 * j + 1]);
      }
    }
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + 8 * j, a[j]);
    return;
  }
  if (D % 16 == 0) {
    std::fill(out, out + D, 0.f);
    for (int64_t l = 0; l < L; ++l) {
      if (p[l] == 0.f) continue;
      const __m256 w = _mm256_set1_ps(p[l]);
      for (int64_t d = 0; d < D; d += 16) {
        __m256 x, y;
        load16(v + l * vs + d, x, y);
        _mm256_storeu_ps(out + d, _mm256_fmadd_ps(w, x, _mm256_loadu_ps(out + d)));
        _mm256_storeu_ps(out + d + 8, _mm256_fmadd_ps(w, y, _mm256_loadu_ps(out + d + 8)));
      }
    }
    return;
  }
#endif
  std::fill(out, out + D, 0.f);
  for (int64_t l = 0; l < L; ++l)
    if (p[l] != 0.f)
      for (int64_t d = 0; d < D; ++d) out[d] += p[l] * static_cast<float>(v[l * vs + d]);
}

template <typename T>
void decode_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const c10::optional<at::Tensor>& mask, double scale, at::Tensor& y) {
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), L = k.size(2), G = H / Hkv;
  const T* Qp = q.data_ptr<T>();
  const T* Kp = k.data_ptr<T>();
  const T* Vp = v.data_ptr<T>();
  T* Yp = y.data_ptr<T>();
  const bool* Mp = mask ? mask->data_ptr<bool>() : nullptr;
  const int64_t ms0 = mask ? mask->stride(0) : 0, ms3 = mask ? mask->stride(3) : 0;
  constexpr float NEG = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, B * H, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> qf(D), acc(D), s(L);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H, hk = h / G;
      const T* qp = Qp + b * q.stride(0) + h * q.stride(1);
      const bool ordered = D % 16 == 0 && VEC;  // q and acc in order16 within each block of 16
      for (int64_t d = 0; d < D; ++d) {
        const int64_t src = ordered ? d - d % 16 + order16<T>(d % 16) : d;
        qf[d] = static_cast<float>(qp[src]) * static_cast<float>(scale);
      }
      const T* kb = Kp + b * k.stride(0) + hk * k.stride(1);
      const T* vb = Vp + b * v.stride(0) + hk * v.stride(1);
      scores(qf.data(), kb, k.stride(2), L, D, s.data());  // masked keys too: cheaper than branching
      float mx = NEG;
      for (int64_t l = 0; l < L; ++l) {
        if (Mp && !Mp[b * ms0 + l * ms3]) s[l] = NEG;
        mx = std::max(mx, s[l]);
      }
      const float sum = exp_shifted(s.data(), L, mx);
      weighted_values(s.data(), vb, v.stride(2), L, D, acc.data());
      T* yp = Yp + (b * H + h) * D;
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      for (int64_t d = 0; d < D; ++d) yp[ordered ? d - d % 16 + order16<T>(d % 16) : d] = static_cast<T>(acc[d] * inv);
    }
  });
}

// greedy_pick: for each row of logits [B, V] (fp32), the first index of its largest value and
// that token's log-probability, -log(sum_v exp(l_v - max)): what log_softmax, argmax and a gather
// give, in two passes over the row and without writing a [B, V] result.
std::tuple<at::Tensor, at::Tensor> greedy_pick(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat, "greedy_pick: fp32 logits [B, V]");
  auto x = logits.contiguous();
  const int64_t B = x.size(0), V = x.size(1);
  auto idx = at::empty({B}, x.options().dtype(at::kLong));
  auto lp = at::empty({B}, x.options());
  const float* X = x.data_ptr<float>();
  int64_t* I = idx.data_ptr<int64_t>();
  float* P = lp.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* r = X + b * V;
      float mx = -std::numeric_limits<float>::infinity();
      int64_t v = 0;
#if defined(__AVX2__)
      __m256 vm = _mm256_set1_ps(mx);
      for (; v + 8 <= V; v += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(r + v));
      mx = hmax(vm);
#endif
      for (; v < V; ++v) mx = std::max(mx, r[v]);
      int64_t first = 0;
      while (first < V - 1 && r[first] != mx) ++first;
      float sum = 0.f;
      v = 0;
#if defined(__AVX2__)
      __m256 vs = _mm256_setzero_ps();
      const __m256 vmx = _mm256_set1_ps(mx);
      for (; v + 8 <= V; v += 8) vs = _mm256_add_ps(vs, exp8(_mm256_sub_ps(_mm256_loadu_ps(r + v), vmx)));
      sum = hsum(vs);
#endif
      for (; v < V; ++v) sum += std::exp(r[v] - mx);
      I[b] = first;
      P[b] = -std::log(sum);
    }
  });
  return {idx, lp};
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const c10::optional<at::Tensor>& mask, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(2) == 1 && k.sizes() == v.sizes() &&
              q.size(0) == k.size(0) && q.size(3) == k.size(3) && q.size(1) % k.size(1) == 0,
              "decode_attention: q [B, H, 1, D], k and v [B, Hkv, L, D]");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type() &&
              (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16), "decode_attention: fp32 or bf16");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "decode_attention: head dim contiguous");
  c10::optional<at::Tensor> m;
  if (mask) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->dim() == 4 && mask->size(3) == k.size(2),
                "decode_attention: a boolean mask [B, 1, 1, L]");
    m = mask->expand({q.size(0), 1, 1, k.size(2)});
  }
  auto y = at::empty({q.size(0), q.size(1), 1, q.size(3)}, q.options());
  if (q.scalar_type() == at::kBFloat16) decode_attention_impl<c10::BFloat16>(q, k, v, m, scale, y);
  else decode_attention_impl<float>(q, k, v, m, scale, y);
  return y;
}

}  // namespace

TORCH_LIBRARY(lmlab_cpu, m) {
  m.def("int8_linear(Tensor x, Tensor q, Tensor scale) -> Tensor");
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor");
  m.def("greedy_pick(Tensor logits) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lmlab_cpu, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("decode_attention", &decode_attention);
  m.impl("greedy_pick", &greedy_pick);
}
