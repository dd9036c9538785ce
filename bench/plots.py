"""PNG plots of the scaling sweeps (needs matplotlib, the ``bench`` extra).

Three figures, one per swept dimension, each with one line per implementation:

``sweep_N.png``  rows/s against N (D and C fixed), with the floor's rows/s dashed;
``sweep_D.png``  rows/s against D (N and C fixed), with the floor's rows/s dashed;
``sweep_C.png``  time per pass over the floor against C (N and D fixed), 1.0 dashed.
"""

import os

AXES = {
    "N": ("n_samples", "rows N", "rows_per_s", "rows per second (median pass)"),
    "D": ("n_features", "features D", "rows_per_s", "rows per second (median pass)"),
    "C": ("n_classes", "classes C", "ratio_to_floor", "time per pass / floor"),
}


def matplotlib_missing():
    """Why the plots cannot be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib not installed ({exc}); pip install 'fastsoftmax[bench]'"
    return None


def _fixed(rows, axis):
    """The dimensions held fixed in a sweep, as a title: ``D = 128, C = 20``."""
    names = {"N": "n_samples", "D": "n_features", "C": "n_classes"}
    first = rows[0]
    return ", ".join(f"{k} = {first[v]:,}" for k, v in names.items() if k != axis)


def sweep_plots(sweeps, directory, title):
    """Draw one PNG per swept dimension; return their paths.

    Parameters
    ----------
    sweeps : dict of str to list of dict
        ``{"N": rows, "D": rows, "C": rows}``: pass rows (``bench.cpu_pass`` or
        ``bench.gpu_pass``) of each sweep; failed rows are left out of the lines.
    directory : str
    title : str
        Prefix of every figure's title (the suite and the machine).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    for axis, rows in sweeps.items():
        x_key, x_label, y_key, y_label = AXES[axis]
        timed = [r for r in rows if "median_s" in r]
        if not timed:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for k, name in enumerate(dict.fromkeys(r["implementation"] for r in timed)):
            points = sorted((r[x_key], r[y_key]) for r in timed if r["implementation"] == name)
            ax.plot(*zip(*points), marker="o", color=f"C{k}", label=name)
        if y_key == "rows_per_s":
            floor = sorted({(r[x_key], r["n_samples"] / r["floor_s"]) for r in timed})
            ax.plot(*zip(*floor), linestyle="--", color="black", label="floor")
        else:
            ax.axhline(1.0, linestyle="--", color="black", label="floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(f"{title}\n{_fixed(timed, axis)}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, f"sweep_{axis}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
