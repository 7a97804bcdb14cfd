"""pytest settings shared by the unit tests and nbval (run from the repository root)."""


def pytest_collectstart(collector):
    # nbval: stderr (progress bars, warnings), HTML tables and SVG change between versions and runs;
    # the notebooks print every number they rely on as plain text, which is compared.
    if collector.path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare += ("stderr", "text/html", "image/svg+xml",
                                   "application/vnd.jupyter.widget-view+json")
