"""Figures of paper B's results, one function per figure, each returning a :class:`matplotlib.figure.Figure`.

Figures are built without pyplot, so a library call never displays a figure by itself; the notebook
shows the one an :class:`~kl_repro.paper_b.report.Artefact` carries.  Captions name profile, sizes and
seeds (:func:`kl_repro.core.plotting.caption`).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from kl_repro.core import plotting

__all__ = ["ou_figure", "mixture_spectra_figure", "image_spectra_figure", "e1_figure", "e2_figure", "table1_figure",
           "grids_figure", "table2_figure", "table3_figure", "fig2_figure", "score_training_figure"]


def ou_figure(ou: dict, caption: str) -> Figure:
    """OU: eigenvalues of the truncated basis and of plain Tikhonov against ``-n`` (left); FP eigen-densities (right)."""
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2)
    n = np.arange(len(ou["lam_exact"]))
    axes[0].plot(n, ou["lam_exact"], "-", color="gray", label=r"exact $\lambda_n=-n$")
    axes[0].plot(n, ou["lam_truncated"], "o", ms=4, label="gEDMD, truncated basis")
    axes[0].plot(np.arange(len(ou["lam_tikhonov"])), ou["lam_tikhonov"], "x", ms=5, label="gEDMD, Tikhonov only")
    axes[0].set(xlabel="index n", ylabel=r"$\lambda_n$", title="OU spectrum: spurious near-zero values without truncation")
    axes[0].legend(fontsize="small")
    for k, (est, tgt) in enumerate(ou["densities"]):
        line, = axes[1].plot(ou["x"], tgt, lw=2, alpha=0.5)
        axes[1].plot(ou["x"], est, "--", color=line.get_color(), label=f"n = {k}")
    axes[1].set(xlabel="x", title="OU FP eigen-densities: gEDMD (dashed) vs smoothed Hermite")
    axes[1].legend()
    fig.suptitle(caption, fontsize="small")
    fig.tight_layout()
    return fig


def mixture_spectra_figure(mix: dict, caption: str) -> Figure:
    """Spectra of the VE mixture against ``sigma*`` and the top eigen-densities beside ``p_t*^2 * k``."""
    fig = Figure(figsize=(12, 7))  # two rows of three: readable at the page's width
    axes = np.ravel(fig.subplots(2, 3))
    axes[5].set_axis_off()
    for r in (r for r in mix["rows"] if r["sde"] == "ve"):
        axes[0].plot(np.arange(len(r["lam_over_a"])), np.real(r["lam_over_a"]), "o-", ms=3, label=f"σ* = {r['sigma_star']}")
    axes[0].set(xlabel="index", ylabel=r"Re $\lambda$ / $g(t^*)^2$", title="FP spectrum against t*", ylim=(-25, 1))
    axes[0].legend(fontsize="small")
    show = mix["show"]
    ext = [mix["grid"][0], mix["grid"][-1]] * 2
    axes[1].imshow(show["p2"].T, origin="lower", extent=ext, cmap="viridis")
    axes[1].set_title(f"$p_{{t^*}}^2 * k$, σ* = {show['sigma_star']}")
    for j in range(3):
        rho = show["rho"][:, :, j]
        axes[2 + j].imshow(rho.T, origin="lower", extent=ext, cmap="RdBu_r", vmin=-np.abs(rho).max(), vmax=np.abs(rho).max())
        axes[2 + j].set_title(f"FP eigen-density ρ_{j}")
    fig.suptitle(caption, fontsize="small")
    fig.tight_layout()
    return fig


def image_spectra_figure(img: dict) -> Figure | None:
    """Re lambda over the Laplacian shift against the index, one line per ``t*`` (None when the data set is absent)."""
    if not img.get("available"):
        return None
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for r in img["rows"]:
        ax.plot(np.real(r["lam"]) / abs(r["laplacian_shift"]), "o-", ms=3, label=f"t* = {r['t_star']:g}")
    ax.set(xlabel="index", ylabel=r"Re $\lambda$ / |Laplacian shift|", title=f"{img['dataset']}: FP spectrum, ideal score")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def e1_figure(e1: dict) -> Figure:
    """E1: the propagated OU densities of every coefficient rule against the exact one (``tau = 0.5``, ``L = 5``)."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for name, dens in e1["curves"].items():
        ax.plot(e1["x"], dens, lw=2.5 if name == "exact" else 1.2, label=name)
    ax.set(xlabel="x", ylabel="density", title=r"OU, $\tau$ = 0.5, L = 5", xlim=(-5, 6))
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def e2_figure(e2: dict, caption: str) -> Figure:
    """E2: scatter plots of each sampler's 2-D samples at the main ``sigma*``, means marked."""
    keys = [k for k in e2["samples"] if k[0] == "main"]
    ncol = min(4, len(keys))  # at most four panels a row: readable at the page's width
    nrow = int(np.ceil(len(keys) / ncol))
    fig = Figure(figsize=(3.3 * ncol, 3.5 * nrow))
    axes = np.ravel(fig.subplots(nrow, ncol, sharex=True, sharey=True))
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    for ax, key in zip(axes, keys):
        x = e2["samples"][key]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=plotting.color_for(key[1]))
        ax.scatter(*np.array(e2["means"]).T, marker="x", color="k")
        ax.set_title(key[1].replace("FP ", "").replace(", init=", "\ninit=").replace("(reverse", "\n(reverse"), fontsize="small")
        ax.set(xlim=(-5, 5), ylim=(-3.5, 5))
    fig.suptitle(caption, fontsize="small")
    fig.tight_layout()
    return fig


