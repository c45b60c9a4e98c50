#pragma once
// Explicit Runge-Kutta methods as Butcher tableaux: a new method is a new table, not a new loop.
//
//   c_0 |
//   c_1 | a_10
//   c_2 | a_20 a_21
//   ... | ...
//   ----+----------------
//       | b_0  b_1 ... b_{s-1}          (order p)
//       | e_0  e_1 ... e_{s-1}          (embedded, order q: optional)
//
// Stage i evaluates k_i = f(t + c_i h, z + h * sum_{j<i} a_ij k_j); the step is
// z + h * sum_i b_i k_i. An embedded row gives the error estimate h * sum_i (b_i - e_i) k_i that
// adaptive step control uses. A method whose last stage is evaluated at the new state (c = 1 and
// its a-row equals b) is "first same as last" (FSAL): that stage is the next step's first.
//
// The tableau of a built-in `Method` is its row of the method table: `tableau(Method)` in
// method.hpp.

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace anode {

/// An explicit Runge-Kutta method (strictly lower-triangular `a`), optionally with an embedded
/// lower-order solution for error control.
struct ButcherTableau {
  std::string name;
  int order = 0;                       ///< classical order of accuracy of `b`
  std::vector<std::vector<double>> a;  ///< a[i] has i entries (stage i uses stages 0..i-1)
  std::vector<double> b;               ///< weights, sum to 1
  std::vector<double> c;               ///< nodes, c[i] = sum_j a[i][j]
  std::vector<double> b_embedded{};    ///< embedded weights (empty: fixed-step method)
  int embedded_order = 0;              ///< order of `b_embedded`

  int64_t stages() const { return static_cast<int64_t>(b.size()); }
  /// Whether the method has an error estimate (and so chooses its own steps).
  bool adaptive() const { return !b_embedded.empty(); }
  /// Whether the last stage is f at the new state, reusable as the next step's first stage.
  bool fsal() const {
    const auto s = b.size();
    if (s < 2 || c.back() != 1.0 || b.back() != 0.0) return false;
    for (std::size_t j = 0; j + 1 < s; ++j) {
      if (a[s - 1][j] != b[j]) return false;
    }
    return true;
  }

  /// Checks the table: explicit and well-sized, c_i = sum_j a_ij, the weights sum to 1, and the
  /// order conditions of every rooted tree up to the claimed order (and the embedded order) hold.
  void validate() const {
    const auto s = b.size();
    TORCH_CHECK(s >= 1, "anode: Butcher tableau '", name, "' has no stages");
    TORCH_CHECK(a.size() == s && c.size() == s, "anode: Butcher tableau '", name,
                "' has inconsistent sizes (a: ", a.size(), ", b: ", s, ", c: ", c.size(), ")");
    for (std::size_t i = 0; i < s; ++i) {
      TORCH_CHECK(a[i].size() == i, "anode: Butcher tableau '", name, "' row ", i, " has ",
                  a[i].size(), " entries; an explicit method needs ", i);
      double row = 0.0;
      for (double v : a[i]) row += v;
      TORCH_CHECK(std::abs(row - c[i]) < 1e-12, "anode: Butcher tableau '", name, "' c[", i,
                  "] = ", c[i], " differs from the row sum ", row);
    }
    check_weights(b, order, "weights");
    if (!b_embedded.empty()) {
      TORCH_CHECK(b_embedded.size() == s, "anode: Butcher tableau '", name, "' has ",
                  b_embedded.size(), " embedded weights for ", s, " stages");
      TORCH_CHECK(embedded_order >= 1, "anode: Butcher tableau '", name,
                  "' has embedded weights but embedded_order ", embedded_order, " (must be >= 1)");
      check_weights(b_embedded, embedded_order, "embedded weights");
    }
  }

  /// The largest p such that `w` satisfies the order conditions of every tree of order <= p
  /// (at most 6: the trees of higher order are not enumerated).
  int achieved_order(const std::vector<double>& w) const {
    int p = 0;
    while (p < kMaxCheckedOrder && order_error(w, p + 1) < 1e-10) ++p;
    return p;
  }

  static constexpr int kMaxCheckedOrder = 6;

 private:
  void check_weights(const std::vector<double>& w, int claimed, const char* what) const {
    double sum = 0.0;
    for (double v : w) sum += v;
    TORCH_CHECK(std::abs(sum - 1.0) < 1e-12, "anode: Butcher tableau '", name, "' ", what,
                " sum to ", sum, ", not 1");
    TORCH_CHECK(claimed >= 1 && claimed <= kMaxCheckedOrder, "anode: Butcher tableau '", name,
                "' claims order ", claimed, " for its ", what, "; the order must be 1..",
                kMaxCheckedOrder);
    for (int p = 2; p <= claimed; ++p) {
      const double err = order_error(w, p);
      TORCH_CHECK(err < 1e-10, "anode: Butcher tableau '", name, "' claims order ", claimed,
                  " for its ", what, " but violates an order-", p, " condition (largest residual ",
                  err, "); it has order ", achieved_order(w));
    }
  }

  // A rooted tree as the list of its children (each a tree). Order conditions (Butcher): for
  // every tree t of order p, sum_i w_i Phi_i(t) = 1 / gamma(t), where Phi_i(leaf) = 1 and
  // Phi_i([t_1..t_m]) = prod_k sum_j a_ij Phi_j(t_k), gamma(t) = |t| * prod_k gamma(t_k).
  struct Tree {
    std::vector<Tree> children;
    int size() const {
      int n = 1;
      for (const auto& t : children) n += t.size();
      return n;
    }
    double gamma() const {
      double g = size();
      for (const auto& t : children) g *= t.gamma();
      return g;
    }
  };

  // All trees of exactly `n` nodes, children as nondecreasing multisets (by enumeration index).
  static std::vector<Tree> trees_of_order(int n) {
    static std::vector<std::vector<Tree>> memo;
    if (n < 1) return {};
    if (static_cast<int>(memo.size()) > n && !memo[n].empty()) return memo[n];
    // Forests of total size n-1 built from trees with (order, index) nondecreasing.
    std::vector<Tree> out;
    std::vector<std::pair<int, int>> pick;  // (order, index) of chosen children
    std::function<void(int, int, int)> rec = [&](int remaining, int min_order, int min_index) {
      if (remaining == 0) {
        Tree t;
        for (const auto& [o, i] : pick) t.children.push_back(trees_of_order(o)[i]);
        out.push_back(t);
        return;
      }
      for (int o = min_order; o <= remaining; ++o) {
        const auto sub = trees_of_order(o);
        for (int i = (o == min_order ? min_index : 0); i < static_cast<int>(sub.size()); ++i) {
          pick.emplace_back(o, i);
          rec(remaining - o, o, i);
          pick.pop_back();
        }
      }
    };
    rec(n - 1, 1, 0);
    if (static_cast<int>(memo.size()) <= n) memo.resize(n + 1);
    memo[n] = out;
    return out;
  }

  std::vector<double> phi(const Tree& t) const {
    const auto s = b.size();
    std::vector<double> out(s, 1.0);
    for (const auto& child : t.children) {
      const auto pc = phi(child);
      for (std::size_t i = 0; i < s; ++i) {
        double sum = 0.0;
        for (std::size_t j = 0; j < i; ++j) sum += a[i][j] * pc[j];
        out[i] *= sum;
      }
    }
    return out;
  }

  // The largest residual of the order-p conditions for weights `w`.
  double order_error(const std::vector<double>& w, int p) const {
    double worst = 0.0;
    for (const auto& t : trees_of_order(p)) {
      const auto ph = phi(t);
      double sum = 0.0;
      for (std::size_t i = 0; i < w.size(); ++i) sum += w[i] * ph[i];
      worst = std::max(worst, std::abs(sum - 1.0 / t.gamma()));
    }
    return worst;
  }
};

/// Forward Euler: one stage; the ResNet update.
inline const ButcherTableau& euler_tableau() {
  static const ButcherTableau t{"Euler", 1, {{}}, {1.0}, {0.0}, {}, 0};
  return t;
}

/// Explicit midpoint (RK2), as in the ANODE paper's code.
inline const ButcherTableau& midpoint_tableau() {
  static const ButcherTableau t{"RK2 (midpoint)", 2, {{}, {0.5}}, {0.0, 1.0}, {0.0, 0.5}, {}, 0};
  return t;
}

/// The classical fourth-order Runge-Kutta method.
inline const ButcherTableau& rk4_tableau() {
  static const ButcherTableau t{"RK4",
                                4,
                                {{}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}},
                                {1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0},
                                {0.0, 0.5, 0.5, 1.0},
                                {},
                                0};
  return t;
}

