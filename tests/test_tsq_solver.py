"""TSQ's transformation learning: the alternating ternary least-squares solver."""
import numpy as np
import pytest

from kquant.techniques.tsq_solver import StepFunction, solve_ternary, ternarize

SPARSE_2BIT = StepFunction(thresholds=[0.32, 1.5 * 0.6487, 2.5 * 0.6487],
                           levels=[0.0, 0.6487, 2 * 0.6487, 3 * 0.6487])


def synthetic_layer(d=48, n=4000, channels=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(d, n))
    truth = rng.choice([-1.0, 0.0, 1.0], size=(d, channels), p=[0.3, 0.4, 0.3])
    alpha = rng.uniform(0.05, 0.2, size=channels)
    y = SPARSE_2BIT(alpha * (x.T @ truth))
    return x, y, truth, alpha, rng


def test_step_function_and_its_best_inputs():
    z = np.array([-1.0, 0.32, 0.33, 0.97, 0.98, 1.7, 5.0])
    np.testing.assert_allclose(SPARSE_2BIT(z) / 0.6487, [0, 0, 1, 1, 2, 3, 3], atol=1e-6)
    # y asks for level 1 (0.6487) while v sits at 0: the cheapest z is just above eps
    best = SPARSE_2BIT.best_inputs(np.array([0.6487]), np.array([0.0]), lam=1.0)
    assert 0.32 < best[0] < 0.3201
    # with a large lambda the fit to v wins: z stays at v
    assert SPARSE_2BIT.best_inputs(np.array([0.6487]), np.array([0.0]), lam=100.0)[0] == 0.0


def test_the_objective_never_increases_for_a_fixed_lambda():
    x, y, truth, alpha, rng = synthetic_layer()
    start = truth * alpha + rng.normal(scale=0.04, size=truth.shape)
    solution = solve_ternary(x, y, SPARSE_2BIT, start, rounds=3, iterations=5)
    for lam in sorted(set(solution.lambdas)):
        values = [o for o, l in zip(solution.objectives, solution.lambdas) if l == lam]
        assert all(b <= a * (1 + 1e-9) for a, b in zip(values, values[1:])), values
    before, after = solution.reconstruction
    assert after < before


def test_recovers_true_ternary_weights_up_to_scale():
    x, y, truth, alpha, rng = synthetic_layer()
    start = truth * alpha + rng.normal(scale=0.03, size=truth.shape)  # a noisy float layer
    twn = np.mean(ternarize(start) == truth)
    solution = solve_ternary(x, y, SPARSE_2BIT, start)
    agreement = np.mean(solution.ternary == truth)
    assert agreement >= 0.96 and agreement > twn + 0.02, (agreement, twn)
    np.testing.assert_allclose(solution.alpha, alpha, rtol=0.15)
    before, after = solution.reconstruction
    assert after < 0.7 * before
    exact = solve_ternary(x, y, SPARSE_2BIT, truth * alpha)
    np.testing.assert_array_equal(exact.ternary, truth)  # the truth is a fixed point


def test_too_few_samples_for_the_fan_in_is_an_error():
    x, y, truth, _, _ = synthetic_layer(d=48, n=40)
    with pytest.raises(ValueError, match="40 samples for a fan-in of 48"):
        solve_ternary(x, y, SPARSE_2BIT, truth)