def table1_figure(t1: dict) -> Figure:
    """Table 1: seconds per image in batches of 100, with and without the FP set-up."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    names = [r["method"] for r in t1["rows"]]
    pos = np.arange(len(names))  # two bars side by side per method, so that neither hides the other
    ax.barh(pos - 0.2, [r["time_100"] / 100 for r in t1["rows"]], height=0.4, color=plotting.COLOURS[0],
            label="per image, batches of 100 (with set-up)")
    ax.barh(pos + 0.2, [r.get("time_100_no_setup", r["time_100"]) / 100 for r in t1["rows"]], height=0.4,
            color=plotting.COLOURS[9], label="without FP set-up")
    ax.set_yticks(pos, names)
    ax.invert_yaxis()
    ax.set(xlabel="seconds per image (this CPU)", title="Table 1 on this machine")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def grids_figure(panels: list[tuple[str, object]], caption: str, ncol: int = 3) -> Figure:
    """Image grids, one panel per ``(title, images (N, C, H, W))``, ``ncol`` panels per row."""
    nrow = int(np.ceil(len(panels) / ncol))
    fig = Figure(figsize=(4.2 * ncol, 4.2 * nrow))
    axes = np.ravel(fig.subplots(nrow, ncol))
    for ax in axes:
        ax.set_axis_off()
    for ax, (title, imgs) in zip(axes, panels):
        plotting.show_grid(ax, imgs, title=title)
    fig.suptitle(caption, fontsize="small")
    fig.tight_layout()
    return fig


def _against_paper(ax, xs, ours, paper_x, paper_fid, fd_name: str, dataset: str, log: bool) -> None:
    """Our Frechet distance (when computed) and the paper's FID against M or L, each divided by its own mean.

    One axis for both, so that a spread of 5 % (the paper) and one of 168 % (ours) look as different as they are;
    a twin axis would stretch each curve to full height.
    """
    plot = ax.semilogx if log else ax.plot
    if ours is not None:
        plot(xs, np.asarray(ours) / np.mean(ours), "o-", color=plotting.color_for("ours"),
             label=f"ours: {fd_name} ({dataset}), mean {np.mean(ours):.3g}")
    plot(paper_x, np.asarray(paper_fid) / np.mean(paper_fid), "s--", color=plotting.PAPER_COLOUR,
         label=f"paper: FID (CIFAR-10), mean {np.mean(paper_fid):.3g}")
    ax.axhline(1.0, color="0.7", lw=0.8)
    ax.set_ylabel("score / its mean over the sweep")
    ax.legend(fontsize="small")


def _sweep_figure(rows: list[dict], key: str, paper_table: dict, fd_name: str, dataset: str, log: bool):
    """Two panels; the left one shows our quality against ``key`` (``"M"`` or ``"L"``) beside the paper's."""
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 2)
    xs = [r[key] for r in rows]
    ours = [r["fd"]["value"] for r in rows] if all(r.get("fd") for r in rows) else None
    _against_paper(axes[0], xs, ours, paper_table[key], paper_table["FID"], fd_name, dataset, log=log)
    return fig, axes, xs


