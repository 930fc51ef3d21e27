// One full-batch gradient-descent step of a two-layer homotopy network, fused into two passes over the
// (n, m) pre-activations, as an XLA FFI custom call for the CPU (ntkhom/solvers/native.py builds and loads it).
//
// f_i = sum_k a_k sigma_s(z_ik), z_ik = sum_j xs_ij W_jk, loss 1/2 sum_i (f_i - y_i)^2, and
// sigma_s(z) = g(z) z with g(z) = (1 - s) + s p(z), p(z) = ppos for z > 0 and pneg otherwise (the ReLU family
// phi(z) = pneg min(z, 0) + ppos max(z, 0)). The step is
//   r_i = f_i - y_i,   W_jk <- W_jk - lr a_k sum_i xs_ij r_i g(z_ik).
// Pass 1 computes z block by block (one SIMD vector of hidden units at a time, the block of W kept in
// registers), stores g(z) and accumulates f; pass 2 accumulates the gradient of the block in registers and
// writes the new W. XLA runs the same step as separate operations (two products with inner dimension d and
// elementwise passes over (n, m) arrays); at n = 100, d = 10, m = 1000 this kernel takes about half the time.
//
// Leading (batch) dimensions broadcast: every operand has the same rank as the result plus its own trailing
// dimensions, and each leading dimension is either the result's or 1 (jax.ffi.ffi_call with
// vmap_method="expand_dims").
//
// Threads: XLA's intra-op pool and the calling thread. The runs of a batch (a vmapped grid of seeds and s) are
// independent and are shared out a run at a time. A lone run (fewer runs than threads) with n d m >= 2^21 has
// its rows shared out instead: each share writes the gradient of its rows and the caller adds the shares in
// a fixed order, so the result does not depend on timing (it does on the number of threads, by rounding).
// Below 2^21 (the paper size, 10^6, included) waking the pool cost more than splitting saved.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMaxInputDim = 32;  // the block of W lives in registers: d vectors
// A single run's step is split over threads only from this much work (n d m) and with at least this many rows
// a share: below it, waking the pool costs more than the split saves.
constexpr int64_t kSplitMinWork = int64_t{1} << 21;
constexpr int64_t kSplitMinRows = 8;

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float Vec __attribute__((vector_size(64)));
  static constexpr int kLanes = 16;
};
template <>
struct Simd<double> {
  typedef double Vec __attribute__((vector_size(64)));
  static constexpr int kLanes = 8;
};

// Scratch of 64-byte-aligned vectors, kept per thread and grown when needed (no allocation per step). Each
// thread of XLA's pool that has run a step keeps its scratch, (n, m) values of the largest run it took.
template <typename V>
V* Scratch(size_t count) {
  thread_local V* buffer = nullptr;
  thread_local size_t capacity = 0;
  if (count > capacity) {
    std::free(buffer);
    buffer = static_cast<V*>(std::aligned_alloc(64, count * sizeof(V)));
    capacity = buffer == nullptr ? 0 : count;
  }
  return buffer;
}

