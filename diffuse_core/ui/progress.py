"""How a run's progress is shown: the progress bar (HTML) and the chart of how much each step changes the image."""

from __future__ import annotations

import html


def progress_html(done: int, total: int, label: str, tone: str = "") -> str:
    """A progress bar at ``done / total`` with ``label`` under it (in the body's text colour and size; ``tone``
    "error" shows it as a warning)."""
    pct = 100.0 * done / max(total, 1)
    cls = "df-progress-label" + (f" df-progress-{tone}" if tone else "")
    return (f'<div class="df-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="df-progress-bar" style="width:{pct:.1f}%"></div></div>'
            f'<div class="{cls}" role="status">{html.escape(label)}</div>')


def change_chart(changes: list[dict]):
    """Plotly chart: mean |x_t - x_{t+1}| inside and outside the mask at every step of inversion and sampling; its
    axis says what ran ("sampling only (inversion reused)" when a rerun took x_K from the inversion cache)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    ran_inversion = any(c["phase"] == "invert" for c in changes)
    what_ran = "inversion, then sampling" if ran_inversion or not changes else "sampling only (inversion reused)"
    if changes:
        x = list(range(1, len(changes) + 1))
        labels = [f"{c['phase']} {c['index'] + 1}/{c['total']} (t={c['timestep']})" for c in changes]
        fig.add_trace(go.Scatter(x=x, y=[c["inside"] for c in changes], mode="lines+markers", name="inside the mask",
                                 line={"color": "#00b4d8"}, marker={"size": 4}, text=labels,
                                 hovertemplate="%{text}<br>inside: %{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=x, y=[c["outside"] for c in changes], mode="lines+markers",
                                 name="outside the mask (brain)", line={"color": "#f77f00"}, marker={"size": 4},
                                 text=labels, hovertemplate="%{text}<br>outside: %{y:.4f}<extra></extra>"))
        n_inv = sum(1 for c in changes if c["phase"] == "invert")
        if n_inv:
            fig.add_vrect(x0=0.5, x1=n_inv + 0.5, fillcolor="#888", opacity=0.12, line_width=0,
                          annotation_text="inversion: image → noise", annotation_position="top left",
                          annotation_font_size=11)
        fig.add_annotation(x=n_inv + 0.5 + (len(changes) - n_inv) / 2, y=1.0, yref="paper", showarrow=False,
                           text="sampling: noise → healthy image", yanchor="top", font={"size": 11})
    fig.update_layout(height=320, margin={"l": 60, "r": 10, "t": 60, "b": 40}, template="plotly_white",
                      xaxis_title=f"step ({what_ran})",
                      yaxis_title="mean |change|",
                      title={"text": "How much each step changes the image", "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.3}, xaxis={"dtick": 1 if len(changes) <= 24 else None})
    return fig


def step_fraction(item: dict) -> tuple[int, int]:
    """(steps done, steps in all) of a "step" item: inversion first, then sampling."""
    done = item["index"] + 1 + (item["total"] if item["phase"] == "sample" else 0)
    return done, 2 * item["total"]
