"""The numeric tolerance of nbval's comparison (tests/nbval_numbers.py): what it lets through, what it does not."""
import json
import textwrap

from nbval_numbers import TOLERANCE_UNITS, numbers_close, outputs_close

pytest_plugins = ["pytester"]


def test_same_text_has_no_deviation():
    assert numbers_close("acc 64.1 ± 0.9", "acc 64.1 ± 0.9") == []


def test_last_digit_differences_pass_and_are_reported():
    found = numbers_close("InfoReg  64.1 ± 0.9; r -0.100", "InfoReg  64.1 ± 1.0; r -0.101")
    assert [(d.reference, d.computed, round(d.units)) for d in found] == [("0.9", "1.0", 1), ("-0.100", "-0.101", 1)]


def test_a_wider_number_may_shift_a_tables_columns():
    assert numbers_close("a   9.9  1.0\nb  10.0  2.0", "a  10.0  1.0\nb  10.0  2.0") is not None


def test_words_and_formats_must_match():
    assert numbers_close("B probe +6.6", "A probe +6.6") is None
    assert numbers_close("epoch 12", "epoch 12 13") is None
    assert numbers_close("64.1", "64.10") is None  # another format is another output
    assert numbers_close("1.5e-03", "1.5") is None


def test_larger_differences_fail():
    assert numbers_close("+6.6", f"+{6.6 + (TOLERANCE_UNITS + 1) / 10:.1f}") is None
    assert numbers_close("64.1 ± 0.9", "61.0 ± 0.9") is None


def test_big_numbers_get_a_relative_tolerance():
    assert numbers_close("Tr F 1234.5", "Tr F 1240.1") is not None  # 56 units, 0.45 %
    assert numbers_close("Tr F 1234.5", "Tr F 1260.0") is None  # 2 %


def test_whole_numbers_must_be_equal():
    assert numbers_close("regulated in epochs 2-7", "regulated in epochs 2-8") is None
    assert numbers_close("gate opened in 3 of 9 decisions", "gate opened in 4 of 9 decisions") is None


def test_non_text_outputs_must_be_equal():
    assert outputs_close(["a 1.0"], ["a 1.1"]) is not None
    assert outputs_close([{"x": 1}], [{"x": 2}]) is None
    assert outputs_close(["a"], ["a", "b"]) is None


def _notebook(stored: str) -> str:
    cell = {"cell_type": "code", "execution_count": 1, "id": "c0", "metadata": {}, "source": "print('accuracy 64.1 ± 0.9')",
            "outputs": [{"name": "stdout", "output_type": "stream", "text": stored + "\n"}]}
    return json.dumps({"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                     "language": "python"}},
                       "nbformat": 4, "nbformat_minor": 5})


def test_nbval_uses_the_tolerance(pytester, request):
    """Through pytest and nbval, with this repository's conftest: a last-digit difference passes and is listed
    in the summary, a larger one fails with nbval's own message."""
    root = request.config.rootpath
    pytester.makeconftest((root / "conftest.py").read_text())
    pytester.mkdir("tests").joinpath("nbval_numbers.py").write_text((root / "tests" / "nbval_numbers.py").read_text())
    pytester.makefile(".ipynb", close=_notebook("accuracy 64.1 ± 1.0"), far=_notebook("accuracy 66.1 ± 0.9"))
    result = pytester.runpytest_subprocess("--nbval", "--nbval-current-env", "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*far.ipynb::Cell 0*", "*Cell outputs differ*",
                                 "*matched only within the numeric tolerance*",
                                 "close.ipynb::Cell 0: largest difference 1.0 -> 0.9 (1 units)"])