// d is a template parameter so that the block of W and the gradient block stay in registers (a runtime d
// keeps them on the stack, which halves the speed).
//
// With grad == nullptr the step writes W_out. Otherwise (a share of the rows, see GdStep) it writes the
// gradient sum_i xs_ij r_i g(z_ik) of its rows to grad, (d, blocks) vectors, and leaves W_out alone.
template <typename T, int d>
bool StepFixedD(int n, int m, const T* xs, const T* y, const T* W, const T* a, T s, T lr, T pneg, T ppos,
                T* W_out, typename Simd<T>::Vec* grad_out) {
  typedef typename Simd<T>::Vec V;
  constexpr int L = Simd<T>::kLanes;
  const int blocks = (m + L - 1) / L;  // the last block is zero-padded
  V* scratch = Scratch<V>(static_cast<size_t>(n) * blocks + n);
  if (scratch == nullptr) return false;
  V* slope = scratch;                                      // (n, blocks): g(z) per hidden unit
  V* partial = scratch + static_cast<size_t>(n) * blocks;  // (n,): lane-wise partial sums of f_i
  T* residual = reinterpret_cast<T*>(partial);             // f_i - y_i, written over partial once summed

  auto load = [m](const T* row, int k0) {
    V v = {};
    if (k0 + L <= m) {
      std::memcpy(&v, row + k0, sizeof(V));  // a constant size: one unaligned vector load
    } else {
      std::memcpy(&v, row + k0, sizeof(T) * (m - k0));
    }
    return v;
  };
  const T g_neg = (T(1) - s) + s * pneg, g_pos = (T(1) - s) + s * ppos;
  V v_neg, v_pos;
  for (int l = 0; l < L; ++l) {
    v_neg[l] = g_neg;
    v_pos[l] = g_pos;
  }

  for (int i = 0; i < n; ++i) partial[i] = V{};
  for (int b = 0; b < blocks; ++b) {
    const int k0 = b * L;
    V w[d];
    for (int j = 0; j < d; ++j) w[j] = load(W + static_cast<size_t>(j) * m, k0);
    const V a_block = load(a, k0);  // zero in the padding, so padded units add nothing to f
    for (int i = 0; i < n; ++i) {
      const T* x_i = xs + static_cast<size_t>(i) * d;
      V z = {};
      for (int j = 0; j < d; ++j) z += x_i[j] * w[j];
      const V g = z > T(0) ? v_pos : v_neg;
      slope[static_cast<size_t>(i) * blocks + b] = g;
      partial[i] += a_block * g * z;
    }
  }
  for (int i = 0; i < n; ++i) {
    T f = 0;
    for (int l = 0; l < L; ++l) f += partial[i][l];
    residual[static_cast<size_t>(i) * L] = f - y[i];  // lane 0 of partial[i], already read
  }
  for (int b = 0; b < blocks; ++b) {
    const int k0 = b * L;
    V grad[d];
    for (int j = 0; j < d; ++j) grad[j] = V{};
    for (int i = 0; i < n; ++i) {
      const V t = residual[static_cast<size_t>(i) * L] * slope[static_cast<size_t>(i) * blocks + b];
      const T* x_i = xs + static_cast<size_t>(i) * d;
      for (int j = 0; j < d; ++j) grad[j] += x_i[j] * t;
    }
    if (grad_out != nullptr) {
      for (int j = 0; j < d; ++j) grad_out[static_cast<size_t>(j) * blocks + b] = grad[j];
      continue;
    }
    const V step = lr * load(a, k0);
    for (int j = 0; j < d; ++j) {
      const V w = load(W + static_cast<size_t>(j) * m, k0) - step * grad[j];
      if (k0 + L <= m) {
        std::memcpy(W_out + static_cast<size_t>(j) * m + k0, &w, sizeof(V));
      } else {
        std::memcpy(W_out + static_cast<size_t>(j) * m + k0, &w, sizeof(T) * (m - k0));
      }
    }
  }
  return true;
}

// StepFixedD<T, d> for a runtime d in 1..kMaxInputDim.
template <typename T, int D = 1>
bool Step(int n, int d, int m, const T* xs, const T* y, const T* W, const T* a, T s, T lr, T pneg, T ppos,
          T* W_out, typename Simd<T>::Vec* grad_out = nullptr) {
  if constexpr (D > kMaxInputDim) {
    return false;
  } else {
    if (d == D) return StepFixedD<T, D>(n, m, xs, y, W, a, s, lr, pneg, ppos, W_out, grad_out);
    return Step<T, D + 1>(n, d, m, xs, y, W, a, s, lr, pneg, ppos, W_out, grad_out);
  }
}

// Element offsets of batch element `index` (row-major over the result's leading dims) in an operand whose
// leading dims are `dims` (each equal to the result's or 1) and whose trailing block has `block` elements.
size_t Offset(size_t index, const std::vector<int64_t>& out_lead, ffi::Span<const int64_t> dims, size_t block) {
  size_t offset = 0, stride = block;
  for (int axis = static_cast<int>(out_lead.size()) - 1; axis >= 0; --axis) {
    const size_t coordinate = index % out_lead[axis];
    index /= out_lead[axis];
    if (dims[axis] != 1) offset += coordinate * stride;
    stride *= dims[axis];
  }
  return offset;
}

