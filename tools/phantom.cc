#include "tools/phantom.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace upp::tools {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kInf = std::numeric_limits<double>::infinity();

class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}
  double U(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng_); }

 private:
  std::mt19937_64 rng_;
};

Organ MakeOrgan(Draw& d, uint16_t label, std::array<double, 3> centre, std::array<double, 3> radii, double hu) {
  Organ o;
  o.label = label;
  o.centre = centre;
  o.radii = radii;
  o.hu = hu;
  for (int a = 0; a < 3; ++a) {
    o.wave_freq[a] = d.U(-1, 1) * 2 * kPi / 80.0;
    o.wave_phase[a] = d.U(0, 2 * kPi);
  }
  o.wave_amp = d.U(2, 6);
  return o;
}

// Normalised radial distance of q from the organ's centre, its surface
// displaced by the organ's wave: inside when < 1.
double Distance(const Organ& o, const std::array<double, 3>& q) {
  double s = 0;
  for (int a = 0; a < 3; ++a) {
    if (std::isinf(o.radii[a])) continue;
    const double t = (q[a] - o.centre[a]) / o.radii[a];
    s += t * t;
  }
  const double mean_r =
      std::isinf(o.radii[2]) ? 0.5 * (o.radii[0] + o.radii[1]) : (o.radii[0] + o.radii[1] + o.radii[2]) / 3.0;
  // |wave| <= 1: beyond 1 + amp / r the point is outside whatever the wave.
  const double bound = 1.0 + o.wave_amp / mean_r;
  if (s >= bound * bound) return bound;
  double wave = 0;
  for (int a = 0; a < 3; ++a) wave += std::sin(o.wave_freq[a] * q[(a + 1) % 3] + o.wave_phase[a]);
  return std::sqrt(s) - o.wave_amp / mean_r * wave / 3.0;
}

}  // namespace

// Distinct colours (every pair >= 20 CIELAB units apart, tested on the
// shipped model's table), the same as the BTCV table's for the same organs.
std::vector<preprocessing::LabelInfo> PhantomLabels() {
  return {{kBackground, "background", {0, 0, 0}},       {kLiver, "liver", {196, 98, 50}},
          {kSpleen, "spleen", {157, 108, 162}},         {kRightKidney, "right kidney", {241, 196, 15}},
          {kLeftKidney, "left kidney", {52, 152, 219}}, {kAorta, "aorta", {220, 30, 50}},
          {kSpine, "spine", {235, 235, 225}},           {kStomach, "stomach", {46, 204, 113}}};
}

Anatomy RandomAnatomy(uint64_t seed) {
  Draw d(seed * 0x9E3779B97F4A7C15ULL + 1);
  Anatomy a;
  a.body_a = d.U(140, 175);
  a.body_b = d.U(95, 125);
  a.fat = d.U(8, 25);
  a.rotation = d.U(-0.17, 0.17);
  a.shift = {d.U(-15, 15), d.U(-10, 10), d.U(-25, 25)};
  a.noise_hu = d.U(6, 18);
  a.tissue_hu = d.U(35, 45);
  a.fat_hu = d.U(-110, -80);
  const double A = a.body_a - a.fat, B = a.body_b - a.fat;
  a.spine_radius = d.U(17, 23);
  const double spine_y = 0.62 * B;
  a.organs.push_back(MakeOrgan(d, kSpine, {0, spine_y, 0}, {a.spine_radius, 0.9 * a.spine_radius, kInf}, 450));
  const double aorta_r = d.U(10, 14);
  a.organs.push_back(MakeOrgan(d, kAorta, {d.U(5, 15), spine_y - a.spine_radius - aorta_r - d.U(3, 8), 0},
                               {aorta_r, aorta_r, kInf}, d.U(180, 280)));
  a.organs.push_back(MakeOrgan(d, kRightKidney, {-d.U(0.38, 0.48) * A, 0.45 * B, d.U(-40, -10)},
                               {d.U(22, 30), d.U(22, 30), d.U(45, 60)}, d.U(140, 190)));
  a.organs.push_back(MakeOrgan(d, kLeftKidney, {d.U(0.38, 0.48) * A, 0.45 * B, d.U(-25, 5)},
                               {d.U(22, 30), d.U(22, 30), d.U(45, 60)}, d.U(140, 190)));
  a.organs.push_back(MakeOrgan(d, kLiver, {-d.U(0.35, 0.45) * A, -d.U(0, 0.15) * B, d.U(20, 50)},
                               {d.U(0.38, 0.48) * A, d.U(0.45, 0.6) * B, d.U(70, 95)}, d.U(55, 70)));
  a.organs.push_back(MakeOrgan(d, kSpleen, {d.U(0.5, 0.6) * A, d.U(0.15, 0.3) * B, d.U(20, 50)},
                               {d.U(20, 30), d.U(40, 55), d.U(40, 60)}, d.U(42, 52)));
  a.organs.push_back(MakeOrgan(d, kStomach, {d.U(0.15, 0.3) * A, -d.U(0.25, 0.4) * B, d.U(40, 70)},
                               {d.U(35, 50), d.U(25, 35), d.U(40, 55)}, d.U(5, 25)));
  return a;
}

