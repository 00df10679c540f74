// Fused multi-resolution hash encoding on the CPU: forward and backward (w.r.t. the tables), parallel over cores.
//
// Index conventions are tiny-cuda-nn's (see renderers/hash_grid.py): level l maps x in [0,1]^3 to x * scale_l + 0.5;
// a dense level indexes corner (i, j, k) as i + j r + k r^2 with each coordinate clamped to [0, r - 1] (the same
// values and gradients as grid_sample's border padding); a hashed level as (i * 1) ^ (j * 2654435761) ^
// (k * 805459861) in uint32 arithmetic, modulo its power-of-two row count.
// Table entry (row, f) of level l lives at tables[l][row * row_stride + f * feat_stride]: dense levels are stored as
// (1, F, r, r, r) volumes (row_stride 1, feat_stride r^3), hashed levels as (rows, F) (row_stride F, feat_stride 1).
// Corner weights are products of per-axis factors, w = wx * wy * wz, and a feature is the sum over corners 0..7 in
// order: the same arithmetic, in the same order, as HashEncoding.reference_encode.
//
// Forward: parallel over points. Backward, without write races: for small tables (the CPU default) each thread
// scatters a fixed block of points into a private copy of the tables and the copies are summed in thread order;
// for large (hashed) tables, one task per (level, feature) pair is the only writer of that gradient column. Both
// are deterministic for a given number of threads (the trainer's resume-equivalence relies on that).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Level {
  float scale;
  int32_t res;
  bool dense;
  uint32_t mask;  // rows - 1 for hashed levels (rows is a power of two)
  int64_t row_stride;
  int64_t feat_stride;
};

inline int32_t floor_i(float v) {  // floor without a libm call (exact for |v| < 2^31)
  const int32_t t = static_cast<int32_t>(v);
  return t - static_cast<int32_t>(v < static_cast<float>(t));
}

inline int32_t clampi(int32_t v, int32_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

// The 8 corner rows and weights of point p at one level (corner c = bits (x, y, z) of c, x lowest).
inline void corners(const float* p, const Level& L, int64_t* idx, float* w) {
  int32_t b[3];
  float fr[3];
  for (int k = 0; k < 3; ++k) {
    const float pos = p[k] * L.scale + 0.5f;
    b[k] = floor_i(pos);
    fr[k] = pos - static_cast<float>(b[k]);
  }
  const float wx[2] = {1.f - fr[0], fr[0]}, wy[2] = {1.f - fr[1], fr[1]}, wz[2] = {1.f - fr[2], fr[2]};
  if (L.dense) {
    const int32_t hi = L.res - 1;
    const int64_t r = L.res, r2 = r * r;
    const int64_t X[2] = {clampi(b[0], hi), clampi(b[0] + 1, hi)};
    const int64_t Y[2] = {clampi(b[1], hi) * r, clampi(b[1] + 1, hi) * r};
    const int64_t Z[2] = {clampi(b[2], hi) * r2, clampi(b[2] + 1, hi) * r2};
    for (int c = 0; c < 8; ++c) {
      idx[c] = X[c & 1] + Y[(c >> 1) & 1] + Z[(c >> 2) & 1];
      w[c] = wx[c & 1] * wy[(c >> 1) & 1] * wz[(c >> 2) & 1];
    }
  } else {
    const uint32_t X[2] = {static_cast<uint32_t>(b[0]), static_cast<uint32_t>(b[0] + 1)};
    const uint32_t Y[2] = {static_cast<uint32_t>(b[1]) * 2654435761u, static_cast<uint32_t>(b[1] + 1) * 2654435761u};
    const uint32_t Z[2] = {static_cast<uint32_t>(b[2]) * 805459861u, static_cast<uint32_t>(b[2] + 1) * 805459861u};
    for (int c = 0; c < 8; ++c) {
      idx[c] = static_cast<int64_t>((X[c & 1] ^ Y[(c >> 1) & 1] ^ Z[(c >> 2) & 1]) & L.mask);
      w[c] = wx[c & 1] * wy[(c >> 1) & 1] * wz[(c >> 2) & 1];
    }
  }
}

std::vector<Level> make_levels(const std::vector<double>& scales, const std::vector<int64_t>& res,
                               const std::vector<bool>& dense, const std::vector<int64_t>& rows,
                               const std::vector<at::Tensor>& tables) {
  TORCH_CHECK(scales.size() == res.size() && res.size() == dense.size() && dense.size() == rows.size() &&
                  rows.size() == tables.size(),
              "hash encoding: one scale, resolution, dense flag, row count and table per level");
  std::vector<Level> levels;
  for (size_t l = 0; l < scales.size(); ++l) {
    const at::Tensor& t = tables[l];
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(),
                "hash encoding: tables must be contiguous float32 CPU tensors");
    Level L{static_cast<float>(scales[l]), static_cast<int32_t>(res[l]), static_cast<bool>(dense[l]),
            static_cast<uint32_t>(rows[l] - 1), 0, 0};
    if (dense[l]) {
      TORCH_CHECK(t.dim() == 5 && t.size(2) == res[l], "hash encoding: dense level must be (1, F, r, r, r)");
      L.row_stride = 1;
      L.feat_stride = res[l] * res[l] * res[l];
    } else {
      TORCH_CHECK(t.dim() == 2 && t.size(0) == rows[l] && (rows[l] & (rows[l] - 1)) == 0,
                  "hash encoding: hashed level must be (rows, F) with rows a power of two");
      L.row_stride = t.size(1);
      L.feat_stride = 1;
    }
    levels.push_back(L);
  }
  return levels;
}

