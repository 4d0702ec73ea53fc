"""The web app's gradio layer: the only package of :mod:`diffuse_core` that imports gradio.

:mod:`~diffuse_core.ui.layout` composes the page from its tabs, each built and wired in its own module
(:mod:`~diffuse_core.ui.explore_tab`, :mod:`~diffuse_core.ui.quiz_tab`, :mod:`~diffuse_core.ui.healthy_tab`,
:mod:`~diffuse_core.ui.curate_tab`), over the callbacks of :mod:`~diffuse_core.ui.explore`,
:mod:`~diffuse_core.ui.rapids`, :mod:`~diffuse_core.ui.outline_practice`, :mod:`~diffuse_core.ui.healthy` and
:mod:`~diffuse_core.ui.curate`, plus the HTTP endpoints of :mod:`~diffuse_core.ui.api`; :mod:`~diffuse_core.ui.launch`
serves it, with every model run bounded in time and stopped by a cancel (:mod:`~diffuse_core.ui.bounded`) and every
request bounded in size (:mod:`~diffuse_core.ui.limits`). The callbacks are plain functions over
:mod:`diffuse_core.studio` (the tests call them directly); they format, the studio and the engine compute.
"""
