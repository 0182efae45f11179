#include "clients/cpp/overlay.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "absl/strings/str_format.h"

namespace upp::client {
namespace {

struct Panel {
  int width = 0, height = 0;        // voxels
  double pixel_w = 1, pixel_h = 1;  // mm per voxel along the panel's axes
  std::vector<float> gray;          // 0..1
  std::vector<uint16_t> label;
};

cairo_status_t AppendToString(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

// Index of voxel (x, y, z) in a volume of nx x ny x ...
struct Indexer {
  int64_t nx, ny;
  size_t operator()(int64_t x, int64_t y, int64_t z) const { return static_cast<size_t>((z * ny + y) * nx + x); }
};

// The centre of the labelled voxels (the volume's centre when none is).
std::array<int64_t, 3> LabelCentre(const std::vector<uint16_t>& labels, const imageio::Geometry& g) {
  const int64_t nx = g.size[0], ny = g.size[1], nz = g.size[2];
  const Indexer at{nx, ny};
  double cx = 0, cy = 0, cz = 0;
  int64_t count = 0;
  for (int64_t z = 0; z < nz; ++z)
    for (int64_t y = 0; y < ny; ++y)
      for (int64_t x = 0; x < nx; ++x)
        if (labels[at(x, y, z)] != 0) {
          cx += x, cy += y, cz += z;
          ++count;
        }
  const int64_t sx = count ? std::llround(cx / count) : nx / 2, sy = count ? std::llround(cy / count) : ny / 2,
                sz = count ? std::llround(cz / count) : nz / 2;

  return {sx, sy, sz};
}

// Grey levels: the CT soft-tissue window, else the 1st-99th percentiles.
std::pair<float, float> GrayWindow(const imageio::Volume& image, bool ct_window) {
  float lo = -160, hi = 240;  // W 400, L 40
  if (!ct_window) {
    std::vector<float> sample;
    for (size_t i = 0; i < static_cast<size_t>(image.geometry.NumVoxels()); i += 97) sample.push_back(image.voxels[i]);
    std::sort(sample.begin(), sample.end());
    lo = sample[sample.size() / 100];
    hi = std::max(lo + 1e-3f, sample[sample.size() * 99 / 100]);
  }

  return {lo, hi};
}

// Axial, coronal and sagittal slices through `centre`, grey and labels.
std::vector<Panel> SlicePanels(const imageio::Volume& image, const std::vector<uint16_t>& labels,
                               const std::array<int64_t, 3>& centre, std::pair<float, float> window) {
  const auto& g = image.geometry;
  const int64_t nx = g.size[0], ny = g.size[1], nz = g.size[2];
  const int64_t sx = centre[0], sy = centre[1], sz = centre[2];
  const Indexer at{nx, ny};
  const auto [lo, hi] = window;
  auto gray = [&](float v) { return std::clamp((v - lo) / (hi - lo), 0.0f, 1.0f); };
  std::vector<Panel> panels(3);
  // Axial (z = sz): rows y (anterior up), columns x (patient's left on the right).
  panels[0] = {static_cast<int>(nx), static_cast<int>(ny), g.spacing[0], g.spacing[1], {}, {}};
  // Coronal (y = sy): rows z (superior up), columns x.
  panels[1] = {static_cast<int>(nx), static_cast<int>(nz), g.spacing[0], g.spacing[2], {}, {}};
  // Sagittal (x = sx): rows z (superior up), columns y (anterior on the left).
  panels[2] = {static_cast<int>(ny), static_cast<int>(nz), g.spacing[1], g.spacing[2], {}, {}};
  for (int p = 0; p < 3; ++p) {
    Panel& pn = panels[p];
    pn.gray.resize(static_cast<size_t>(pn.width) * pn.height);
    pn.label.resize(pn.gray.size());
    for (int r = 0; r < pn.height; ++r)
      for (int c = 0; c < pn.width; ++c) {
        size_t i = 0;
        if (p == 0) i = at(c, r, sz);
        if (p == 1) i = at(c, sy, nz - 1 - r);
        if (p == 2) i = at(sx, c, nz - 1 - r);
        pn.gray[static_cast<size_t>(r) * pn.width + c] = gray(image.voxels[i]);
        pn.label[static_cast<size_t>(r) * pn.width + c] = labels[i];
      }
  }
  return panels;
}

// One panel as a cairo image: grey, labels blended in their colours.
std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> PanelTile(
    const Panel& pn, const std::map<int, std::array<uint8_t, 3>>& colours, double alpha) {
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> tile(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, pn.width, pn.height), cairo_surface_destroy);
  cairo_surface_flush(tile.get());
  unsigned char* data = cairo_image_surface_get_data(tile.get());
  const int stride = cairo_image_surface_get_stride(tile.get());
  for (int r = 0; r < pn.height; ++r)
    for (int c = 0; c < pn.width; ++c) {
      const size_t i = static_cast<size_t>(r) * pn.width + c;
      double rgb[3] = {pn.gray[i], pn.gray[i], pn.gray[i]};
      auto it = colours.find(pn.label[i]);
      if (pn.label[i] != 0 && it != colours.end())
        for (int k = 0; k < 3; ++k) rgb[k] = (1 - alpha) * rgb[k] + alpha * it->second[k] / 255.0;
      uint32_t* px = reinterpret_cast<uint32_t*>(data + r * stride) + c;
      *px = (static_cast<uint32_t>(rgb[0] * 255) << 16) | (static_cast<uint32_t>(rgb[1] * 255) << 8) |
            static_cast<uint32_t>(rgb[2] * 255);
    }
  cairo_surface_mark_dirty(tile.get());
  return tile;
}

void DrawLegend(cairo_t* cr, const std::vector<OverlayLabel>& legend, int x0, int margin, int title_h) {
  int y = margin + title_h;
  cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
  cairo_move_to(cr, x0, margin + 16);
  cairo_show_text(cr, "label (volume)");
  for (const auto& l : legend) {
    if (l.value == 0) continue;
    cairo_set_source_rgb(cr, l.rgb[0] / 255.0, l.rgb[1] / 255.0, l.rgb[2] / 255.0);
    cairo_rectangle(cr, x0, y, 14, 14);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x0 + 22, y + 12);
    cairo_show_text(cr, absl::StrFormat("%s  %.1f mL", l.name, l.volume_ml).c_str());
    y += 22;
  }
}

}  // namespace

