"""The benchmark plots' figures: matplotlib without a display, imported only when one is drawn."""
import contextlib


@contextlib.contextmanager
def figure(path, *grid, figsize):
    """Yields (pyplot, figure, axes) of `pyplot.subplots(*grid)`, then saves the figure to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: the benchmark machines have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, figsize=figsize)
    try:
        yield plt, fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=100, bbox_inches="tight")  # with a legend outside the axes
    finally:
        plt.close(fig)
