
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

// Threads. On the process's main thread the kernels use OpenMP, the same runtime (torch's libgomp) and
// the same worker pool as torch's own operators, so no two pools spin against each other. On any other
// thread (a background generation) OpenMP is slow: libgomp keeps one pool per calling thread, and once
// two threads own pools it stops letting idle workers spin, so each of the ~50 products of a decode
// step pays a sleep/wake-up (measured: background decoding of the tiny shape at 0.55x). There the
// kernels use their own helper threads instead, which spin briefly between products (~0.2 ms: hot
// within a decode step) and then sleep.
namespace {
using Clock = std::chrono::steady_clock;

struct Pool {
  std::mutex call_mu;  // one parallel product at a time, whichever thread calls
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> epoch{0};
  std::atomic<int> pending{0};
  void (*fn)(void*, int, int) = nullptr;
  void* ctx = nullptr;
  int parts = 1;
  int helpers = 0;  // started helper threads

  void helper(int index, uint64_t seen) {
    for (;;) {
      uint64_t e = epoch.load(std::memory_order_acquire);
      if (e == seen) {
        const auto until = Clock::now() + std::chrono::microseconds(200);
        int spins = 0;
        while ((e = epoch.load(std::memory_order_acquire)) == seen) {
          _mm_pause();
          if (++spins % 64 == 0 && Clock::now() > until) {
            std::unique_lock<std::mutex> lk(mu);
            cv.wait(lk, [&] { return epoch.load(std::memory_order_acquire) != seen; });
          }
        }
      }
      seen = e;
      fn(ctx, index, parts);
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  // Run fn(ctx, i, parts) for i in [0, parts): part 0 here, the others on helpers.
  void run(void (*f)(void*, int, int), void* c, int n) {
    std::lock_guard<std::mutex> g(call_mu);
    while (helpers < n - 1) {
      const int index = ++helpers;
      std::thread([this, index, e = epoch.load()] { helper(index, e); }).detach();
    }
    fn = f;
    ctx = c;
    parts = n;
    pending.store(n - 1, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(mu);  // no lost wake-up for a helper about to sleep
      epoch.fetch_add(1, std::memory_order_acq_rel);
    }
    cv.notify_all();
    f(c, 0, n);
    while (pending.load(std::memory_order_acquire) > 0) _mm_pause();
  }
};

Pool* pool = new Pool();  // never destroyed: helpers may outlive static destructors at exit

void reset_in_child() { pool = new Pool(); }  // a forked child has none of the parent's helpers
const int registered = pthread_atfork(nullptr, nullptr, reset_in_child);

int parts_for(int64_t floats) {
  static const int threads = std::max(1, std::min<int>(at::get_num_threads(), 16));
  return floats < (1 << 16) ? 1 : threads;  // under 256 KB of weights one thread is faster
}

bool on_main_thread() { return static_cast<pid_t>(syscall(SYS_gettid)) == getpid(); }

template <class F>
void parallel(int n, F& body) {
  if (n <= 1) {
    body(0, 1);
  } else if (on_main_thread()) {
    #pragma omp parallel num_threads(n)
    body(omp_get_thread_num(), omp_get_num_threads());
  } else {
    pool->run([](void* c, int i, int k) { (*static_cast<F*>(c))(i, k); }, &body, n);
  }
}


// ---- matrix-vector products (y = op(x) + b), each split over the threads -------------------------------

// W (N, K) row-major fp32 (nn.Linear): one dot product per row, rows split over the threads.
void gemv_core(const float* w, const float* xv, const float* bv, float* yv, int64_t N, int64_t K) {
  auto body = [w, xv, bv, yv, N, K](int i, int parts) {
    for (int64_t n = N * i / parts, end = N * (i + 1) / parts; n < end; n++) {
      const float* __restrict r = w + n * K;
      const float* __restrict v = xv;
      float acc = 0.f;
      #pragma omp simd reduction(+:acc)
      for (int64_t k = 0; k < K; k++) acc += r[k] * v[k];
      yv[n] = bv ? acc + bv[n] : acc;
    }
  };
  parallel(parts_for(N * K), body);
}

// out[0, N) += x[k] * W[k, :] for k in [k0, k1), ROWS weight rows per pass: one load and store of the
// partial sum per ROWS weight loads. Measured on GPT-2-small's layer shapes (benchmarks/gemv.py's machine):
// for N = 2304 or 3072, 12 rows read 43-48 GB/s where 1 row reads 18-20 (4 rows 28 and 8 rows 35 in an
// earlier run; 16 no better, 24 spills registers). For N = 768 one row read 43-46 GB/s against 39-41 alone,
// but inside a whole decode step 12 rows were as fast or faster (mlp c_proj 2.9-3.2 ms against 3.2-3.4).
template <int ROWS>
void band_rows(const float* w, const float* xv, float* out, int64_t k0, int64_t k1, int64_t N) {
  int64_t k = k0;
  for (; k + ROWS <= k1; k += ROWS) {
    float a[ROWS];
    for (int q = 0; q < ROWS; q++) a[q] = xv[k + q];
    const float* r0 = w + k * N;
    #pragma omp simd
    for (int64_t j = 0; j < N; j++) {
      float acc = out[j];
      #pragma GCC unroll 12
      for (int q = 0; q < ROWS; q++) acc += a[q] * r0[q * N + j];
      out[j] = acc;
    }
  }
  for (; k < k1; k++) {
    const float a = xv[k];
    const float* r = w + k * N;
    #pragma omp simd
    for (int64_t j = 0; j < N; j++) out[j] += a * r[j];
  }
}

int gemv_t_parts(int64_t K, int64_t N) { return static_cast<int>(std::min<int64_t>(parts_for(N * K), K)); }

// W (K, N) row-major fp32 (GPT-2's Conv1D), with no transposed copy: each thread streams a contiguous band
// of rows into its own partial sum (in cache, ``partial`` holds gemv_t_parts(K, N) x N floats), then the
// partial sums are added.
void gemv_t_core(const float* w, const float* xv, const float* bv, float* yv, int64_t K, int64_t N,
                 float* pv) {
  const int T = gemv_t_parts(K, N);
  auto body = [w, xv, pv, N, K](int t, int parts) {
    const int64_t k0 = K * t / parts, k1 = K * (t + 1) / parts;
    float* out = pv + t * N;
    for (int64_t j = 0; j < N; j++) out[j] = 0.f;
    band_rows<12>(w, xv, out, k0, k1, N);
  };
  parallel(T, body);
  for (int64_t j = 0; j < N; j++) {
    float acc = bv ? bv[j] : 0.f;
    for (int t = 0; t < T; t++) acc += pv[t * N + j];
    yv[j] = acc;
  }
}

// Dynamic int8, as torch's quantized::linear_dynamic computes it on x86 (fbgemm, reduce_range): the input
// row is quantized to uint8 in [0, 127] with a scale and zero point chosen from its min and max, multiplied
// with the int8 weights (N, K) in int32, and scaled back: y = sx * sw[n] * (acc - zp * rowsum[n]) + b.
// With AVX-512 VNNI one instruction does 64 of the byte products; AVX2 does 32 in two; a plain loop elsewhere.
struct QInput {
  float scale;
  int32_t zero_point;
};

QInput quantize_row(const float* x, int64_t K, uint8_t* q) {
  float mn = 0.f, mx = 0.f;  // the range always holds 0 (fbgemm's ChooseQuantizationParams)
  for (int64_t k = 0; k < K; k++) {
    mn = std::min(mn, x[k]);
    mx = std::max(mx, x[k]);
  }
  const int32_t qmin = 0, qmax = 127;
  double scale = (static_cast<double>(mx) - mn) / (qmax - qmin);
  if (static_cast<float>(scale) == 0.f || std::isinf(1.f / static_cast<float>(scale))) scale = 0.1;
  const double from_min = qmin - mn / scale, from_max = qmax - mx / scale;
  const double err_min = std::abs(qmin) + std::abs(mn / scale), err_max = std::abs(qmax) + std::abs(mx / scale);
  const double zp0 = err_min < err_max ? from_min : from_max;
  const int32_t zp = zp0 < qmin ? qmin : zp0 > qmax ? qmax : static_cast<int32_t>(std::nearbyint(zp0));
  const float s = static_cast<float>(scale), inv = 1.f / s;
  for (int64_t k = 0; k < K; k++) {
    const float v = std::nearbyint(x[k] * inv) + zp;
    q[k] = static_cast<uint8_t>(std::min<float>(qmax, std::max<float>(qmin, v)));
  }
  return {s, zp};
}

void qgemv_core(const int8_t* w, const float* sw, const int32_t* rowsum, const float* xv, const float* bv,
                float* yv, int64_t N, int64_t K, uint8_t* qx) {
  const QInput in = quantize_row(xv, K, qx);
  auto body = [=](int i, int parts) {
    const int64_t n0 = N * i / parts, n1 = N * (i + 1) / parts;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    // One row at a time, each a single sequential stream: measured on GPT-2-small's shapes, 2-, 4- and 8-row
    // interleaving read 19-35 GB/s against 33-49 for this (the machine reads ~50); two accumulators per row.
    const __mmask64 tail = K % 64 ? (~0ULL >> (64 - K % 64)) : 0;
    const int64_t pairs = K / 128 * 128, full = K / 64 * 64;
    for (int64_t n = n0; n < n1; n++) {
      const int8_t* r = w + n * K;
      __m512i a0 = _mm512_setzero_si512(), a1 = a0;
      for (int64_t k = 0; k < pairs; k += 128) {
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(qx + k), _mm512_loadu_si512(r + k));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(qx + k + 64), _mm512_loadu_si512(r + k + 64));
      }
      if (full > pairs) a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(qx + pairs), _mm512_loadu_si512(r + pairs));
      if (tail) {
        a1 = _mm512_dpbusd_epi32(a1, _mm512_maskz_loadu_epi8(tail, qx + full), _mm512_maskz_loadu_epi8(tail, r + full));
      }
      const int32_t acc = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1));
      const float v = static_cast<float>(acc - in.zero_point * rowsum[n]) * (in.scale * sw[n]);
      yv[n] = bv ? v + bv[n] : v;
    }
