"""Every test runs inside `pv.validation()`: sample sites check their parameters at run time.

A test whose program passes a parameter outside its distribution's support (a negative scale, a
probability above one) then fails with a `pv.ValidationError` naming the site, instead of passing
on NaN or on a wrong value. Mark a test ``@pytest.mark.no_validation`` to run it without, or set
``PROGVI_TEST_VALIDATION=0`` to run the whole suite without (to measure what the checks cost).
"""

import os

import pytest

import progvi as pv

# Tests that need the unchecked programs: a NaN under jit that the test asserts, and runs compared
# bit for bit with a run in a subprocess, which has no fixture (the checks can move XLA's fusion,
# hence the last bit of a value).
WITHOUT_VALIDATION = {
    "tests/gen/test_errors.py::test_non_finite_log_density_names_the_address",
    "tests/train/test_resume.py::test_a_killed_run_resumes_from_its_checkpoint_bit_for_bit",
    "tests/train/test_resume.py::test_ctrl_c_returns_what_was_trained_and_saves_it",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "no_validation: run the test outside pv.validation()")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in WITHOUT_VALIDATION:
            item.add_marker(pytest.mark.no_validation)


@pytest.fixture(autouse=True)
def _validation(request):
    enabled = (request.node.get_closest_marker("no_validation") is None
               and os.environ.get("PROGVI_TEST_VALIDATION", "1") != "0")
    with pv.validation(enabled):
        yield
