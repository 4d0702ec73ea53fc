"""The page's look: its CSS (progress bar, hints, gallery captions, the verdict line) and theme."""

import gradio as gr

CSS = """
.df-progress { width: 100%; height: 12px; background: var(--neutral-200, #e5e7eb); border-radius: 6px;
               overflow: hidden; }
.df-progress-bar { height: 100%; background: linear-gradient(90deg, #0ea5e9, #6366f1); transition: width .2s; }
.df-progress-label { font-size: 1rem; font-weight: 500; margin-top: 6px; color: var(--body-text-color, #1f2937); }
.df-progress-error { color: #b42318; }
.df-stale { background: #fff4d6; border: 2px solid #d97706; color: #7a3e00; border-radius: 8px; padding: 8px 12px;
            font-size: 1.05em; }
.df-results .image-container img { object-fit: contain; }
#df-verdict, #df-rp-verdict { font-size: 1.2em; line-height: 1.4; padding: 8px 14px; border-radius: 8px;
                              border-left: 6px solid #0284c7; background: var(--neutral-50, #f8fafc); }
#df-gallery .thumbnail-item { aspect-ratio: auto; display: flex; flex-direction: column; }
#df-gallery .thumbnail-item img { aspect-ratio: 1 / 1; width: 100%; height: auto; object-fit: contain; }
#df-gallery .caption-label { position: static; max-width: 100%; border: none; border-radius: 0; font-size: 0.75em;
                             white-space: pre-line; line-height: 1.25; padding: 3px 5px; }
#df-gallery .grid-container, #df-review .grid-container { padding-top: 40px; }
@media (max-width: 640px) {
  #df-review .grid-container, #df-gallery .grid-container { padding-top: 64px; }
  #df-gallery .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)); }
}
.df-status { font-size: 0.9em; }
.df-hint { font-size: 0.8em; color: var(--body-text-color-subdued, #666); }
footer { display: none !important; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="sky")