#elif defined(__AVX2__)
    // AVX2 (Zen 2/3, Haswell on): maddubs multiplies 32 uint8 x int8 pairs and adds neighbours into int16,
    // which cannot saturate here (the input is in [0, 127]: 2 * 127 * 128 < 32767); madd with ones widens
    // them to int32. Two accumulators per row, a plain loop for K's last K % 64.
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t pairs = K / 64 * 64;
    for (int64_t n = n0; n < n1; n++) {
      const int8_t* r = w + n * K;
      __m256i a0 = _mm256_setzero_si256(), a1 = a0;
      for (int64_t k = 0; k < pairs; k += 64) {
        const __m256i p0 = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + k)),
                                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + k)));
        const __m256i p1 = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + k + 32)),
                                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + k + 32)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p0, ones));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p1, ones));
      }
      const __m256i s8 = _mm256_add_epi32(a0, a1);
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
      int32_t acc = _mm_cvtsi128_si32(s4);
      for (int64_t k = pairs; k < K; k++) acc += static_cast<int32_t>(qx[k]) * static_cast<int32_t>(r[k]);
      const float v = static_cast<float>(acc - in.zero_point * rowsum[n]) * (in.scale * sw[n]);
      yv[n] = bv ? v + bv[n] : v;
    }
#else
    for (int64_t n = n0; n < n1; n++) {
      const int8_t* r = w + n * K;
      int32_t acc = 0;
      #pragma omp simd reduction(+:acc)
      for (int64_t k = 0; k < K; k++) acc += static_cast<int32_t>(qx[k]) * static_cast<int32_t>(r[k]);
      const float v = static_cast<float>(acc - in.zero_point * rowsum[n]) * (in.scale * sw[n]);
      yv[n] = bv ? v + bv[n] : v;
    }
#endif
  };
  parallel(parts_for(N * K / 4), body);  // a quarter of the bytes of the same fp32 product
}

// ---- products over several rows (speculative verification: the k + 1 rows of one ``extend``) ----------------
// Each weight is read once for all the rows (at most kMaxRows at a time), so verifying k tokens costs about one
// step's weight traffic, not k (torch's at::mm, used for this before, made a 5-token verification of a
// GPT-2-small-shaped target cost 4.5-5x a step; figures in benchmarks/RESULTS.md).
constexpr int kMaxRows = 9;  // k = 8 guesses and the pending token in one pass

// Splits n rows into groups of at most kMaxRows, as even as possible, and calls f(R, first) for each, with R a
// std::integral_constant (the group's size, a template argument for the products' register blocks).
template <class F>
void by_groups(int64_t n, F&& f) {
  const int64_t groups = (n + kMaxRows - 1) / kMaxRows;
  for (int64_t g = 0, done = 0; g < groups; g++) {
    const int64_t r = (n - done) / (groups - g);
    switch (r) {
      case 1: f(std::integral_constant<int, 1>{}, done); break;
      case 2: f(std::integral_constant<int, 2>{}, done); break;
      case 3: f(std::integral_constant<int, 3>{}, done); break;
      case 4: f(std::integral_constant<int, 4>{}, done); break;
      case 5: f(std::integral_constant<int, 5>{}, done); break;
      case 6: f(std::integral_constant<int, 6>{}, done); break;
      case 7: f(std::integral_constant<int, 7>{}, done); break;
      case 8: f(std::integral_constant<int, 8>{}, done); break;
      default: f(std::integral_constant<int, kMaxRows>{}, done); break;
    }
    done += r;
  }
}

#if defined(__AVX512F__)
inline __mmask16 tail_mask(int64_t n) { return n % 16 ? static_cast<__mmask16>((1u << (n % 16)) - 1) : 0; }

// W (N, K) fp32 (nn.Linear): y[i, n] = W[n] . x[i] (+ b[n]) for the R rows of x (stride K) and n in [n0, n1);
// two weight rows at a time share the loads of x.
template <int R>
void rows_linear(const float* w, const float* x, const float* bv, float* y, int64_t n0, int64_t n1, int64_t N,
                 int64_t K) {
  const int64_t full = K / 16 * 16;
  const __mmask16 tail = tail_mask(K);
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) {
    const float* r0 = w + n * K;
    const float* r1 = r0 + K;
    __m512 a0[R], a1[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) a0[i] = a1[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < full; k += 16) {
      const __m512 w0 = _mm512_loadu_ps(r0 + k), w1 = _mm512_loadu_ps(r1 + k);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++) {
        const __m512 v = _mm512_loadu_ps(x + i * K + k);
        a0[i] = _mm512_fmadd_ps(w0, v, a0[i]);
        a1[i] = _mm512_fmadd_ps(w1, v, a1[i]);
      }
    }
    if (tail) {
      const __m512 w0 = _mm512_maskz_loadu_ps(tail, r0 + full), w1 = _mm512_maskz_loadu_ps(tail, r1 + full);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++) {
        const __m512 v = _mm512_maskz_loadu_ps(tail, x + i * K + full);
        a0[i] = _mm512_fmadd_ps(w0, v, a0[i]);
        a1[i] = _mm512_fmadd_ps(w1, v, a1[i]);
      }
    }
    const float b0 = bv ? bv[n] : 0.f, b1 = bv ? bv[n + 1] : 0.f;
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      y[i * N + n] = _mm512_reduce_add_ps(a0[i]) + b0;
      y[i * N + n + 1] = _mm512_reduce_add_ps(a1[i]) + b1;
    }
  }
  for (; n < n1; n++) {
    const float* r0 = w + n * K;
    __m512 a0[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) a0[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < full; k += 16) {
      const __m512 w0 = _mm512_loadu_ps(r0 + k);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++) a0[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i * K + k), a0[i]);
    }
    if (tail) {
      const __m512 w0 = _mm512_maskz_loadu_ps(tail, r0 + full);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++) a0[i] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(tail, x + i * K + full), a0[i]);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) y[i * N + n] = _mm512_reduce_add_ps(a0[i]) + (bv ? bv[n] : 0.f);
  }
}

