"""Streamlit glue between the sidebar, the pages and cbert_core. Import from the module that holds a name:

* ``state``: the session-state keys several modules share, and first values of widgets;
* ``note_inputs``: the note box (light: drawn before torch is imported, for a fast first paint);
* ``sidebar``: the model, its casing and the run options, deciding this run's settings;
* ``context``: ``page()``, the one accessor a page calls for its model, settings, planned note and trace;
* ``caches``: the shared caches and ``computed()``, the one cache mechanism for analyses, with estimates;
* ``widgets``: progress bars, per-note choices, the part of a long note, knocked-out heads, downloads,
  uploads kept across pages, buttons that ask once, errors shown as messages;
* ``captions``: the plain-language captions of the "Inside the model" page;
* ``icon``: the browser tab's icon, drawn in memory;
* ``target_choice``: target pickers two pages share (a [MASK] and a word there);
* ``auth`` and ``audit``: optional sign-in and the audit log's lines;
* ``training_run`` (what the Fine-tune page's stages share: settings, a stop that keeps the result, the
  live loss, one run's audit line and turn on the cores, saving) and ``train_classify``, ``train_pretrain``, ``train_tagger`` (the three stages).

Figures are built in ``cbert_core.views``; pages wire widgets to analyses to figures.
"""