template <int F>
void forward_points(const float* xp, const std::vector<Level>& levels, const std::vector<const float*>& tp,
                    float* op, int64_t begin, int64_t end) {
  const int64_t L = static_cast<int64_t>(levels.size());
  int64_t idx[8];
  float w[8];
  for (int64_t n = begin; n < end; ++n) {
    float* o = op + n * L * F;
    for (int64_t l = 0; l < L; ++l) {
      const Level& lv = levels[l];
      corners(xp + 3 * n, lv, idx, w);
      const float* t = tp[l];
      for (int f = 0; f < F; ++f) {
        const float* col = t + f * lv.feat_stride;
        float acc = 0.f;
        for (int c = 0; c < 8; ++c) acc += w[c] * col[idx[c] * lv.row_stride];
        o[l * F + f] = acc;
      }
    }
  }
}

void forward_points_dyn(int64_t F, const float* xp, const std::vector<Level>& levels,
                        const std::vector<const float*>& tp, float* op, int64_t begin, int64_t end) {
  const int64_t L = static_cast<int64_t>(levels.size());
  int64_t idx[8];
  float w[8];
  for (int64_t n = begin; n < end; ++n) {
    for (int64_t l = 0; l < L; ++l) {
      const Level& lv = levels[l];
      corners(xp + 3 * n, lv, idx, w);
      for (int64_t f = 0; f < F; ++f) {
        const float* col = tp[l] + f * lv.feat_stride;
        float acc = 0.f;
        for (int c = 0; c < 8; ++c) acc += w[c] * col[idx[c] * lv.row_stride];
        op[n * L * F + l * F + f] = acc;
      }
    }
  }
}

}  // namespace

at::Tensor hash_encode_forward(const at::Tensor& x, const std::vector<at::Tensor>& tables,
                               const std::vector<double>& scales, const std::vector<int64_t>& res,
                               const std::vector<bool>& dense, const std::vector<int64_t>& rows, int64_t F) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(1) == 3 && x.is_contiguous(),
              "hash encoding: x must be contiguous float32 (N, 3)");
  const auto levels = make_levels(scales, res, dense, rows, tables);
  const int64_t N = x.size(0), L = static_cast<int64_t>(levels.size());
  at::Tensor out = at::empty({N, L * F}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  std::vector<const float*> tp;
  for (const auto& t : tables) tp.push_back(t.data_ptr<float>());
  at::parallel_for(0, N, 2048, [&](int64_t begin, int64_t end) {
    if (F == 2) {
      forward_points<2>(xp, levels, tp, op, begin, end);
    } else if (F == 4) {
      forward_points<4>(xp, levels, tp, op, begin, end);
    } else {
      forward_points_dyn(F, xp, levels, tp, op, begin, end);
    }
  });
  return out;
}