// W (K, N) fp32 (GPT-2's Conv1D), no transposed copy: y[i, j] = x[i] . W[:, j] (+ b[j]) for the R rows of x, over
// a tile of T vectors of 16 columns starting at j (the last vector masked by ``last``): the R x T sums stay in
// registers for the whole of K, each weight vector loaded once and used R times.
// Conv1D's weight rows are N floats apart: the products below take them in bands of kBand rows, each band's rows
// read left to right side by side (kBand sequential streams, which the hardware prefetchers follow), with the
// next band's asked for kBand rows ahead.
constexpr int64_t kBand = 16;

// W (K, N) fp32 (GPT-2's Conv1D), no transposed copy: y[i, j..] += x[i, k0:k1] . W[k0:k1, j..] for the R rows of x,
// over a tile of T vectors of 16 columns starting at j (the last vector masked by ``last``): the R x T sums stay in
// registers over the band, each weight vector loaded once and used R times.
template <int R, int T>
void conv1d_tile(const float* w, const float* x, float* y, int64_t j, int64_t k0, int64_t k1, int64_t N,
                 int64_t K, __mmask16 last) {
  __m512 acc[R][T];
  #pragma GCC unroll 16
  for (int i = 0; i < R; i++) {
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t k = k0; k < k1; k++) {
    const float* r = w + k * N + j;
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) _mm_prefetch(reinterpret_cast<const char*>(r + kBand * N + 16 * t), _MM_HINT_T1);
    __m512 wv[T];
    #pragma GCC unroll 16
    for (int t = 0; t < T - 1; t++) wv[t] = _mm512_loadu_ps(r + 16 * t);
    wv[T - 1] = _mm512_maskz_loadu_ps(last, r + 16 * (T - 1));
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      const __m512 c = _mm512_set1_ps(x[i * K + k]);
      #pragma GCC unroll 16
      for (int t = 0; t < T; t++) acc[i][t] = _mm512_fmadd_ps(c, wv[t], acc[i][t]);
    }
  }
  #pragma GCC unroll 16
  for (int t = 0; t < T; t++) {
    const __mmask16 m = t == T - 1 ? last : static_cast<__mmask16>(0xFFFF);
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      float* yi = y + i * N + j + 16 * t;
      _mm512_mask_storeu_ps(yi, m, _mm512_add_ps(acc[i][t], _mm512_maskz_loadu_ps(m, yi)));
    }
  }
}

// Columns [j0, j1) of the Conv1D product: the bias, then band by band, tiles as wide as the registers allow for
// R rows (R x T sums), then single vectors, the last one masked.
template <int R>
void rows_conv1d(const float* w, const float* x, const float* bv, float* y, int64_t j0, int64_t j1, int64_t N,
                 int64_t K) {
  constexpr int T = R <= 3 ? 6 : 24 / R;
  for (int i = 0; i < R; i++)
    for (int64_t j = j0; j < j1; j++) y[i * N + j] = bv ? bv[j] : 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += kBand) {
    const int64_t k1 = std::min(K, k0 + kBand);
    int64_t j = j0;
    for (; j + 16 * T <= j1; j += 16 * T) conv1d_tile<R, T>(w, x, y, j, k0, k1, N, K, 0xFFFF);
    for (; j < j1; j += 16) conv1d_tile<R, 1>(w, x, y, j, k0, k1, N, K, j1 - j >= 16 ? 0xFFFF : tail_mask(j1 - j));
  }
}

#define AIGC_OWN_ROWS 1
#elif defined(__AVX2__) && defined(__FMA__)
// The same products with 8-float vectors (CPUs without AVX-512, such as AMD Zen 2/3): 16 registers, so one weight
// row at a time for Linear and narrower Conv1D tiles; column tails in scalar code (no masked loads).
inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// W (N, K) fp32 (nn.Linear): y[i, n] = W[n] . x[i] (+ b[n]) for the R rows of x (stride K) and n in [n0, n1).
template <int R>
void rows_linear(const float* w, const float* x, const float* bv, float* y, int64_t n0, int64_t n1, int64_t N,
                 int64_t K) {
  const int64_t full = K / 8 * 8;
  for (int64_t n = n0; n < n1; n++) {
    const float* r0 = w + n * K;
    __m256 a0[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) a0[i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < full; k += 8) {
      const __m256 w0 = _mm256_loadu_ps(r0 + k);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++) a0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i * K + k), a0[i]);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      float sum = hsum8(a0[i]);
      for (int64_t k = full; k < K; k++) sum += r0[k] * x[i * K + k];
      y[i * N + n] = sum + (bv ? bv[n] : 0.f);
    }
  }
}

constexpr int64_t kBand = 16;  // Conv1D weight rows read side by side, as in the AVX-512 products above

// y[i, j..j + 8T) += x[i, k0:k1] . W[k0:k1, j..] for the R rows of x: R x T sums in registers over the band.
template <int R, int T>
void conv1d_tile(const float* w, const float* x, float* y, int64_t j, int64_t k0, int64_t k1, int64_t N,
                 int64_t K) {
  __m256 acc[R][T];
  #pragma GCC unroll 16
  for (int i = 0; i < R; i++) {
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_ps();
  }
  for (int64_t k = k0; k < k1; k++) {
    const float* r = w + k * N + j;
    _mm_prefetch(reinterpret_cast<const char*>(r + kBand * N), _MM_HINT_T1);
    __m256 wv[T];
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) wv[t] = _mm256_loadu_ps(r + 8 * t);
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      const __m256 c = _mm256_set1_ps(x[i * K + k]);
      #pragma GCC unroll 16
      for (int t = 0; t < T; t++) acc[i][t] = _mm256_fmadd_ps(c, wv[t], acc[i][t]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < R; i++) {
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) {
      float* yi = y + i * N + j + 8 * t;
      _mm256_storeu_ps(yi, _mm256_add_ps(acc[i][t], _mm256_loadu_ps(yi)));
    }
  }
}

// Columns [j0, j1) of the Conv1D product: the bias, then band by band, tiles of T vectors, single vectors, and the
// last columns (fewer than 8) in scalar code.
template <int R>
void rows_conv1d(const float* w, const float* x, const float* bv, float* y, int64_t j0, int64_t j1, int64_t N,
                 int64_t K) {
  constexpr int T = R <= 2 ? 4 : R <= 3 ? 3 : R <= 6 ? 2 : 1;
  for (int i = 0; i < R; i++)
    for (int64_t j = j0; j < j1; j++) y[i * N + j] = bv ? bv[j] : 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += kBand) {
    const int64_t k1 = std::min(K, k0 + kBand);
    int64_t j = j0;
    for (; j + 8 * T <= j1; j += 8 * T) conv1d_tile<R, T>(w, x, y, j, k0, k1, N, K);
    for (; j + 8 <= j1; j += 8) conv1d_tile<R, 1>(w, x, y, j, k0, k1, N, K);
    for (; j < j1; j++)
      for (int i = 0; i < R; i++) {
        float sum = 0.f;
        for (int64_t k = k0; k < k1; k++) sum += x[i * K + k] * w[k * N + j];
        y[i * N + j] += sum;
      }
  }
}

#define AIGC_OWN_ROWS 1
#endif

