// Fused multi-resolution hash encoding on the CPU: forward and backward (w.r.t. the tables), parallel over cores.
//
// Index conventions are tiny-cuda-nn's (see renderers/hash_grid.py): level l maps x in [0,1]^3 to x * scale_l + 0.5;
// a dense level indexes corner (i, j, k) as i + j r + k r^2 with each coordinate clamped to [0, r - 1]; a hashed
// level as (i * 1) ^ (j * 2654435761) ^ (k * 805459861), modulo its power-of-two row count, in uint32 arithmetic.
// Table entry (row, f) of level l lives at tables[l][row * row_stride[l] + f * feat_stride[l]], which covers both
// parameter layouts: dense levels stored as (1, F, r, r, r) volumes (row_stride 1, feat_stride r^3) and hashed
// levels as (rows, F) (row_stride F, feat_stride 1).
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
  int64_t res;
  bool dense;
  int64_t mask;  // rows - 1 for hashed levels (rows is a power of two)
  int64_t row_stride;
  int64_t feat_stride;
};

// Corner indices (8) and trilinear weights (8) of point p at one level.
inline void corners(const float* p, const Level& L, int64_t* idx, float* w) {
  float pos[3], frac[3];
  int64_t base[3];
  for (int k = 0; k < 3; ++k) {
    pos[k] = p[k] * L.scale + 0.5f;
    const float fl = std::floor(pos[k]);
    frac[k] = pos[k] - fl;
    base[k] = static_cast<int64_t>(fl);
  }
  for (int c = 0; c < 8; ++c) {
    const int64_t o0 = c & 1, o1 = (c >> 1) & 1, o2 = (c >> 2) & 1;
    w[c] = (o0 ? frac[0] : 1.f - frac[0]) * (o1 ? frac[1] : 1.f - frac[1]) * (o2 ? frac[2] : 1.f - frac[2]);
    int64_t g0 = base[0] + o0, g1 = base[1] + o1, g2 = base[2] + o2;
    if (L.dense) {
      const int64_t hi = L.res - 1;
      g0 = g0 < 0 ? 0 : (g0 > hi ? hi : g0);
      g1 = g1 < 0 ? 0 : (g1 > hi ? hi : g1);
      g2 = g2 < 0 ? 0 : (g2 > hi ? hi : g2);
      idx[c] = g0 + g1 * L.res + g2 * L.res * L.res;
    } else {
      const uint32_t h = static_cast<uint32_t>(g0) ^ (static_cast<uint32_t>(g1) * 2654435761u) ^
                         (static_cast<uint32_t>(g2) * 805459861u);
      idx[c] = static_cast<int64_t>(h) & L.mask;
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
    Level L{static_cast<float>(scales[l]), res[l], dense[l], rows[l] - 1, 0, 0};
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
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
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
  if (threads > 1 && total * threads <= (int64_t(1) << 22)) {
    // Small tables (the CPU default, all levels dense: ~100k floats): each thread accumulates a contiguous block of
    // points into its own copy of all tables, then the copies are summed in thread order. Corners are computed once
    // per (point, level); the result is deterministic for a given number of threads.
    std::vector<float> priv(static_cast<size_t>(total * threads), 0.f);
    const int64_t chunk = (N + threads - 1) / threads;
    at::parallel_for(0, threads, 1, [&](int64_t tb, int64_t te) {
      int64_t idx[8];
      float w[8];
      for (int64_t tid = tb; tid < te; ++tid) {
        float* mine = priv.data() + tid * total;
        const int64_t n1 = std::min(N, (tid + 1) * chunk);
        for (int64_t n = tid * chunk; n < n1; ++n) {
          for (int64_t l = 0; l < L; ++l) {
            const Level& lv = levels[l];
            const float* g = gop + n * L * F + l * F;
            bool any = false;
            for (int64_t f = 0; f < F; ++f) any |= (g[f] != 0.f);
            if (!any) continue;
            corners(xp + 3 * n, lv, idx, w);
            float* tab = mine + offset[l];
            for (int c = 0; c < 8; ++c)
              for (int64_t f = 0; f < F; ++f) tab[idx[c] * lv.row_stride + f * lv.feat_stride] += w[c] * g[f];
          }
        }
      }
    });
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
  // Large (hashed) tables or one thread: one task per (level, feature), the only writer of its gradient column.
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