/// Bogacki-Shampine 3(2), FSAL (as torchdiffeq's bosh3).
inline const ButcherTableau& bosh3_tableau() {
  static const ButcherTableau t{"Bosh3",
                                3,
                                {{}, {0.5}, {0.0, 0.75}, {2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0}},
                                {2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0},
                                {0.0, 0.5, 0.75, 1.0},
                                {7.0 / 24.0, 1.0 / 4.0, 1.0 / 3.0, 1.0 / 8.0},
                                2};
  return t;
}

/// Dormand-Prince 5(4), FSAL (torchdiffeq's default dopri5).
inline const ButcherTableau& dopri5_tableau() {
  static const ButcherTableau t{
      "Dopri5",
      5,
      {{},
       {1.0 / 5.0},
       {3.0 / 40.0, 9.0 / 40.0},
       {44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0},
       {19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0},
       {9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0},
       {35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0}},
      {35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0},
      {0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0},
      {5179.0 / 57600.0, 0.0, 7571.0 / 16695.0, 393.0 / 640.0, -92097.0 / 339200.0, 187.0 / 2100.0,
       1.0 / 40.0},
      4};
  return t;
}

/// Tsitouras 5(4) (Ch. Tsitouras, Comput. Math. Appl. 62 (2011) 770-775), FSAL. Its coefficients
/// are given to about 16 digits, as in the paper and OrdinaryDiffEq.jl.
inline const ButcherTableau& tsit5_tableau() {
  static const ButcherTableau t = [] {
    const double c2 = 0.161, c3 = 0.327, c4 = 0.9, c5 = 0.9800255409045097;
    const double a21 = 0.161;
    const double a31 = -0.008480655492356989, a32 = 0.335480655492357;
    const double a41 = 2.897153057105493, a42 = -6.359448489975075, a43 = 4.3622954328695815;
    const double a51 = 5.325864828439257, a52 = -11.748883564062828, a53 = 7.4955393428898365,
                 a54 = -0.09249506636175525;
    const double a61 = 5.86145544294642, a62 = -12.92096931784711, a63 = 8.159367898576159,
                 a64 = -0.071584973281401, a65 = -0.028269050394068383;
    const double b1 = 0.09646076681806523, b2 = 0.01, b3 = 0.4798896504144996,
                 b4 = 1.379008574103742, b5 = -3.290069515436081, b6 = 2.324710524099774;
    // The embedded weights are b - btilde, with the error weights btilde (as OrdinaryDiffEq.jl).
    const double e1 = -0.00178001105222577714, e2 = -0.0008164344596567469,
                 e3 = 0.007880878010261995, e4 = -0.1447110071732629, e5 = 0.5823571654525552,
                 e6 = -0.45808210592918697, e7 = 0.015151515151515152;
    ButcherTableau tab{"Tsit5",
                       5,
                       {{},
                        {a21},
                        {a31, a32},
                        {a41, a42, a43},
                        {a51, a52, a53, a54},
                        {a61, a62, a63, a64, a65},
                        {b1, b2, b3, b4, b5, b6}},
                       {b1, b2, b3, b4, b5, b6, 0.0},
                       {0.0, c2, c3, c4, c5, 1.0, 1.0},
                       {b1 - e1, b2 - e2, b3 - e3, b4 - e4, b5 - e5, b6 - e6, -e7},
                       4};
    return tab;
  }();
  return t;
}

}  // namespace anode
