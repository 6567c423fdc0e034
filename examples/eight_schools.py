"""Eight schools: a NumPyro model, an AutoNormal guide fitted by `pv.fit`, an ArviZ summary.

The model is NumPyro's non-centered eight schools (Rubin 1981): school effects
``theta = mu + tau * eta`` recorded with ``numpyro.deterministic``. The guide is numpyro's
``AutoNormal``, used as it is: its params are created by ``init_params`` (as ``SVI.init``
creates them) and optimized unconstrained; samples from the fitted guide go to
``numpyro.infer.Predictive`` (posterior predictive draws) and to ArviZ (`az.summary`).

    python examples/eight_schools.py            # 5000 steps
    python examples/eight_schools.py --smoke    # a few hundred steps, for the tests
"""

import argparse

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import Predictive
from numpyro.infer.autoguide import AutoNormal

import progvi as pv

SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a short run, for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    steps, draws = (300, 400) if args.smoke else (5000, 4000)

    model = pv.interop.numpyro(eight_schools)
    guide = pv.interop.numpyro(AutoNormal(eight_schools), params=True)

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, guide, {}, model_args=(SIGMA, Y), guide_args=(params, SIGMA, Y))

    params = guide.init_params(jax.random.key(0), SIGMA, Y)
    result = pv.fit(jax.random.key(1), elbo, params, optax.adam(0.01), direction="maximize",
                    num_steps=steps, progress=not args.no_progress)
    samples = pv.interop.posterior_samples(jax.random.key(2), guide, result.params, SIGMA, Y,
                                           num_samples=draws)
    predictive = Predictive(eight_schools, posterior_samples=samples)(jax.random.key(3), SIGMA)
    # Predictive recomputes the model's deterministic sites (theta) from the guide's draws.
    samples = {**samples, "theta": predictive["theta"]}
    data = pv.interop.to_arviz(samples, num_chains=4, observed_data={"obs": Y},
                               posterior_predictive={"obs": predictive["obs"]})

    import arviz as az

    summary = az.summary(data, var_names=["mu", "tau", "theta"])
    print(f"ELBO over the last 100 steps: {result.history[-100:].mean():.2f}")
    print(summary)
    return {"result": result, "samples": samples, "predictive": predictive, "summary": summary,
            "params": guide.constrained_params(result.params, SIGMA, Y)}


if __name__ == "__main__":
    main()