imageio::Geometry GridFor(std::array<double, 3> spacing, std::array<double, 3> fov_mm) {
  imageio::Geometry g;
  g.spacing = spacing;
  for (int a = 0; a < 3; ++a) {
    g.size[a] = std::max<int64_t>(1, std::llround(fov_mm[a] / spacing[a]));
    g.origin[a] = -0.5 * static_cast<double>(g.size[a] - 1) * spacing[a];
  }
  return g;
}

imageio::Geometry RandomGeometry(uint64_t seed, int64_t max_inplane, int64_t max_slices) {
  Draw d(seed * 0xD1B54A32D192ED03ULL + 7);
  const double s = d.U(0.6, 1.0), t = d.U(1.0, 5.0);
  const double fov = std::min(d.U(380, 460), max_inplane * s);
  const double length = std::min(d.U(160, 300), max_slices * t);
  return GridFor({s, s, t}, {fov, fov, length});
}

PhantomImage Rasterize(const Anatomy& an, const imageio::Geometry& g, uint64_t noise_seed) {
  PhantomImage out;
  out.geometry = g;
  const int64_t nx = g.size[0], ny = g.size[1], nz = g.size[2];
  out.hu.assign(g.NumVoxels(), 0.0f);
  out.labels.assign(g.NumVoxels(), 0);
  std::vector<float> sharp(g.NumVoxels());
  const double c = std::cos(an.rotation), s = std::sin(an.rotation);
  const double A = an.body_a - an.fat, B = an.body_b - an.fat;
  at::parallel_for(0, nz, 1, [&](int64_t z0, int64_t z1) {
    for (int64_t z = z0; z < z1; ++z)
      for (int64_t y = 0; y < ny; ++y)
        for (int64_t x = 0; x < nx; ++x) {
          const auto p = g.IndexToPhysical({static_cast<double>(x), static_cast<double>(y), static_cast<double>(z)});
          const double px = p[0] - an.shift[0], py = p[1] - an.shift[1];
          const std::array<double, 3> q{c * px + s * py, -s * px + c * py, p[2] - an.shift[2]};
          const size_t i = static_cast<size_t>((z * ny + y) * nx + x);
          const double outer = (q[0] / an.body_a) * (q[0] / an.body_a) + (q[1] / an.body_b) * (q[1] / an.body_b);
          if (outer > 1) {
            sharp[i] = -1000.0f;
            continue;
          }
          const double inner = (q[0] / A) * (q[0] / A) + (q[1] / B) * (q[1] / B);
          double hu = inner > 1 ? an.fat_hu : an.tissue_hu;
          uint16_t label = kBackground;
          if (inner <= 1) {
            for (const Organ& o : an.organs) {
              const double r = Distance(o, q);
              if (r >= 1) continue;
              label = o.label;
              hu = o.hu;
              if (o.label == kSpine) hu = r > 0.75 ? 800 : 350;  // cortical rim, cancellous core
              if (o.label == kStomach && q[1] - o.centre[1] < -0.45 * o.radii[1]) hu = -900;  // air cap, anterior
            }
          }
          sharp[i] = static_cast<float>(hu);
          out.labels[i] = label;
        }
  });
  // Partial volume: a [1 2 1]/4 blur along x and y; then noise, per slice
  // from its own generator (deterministic whatever the thread count).
  at::parallel_for(0, nz, 1, [&](int64_t z0, int64_t z1) {
    std::vector<float> row(static_cast<size_t>(nx * ny));
    for (int64_t z = z0; z < z1; ++z) {
      float* slice = sharp.data() + z * nx * ny;
      for (int64_t y = 0; y < ny; ++y)
        for (int64_t x = 0; x < nx; ++x) {
          const float l = slice[y * nx + std::max<int64_t>(x - 1, 0)], r = slice[y * nx + std::min(x + 1, nx - 1)];
          row[y * nx + x] = 0.25f * l + 0.5f * slice[y * nx + x] + 0.25f * r;
        }
      std::mt19937_64 rng(noise_seed * 1000003ULL + static_cast<uint64_t>(z));
      std::normal_distribution<float> noise(0.0f, static_cast<float>(an.noise_hu));
      float* dst = out.hu.data() + z * nx * ny;
      for (int64_t y = 0; y < ny; ++y)
        for (int64_t x = 0; x < nx; ++x) {
          const float u = row[std::max<int64_t>(y - 1, 0) * nx + x], d = row[std::min(y + 1, ny - 1) * nx + x];
          dst[y * nx + x] = 0.25f * u + 0.5f * row[y * nx + x] + 0.25f * d + noise(rng);
        }
    }
  });
  return out;
}

std::vector<double> DicePerLabel(const std::vector<uint16_t>& truth, const std::vector<uint16_t>& predicted,
                                 int num_classes) {
  std::vector<int64_t> t(num_classes, 0), p(num_classes, 0), both(num_classes, 0);
  for (size_t i = 0; i < truth.size() && i < predicted.size(); ++i) {
    if (truth[i] < num_classes) ++t[truth[i]];
    if (predicted[i] < num_classes) ++p[predicted[i]];
    if (truth[i] == predicted[i] && truth[i] < num_classes) ++both[truth[i]];
  }
  std::vector<double> dice;
  for (int l = 1; l < num_classes; ++l)
    dice.push_back(t[l] + p[l] == 0 ? 1.0 : 2.0 * static_cast<double>(both[l]) / static_cast<double>(t[l] + p[l]));
  return dice;
}

double LabelAgreement(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  if (a.size() != b.size() || a.empty()) return 0;
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / static_cast<double>(a.size());
}

}  // namespace upp::tools