#if defined(AIGC_OWN_ROWS)
// One group of R <= kMaxRows rows, its weight split over the threads: by output rows (Linear) or by
// 16-aligned column bands (Conv1D).
template <int R>
void rows_group(bool conv1d, const float* w, const float* x, const float* bv, float* y, int64_t N, int64_t K) {
  auto body = [=](int t, int parts) {
    if (conv1d) {
      const int64_t chunks = (N + 15) / 16;
      const int64_t j0 = std::min(N, chunks * t / parts * 16), j1 = std::min(N, chunks * (t + 1) / parts * 16);
      if (j0 < j1) rows_conv1d<R>(w, x, bv, y, j0, j1, N, K);
    } else {
      rows_linear<R>(w, x, bv, y, N * t / parts, N * (t + 1) / parts, N, K);
    }
  };
  parallel(parts_for(N * K), body);
}

// y (n, N) = the fp32 product of each row of x (n, K), kMaxRows rows at most per pass over the weights.
void rows_fp32(bool conv1d, const float* w, const float* x, const float* bv, float* y, int64_t n, int64_t N,
               int64_t K) {
  by_groups(n, [&](auto R, int64_t first) {
    rows_group<decltype(R)::value>(conv1d, w, x + first * K, bv, y + first * N, N, K);
  });
}
constexpr bool kOwnRows = true;
#else
void rows_fp32(bool, const float*, const float*, const float*, float*, int64_t, int64_t, int64_t) {}
constexpr bool kOwnRows = false;  // without AVX2 and FMA: torch's matrix product (each weight still read once)
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// Dynamic int8 over R rows: each row quantized as ``qgemv_core`` quantizes it (its own scale and zero point, in
// ``qx`` with stride ``Kp``), each int8 weight row then multiplied with all R: the same integers and the same
// scaling as R one-row products, so the logits equal stepping's exactly.
template <int R>
void rows_int8(const int8_t* w, const float* sw, const int32_t* rowsum, const uint8_t* qx, const QInput* in,
               const float* bv, float* y, int64_t n0, int64_t n1, int64_t N, int64_t K, int64_t Kp) {
  const int64_t full = K / 64 * 64;
  const __mmask64 tail = K % 64 ? (~0ULL >> (64 - K % 64)) : 0;
  for (int64_t n = n0; n < n1; n++) {
    const int8_t* r = w + n * K;
    __m512i acc[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) acc[i] = _mm512_setzero_si512();
    for (int64_t k = 0; k < full; k += 64) {
      const __m512i wv = _mm512_loadu_si512(r + k);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_loadu_si512(qx + i * Kp + k), wv);
    }
    if (tail) {
      const __m512i wv = _mm512_maskz_loadu_epi8(tail, r + full);
      #pragma GCC unroll 16
      for (int i = 0; i < R; i++)
        acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_maskz_loadu_epi8(tail, qx + i * Kp + full), wv);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
      const int32_t a = _mm512_reduce_add_epi32(acc[i]);
      const float v = static_cast<float>(a - in[i].zero_point * rowsum[n]) * (in[i].scale * sw[n]);
      y[i * N + n] = bv ? v + bv[n] : v;
    }
  }
}

template <int R>
void rows_int8_group(const int8_t* w, const float* sw, const int32_t* rowsum, const float* x, const float* bv,
                     float* y, int64_t N, int64_t K) {
  const int64_t Kp = (K + 63) / 64 * 64;
  std::vector<uint8_t> qx(R * Kp);
  QInput in[R];
  for (int i = 0; i < R; i++) in[i] = quantize_row(x + i * K, K, qx.data() + i * Kp);
  const uint8_t* q = qx.data();
  const QInput* ins = in;
  auto body = [=](int t, int parts) {
    rows_int8<R>(w, sw, rowsum, q, ins, bv, y, N * t / parts, N * (t + 1) / parts, N, K, Kp);
  };
  parallel(parts_for(N * K / 4), body);
}

void rows_q8(const int8_t* w, const float* sw, const int32_t* rowsum, const float* x, const float* bv, float* y,
             int64_t n, int64_t N, int64_t K) {
  by_groups(n, [&](auto R, int64_t first) {
    rows_int8_group<decltype(R)::value>(w, sw, rowsum, x + first * K, bv, y + first * N, N, K);
  });
}
constexpr bool kOwnRowsInt8 = true;
#else
void rows_q8(const int8_t*, const float*, const int32_t*, const float*, const float*, float*, int64_t, int64_t,
             int64_t) {}
constexpr bool kOwnRowsInt8 = false;  // row by row, each a one-row product
#endif

}  // namespace

// One layer's product, whatever its weight layout: built once per layer by the engine's twin, then called
// per token (from the layer's forward, or from a whole decode step below) with no checks left to do.
struct Product {
  enum Kind { LINEAR = 0, CONV1D = 1, INT8 = 2 };
  torch::Tensor W, bias, scale, rowsum;
  Kind kind;
  int64_t N, K;

  // fp32 W (N, K), or (K, N) when transposed (Conv1D); int8 W (N, K) with per-row ``scale`` (N).
  Product(torch::Tensor W_, std::optional<torch::Tensor> bias_, std::optional<torch::Tensor> scale_, bool transposed)
      : W(W_) {
    TORCH_CHECK(W.dim() == 2 && W.is_contiguous() && W.device().is_cpu(), "W: contiguous fp32 2-D CPU tensor");
    if (scale_.has_value() && scale_->defined()) {
      TORCH_CHECK(W.scalar_type() == torch::kChar && !transposed, "int8 W: (N, K) int8");
      kind = INT8;
      N = W.size(0);
      K = W.size(1);
      scale = scale_->to(torch::kFloat).contiguous();
      TORCH_CHECK(scale.numel() == N, "scale: one per output row");
      rowsum = W.sum(1, false, torch::kInt).contiguous();
    } else {
      TORCH_CHECK(W.scalar_type() == torch::kFloat, "W: fp32, or int8 with a scale");
      kind = transposed ? CONV1D : LINEAR;
      N = transposed ? W.size(1) : W.size(0);
      K = transposed ? W.size(0) : W.size(1);
    }
    if (bias_.has_value() && bias_->defined()) {
      bias = bias_->to(torch::kFloat).contiguous();
      TORCH_CHECK(bias.numel() == N, "bias: one per output");
    }
  }

  // Scratch floats run() needs (gemv_t's partial sums; int8's quantized input).
  int64_t scratch_floats() const {
    if (kind == CONV1D) return gemv_t_parts(K, N) * N;
    if (kind == INT8) return (K + 64) / 4 + 1;
    return 0;
  }

  void run(const float* x, float* y, float* scratch) const {
    const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
    if (kind == LINEAR) {
      gemv_core(W.data_ptr<float>(), x, b, y, N, K);
    } else if (kind == CONV1D) {
      gemv_t_core(W.data_ptr<float>(), x, b, y, K, N, scratch);
    } else {
      qgemv_core(W.data_ptr<int8_t>(), scale.data_ptr<float>(), rowsum.data_ptr<int32_t>(), x, b, y, N, K,
                 reinterpret_cast<uint8_t*>(scratch));
    }
  }

  // y (n, N) for the rows of x (n, K), contiguous: fp32 layers with each weight read once for all the rows
  // (rows_fp32; so a speculative verification costs about one step, not n); int8 row by row.
  torch::Tensor rows(const torch::Tensor& x, float* scratch) const {
    if (kind == LINEAR && !kOwnRows) return bias.defined() ? at::addmm(bias, x, W.t()) : at::mm(x, W.t());
    if (kind == CONV1D && !kOwnRows) return bias.defined() ? at::addmm(bias, x, W) : at::mm(x, W);
    auto y = torch::empty({x.size(0), N}, x.options());
    if (kind != INT8) {
      rows_fp32(kind == CONV1D, W.data_ptr<float>(), x.data_ptr<float>(),
                bias.defined() ? bias.data_ptr<float>() : nullptr, y.data_ptr<float>(), x.size(0), N, K);
      return y;
    }
    if (kOwnRowsInt8) {
      rows_q8(W.data_ptr<int8_t>(), scale.data_ptr<float>(), rowsum.data_ptr<int32_t>(), x.data_ptr<float>(),
              bias.defined() ? bias.data_ptr<float>() : nullptr, y.data_ptr<float>(), x.size(0), N, K);
      return y;
    }
    for (int64_t i = 0; i < x.size(0); i++) run(x.data_ptr<float>() + i * K, y.data_ptr<float>() + i * N, scratch);
    return y;
  }

