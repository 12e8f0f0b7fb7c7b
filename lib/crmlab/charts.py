"""House style of every chart: seaborn theme, palette, French number formats.

Every chart has a title that states its finding and axis labels with units; the
notebook prints a sentence that reads it.
"""

from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    try:  # pragma: no cover - depends on the host
        matplotlib.use("agg")
    except Exception:
        pass

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
from cycler import cycler

PALETTE = ["#1f4e79", "#e07b39", "#3a9e6f", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


#: seaborn's ``set_theme(style="whitegrid", palette=PALETTE)`` written out, so that a
#: notebook that draws no seaborn plot does not pay seaborn's import (~1 s, ~100 MB per
#: kernel); the charts that use seaborn import it themselves.
WHITEGRID_RC = {
    "axes.axisbelow": True, "axes.edgecolor": ".8", "axes.grid": True, "axes.labelcolor": ".15",
    "axes.labelsize": 12.0, "axes.linewidth": 1.25, "axes.prop_cycle": cycler("color", PALETTE),
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    "font.size": 12.0, "grid.color": ".8", "grid.linewidth": 1.0, "legend.fontsize": 11.0,
    "legend.title_fontsize": 12.0, "lines.solid_capstyle": "round", "patch.edgecolor": "w",
    "patch.force_edgecolor": True, "text.color": ".15", "xtick.bottom": False, "xtick.color": ".15",
    "xtick.labelsize": 11.0, "xtick.major.size": 6.0, "xtick.major.width": 1.25, "xtick.minor.size": 4.0,
    "xtick.minor.width": 1.0, "ytick.color": ".15", "ytick.labelsize": 11.0, "ytick.left": False,
    "ytick.major.size": 6.0, "ytick.major.width": 1.25, "ytick.minor.size": 4.0, "ytick.minor.width": 1.0,
}


def setup() -> None:
    """Apply the house theme (call once per notebook; idempotent)."""
    plt.rcParams.update(WHITEGRID_RC)
    plt.rcParams.update({
        "figure.figsize": (8, 4.2),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "axes.titleweight": "bold",
        "axes.titlesize": 12,
        "axes.titlelocation": "left",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.formatter.use_locale": False,
    })


def fr_number(x: float, decimals: int = 0) -> str:
    """Format a number the French way: ``12 345,6`` (narrow no-break space for thousands)."""
    if x is None or x != x:
        return "–"
    text = f"{x:,.{decimals}f}"
    return text.replace(",", "\u202f").replace(".", ",")


def fr_percent(x: float, decimals: int = 1) -> str:
    """Format a share (0–1) as a French percentage: ``12,5 %``."""
    if x is None or x != x:
        return "–"
    return f"{fr_number(100 * x, decimals)}\u00a0%"


def fr_money(x: float, currency: str = "EUR", decimals: int = 0) -> str:
    """Format an amount: ``12 345 €``."""
    symbol = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF"}.get(currency, currency)
    return f"{fr_number(x, decimals)}\u00a0{symbol}"


def axis_fr(ax, axis: str = "y", kind: str = "number", decimals: int = 0, currency: str = "EUR") -> None:
    """Format the ticks of an axis in French (``number``, ``percent`` for shares 0–1, ``money``)."""
    fmt = {
        "number": lambda v, _: fr_number(v, decimals),
        "percent": lambda v, _: fr_percent(v, decimals),
        "money": lambda v, _: fr_money(v, currency, decimals),
    }[kind]
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(mticker.FuncFormatter(fmt))


def finish(fig, title: str, xlabel: str | None = None, ylabel: str | None = None, ax=None):
    """Set the finding title and axis labels, tighten the layout, return the figure.

    The figure is closed for pyplot, so Jupyter shows it exactly once: where the
    notebook displays it (``display(fig)`` or as a cell's last expression), never again
    when the cell ends.
    """
    ax = ax or fig.axes[0]
    ax.set_title(title)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    plt.close(fig)
    return fig