std::vector<at::Tensor> hash_encode_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                             const std::vector<at::Tensor>& tables, const std::vector<double>& scales,
                                             const std::vector<int64_t>& res, const std::vector<bool>& dense,
                                             const std::vector<int64_t>& rows, int64_t F) {
  const auto levels = make_levels(scales, res, dense, rows, tables);
  const int64_t N = x.size(0), L = static_cast<int64_t>(levels.size());
  at::Tensor go = grad_out.contiguous().to(at::kFloat);
  TORCH_CHECK(go.size(0) == N && go.size(1) == L * F, "hash encoding: grad_out must be (N, levels * F)");
  std::vector<at::Tensor> grads;
  std::vector<float*> gp;
  for (const auto& t : tables) {
    grads.push_back(at::zeros_like(t));
    gp.push_back(grads.back().data_ptr<float>());
  }
  const float* xp = x.data_ptr<float>();
  const float* gop = go.data_ptr<float>();
  int64_t total = 0;  // floats in all tables
  std::vector<int64_t> offset;
  for (const auto& t : tables) {
    offset.push_back(total);
    total += t.numel();
  }
  const int64_t threads = at::get_num_threads();
  if (total * threads <= (int64_t(1) << 22)) {
    // Small tables (the CPU default, all levels dense: ~100k floats): each thread accumulates a contiguous block of
    // points into its own copy of all tables, then the copies are summed in thread order. Corners are computed once
    // per (point, level); the result is deterministic for a given number of threads.
    // one thread: scatter straight into the gradients (its "copy" is the result)
    std::vector<float> priv(threads > 1 ? static_cast<size_t>(total * threads) : 0, 0.f);
    const int64_t chunk = (N + threads - 1) / threads;
    at::parallel_for(0, threads, 1, [&](int64_t tb, int64_t te) {
      int64_t idx[8];
      float w[8];
      for (int64_t tid = tb; tid < te; ++tid) {
        float* mine = threads > 1 ? priv.data() + tid * total : nullptr;
        const int64_t n1 = std::min(N, (tid + 1) * chunk);
        for (int64_t n = tid * chunk; n < n1; ++n) {
          for (int64_t l = 0; l < L; ++l) {
            const Level& lv = levels[l];
            const float* g = gop + n * L * F + l * F;
            bool any = false;
            for (int64_t f = 0; f < F; ++f) any |= (g[f] != 0.f);
            if (!any) continue;
            corners(xp + 3 * n, lv, idx, w);
            float* tab = mine ? mine + offset[l] : gp[l];
            for (int64_t f = 0; f < F; ++f) {
              float* col = tab + f * lv.feat_stride;
              const float gf = g[f];
              for (int c = 0; c < 8; ++c) col[idx[c] * lv.row_stride] += w[c] * gf;
            }
          }
        }
      }
    });
    if (threads == 1) return grads;
    // reduce: parallel over table entries, summing the thread copies in a fixed order
    at::parallel_for(0, total, 4096, [&](int64_t b, int64_t e) {
      for (size_t l = 0; l < grads.size(); ++l) {
        const int64_t lo = std::max(b, offset[l]), hi = std::min(e, offset[l] + grads[l].numel());
        for (int64_t i = lo; i < hi; ++i) {
          float acc = 0.f;
          for (int64_t tid = 0; tid < threads; ++tid) acc += priv[tid * total + i];
          gp[l][i - offset[l]] = acc;
        }
      }
    });
    return grads;
  }
  // Large (hashed) tables: one task per (level, feature), the only writer of its gradient column.
  at::parallel_for(0, L * F, 1, [&](int64_t begin, int64_t end) {
    int64_t idx[8];
    float w[8];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t l = task / F, f = task % F;
      const Level& lv = levels[l];
      float* col = gp[l] + f * lv.feat_stride;
      for (int64_t n = 0; n < N; ++n) {
        const float g = gop[n * L * F + l * F + f];
        if (g == 0.f) continue;  // samples whose output gradient is exactly zero (common: masked rays)
        corners(xp + 3 * n, lv, idx, w);
        for (int c = 0; c < 8; ++c) col[idx[c] * lv.row_stride] += w[c] * g;
      }
    }
  });
  return grads;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &hash_encode_forward, "hash encoding forward (CPU, fused)");
  m.def("backward", &hash_encode_backward, "hash encoding backward w.r.t. the tables (CPU, fused)");
}