  torch::Tensor call_rows(torch::Tensor x) const {
    TORCH_CHECK(x.dim() == 2 && x.size(1) == K && x.scalar_type() == torch::kFloat, "x: fp32 (n, K)");
    x = x.contiguous();
    auto scratch = torch::empty({std::max<int64_t>(scratch_floats(), 1)}, x.options());
    return rows(x, scratch.data_ptr<float>());
  }

  torch::Tensor call(torch::Tensor x) const {
    TORCH_CHECK(x.numel() == K && x.scalar_type() == torch::kFloat, "x: contiguous fp32 (K)");
    x = x.contiguous();
    auto y = torch::empty({N}, x.options());
    auto scratch = torch::empty({std::max<int64_t>(scratch_floats(), 1)}, x.options());
    run(x.data_ptr<float>(), y.data_ptr<float>(), scratch.data_ptr<float>());
    return y;
  }
};

// The plain products, for callers without a layer (benchmarks, tests): y = W x (+ b) for W (N, K) fp32
// (nn.Linear), and y = x W (+ b) for W (K, N) fp32 (GPT-2's Conv1D).
torch::Tensor gemv(torch::Tensor W, torch::Tensor x, std::optional<torch::Tensor> b) {
  return Product(W, b, std::nullopt, false).call(x);
}

torch::Tensor gemv_t(torch::Tensor W, torch::Tensor x, std::optional<torch::Tensor> b) {
  return Product(W, b, std::nullopt, true).call(x);
}

namespace {
void layer_norm(const float* x, const float* w, const float* b, float eps, float* out, int64_t C) {
  double sum = 0.0, sq = 0.0;
  for (int64_t c = 0; c < C; c++) sum += x[c];
  const float mean = static_cast<float>(sum / C);
  for (int64_t c = 0; c < C; c++) sq += static_cast<double>(x[c] - mean) * (x[c] - mean);
  const float rstd = 1.f / std::sqrt(static_cast<float>(sq / C) + eps);
  #pragma omp simd
  for (int64_t c = 0; c < C; c++) out[c] = (x[c] - mean) * rstd * w[c] + b[c];
}

// Llama's RMSNorm: x / sqrt(mean(x^2) + eps) * w.
void rms_norm(const float* x, const float* w, float eps, float* out, int64_t C) {
  double sq = 0.0;
  for (int64_t c = 0; c < C; c++) sq += static_cast<double>(x[c]) * x[c];
  const float r = 1.f / std::sqrt(static_cast<float>(sq / C) + eps);
  #pragma omp simd
  for (int64_t c = 0; c < C; c++) out[c] = w[c] * (x[c] * r);
}

// Attention of one new query (H heads of D) over positions [0, n) of a cache (1, KVH, cap, D); query head h
// reads key/value head h / (H / KVH) (grouped-query attention when KVH < H). Scores and weighted sums run with
// the heads split over the threads; the softmax between them is torch's (vectorized exp) over all heads at
// once. ``scores`` holds H x n floats.
void attend(const float* q, const float* kb, const float* vb, float* out, int64_t n, int64_t H, int64_t KVH,
            int64_t D, int64_t cap, float scale, float* scores) {
  const int64_t group = H / KVH;
  const int parts = n * H * D >= (1 << 14) ? parts_for(1 << 16) : 1;
  auto dots = [=](int i, int k) {
    for (int64_t hd = H * i / k, end = H * (i + 1) / k; hd < end; hd++) {
      const float* qh = q + hd * D;
      const float* kh = kb + (hd / group) * cap * D;
      float* p = scores + hd * n;
      for (int64_t j = 0; j < n; j++) {
        const float* kj = kh + j * D;
        float dot = 0.f;
        #pragma omp simd reduction(+:dot)
        for (int64_t d = 0; d < D; d++) dot += qh[d] * kj[d];
        p[j] = dot * scale;
      }
    }
  };
  parallel(parts, dots);
  auto p = torch::from_blob(scores, {H, n}, torch::TensorOptions().dtype(torch::kFloat));
  at::_softmax_out(p, p, 1, false);  // in place
  auto sums = [=](int i, int k) {
    for (int64_t hd = H * i / k, end = H * (i + 1) / k; hd < end; hd++) {
      const float* vh = vb + (hd / group) * cap * D;
      const float* ph = scores + hd * n;
      float* o = out + hd * D;
      for (int64_t d = 0; d < D; d++) o[d] = 0.f;
      for (int64_t j = 0; j < n; j++) {
        const float pj = ph[j];
        const float* vj = vh + j * D;
        #pragma omp simd
        for (int64_t d = 0; d < D; d++) o[d] += pj * vj[d];
      }
    }
  };
  parallel(parts, sums);
}

// Rotary position embedding (rotate-half convention) of each of ``heads`` vectors of D, in place.
void rotate(float* v, int64_t heads, int64_t D, const float* cos, const float* sin) {
  const int64_t half = D / 2;
  for (int64_t hd = 0; hd < heads; hd++) {
    float* x = v + hd * D;
    for (int64_t i = 0; i < half; i++) {
      const float a = x[i], b = x[i + half];
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}

void check_cache(const std::vector<torch::Tensor>& bufs, int64_t heads, int64_t cap, int64_t D) {
  for (const auto& buf : bufs) {
    TORCH_CHECK(buf.is_contiguous() && buf.scalar_type() == torch::kFloat && buf.dim() == 4 && buf.size(0) == 1 &&
                buf.size(1) == heads && buf.size(2) == cap && buf.size(3) == D,
                "cache buffers: contiguous fp32 (1, kv heads, capacity, head_dim)");
  }
}

// The new position's key and value (heads of D, contiguous) into cache buffers (1, heads, cap, D).
void append_kv(const float* k, const float* v, float* kb, float* vb, int64_t heads, int64_t D, int64_t cap,
               int64_t pos) {
  for (int64_t hd = 0; hd < heads; hd++) {
    std::copy(k + hd * D, k + (hd + 1) * D, kb + (hd * cap + pos) * D);
    std::copy(v + hd * D, v + (hd + 1) * D, vb + (hd * cap + pos) * D);
  }
}

void add_(float* x, const float* t, int64_t C) {
  #pragma omp simd
  for (int64_t c = 0; c < C; c++) x[c] += t[c];
}

// Logits (1, 1, vocab) of the normed last hidden state ``h``.
torch::Tensor project(const Product& head, const float* h, float* scratch, const torch::TensorOptions& opt) {
  auto logits = torch::empty({1, 1, head.N}, opt);
  head.run(h, logits.data_ptr<float>(), scratch);
  return logits;
}

// Several new tokens at positions [pos, pos + n): within the cache (and ``limit``, a position table's length).
void check_rows(const std::vector<int64_t>& tokens, int64_t vocab, int64_t pos, int64_t cap, int64_t limit) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  TORCH_CHECK(n > 0 && pos >= 0 && pos + n <= cap && pos + n <= limit,
              "positions beyond the cache or the position table");
  for (int64_t t : tokens) TORCH_CHECK(t >= 0 && t < vocab, "token id out of range");
}

int64_t scratch_for(const std::vector<const Product*>& products) {
  int64_t need = 1;
  for (const Product* p : products) need = std::max(need, p->scratch_floats());
  return need;
}
}  // namespace

// A whole GPT-2 decode step (one new token of one unpadded sequence) in one call: per block layer norm,
// c_attn, the new key and value written into the engine's reserved cache, attention over the cache,
// c_proj and the residual, layer norm, c_fc, GELU, c_proj and the residual; final norm; the vocabulary
// projection. The same computation as transformers' GPT2LMHeadModel for that token (to float rounding)
// without ~200 tensor operations and their dispatch around the ~49 products. The products are the
// layers' own weights (fp32 Linear / Conv1D, or int8), shared, never copied.
struct Gpt2Decoder {
  torch::Tensor wte, wpe;
  std::vector<torch::Tensor> ln1w, ln1b, ln2w, ln2b, kbuf, vbuf;
  std::vector<Product> attn, aproj, fc, mproj;
  Product head;
  torch::Tensor lnfw, lnfb;
  float eps, attn_scale;
  int64_t C, H, D, cap, F;
  std::string act;
  torch::Tensor x, h, qkv, a, t, f, g, scores, scratch;

