"""Running a note through the model: the run plan, the trace, the lean forward pass, the exact walk.

Modules: ``plan`` (:class:`~cbert_core.run.plan.RunOptions` and the one planner that turns a model,
a note and the options into the tokenized, segmented, windowed note every run uses), ``trace`` (one
hooked pass into an immutable :class:`~cbert_core.run.trace.Trace`), ``forward`` (the lean forward
pass for predictions and gradients, memory bounds), ``inside_capture`` (the exact float32 walk of one
window), ``encode`` (many notes in padded batches), ``note_parts`` (windows, sections and sentences
a view can show), ``worker_requests`` (a trace or a walk of one window, asked of a model worker
process).

May import: ``cbert_core.model``, ``cbert_core.text``, ``cbert_core.serving.speed`` (what a run
costs), and the base modules. Not analyses, training, corpus or views.
"""
