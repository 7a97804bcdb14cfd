"""pytest settings shared by the unit tests and nbval (run from the repository root)."""
from collections import defaultdict

from tests.nbval_numbers import TOLERANCE_RELATIVE, TOLERANCE_UNITS, outputs_close

_within_tolerance = []  # (cell, largest deviation) of the cells that matched only within the tolerance


def pytest_collectstart(collector):
    # nbval: stderr (progress bars, warnings), HTML tables and SVG change between versions and runs;
    # the notebooks print every number they rely on as plain text, which is compared.
    if collector.path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare += ("stderr", "text/html", "image/svg+xml",
                                   "application/vnd.jupyter.widget-view+json")


def _flatten(cell, outputs, skip_compare):
    """nbval's own view of a cell's outputs: a list of sanitised values per output key or MIME type."""
    from nbval.plugin import transform_streams_for_comparison

    flat = defaultdict(list)
    for output in transform_streams_for_comparison(outputs):
        for key, value in output.items():
            if key in skip_compare:
                continue
            if key == "data":
                for mime, data in value.items():
                    if mime not in skip_compare:
                        flat[mime].append(cell.sanitize(data))
            else:
                flat[key].append(cell.sanitize(value))
    return flat


def pytest_configure(config):
    """nbval compares printed numbers within a stated tolerance (tests/nbval_numbers.py says why)."""
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:
        return
    if getattr(IPyNbCell.compare_outputs, "_tolerant", False):
        return
    exact = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        if exact(self, test, ref, skip_compare):
            return True
        skip = skip_compare or self.parent.skip_compare
        ref_flat, test_flat = _flatten(self, ref, skip), _flatten(self, test, skip)
        if set(ref_flat) != set(test_flat):
            return False
        deviations = []
        for key, values in ref_flat.items():
            found = outputs_close(values, test_flat[key])
            if found is None:
                return False  # nbval's own message, from the exact comparison, stands
            deviations += found
        if not deviations:
            return False
        worst = max(deviations, key=lambda d: d.units)
        _within_tolerance.append((self.nodeid, worst))
        self.comparison_traceback = []
        return True

    compare_outputs._tolerant = True
    IPyNbCell.compare_outputs = compare_outputs


def pytest_terminal_summary(terminalreporter):
    if not _within_tolerance:
        return
    terminalreporter.section("notebook cells that matched only within the numeric tolerance")
    terminalreporter.line(f"(printed numbers within {TOLERANCE_UNITS} units of their last digit or "
                          f"{TOLERANCE_RELATIVE:.0%}; tests/nbval_numbers.py says why)")
    for nodeid, worst in _within_tolerance:
        terminalreporter.line(f"{nodeid}: largest difference {worst.reference} -> {worst.computed} "
                              f"({worst.units:.0f} units)")