  Gpt2Decoder(torch::Tensor wte_, torch::Tensor wpe_, std::vector<torch::Tensor> ln1w_, std::vector<torch::Tensor> ln1b_,
              std::vector<Product> attn_, std::vector<Product> aproj_, std::vector<torch::Tensor> ln2w_,
              std::vector<torch::Tensor> ln2b_, std::vector<Product> fc_, std::vector<Product> mproj_,
              torch::Tensor lnfw_, torch::Tensor lnfb_, Product head_, std::vector<torch::Tensor> kbuf_,
              std::vector<torch::Tensor> vbuf_, int64_t n_head, double eps_, double attn_scale_, std::string act_)
      : wte(wte_), wpe(wpe_), ln1w(ln1w_), ln1b(ln1b_), ln2w(ln2w_), ln2b(ln2b_), kbuf(kbuf_), vbuf(vbuf_),
        attn(attn_), aproj(aproj_), fc(fc_), mproj(mproj_), head(head_), lnfw(lnfw_), lnfb(lnfb_),
        eps(static_cast<float>(eps_)), attn_scale(static_cast<float>(attn_scale_)), act(act_) {
    const size_t L = attn.size();
    TORCH_CHECK(L > 0 && aproj.size() == L && fc.size() == L && mproj.size() == L && ln1w.size() == L &&
                ln1b.size() == L && ln2w.size() == L && ln2b.size() == L && kbuf.size() == L && vbuf.size() == L,
                "one of each per block");
    TORCH_CHECK(act == "tanh" || act == "none", "GELU approximation: tanh or none");
    C = wte.size(1);
    H = n_head;
    D = C / H;
    F = fc[0].N;
    cap = kbuf[0].size(2);
    auto opt = wte.options();
    for (size_t l = 0; l < L; l++) {
      TORCH_CHECK(attn[l].K == C && attn[l].N == 3 * C && aproj[l].K == C && aproj[l].N == C && fc[l].K == C &&
                  fc[l].N == F && mproj[l].K == F && mproj[l].N == C, "block ", l, ": product shapes");
    }
    TORCH_CHECK(head.K == C, "lm_head: K = hidden size");
    check_cache(kbuf, H, cap, D);
    check_cache(vbuf, H, cap, D);
    x = torch::empty({C}, opt);
    h = torch::empty({C}, opt);
    qkv = torch::empty({3 * C}, opt);
    a = torch::empty({C}, opt);
    t = torch::empty({C}, opt);
    f = torch::empty({F}, opt);
    g = torch::empty({F}, opt);
    scores = torch::empty({H, cap}, opt);
    std::vector<const Product*> all = {&head};
    for (size_t l = 0; l < L; l++) all.insert(all.end(), {&attn[l], &aproj[l], &fc[l], &mproj[l]});
    scratch = torch::empty({scratch_for(all)}, opt);
  }

  // Logits (1, 1, vocab) for ``token`` at position ``pos`` (the number of tokens already in the cache).
  torch::Tensor step(int64_t token, int64_t pos) {
    TORCH_CHECK(token >= 0 && token < wte.size(0), "token id out of range");
    TORCH_CHECK(pos >= 0 && pos < cap && pos < wpe.size(0), "position beyond the cache or the position table");
    float *xv = x.data_ptr<float>(), *hv = h.data_ptr<float>(), *qv = qkv.data_ptr<float>();
    float *av = a.data_ptr<float>(), *tv = t.data_ptr<float>(), *fv = f.data_ptr<float>(), *gv = g.data_ptr<float>();
    float* sc = scratch.data_ptr<float>();
    const float* te = wte.data_ptr<float>() + token * C;
    const float* pe = wpe.data_ptr<float>() + pos * C;
    for (int64_t c = 0; c < C; c++) xv[c] = te[c] + pe[c];
    for (size_t l = 0; l < attn.size(); l++) {
      layer_norm(xv, ln1w[l].data_ptr<float>(), ln1b[l].data_ptr<float>(), eps, hv, C);
      attn[l].run(hv, qv, sc);
      float* kb = kbuf[l].data_ptr<float>();
      float* vb = vbuf[l].data_ptr<float>();
      append_kv(qv + C, qv + 2 * C, kb, vb, H, D, cap, pos);
      attend(qv, kb, vb, av, pos + 1, H, H, D, cap, attn_scale, scores.data_ptr<float>());
      aproj[l].run(av, tv, sc);
      add_(xv, tv, C);
      layer_norm(xv, ln2w[l].data_ptr<float>(), ln2b[l].data_ptr<float>(), eps, hv, C);
      fc[l].run(hv, fv, sc);
      at::gelu_out(g, f, act);  // torch's own vectorized GELU: the twin's formula exactly
      mproj[l].run(gv, tv, sc);
      add_(xv, tv, C);
    }
    layer_norm(xv, lnfw.data_ptr<float>(), lnfb.data_ptr<float>(), eps, hv, C);
    return project(head, hv, sc, x.options());
  }

  // Logits (n, vocab) for ``tokens`` at positions [pos, pos + n) in one call (speculative decoding's
  // verification): the same block as ``step`` with the products over all n rows at once; query i attends to
  // the cache up to its own position.
  torch::Tensor extend(const std::vector<int64_t>& tokens, int64_t pos) {
    check_rows(tokens, wte.size(0), pos, cap, wpe.size(0));
    const int64_t n = static_cast<int64_t>(tokens.size());
    auto opt = x.options();
    auto X = torch::empty({n, C}, opt), Hn = torch::empty({n, C}, opt), A = torch::empty({n, C}, opt);
    float *xs = X.data_ptr<float>(), *hs = Hn.data_ptr<float>(), *as = A.data_ptr<float>();
    float* sc = scratch.data_ptr<float>();
    for (int64_t i = 0; i < n; i++) {
      const float* te = wte.data_ptr<float>() + tokens[i] * C;
      const float* pe = wpe.data_ptr<float>() + (pos + i) * C;
      for (int64_t c = 0; c < C; c++) xs[i * C + c] = te[c] + pe[c];
    }
    for (size_t l = 0; l < attn.size(); l++) {
      for (int64_t i = 0; i < n; i++)
        layer_norm(xs + i * C, ln1w[l].data_ptr<float>(), ln1b[l].data_ptr<float>(), eps, hs + i * C, C);
      auto qkv = attn[l].rows(Hn, sc);
      const float* qs = qkv.data_ptr<float>();
      float* kb = kbuf[l].data_ptr<float>();
      float* vb = vbuf[l].data_ptr<float>();
      for (int64_t i = 0; i < n; i++) append_kv(qs + i * 3 * C + C, qs + i * 3 * C + 2 * C, kb, vb, H, D, cap, pos + i);
      for (int64_t i = 0; i < n; i++)
        attend(qs + i * 3 * C, kb, vb, as + i * C, pos + i + 1, H, H, D, cap, attn_scale, scores.data_ptr<float>());
      X.add_(aproj[l].rows(A, sc));
      for (int64_t i = 0; i < n; i++)
        layer_norm(xs + i * C, ln2w[l].data_ptr<float>(), ln2b[l].data_ptr<float>(), eps, hs + i * C, C);
      X.add_(mproj[l].rows(at::gelu(fc[l].rows(Hn, sc), act), sc));
    }
    for (int64_t i = 0; i < n; i++) layer_norm(xs + i * C, lnfw.data_ptr<float>(), lnfb.data_ptr<float>(), eps, hs + i * C, C);
    return head.rows(Hn, sc);
  }
};

// A whole Llama / Mistral / Qwen2 / Qwen3 decode step (one new token of one unpadded sequence): per layer
// RMSNorm, q/k/v projections (Qwen3: RMSNorm of each query and key head), rotary embedding, the new key and
// value written into the reserved cache, grouped-query attention, o_proj and the residual, RMSNorm,
// down(silu(gate) * up) and the residual; final norm; lm_head. Rotary tables are the model's own
// (cos/sin for every position the cache holds, computed once by its rotary module).
struct LlamaDecoder {
  torch::Tensor embed, final_norm, cos, sin;
  std::vector<torch::Tensor> in_norm, post_norm, q_norm, k_norm, kbuf, vbuf;
  std::vector<Product> qp, kp, vp, op, gate, up, down;
  Product head;
  float eps, attn_scale;
  int64_t C, H, KVH, D, cap, F;
  torch::Tensor x, h, q, k, v, a, t, g, u, scores, scratch;