def table2_figure(t2: dict, paper: dict, fd_name: str, dataset: str) -> Figure:
    """Table 2: quality and 100-image sampling time against M, ours beside the paper's."""
    fig, axes, Ms = _sweep_figure(t2["rows"], "M", paper["table2"], fd_name, dataset, log=False)
    axes[0].set(xlabel="M", title="Quality against M")
    axes[1].loglog(Ms, [r["time_100_no_setup"] for r in t2["rows"]], "o-", color=plotting.color_for("ours"),
                   label="ours: 100 images, sampling")
    axes[1].loglog(paper["table2"]["M"], paper["table2"]["time_100_images_s"], "s--", color=plotting.PAPER_COLOUR,
                   label="paper: 100 images")
    axes[1].xaxis.set_minor_formatter(NullFormatter())  # minor tick labels of a log axis overlap
    axes[1].set(xlabel="M", ylabel="seconds for 100 images", title="Time against M")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def table3_figure(t3: dict, paper: dict, fd_name: str, dataset: str) -> Figure:
    """Table 3: quality against L beside the paper's, and why L matters little (weight correlation, displacement)."""
    fig, axes, Ls = _sweep_figure(t3["rows"], "L", paper["table3"], fd_name, dataset, log=True)
    axes[0].set(xlabel="L", title="Quality against L")
    axes[1].semilogx(Ls, [r["weight_corr_with_L1"] for r in t3["rows"]], "o-", label="corr(w_L, w_1)")
    axes[1].semilogx(Ls, [r["displacement_vs_L5_over_train_nn"] for r in t3["rows"]], "s-", label="displacement vs L=5 / train NN")
    axes[1].set(xlabel="L", ylabel="correlation / distance ratio", title="Why L matters little")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def fig2_figure(f2: dict) -> Figure:
    """Fig. 2: the initialisations (top), the paper preset's raw outputs and the recommended preset's Tweedie outputs."""
    n = len(f2["kinds"])
    fig = Figure(figsize=(1.1 * n, 4.2))
    axes = fig.subplots(3, 1)
    rows = [("initialisations", f2["inits"]), ("paper preset (last iterate)", f2["runs"]["paper"]["images"]),
            ("recommended preset (Tweedie)", f2["runs"]["recommended"]["images"])]
    for ax, (title, imgs) in zip(axes, rows):
        plotting.show_grid(ax, imgs, nrow=n, title=title)
    fig.tight_layout()
    return fig


def score_training_figure(networks: dict, caption: str) -> Figure:
    """The DSM loss (paper B eq. (3)) of each trained score network against the training step (mean per 1 % of steps)."""
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    for kind, n in networks.items():
        curve = np.asarray(n["loss_curve"])
        ax.plot(np.linspace(0, n["steps"], len(curve)), curve, label=f"{kind.upper()}: {n['label']}")
    ax.set(xlabel="training step", ylabel="DSM loss (eq. (3), per image)", yscale="log", title="Score network training")
    ax.legend(fontsize="small")
    fig.suptitle(caption, fontsize="small")
    fig.tight_layout()
    return fig