// Runs body(i) for every i in [0, count) on the calling thread and on up to threads - 1 tasks of XLA's pool,
// each worker taking the next index until none is left. The caller waits only for indices that were taken,
// so it never waits on a task the pool has not started (no deadlock when the caller is itself a pool thread);
// a task that starts after the call has returned finds no index left and touches nothing but the shared
// counters, which it co-owns.
struct ParallelState {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};
  int64_t count = 0;
  std::function<void(int64_t)> body;
  void Work() {
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      body(i);
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

void ParallelFor(ffi::ThreadPool& pool, int64_t count, std::function<void(int64_t)> body) {
  const int64_t workers = std::min<int64_t>(count, std::max<int64_t>(1, pool.num_threads()));
  if (workers <= 1) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
  auto state = std::make_shared<ParallelState>();
  state->count = count;
  state->body = std::move(body);
  for (int64_t w = 1; w < workers; ++w) pool.Schedule([state] { state->Work(); });
  state->Work();
  while (state->finished.load(std::memory_order_acquire) < count) std::this_thread::yield();
}

bool Broadcasts(ffi::Span<const int64_t> dims, size_t trailing, const std::vector<int64_t>& out_lead) {
  if (dims.size() != out_lead.size() + trailing) return false;
  for (size_t axis = 0; axis < out_lead.size(); ++axis)
    if (dims[axis] != 1 && dims[axis] != out_lead[axis]) return false;
  return true;
}

template <ffi::DataType DT>
ffi::Error GdStep(ffi::ThreadPool pool, ffi::Buffer<DT> x, ffi::Buffer<DT> y, ffi::Buffer<DT> W,
                  ffi::Buffer<DT> a, ffi::Buffer<DT> s, ffi::Buffer<DT> lr, double pneg, double ppos,
                  ffi::ResultBuffer<DT> W_out) {
  using T = ffi::NativeType<DT>;
  const auto dims = W_out->dimensions();
  const size_t rank = dims.size();
  if (rank < 2) return ffi::Error::InvalidArgument("two_layer_gd_step: W must have rank >= 2");
  const int64_t d = dims[rank - 2], m = dims[rank - 1];
  const auto x_dims = x.dimensions();
  if (x_dims.size() != rank || x_dims[rank - 1] != d)
    return ffi::Error::InvalidArgument("two_layer_gd_step: x must be (..., n, d) with W (..., d, m)");
  const int64_t n = x_dims[rank - 2];
  if (d < 1 || d > kMaxInputDim) return ffi::Error::InvalidArgument("two_layer_gd_step: d must be in 1..32");
  std::vector<int64_t> lead(dims.begin(), dims.end() - 2);
  size_t batch = 1;
  for (int64_t v : lead) batch *= v;
  if (!Broadcasts(x_dims, 2, lead) || !Broadcasts(y.dimensions(), 1, lead) ||
      !Broadcasts(W.dimensions(), 2, lead) || !Broadcasts(a.dimensions(), 1, lead) ||
      !Broadcasts(s.dimensions(), 0, lead) || !Broadcasts(lr.dimensions(), 0, lead) ||
      y.dimensions()[rank - 2] != n || a.dimensions()[rank - 2] != m || W.dimensions()[rank - 2] != d ||
      W.dimensions()[rank - 1] != m)
    return ffi::Error::InvalidArgument("two_layer_gd_step: operand shapes do not match");
  using V = typename Simd<T>::Vec;
  constexpr int L = Simd<T>::kLanes;
  const int64_t blocks = (m + L - 1) / L;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // Fewer runs than threads and enough work per step: split each run's rows into shares, one per thread,
  // each writing the gradient of its rows; the caller adds them and writes W. Otherwise one run a thread.
  const int64_t shares = static_cast<int64_t>(batch) >= threads || n * d * m < kSplitMinWork
                             ? 1
                             : std::min<int64_t>(threads, n / kSplitMinRows);
  std::atomic<bool> ok{true};
  auto run = [&](size_t index, int64_t row0, int64_t row1, V* grad_out) {
    const T* x_run = x.typed_data() + Offset(index, lead, x_dims, n * d);
    const T* y_run = y.typed_data() + Offset(index, lead, y.dimensions(), n);
    const bool done = Step<T>(
        static_cast<int>(row1 - row0), static_cast<int>(d), static_cast<int>(m), x_run + row0 * d,
        y_run + row0,
        W.typed_data() + Offset(index, lead, W.dimensions(), d * m),
        a.typed_data() + Offset(index, lead, a.dimensions(), m),
        s.typed_data()[Offset(index, lead, s.dimensions(), 1)],
        lr.typed_data()[Offset(index, lead, lr.dimensions(), 1)], T(pneg), T(ppos),
        W_out->typed_data() + index * d * m, grad_out);
    if (!done) ok.store(false);
  };
  if (shares <= 1) {
    ParallelFor(pool, static_cast<int64_t>(batch), [&](int64_t index) { run(index, 0, n, nullptr); });
  } else {
    const size_t share_size = static_cast<size_t>(d * blocks);
    std::unique_ptr<V, decltype(&std::free)> grads(
        static_cast<V*>(std::aligned_alloc(64, shares * share_size * sizeof(V))), &std::free);
    if (!grads) return ffi::Error(ffi::ErrorCode::kResourceExhausted, "two_layer_gd_step: allocation failed");
    for (size_t index = 0; index < batch; ++index) {
      ParallelFor(pool, shares, [&](int64_t share) {
        run(index, n * share / shares, n * (share + 1) / shares, grads.get() + share * share_size);
      });
      // W <- W - lr a (sum of the shares' gradients), in the shares' order (deterministic)
      const T* W_run = W.typed_data() + Offset(index, lead, W.dimensions(), d * m);
      const T* a_run = a.typed_data() + Offset(index, lead, a.dimensions(), m);
      const T lr_run = lr.typed_data()[Offset(index, lead, lr.dimensions(), 1)];
      T* out = W_out->typed_data() + index * d * m;
      for (int64_t j = 0; j < d; ++j) {
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t k0 = b * L, lanes = std::min<int64_t>(L, m - k0);
          V grad = grads.get()[j * blocks + b], w = {}, a_block = {};
          for (int64_t share = 1; share < shares; ++share)
            grad += grads.get()[share * share_size + j * blocks + b];
          std::memcpy(&w, W_run + j * m + k0, sizeof(T) * lanes);
          std::memcpy(&a_block, a_run + k0, sizeof(T) * lanes);
          w -= lr_run * a_block * grad;
          std::memcpy(out + j * m + k0, &w, sizeof(T) * lanes);
        }
      }
    }
  }
  if (!ok) return ffi::Error(ffi::ErrorCode::kResourceExhausted, "two_layer_gd_step: scratch allocation failed");
  return ffi::Error::Success();
}

}  // namespace

#define NTKHOM_BIND(DT)                                                                                 \
  ffi::Ffi::Bind()                                                                                      \
      .Ctx<ffi::ThreadPool>()                                                                           \
      .Arg<ffi::Buffer<DT>>()                                                                           \
      .Arg<ffi::Buffer<DT>>()                                                                           \
      .Arg<ffi::Buffer<DT>>()                                                                           \
      .Arg<ffi::Buffer<DT>>()                                                                           \
      .Arg<ffi::Buffer<DT>>()                                                                           \
      .Arg<ffi::Buffer<DT>>()                                                                           \
      .Attr<double>("pneg")                                                                              \
      .Attr<double>("ppos")                                                                              \
      .Ret<ffi::Buffer<DT>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(NtkhomTwoLayerGdStepF32, GdStep<ffi::F32>, NTKHOM_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(NtkhomTwoLayerGdStepF64, GdStep<ffi::F64>, NTKHOM_BIND(ffi::F64));
