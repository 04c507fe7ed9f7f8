"""Every reader and the params loader under generated hostile input, 200 examples each
(tests/fuzzing.py; the e2e layer runs 2,000)."""

import pytest

from tests.fuzzing import CASES, fuzz


@pytest.mark.parametrize(("strategy", "check"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_no_exception_but_the_stages_own_and_rows_add_up(strategy, check):
    fuzz(strategy, check, 200)
