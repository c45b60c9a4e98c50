#pragma once
// A small CSV writer for the benchmark programs (RFC 4180 quoting, shortest round-trip numbers),
// read back by scripts/report.py. Lines starting with '#' before the header carry metadata
// (`# key=value`); readers skip them. Torch-free.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace anode {
namespace bench {

/// Formats a double so that it reads back to the same value, in the fewest digits
/// ("0.1", "1e-12", "nan", "inf", "-inf").
inline std::string format_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  if (res.ec != std::errc()) throw std::runtime_error("anode::bench::format_number failed");
  return std::string(buf, res.ptr);
}

/// Quotes a field when it holds a comma, a quote, a line break or leading/trailing blanks;
/// quotes inside are doubled.
inline std::string csv_escape(const std::string& field) {
  const bool needs = field.find_first_of(",\"\r\n") != std::string::npos ||
                     (!field.empty() && (field.front() == ' ' || field.back() == ' '));
  if (!needs) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

/// One CSV cell: text, integer or floating point, converted on construction.
class Cell {
 public:
  Cell(const std::string& s) : text_(csv_escape(s)) {}  // NOLINT: implicit by design
  Cell(const char* s) : text_(csv_escape(s)) {}         // NOLINT
  Cell(bool b) : text_(b ? "true" : "false") {}         // NOLINT
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Cell(T v) : text_(std::to_string(v)) {}  // NOLINT
  template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  Cell(T v) : text_(format_number(static_cast<double>(v))) {}  // NOLINT
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

/// Writes `# key=value` metadata lines, then a header, then rows of exactly the header's width.
///
/// Example:
/// ```
/// anode::bench::CsvWriter csv(std::cout, {"mode", "nt", "step_ms"});
/// csv.meta("torch", "1.13.1");          // only before the first row
/// csv.row({"anode", 8, 12.5});
/// ```
class CsvWriter {
 public:
  CsvWriter(std::ostream& os, std::vector<std::string> columns)
      : os_(&os), columns_(std::move(columns)) {
    if (columns_.empty()) throw std::invalid_argument("anode::bench::CsvWriter: no columns");
  }

  /// Opens `path` for writing, or writes to stdout when `path` is empty or "-".
  static CsvWriter to_path_or_stdout(const std::string& path, std::vector<std::string> columns) {
    if (path.empty() || path == "-") return CsvWriter(std::cout, std::move(columns));
    auto file = std::make_shared<std::ofstream>(path);
    if (!*file) throw std::runtime_error("anode::bench::CsvWriter: cannot open '" + path + "'");
    CsvWriter w(*file, std::move(columns));
    w.owned_ = std::move(file);
    return w;
  }

  /// A `# key=value` line; only before the header (that is, before the first row).
  void meta(const std::string& key, const std::string& value) {
    if (header_written_)
      throw std::logic_error("anode::bench::CsvWriter::meta: '" + key +
                             "' comes after the header; write metadata first");
    std::string v = value;
    for (auto& c : v)
      if (c == '\n' || c == '\r') c = ' ';
    *os_ << "# " << key << '=' << v << '\n';
  }

  /// One row; throws when its width differs from the header's.
  void row(const std::vector<Cell>& cells) {
    if (cells.size() != columns_.size())
      throw std::invalid_argument("anode::bench::CsvWriter::row: " + std::to_string(cells.size()) +
                                  " cells for " + std::to_string(columns_.size()) + " columns");
    write_header();
    for (std::size_t i = 0; i < cells.size(); ++i) *os_ << (i ? "," : "") << cells[i].text();
    *os_ << '\n';
    os_->flush();  // a long benchmark's finished rows survive an interruption
    ++rows_;
  }

  /// Writes the header now (also done by the first row).
  void write_header() {
    if (header_written_) return;
    for (std::size_t i = 0; i < columns_.size(); ++i)
      *os_ << (i ? "," : "") << csv_escape(columns_[i]);
    *os_ << '\n';
    header_written_ = true;
  }

  const std::vector<std::string>& columns() const { return columns_; }
  std::size_t rows() const { return rows_; }

 private:
  std::ostream* os_;
  std::shared_ptr<std::ofstream> owned_;
  std::vector<std::string> columns_;
  bool header_written_ = false;
  std::size_t rows_ = 0;
};

}  // namespace bench
}  // namespace anode