absl::StatusOr<std::string> RenderOverlayPng(const imageio::Volume& image, const std::vector<uint16_t>& labels,
                                             const std::vector<OverlayLabel>& legend, const OverlayOptions& options) {
  const auto& g = image.geometry;
  if (static_cast<int64_t>(labels.size()) != g.NumVoxels() || static_cast<int64_t>(image.voxels.size()) < g.NumVoxels())
    return absl::InvalidArgumentError("the label map and the image have different sizes");

  const auto centre = LabelCentre(labels, g);
  const auto window = GrayWindow(image, options.ct_window);
  const std::vector<Panel> panels = SlicePanels(image, labels, centre, window);
  std::map<int, std::array<uint8_t, 3>> colours;
  for (const auto& l : legend) colours[l.value] = l.rgb;

  // Canvas: three panels at panel_height, physical aspect, and a legend.
  const int margin = 12, legend_w = 260, title_h = 24;
  std::vector<int> widths;
  int total_w = margin;
  for (const auto& pn : panels) {
    const double mm_w = pn.width * pn.pixel_w, mm_h = pn.height * pn.pixel_h;
    widths.push_back(std::max(1, static_cast<int>(std::lround(options.panel_height * mm_w / mm_h))));
    total_w += widths.back() + margin;
  }
  total_w += legend_w;
  const int total_h = std::max(options.panel_height + 2 * margin + title_h,
                               static_cast<int>(legend.size()) * 22 + 2 * margin + title_h);
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> canvas(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, total_w, total_h), cairo_surface_destroy);
  std::unique_ptr<cairo_t, decltype(&cairo_destroy)> cr(cairo_create(canvas.get()), cairo_destroy);
  cairo_set_source_rgb(cr.get(), 0.08, 0.08, 0.1);
  cairo_paint(cr.get());
  cairo_select_font_face(cr.get(), "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr.get(), 14);

  const char* titles[] = {"axial", "coronal", "sagittal"};
  int x0 = margin;
  for (int p = 0; p < 3; ++p) {
    const Panel& pn = panels[p];
    auto tile = PanelTile(pn, colours, options.alpha);
    cairo_save(cr.get());
    cairo_translate(cr.get(), x0, margin + title_h);
    cairo_scale(cr.get(), static_cast<double>(widths[p]) / pn.width,
                static_cast<double>(options.panel_height) / pn.height);
    cairo_set_source_surface(cr.get(), tile.get(), 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr.get()), CAIRO_FILTER_BILINEAR);
    cairo_paint(cr.get());
    cairo_restore(cr.get());
    cairo_set_source_rgb(cr.get(), 0.9, 0.9, 0.9);
    cairo_move_to(cr.get(), x0, margin + 16);
    cairo_show_text(cr.get(), titles[p]);
    x0 += widths[p] + margin;
  }
  DrawLegend(cr.get(), legend, x0, margin, title_h);
  cairo_surface_flush(canvas.get());
  std::string png;
  if (cairo_surface_write_to_png_stream(canvas.get(), AppendToString, &png) != CAIRO_STATUS_SUCCESS)
    return absl::InternalError("PNG encoding failed");
  return png;
}

}  // namespace upp::client
