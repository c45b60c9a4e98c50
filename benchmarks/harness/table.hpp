#pragma once
// A small aligned-table printer for the benchmarks' human-readable output (stderr), and number
// formatting helpers shared with it. Torch-free.

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace anode {
namespace bench {

/// `v` with `digits` digits after the point ("12.50"); "nan"/"inf" as such.
inline std::string fixed(double v, int digits = 2) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

/// `v` in scientific notation with `digits` significant digits after the point ("1.23e-07").
inline std::string sci(double v, int digits = 2) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*e", digits, v);
  return buf;
}

/// Bytes in binary units ("512 B", "1.50 KiB", "3.25 MiB", "1.00 GiB"); "n/a" when negative
/// (a meter that is not available reports -1).
inline std::string human_bytes(int64_t bytes) {
  if (bytes < 0) return "n/a";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  return u == 0 ? std::to_string(bytes) + " B" : fixed(v, 2) + " " + units[u];
}

/// Columns padded to their widest cell; columns whose cells all look numeric are right-aligned
/// (header included), the others left-aligned.
///
/// Example:
/// ```
/// anode::bench::Table t({"mode", "step ms"});
/// t.add_row({"Anode", anode::bench::fixed(12.5)});
/// t.print(std::cerr);
/// ```
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {
    if (header_.empty()) throw std::invalid_argument("anode::bench::Table: no columns");
  }

  void add_row(std::vector<std::string> cells) {
    if (cells.size() != header_.size())
      throw std::invalid_argument("anode::bench::Table::add_row: " + std::to_string(cells.size()) +
                                  " cells for " + std::to_string(header_.size()) + " columns");
    rows_.push_back(std::move(cells));
  }

  std::size_t rows() const { return rows_.size(); }

  void print(std::ostream& os) const {
    const std::size_t cols = header_.size();
    std::vector<std::size_t> width(cols);
    std::vector<bool> numeric(cols, !rows_.empty());  // a column is numeric if all its cells are
    for (std::size_t c = 0; c < cols; ++c) {
      width[c] = header_[c].size();
      for (const auto& r : rows_) {
        width[c] = std::max(width[c], r[c].size());
        numeric[c] = numeric[c] && looks_numeric(r[c]);
      }
    }
    auto line = [&](const std::vector<std::string>& cells) {
      std::string out;
      for (std::size_t c = 0; c < cols; ++c) {
        const std::string pad(width[c] - cells[c].size(), ' ');
        if (c) out += "  ";
        out += numeric[c] ? pad + cells[c] : cells[c] + pad;
      }
      out.erase(out.find_last_not_of(' ') + 1);  // no trailing blanks
      os << out << '\n';
    };
    line(header_);
    std::size_t total = 2 * (cols - 1);
    for (auto w : width) total += w;
    os << std::string(total, '-') << '\n';
    for (const auto& r : rows_) line(r);
  }

  /// Whether `s` starts like a number ("12", "-3.5", "1e-07", "4.0 MiB", "nan").
  static bool looks_numeric(const std::string& s) {
    if (s.empty()) return false;
    if (s == "nan" || s == "inf" || s == "-inf" || s == "n/a") return true;
    std::size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    return i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) ||
                            (s[i] == '.' && i + 1 < s.size() &&
                             std::isdigit(static_cast<unsigned char>(s[i + 1]))));
  }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace bench
}  // namespace anode