  LlamaDecoder(torch::Tensor embed_, std::vector<torch::Tensor> in_norm_, std::vector<Product> qp_,
               std::vector<Product> kp_, std::vector<Product> vp_, std::vector<torch::Tensor> q_norm_,
               std::vector<torch::Tensor> k_norm_, std::vector<Product> op_, std::vector<torch::Tensor> post_norm_,
               std::vector<Product> gate_, std::vector<Product> up_, std::vector<Product> down_,
               torch::Tensor final_norm_, Product head_, std::vector<torch::Tensor> kbuf_,
               std::vector<torch::Tensor> vbuf_, torch::Tensor cos_, torch::Tensor sin_, int64_t n_head,
               int64_t n_kv_head, int64_t head_dim, double eps_, double attn_scale_)
      : embed(embed_), final_norm(final_norm_), cos(cos_.contiguous()), sin(sin_.contiguous()), in_norm(in_norm_),
        post_norm(post_norm_), q_norm(q_norm_), k_norm(k_norm_), kbuf(kbuf_), vbuf(vbuf_), qp(qp_), kp(kp_),
        vp(vp_), op(op_), gate(gate_), up(up_), down(down_), head(head_), eps(static_cast<float>(eps_)),
        attn_scale(static_cast<float>(attn_scale_)), H(n_head), KVH(n_kv_head), D(head_dim) {
    const size_t L = qp.size();
    TORCH_CHECK(L > 0 && kp.size() == L && vp.size() == L && op.size() == L && gate.size() == L && up.size() == L &&
                down.size() == L && in_norm.size() == L && post_norm.size() == L && kbuf.size() == L &&
                vbuf.size() == L && (q_norm.empty() || (q_norm.size() == L && k_norm.size() == L)),
                "one of each per layer");
    TORCH_CHECK(KVH > 0 && H % KVH == 0 && D % 2 == 0, "heads: a multiple of the key/value heads; even head_dim");
    C = embed.size(1);
    F = gate[0].N;
    cap = kbuf[0].size(2);
    TORCH_CHECK(cos.dim() == 2 && cos.size(0) >= cap && cos.size(1) == D && sin.sizes() == cos.sizes() &&
                cos.scalar_type() == torch::kFloat && sin.scalar_type() == torch::kFloat,
                "rotary tables: fp32 (positions >= capacity, head_dim)");
    for (size_t l = 0; l < L; l++) {
      TORCH_CHECK(qp[l].K == C && qp[l].N == H * D && kp[l].K == C && kp[l].N == KVH * D && vp[l].K == C &&
                  vp[l].N == KVH * D && op[l].K == H * D && op[l].N == C && gate[l].K == C && gate[l].N == F &&
                  up[l].K == C && up[l].N == F && down[l].K == F && down[l].N == C, "layer ", l, ": product shapes");
    }
    TORCH_CHECK(head.K == C, "lm_head: K = hidden size");
    check_cache(kbuf, KVH, cap, D);
    check_cache(vbuf, KVH, cap, D);
    auto opt = embed.options();
    x = torch::empty({C}, opt);
    h = torch::empty({C}, opt);
    q = torch::empty({H * D}, opt);
    k = torch::empty({KVH * D}, opt);
    v = torch::empty({KVH * D}, opt);
    a = torch::empty({H * D}, opt);
    t = torch::empty({C}, opt);
    g = torch::empty({F}, opt);
    u = torch::empty({F}, opt);
    scores = torch::empty({H, cap}, opt);
    std::vector<const Product*> all = {&head};
    for (size_t l = 0; l < L; l++) all.insert(all.end(), {&qp[l], &kp[l], &vp[l], &op[l], &gate[l], &up[l], &down[l]});
    scratch = torch::empty({scratch_for(all)}, opt);
  }

  torch::Tensor step(int64_t token, int64_t pos) {
    TORCH_CHECK(token >= 0 && token < embed.size(0), "token id out of range");
    TORCH_CHECK(pos >= 0 && pos < cap, "position beyond the cache");
    float *xv = x.data_ptr<float>(), *hv = h.data_ptr<float>(), *qv = q.data_ptr<float>(), *kv = k.data_ptr<float>();
    float *vv = v.data_ptr<float>(), *av = a.data_ptr<float>(), *tv = t.data_ptr<float>(), *gv = g.data_ptr<float>();
    float *uv = u.data_ptr<float>(), *sc = scratch.data_ptr<float>();
    const float* cs = cos.data_ptr<float>() + pos * D;
    const float* sn = sin.data_ptr<float>() + pos * D;
    std::copy(embed.data_ptr<float>() + token * C, embed.data_ptr<float>() + (token + 1) * C, xv);
    for (size_t l = 0; l < qp.size(); l++) {
      rms_norm(xv, in_norm[l].data_ptr<float>(), eps, hv, C);
      qp[l].run(hv, qv, sc);
      kp[l].run(hv, kv, sc);
      vp[l].run(hv, vv, sc);
      if (!q_norm.empty()) {
        for (int64_t hd = 0; hd < H; hd++) rms_norm(qv + hd * D, q_norm[l].data_ptr<float>(), eps, qv + hd * D, D);
        for (int64_t hd = 0; hd < KVH; hd++) rms_norm(kv + hd * D, k_norm[l].data_ptr<float>(), eps, kv + hd * D, D);
      }
      rotate(qv, H, D, cs, sn);
      rotate(kv, KVH, D, cs, sn);
      float* kb = kbuf[l].data_ptr<float>();
      float* vb = vbuf[l].data_ptr<float>();
      append_kv(kv, vv, kb, vb, KVH, D, cap, pos);
      attend(qv, kb, vb, av, pos + 1, H, KVH, D, cap, attn_scale, scores.data_ptr<float>());
      op[l].run(av, tv, sc);
      add_(xv, tv, C);
      rms_norm(xv, post_norm[l].data_ptr<float>(), eps, hv, C);
      gate[l].run(hv, gv, sc);
      up[l].run(hv, uv, sc);
      at::silu_(g);  // torch's own vectorized SiLU
      for (int64_t j = 0; j < F; j++) gv[j] *= uv[j];
      down[l].run(gv, tv, sc);
      add_(xv, tv, C);
    }
    rms_norm(xv, final_norm.data_ptr<float>(), eps, hv, C);
    return project(head, hv, sc, x.options());
  }

