"""torchode (github.com/martenlienen/torchode) as a peer: the solves of peers.py and mlp_peers.py.

torchode solves a batch of independent problems, each with its own time and step: its state is
2-D (batch, features), so a convolutional state is flattened for the solver and reshaped for the
right-hand side, which still sees the whole batch at once (BatchNorm statistics as in the other
implementations). Its fixed-step methods are Euler and Heun; it has no explicit midpoint, so the
midpoint rule (anode's RK2) is given to it as a Butcher tableau of its own ExplicitRungeKutta,
the way torchode defines its methods. Fixed step: FixedStepController with dt0 = 1/N_t; torchode
advances t += dt and clamps the last step to t_end, so with N_t a power of two (the peers grid)
the grid is exactly anode's; on other N_t a rounding step may be added, which the RHS evaluation
counts of the benchmarks show. Adaptive: Dopri5 with torchode's IntegralController.

Gradients: AutoDiffAdjoint, torchode's default (autograd through the solver's steps: what
Backprop does). Its BacksolveAdjoint is not used: it takes the parameters from an ODETerm wrapping
the module itself and maps the RHS over the batch with vmap, which the BatchNorm of the peers
network (batch statistics, running stats updated in place) does not allow.
"""
import torch

_MIDPOINT = None


def midpoint_class(to):
    """torchode's ExplicitRungeKutta with the explicit midpoint tableau (order 2, Euler embedded
    for an error estimate that the fixed-step controller ignores)."""
    global _MIDPOINT
    if _MIDPOINT is None:
        from torchode.interpolation import ThirdOrderPolynomialInterpolation
        from torchode.single_step_methods.runge_kutta import ButcherTableau, ExplicitRungeKutta

        class Midpoint(ExplicitRungeKutta):
            TABLEAU = ButcherTableau.from_lists(c=[0.0, 0.5], a=[[], [0.5]], b=[0.0, 1.0],
                                                b_low_order=[1.0, 0.0])

            def __init__(self, term=None):
                super().__init__(term, Midpoint.TABLEAU)

            def convergence_order(self):
                return 2

            def build_interpolation(self, data):
                return ThirdOrderPolynomialInterpolation.from_k(data.t0, data.dt, data.y0,
                                                                data.y1, data.k)

        _MIDPOINT = Midpoint
    return _MIDPOINT


def make_solve(to, method, *, nt=None, rtol=None, atol=None):
    """solve(f, z) -> z(1): f(t, z) on [0, 1] from z, z of any shape (batch first)."""

    def solve(f, z):
        shape = z.shape
        batch = shape[0]

        def vf(t, y):
            return f(t, y.reshape(shape)).reshape(batch, -1)

        term = to.ODETerm(vf)
        if method == "midpoint":
            step = midpoint_class(to)(term=term)
            control = to.FixedStepController()
            dt0 = torch.full((batch,), 1.0 / nt, dtype=z.dtype, device=z.device)
        elif method == "dopri5":
            step = to.Dopri5(term=term)
            control = to.IntegralController(atol=atol, rtol=rtol, term=term)
            dt0 = None
        else:
            raise ValueError(method)
        solver = to.AutoDiffAdjoint(step, control)
        t_eval = torch.tensor([0.0, 1.0], dtype=z.dtype, device=z.device).repeat(batch, 1)
        problem = to.InitialValueProblem(y0=z.reshape(batch, -1), t_eval=t_eval)
        sol = solver.solve(problem, dt0=dt0)
        return sol.ys[:, -1].reshape(shape)

    return solve
