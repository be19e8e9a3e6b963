"""Plain-language captions for the "Inside the model" page, written for clinicians.

Each panel shows one constant; jargon gets a one-line explanation where it first appears.
"""

from __future__ import annotations

from cbert_core.model.loading import HeadKind

EMBEDDINGS_CAPTION = (
    "Before any reading happens, each word piece becomes a list of numbers (a vector) by adding up learned "
    "vectors: one for the word piece itself, one for its position in the note, and one for the segment (which "
    "of two passages it belongs to; a single note is always the first segment, and DistilBERT models have no "
    "segment part). The bars show how large each part is for each piece, so you can see how much of the "
    "starting point comes from the word and how much from where it sits. The sum is then rescaled by a "
    "LayerNorm (a step that shifts and scales each vector so its numbers average zero with a fixed spread) "
    "and enters layer 1."
)
EMBEDDING_PROJECTION_NOTE = (
    "This ELECTRA model builds its starting vectors in a smaller size and then stretches them to the size "
    "its layers use with one more learned step (a projection); the parts are shown before that step."
)
ATTENTION_STEP_CAPTION = (
    "How one attention head decides where the chosen word piece looks, step by step, with the model's own "
    "numbers. Every piece has a query (what it is looking for), a key (what it offers to be found by) and a "
    "value (what it passes on). The match score between the chosen piece and each piece is the dot product "
    "of the query with that key (multiply the numbers pair by pair and add them up), divided by the square "
    "root of the vector length to keep scores in a workable range. Softmax turns the scores into weights that "
    "are all positive and add up to 100%. The head's output is the weighted average of the values."
)
HEAD_SHARE_CAPTION = (
    "A layer has several heads working side by side; one learned mixing step (the output projection) combines "
    "their outputs into the layer's attention update. The share is the size of this head's part of that update "
    "at the chosen piece, compared with the sum over all heads of the layer. A large share means this head "
    "changes the piece's representation the most here; it does not by itself mean the head is right or "
    "clinically meaningful."
)
ENCODER_STACK_CAPTION = (
    "Each layer keeps a running summary vector per word piece (the residual stream) and changes it in two "
    "steps: attention, which mixes in information from other pieces, and the feed-forward step, which "
    "processes each piece on its own. The maps show how big each change is relative to the summary it is added "
    "to: 0.1 means a change about a tenth the size of what was already there. The line shows the size (norm: "
    "the length of the vector) of the running summary after each layer. Large relative changes mark the layers "
    "where a piece is rewritten most."
)
LOGIT_LENS_CAPTION = (
    "The logit lens asks, at every layer: if the model had to name the word here right now, what would it say? "
    "It applies the model's own final word-guessing step to the chosen piece's summary after each layer "
    "(typically at a [MASK]). Watch where the final answer first appears and how its probability grows. "
    "Guesses from early layers are only an approximation: the guessing step was trained on the last layer."
)
OUTPUT_CAPTIONS: dict[HeadKind, str] = {
    "masked-lm": (
        "The final step turns the last layer's vector at each piece into a probability for every word piece in "
        "the model's vocabulary. Shown: the most likely pieces at the chosen position. At a [MASK] this is the "
        "model's fill-in-the-blank guess; it reflects patterns in its training text, not clinical truth."
    ),
    "token-classification": (
        "A classification layer turns the last layer's vector at each piece into one score per label (logits: "
        "unbounded scores, higher is more likely); softmax turns them into probabilities that add up to 100% "
        "for each piece."
    ),
    "sequence-classification": (
        "A classification layer reads the summary slot at the start of the note ([CLS]) and turns it into one "
        "score per label (logits: unbounded scores, higher is more likely); softmax turns them into "
        "probabilities that add up to 100%."
    ),
    "encoder": (
        "This checkpoint has no prediction head: its output is a vector of numbers per piece. Shown: the vector "
        "at [CLS] (the summary slot at the start), the average of all pieces' vectors (how sentence-embedding "
        "models such as the bundled one summarize a text) and, when the checkpoint has one, the pooled vector "
        "(the [CLS] vector after one more learned step)."
    ),
}
CHECK_CAPTION = (
    "Check: the page recomputes this layer from the captured pieces with the model's own weights and shows the "
    "largest difference from what the model computed. Differences around 0.000001 are ordinary rounding in "
    "computer arithmetic; anything large would mean the numbers shown are not the model's."
)
CAPTIONS: dict[str, str] = {
    "embeddings": EMBEDDINGS_CAPTION,
    "embedding_projection": EMBEDDING_PROJECTION_NOTE,
    "attention_step": ATTENTION_STEP_CAPTION,
    "head_share": HEAD_SHARE_CAPTION,
    "encoder_stack": ENCODER_STACK_CAPTION,
    "logit_lens": LOGIT_LENS_CAPTION,
    "check": CHECK_CAPTION,
    **{f"output.{kind}": caption for kind, caption in OUTPUT_CAPTIONS.items()},
}
