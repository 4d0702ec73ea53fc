"""The page's look: its CSS (progress bar, hints, gallery captions) and theme."""

import gradio as gr

CSS = """
.df-progress { width: 100%; height: 12px; background: var(--neutral-200, #e5e7eb); border-radius: 6px;
               overflow: hidden; }
.df-progress-bar { height: 100%; background: linear-gradient(90deg, #0ea5e9, #6366f1); transition: width .2s; }
.df-progress-label { font-size: 0.85em; margin-top: 4px; color: var(--body-text-color-subdued, #666); }
.df-status { font-size: 0.9em; }
.df-hint { font-size: 0.8em; color: var(--body-text-color-subdued, #666); }
#df-gallery .caption-label { font-size: 0.75em; }
footer { display: none !important; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="sky")