  // Logits (n, vocab) for ``tokens`` at positions [pos, pos + n) in one call, as ``Gpt2Decoder::extend``.
  torch::Tensor extend(const std::vector<int64_t>& tokens, int64_t pos) {
    check_rows(tokens, embed.size(0), pos, cap, cap);
    const int64_t n = static_cast<int64_t>(tokens.size());
    auto opt = x.options();
    auto X = torch::empty({n, C}, opt), Hn = torch::empty({n, C}, opt), A = torch::empty({n, H * D}, opt);
    float *xs = X.data_ptr<float>(), *hs = Hn.data_ptr<float>(), *as = A.data_ptr<float>();
    float* sc = scratch.data_ptr<float>();
    for (int64_t i = 0; i < n; i++)
      std::copy(embed.data_ptr<float>() + tokens[i] * C, embed.data_ptr<float>() + (tokens[i] + 1) * C, xs + i * C);
    for (size_t l = 0; l < qp.size(); l++) {
      for (int64_t i = 0; i < n; i++) rms_norm(xs + i * C, in_norm[l].data_ptr<float>(), eps, hs + i * C, C);
      auto Q = qp[l].rows(Hn, sc), K = kp[l].rows(Hn, sc), V = vp[l].rows(Hn, sc);
      float *qs = Q.data_ptr<float>(), *ks = K.data_ptr<float>(), *vs = V.data_ptr<float>();
      float* kb = kbuf[l].data_ptr<float>();
      float* vb = vbuf[l].data_ptr<float>();
      for (int64_t i = 0; i < n; i++) {
        float *qi = qs + i * H * D, *ki = ks + i * KVH * D;
        if (!q_norm.empty()) {
          for (int64_t hd = 0; hd < H; hd++) rms_norm(qi + hd * D, q_norm[l].data_ptr<float>(), eps, qi + hd * D, D);
          for (int64_t hd = 0; hd < KVH; hd++) rms_norm(ki + hd * D, k_norm[l].data_ptr<float>(), eps, ki + hd * D, D);
        }
        const float* cs = cos.data_ptr<float>() + (pos + i) * D;
        const float* sn = sin.data_ptr<float>() + (pos + i) * D;
        rotate(qi, H, D, cs, sn);
        rotate(ki, KVH, D, cs, sn);
        append_kv(ki, vs + i * KVH * D, kb, vb, KVH, D, cap, pos + i);
      }
      for (int64_t i = 0; i < n; i++)
        attend(qs + i * H * D, kb, vb, as + i * H * D, pos + i + 1, H, KVH, D, cap, attn_scale, scores.data_ptr<float>());
      X.add_(op[l].rows(A, sc));
      for (int64_t i = 0; i < n; i++) rms_norm(xs + i * C, post_norm[l].data_ptr<float>(), eps, hs + i * C, C);
      auto G = gate[l].rows(Hn, sc);
      at::silu_(G);
      G.mul_(up[l].rows(Hn, sc));
      X.add_(down[l].rows(G, sc));
    }
    for (int64_t i = 0; i < n; i++) rms_norm(xs + i * C, final_norm.data_ptr<float>(), eps, hs + i * C, C);
    return head.rows(Hn, sc);
  }
};

// Greedy decoding of ``n`` tokens in one call (a draft's proposals): ``token`` goes in at ``pos``, and each step's
// argmax (the first of equal maxima, as torch.argmax) is the next step's token. With ``penalty`` != 1 the logits of
// the ``penalized`` ids (the sequence so far; each new token joins them) are divided by it where positive, else
// multiplied, before the argmax: the sampler's repetition penalty. Returns the n tokens; the cache then holds
// positions pos .. pos + n - 1 (``token`` and the first n - 1 of them).
template <class Decoder>
torch::Tensor greedy_run(Decoder& d, int64_t token, int64_t pos, int64_t n, const std::vector<int64_t>& penalized,
                         double penalty) {
  TORCH_CHECK(n >= 1, "greedy needs at least one token");
  auto out = torch::empty({n}, torch::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  std::vector<char> seen;
  const float pen = static_cast<float>(penalty);
  for (int64_t i = 0; i < n; i++) {
    const torch::Tensor logits = d.step(token, pos + i).contiguous();
    if (penalty == 1.0) {
      token = logits.argmax().template item<int64_t>();
    } else {
      const float* lv = logits.data_ptr<float>();
      const int64_t V = logits.numel();
      if (seen.empty()) {
        seen.assign(V, 0);
        for (int64_t id : penalized)
          if (id >= 0 && id < V) seen[id] = 1;
      }
      float best = -std::numeric_limits<float>::infinity();
      int64_t arg = 0;
      for (int64_t v = 0; v < V; v++) {
        float val = lv[v];
        if (seen[v]) val = val > 0.f ? val / pen : val * pen;
        if (val > best) best = val, arg = v;
      }
      token = arg;
      seen[token] = 1;
    }
    o[i] = token;
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv", &gemv, "y = W x (+ b), W (N, K) fp32", py::arg("W"), py::arg("x"), py::arg("b") = py::none());
  m.def("gemv_t", &gemv_t, "y = x W (+ b), W (K, N) fp32", py::arg("W"), py::arg("x"), py::arg("b") = py::none());
  py::class_<Product>(m, "Product")
      .def(py::init<torch::Tensor, std::optional<torch::Tensor>, std::optional<torch::Tensor>, bool>(),
           py::arg("W"), py::arg("bias") = py::none(), py::arg("scale") = py::none(), py::arg("transposed") = false)
      .def("__call__", &Product::call)
      .def("rows", &Product::call_rows, "y (n, N) for x (n, K): every row in one pass over the weights")
      .def_readonly("n_in", &Product::K)
      .def_readonly("n_out", &Product::N);
  py::class_<Gpt2Decoder>(m, "Gpt2Decoder")
      .def(py::init<torch::Tensor, torch::Tensor, std::vector<torch::Tensor>, std::vector<torch::Tensor>,
                    std::vector<Product>, std::vector<Product>, std::vector<torch::Tensor>, std::vector<torch::Tensor>,
                    std::vector<Product>, std::vector<Product>, torch::Tensor, torch::Tensor, Product,
                    std::vector<torch::Tensor>, std::vector<torch::Tensor>, int64_t, double, double, std::string>())
      .def("step", &Gpt2Decoder::step, py::call_guard<py::gil_scoped_release>())
      .def("extend", &Gpt2Decoder::extend, py::call_guard<py::gil_scoped_release>())
      .def("greedy", &greedy_run<Gpt2Decoder>, py::arg("token"), py::arg("pos"), py::arg("n"),
           py::arg("penalized") = std::vector<int64_t>{}, py::arg("penalty") = 1.0,
           py::call_guard<py::gil_scoped_release>());
  py::class_<LlamaDecoder>(m, "LlamaDecoder")
      .def(py::init<torch::Tensor, std::vector<torch::Tensor>, std::vector<Product>, std::vector<Product>,
                    std::vector<Product>, std::vector<torch::Tensor>, std::vector<torch::Tensor>, std::vector<Product>,
                    std::vector<torch::Tensor>, std::vector<Product>, std::vector<Product>, std::vector<Product>,
                    torch::Tensor, Product, std::vector<torch::Tensor>, std::vector<torch::Tensor>, torch::Tensor,
                    torch::Tensor, int64_t, int64_t, int64_t, double, double>())
      .def("step", &LlamaDecoder::step, py::call_guard<py::gil_scoped_release>())
      .def("extend", &LlamaDecoder::extend, py::call_guard<py::gil_scoped_release>())
      .def("greedy", &greedy_run<LlamaDecoder>, py::arg("token"), py::arg("pos"), py::arg("n"),
           py::arg("penalized") = std::vector<int64_t>{}, py::arg("penalty") = 1.0,
           py::call_guard<py::gil_scoped_release>());
}
