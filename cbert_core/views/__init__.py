"""Data in, figure out: plotly figures, the note as HTML, bertviz pages and export bytes.

No torch and no Streamlit: a view takes numpy arrays, strings and result records and returns a
plotly figure, an HTML string or bytes. Everything user-derived is escaped (``labels.escape``).

May import: ``cbert_core.views``, ``cbert_core.errors`` and the base modules.
"""
