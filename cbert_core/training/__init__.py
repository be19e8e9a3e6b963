"""The training stages, each on a private copy of the shared model: continued masked-LM pretraining on
notes (``pretrain``), a note classifier (``finetune``) and a word tagger on labelled spans (``tagger``);
what they share (``loop``: the private copy, frozen layers, the step loop, the split, the checkpoint)
and training only the top layers without re-running the frozen bottom (``frozen_trunk``).

May import: ``cbert_core.model``, ``cbert_core.text``, ``cbert_core.run``, ``cbert_core.analyses``
(its statistics, the pseudo-likelihood and fill-mask), ``cbert_core.corpus.collection`` (the labelled data), ``cbert_core.serving.speed``
and the base modules. Not views.
"""
