"""`pv.compare_strategies`: means against exact gradients, the known variance ordering of the
discrete strategies, the per-site decomposition against its closed form, the table and the plot,
and the messages of bad calls."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv
from progvi.adev.pinned import pinned_grad, site_groups

WEIGHTS = jnp.array([1.0, 2.0, 3.0])


@pv.expectation
def three_coins(theta):
    """(s - z)^2 with s a weighted count of three coins and z ~ N(m, 1)."""
    s = 0.0
    for i in range(3):
        s = s + WEIGHTS[i] * pv.sample(f"b{i}", dist.Bernoulli(logits=theta["logits"][i]))
    z = pv.sample("z", dist.Normal(theta["m"], 1.0))
    return (s - z) ** 2


def three_coins_exact(theta):
    """E[(s - z)^2] = Σ_b p(b) ((s - m)^2 + 1), summed over the 8 outcomes."""
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        b = jnp.array(bits)
        log_p = jnp.sum(dist.Bernoulli(logits=theta["logits"]).log_prob(b))
        total = total + jnp.exp(log_p) * ((jnp.sum(WEIGHTS * b) - theta["m"]) ** 2 + 1.0)
    return total


THETA = {"logits": jnp.array([0.3, -0.2, 0.5]), "m": jnp.array(1.0)}
CANDIDATES = {
    "REINFORCE": {"b*": pv.reinforce},
    "REINFORCE + baseline": {"b*": pv.reinforce(baseline=8.0)},
    "MVD": {"b*": pv.mvd},
    "enumeration": {"b*": pv.enum},
}


@pytest.fixture(scope="module")
def table():
    with pv.validation():
        return pv.compare_strategies(jax.random.key(0), three_coins, (THETA,), CANDIDATES,
                                     num_estimates=4000, exact=jax.grad(three_coins_exact)(THETA),
                                     per_site=False)


def test_every_candidate_mean_agrees_with_the_exact_gradient(table):
    # error: the largest |mean - exact| / s.e. over the 4 coordinates; 4.0 leaves a margin for
    # the maximum of 4 normal deviates.
    exact = jax.grad(three_coins_exact)(THETA)
    for row in table.rows:
        assert row.error < 4.0, (row.name, row.error)
        gap = np.abs(row.mean["logits"] - exact["logits"]) / row.stderr["logits"]
        assert np.all(gap < 4.0), (row.name, gap)


def test_variances_follow_the_known_ordering(table):
    # enumeration < MVD < REINFORCE with a baseline < REINFORCE, each step by a margin far above
    # the noise of a variance from 4000 estimates (relative s.e. about 2-5%).
    v = {row.name: row.total_variance for row in table.rows}
    assert v["enumeration"] < 0.8 * v["MVD"] < 0.8**2 * v["REINFORCE + baseline"]
    assert v["REINFORCE + baseline"] < 0.8 * v["REINFORCE"]
    assert table.best == "enumeration"


def test_variance_of_enumeration_is_that_of_z_alone(table):
    # With the coins enumerated, the gradient in m is -2 E_b[s - z] given z: 2 (z - m) + const,
    # whose variance is 4; the logits' gradient is affine in z too: its exact variance follows.
    row = table["enumeration"]

    def grad_given_z(z):
        def given(theta):
            total = 0.0
            for bits in itertools.product([0.0, 1.0], repeat=3):
                b = jnp.array(bits)
                log_p = jnp.sum(dist.Bernoulli(logits=theta["logits"]).log_prob(b))
                total = total + jnp.exp(log_p) * (jnp.sum(WEIGHTS * b) - z) ** 2
            return total

        return jax.grad(given)(THETA)

    z = jnp.array([0.0, 1.0])  # the gradient is affine in z: its slope gives the variance
    g0, g1 = grad_given_z(z[0]), grad_given_z(z[1])
    slope = jax.tree.map(lambda a, b: b - a, g0, g1)
    slope["m"] = jnp.array(2.0)  # d/dm of -(2 (s - z)) ... is 2 per unit of z: Var = 4
    exact_var = sum(float(jnp.sum(s**2)) for s in jax.tree.leaves(slope))
    se = exact_var * np.sqrt(2.0 / (table.num_estimates - 1))
    assert abs(row.total_variance - exact_var) < 4 * se, (row.total_variance, exact_var)


def test_work_variance_is_variance_times_time(table):
    for row in table.rows:
        assert row.seconds > 0 and row.compile_seconds > 0
        assert row.work_variance == pytest.approx(row.total_variance * row.seconds)
        leaves = jax.tree.leaves(row.variance)
        assert sum(leaves) == pytest.approx(row.total_variance)


@pv.expectation
def two_normals(theta):
    x = pv.sample("x", dist.Normal(theta[0], 1.0))
    y = pv.sample("y", dist.Normal(theta[1], 2.0))
    return x**2 + y**2


def test_per_site_fractions_match_their_closed_form():
    # Reparameterized: the gradient is (2x, 2y), variances 4 and 16: fractions 0.2 and 0.8.
    table = pv.compare_strategies(jax.random.key(1), two_normals, (jnp.array([0.5, -1.0]),),
                                  {"reparam": {}}, num_estimates=4000,
                                  exact=jnp.array([1.0, -2.0]))
    row = table["reparam"]
    assert set(row.sites) == {"x", "y"}
    assert row.total_variance == pytest.approx(20.0, rel=4 * np.sqrt(2 / 4000))
    # Each fraction comes from 2000 pinned estimates: relative s.e. about 3%.
    assert row.sites["x"] == pytest.approx(0.2, abs=0.03)
    assert row.sites["y"] == pytest.approx(0.8, abs=0.1)
    assert row.error < 4.0


def test_pinned_estimate_with_every_site_varied_is_the_estimate():
    groups = site_groups(three_coins, THETA)
    assert [g.addresses for g in groups] == [("b0",), ("b1",), ("b2",), ("z",)]
    grad = pinned_grad(three_coins, frozenset(g.salt for g in groups), 0)
    key, held = jax.random.key(3), jax.random.key(4)
    expected = three_coins.grad(key, THETA)
    got = grad(key, held, THETA)
    # The same draws and arithmetic compiled as another program: equal up to rounding.
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # Holding every site: the estimate no longer depends on `key`.
    hold_all = pinned_grad(three_coins, frozenset(), 0)
    a, b = hold_all(jax.random.key(5), held, THETA), hold_all(jax.random.key(6), held, THETA)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_whole_objective_is_a_candidate_and_the_table_prints_and_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    score = pv.with_strategies(two_normals, {"*": pv.reinforce})
    table = pv.compare_strategies(jax.random.key(2), two_normals, (jnp.array([0.5, -1.0]),),
                                  {"reparam": {}, "score": score}, num_estimates=500,
                                  per_site=False)
    text = str(table)
    assert text.splitlines()[0].startswith("| candidate | variance |")
    assert text.splitlines()[2].startswith("| reparam |")  # best first
    assert table.best == "reparam" and table["score"].sites == {}
    fig = table.plot()
    left, right = fig.axes
    assert left.get_xlabel() and right.get_xlabel() and left.get_ylabel()
    assert [t.get_text() for t in left.get_yticklabels()] == ["score", "reparam"]
    fig.savefig(tmp_path / "table.png")
    with pytest.raises(KeyError, match="the candidates are"):
        table["nope"]


@pytest.mark.parametrize("call, error, words", [
    (lambda: pv.compare_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),), {}),
     TypeError, "non-empty dict"),
    (lambda: pv.compare_strategies(jax.random.key(0), two_normals, jnp.zeros(2), {"a": {}}),
     TypeError, "tuple of the objective's arguments"),
    (lambda: pv.compare_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),),
                                   {"a": pv.reinforce}),
     TypeError, "candidate 'a'"),
    (lambda: pv.compare_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),), {"a": {}},
                                   num_estimates=1),
     ValueError, "at least 2"),
    (lambda: pv.compare_strategies(0, two_normals, (jnp.zeros(2),), {"a": {}}),
     TypeError, "not a jax.random key"),
    (lambda: pv.compare_strategies(jax.random.key(0), lambda t: t, (jnp.zeros(2),), {"a": {}}),
     TypeError, "@pv.expectation"),
    (lambda: pv.compare_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),), {"a": {}},
                                   num_estimates=10, exact={"x": 1.0}),
     ValueError, "structure of the gradient"),
    (lambda: pv.compare_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),),
                                   {"a": {"q": pv.reinforce}}, num_estimates=4),
     pv.AddressError, "'q'"),
    (lambda: pv.choose_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),), {"x": []}),
     TypeError, "candidates for 'x'"),
    (lambda: pv.choose_strategies(jax.random.key(0), two_normals, (jnp.zeros(2),), []),
     TypeError, "address pattern"),
])
def test_bad_calls_say_what_and_how_to_fix(call, error, words):
    with pytest.raises(error, match=words):
        call()


@pv.expectation
def root_of_normal(theta):
    return jnp.sqrt(pv.sample("x", dist.Normal(theta, 1.0)))  # d/dx: NaN where x < 0


def test_non_finite_estimates_name_the_candidate():
    with pytest.raises(FloatingPointError, match="candidate 'reparam'.*non-finite"):
        pv.compare_strategies(jax.random.key(0), root_of_normal, (0.0,), {"reparam": {}},
                              num_estimates=50)
