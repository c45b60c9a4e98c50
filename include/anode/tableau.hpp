#pragma once
// Explicit Runge-Kutta methods as Butcher tableaux: a new method is a new table, not a new loop.
//
//   c_0 |
//   c_1 | a_10
//   c_2 | a_20 a_21
//   ... | ...
//   ----+----------------
//       | b_0  b_1 ... b_{s-1}
//
// Stage i evaluates k_i = f(t + c_i h, z + h * sum_{j<i} a_ij k_j); the step is
// z + h * sum_i b_i k_i.

#include <anode/options.hpp>

#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <vector>

namespace anode {

/// An explicit Runge-Kutta method (strictly lower-triangular `a`).
struct ButcherTableau {
  std::string name;
  int order = 0;                       ///< classical order of accuracy
  std::vector<std::vector<double>> a;  ///< a[i] has i entries (stage i uses stages 0..i-1)
  std::vector<double> b;               ///< weights, sum to 1
  std::vector<double> c;               ///< nodes, c[i] = sum_j a[i][j]

  int64_t stages() const { return static_cast<int64_t>(b.size()); }

  /// Checks the table is explicit, consistent (sum b = 1, c_i = sum_j a_ij) and well-sized.
  void validate() const {
    const auto s = b.size();
    TORCH_CHECK(s >= 1, "anode: Butcher tableau '", name, "' has no stages");
    TORCH_CHECK(a.size() == s && c.size() == s, "anode: Butcher tableau '", name,
                "' has inconsistent sizes (a: ", a.size(), ", b: ", s, ", c: ", c.size(), ")");
    double bsum = 0.0;
    for (std::size_t i = 0; i < s; ++i) {
      TORCH_CHECK(a[i].size() == i, "anode: Butcher tableau '", name, "' row ", i, " has ",
                  a[i].size(), " entries; an explicit method needs ", i);
      double row = 0.0;
      for (double v : a[i]) row += v;
      TORCH_CHECK(std::abs(row - c[i]) < 1e-12, "anode: Butcher tableau '", name, "' c[", i,
                  "] = ", c[i], " differs from the row sum ", row);
      bsum += b[i];
    }
    TORCH_CHECK(std::abs(bsum - 1.0) < 1e-12, "anode: Butcher tableau '", name, "' weights sum to ",
                bsum, ", not 1");
  }
};

/// Forward Euler: one stage; the ResNet update.
inline const ButcherTableau& euler_tableau() {
  static const ButcherTableau t{"Euler", 1, {{}}, {1.0}, {0.0}};
  return t;
}

/// Explicit midpoint (RK2), as in the ANODE paper's code.
inline const ButcherTableau& midpoint_tableau() {
  static const ButcherTableau t{"RK2 (midpoint)", 2, {{}, {0.5}}, {0.0, 1.0}, {0.0, 0.5}};
  return t;
}

/// The classical fourth-order Runge-Kutta method.
inline const ButcherTableau& rk4_tableau() {
  static const ButcherTableau t{"RK4",
                                4,
                                {{}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}},
                                {1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0},
                                {0.0, 0.5, 0.5, 1.0}};
  return t;
}

/// The tableau of a `Method`.
inline const ButcherTableau& tableau(Method m) {
  switch (m) {
    case Method::Euler:
      return euler_tableau();
    case Method::RK2:
      return midpoint_tableau();
    case Method::RK4:
      return rk4_tableau();
  }
  TORCH_CHECK(false, "anode: invalid Method value ", static_cast<int>(m));
}

}  // namespace anode
