"""course_utils.hippo (HiPPO-LegS as online function approximation, Lab 07), the figure and explorer built on it,
and Lab 07's timing figure: the Legendre basis is orthonormal, the recurrence tracks the direct projection, a
polynomial is read back exactly, bad input gets a clear error."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import hippo, plots, widgets  # noqa: E402
from course_utils.exercises.ssm import legs_closed_form  # noqa: E402


def legs(N):
    return legs_closed_form(N)


def test_legendre_basis_is_orthonormal_on_the_unit_interval():
    s = np.linspace(0, 1, 20001)
    G = hippo.legendre_basis(10, s)
    gram = np.trapezoid(G[:, :, None] * G[:, None, :], s, axis=0)
    assert np.allclose(gram, np.eye(10), atol=1e-5)  # trapezoid quadrature error
    assert np.allclose(G[:, 0], 1.0) and np.allclose(G[-1], np.sqrt(2 * np.arange(10) + 1))  # P_n(1) = 1


def test_a_polynomial_of_degree_below_n_is_read_back_exactly():
    s = np.linspace(0, 1, 2001)
    f = 1 - 3 * s + 2 * s**3
    assert np.abs(hippo.legs_reconstruct(hippo.legs_project(f, 6), s.size) - f).max() < 5e-5  # quadrature


@pytest.mark.parametrize("N", [4, 16, 32])
def test_the_recurrence_tracks_the_direct_projection(N):
    f = hippo.example_signal(2000, seed=1)
    online = hippo.legs_online(f, *legs(N))
    for t in (500, 2000):
        direct = hippo.legs_project(f[:t], N)
        assert np.linalg.norm(online[t - 1] - direct) < 0.05 * np.linalg.norm(direct), t


def test_legs_online_accepts_torch_and_numpy_alike_and_a_column_b():
    f = hippo.example_signal(300)
    A, B = legs(8)
    a = hippo.legs_online(torch.from_numpy(f), A, B)
    b = hippo.legs_online(f, A.numpy(), B.numpy()[:, 0])
    assert a.shape == (300, 8) and np.allclose(a, b)


def test_a_constant_is_held_in_the_first_coefficient():
    """Exactly (1, 0, 0, ...) for the projection; the recurrence, discretised from its first sample on, within 1 %."""
    direct = hippo.legs_project(np.ones(400), 6)
    assert abs(direct[0] - 1) < 1e-9 and np.abs(direct[1:]).max() < 1e-7
    c = hippo.legs_online(np.ones(400), *legs(6))[-1]
    assert abs(c[0] - 1) < 5e-3 and np.abs(c[1:]).max() < 1e-2


@pytest.mark.parametrize("call, message", [
    (lambda: hippo.legs_online(np.ones((3, 2)), *legs(4)), "1-D signal"),
    (lambda: hippo.legs_online(np.array([1.0, np.nan]), *legs(4)), "NaN or Inf"),
    (lambda: hippo.legs_online(np.ones(5), torch.ones(4, 3), torch.ones(4)), "square matrix"),
    (lambda: hippo.legs_online(np.ones(5), *legs(4)[:1], torch.ones(5)), "N = 4 entries"),
    (lambda: hippo.legendre_basis(0, [0.5]), "positive int"),
    (lambda: hippo.legs_project(np.ones(1), 4), "at least 2 samples"),
    (lambda: hippo.example_signal(1), "L must be >= 2"),
    (lambda: hippo.legs_online(np.ones(5), legs(4)[0] * np.nan, legs(4)[1]), "A and B contain NaN"),
], ids=["2-D signal", "NaN", "A not square", "B wrong size", "N = 0", "one sample", "L = 1", "NaN in A"])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call", [
    lambda: hippo.legs_online(np.ones(5), legs(4)[0].to(torch.complex64), legs(4)[1]),
    lambda: hippo.legs_online(np.ones(5) + 0j, *legs(4)),
    lambda: hippo.legs_reconstruct(torch.ones(4, dtype=torch.complex128), 10),
], ids=["complex A", "complex signal", "complex coefficients"])
def test_complex_input_is_refused_not_made_real(call):
    with pytest.raises(TypeError, match="must be real"):
        call()


def test_reconstruction_figure_has_one_line_per_state_size():
    f = hippo.example_signal(200)
    recs = {n: hippo.legs_reconstruct(hippo.legs_online(f, *legs(n))[-1], 200) for n in (4, 16)}
    fig = plots.plot_legs_reconstruction(f, recs, title="t")
    left, right = fig.axes[:2]
    assert len(left.lines) == 1 + 2 + 1 and len(right.lines) == 2  # signal, two reconstructions, the t marker
    matplotlib.pyplot.close(fig)


def test_legs_explorer_update_returns_what_it_drew():
    f = hippo.example_signal(1000)
    explorer = widgets.legs_explorer(legs, f, N=8)
    small = explorer.update(N=4, t=496)
    large = explorer.update(N=32)
    assert small["N"] == 4 and small["t"] == 496 and len(small["reconstruction"]) == 496
    assert large["t"] == 496 and large["error"] < small["error"]
    assert large["projection_gap"] < 0.05
    with pytest.raises(ValueError, match="t must be in"):
        widgets.legs_reconstruction_numbers(legs, 8, f, 1)


def test_timings_vs_length_draws_each_series_with_its_spread():
    stats = [{"median": m, "q1": 0.9 * m, "q3": 1.1 * m, "min": 0.8 * m, "max": 1.3 * m} for m in (1.0, 2.0, 4.1)]
    fig = plots.plot_timings_vs_length([64, 128, 256], {"a": stats, "b": stats[::-1]}, title="t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(label.split(" (")[0] for label in labels) == ["a", "b", "∝ L"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    matplotlib.pyplot.close(fig)
