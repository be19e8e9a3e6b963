"""cbert_core: load a clinical BERT checkpoint and look inside it, without any UI.

Data flows one way: text -> :func:`trace` -> analyses -> views. Nothing in this
package imports streamlit.
"""
