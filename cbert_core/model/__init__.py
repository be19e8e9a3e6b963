"""The model and its hooks: find and load a checkpoint, know where things live inside it, hook it.

Modules: ``hub`` (never hang on the Hugging Face hub), ``loading`` (resolve and load a checkpoint,
its tokenizers and :class:`~cbert_core.model.loading.ModelInfo`), ``casing`` (cased vocabulary,
lower-casing tokenizer), ``architecture`` (where the layers, heads and embeddings are),
``attention_kernel`` (the eager attention the explorer loads models with), ``hooks`` (the only place
that registers hooks: capture and knockout, always removed), ``precision`` (fp32 / bf16 autocast),
``heads`` (one adapter per head kind).

May import: ``cbert_core.errors``, ``cbert_core.progress``, ``cbert_core.records``. Nothing else of
cbert_core: text, running and analyses build on the model, never the other way round.
"""
