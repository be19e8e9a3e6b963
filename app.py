"""Clinical BERT explorer: the entry script (streamlit run app.py).

Order matters for the first impression: the page set-up, the sign-in gate (when the secrets configure
sign-in, nothing below it is drawn or sent to a browser that is not signed in and allowed), the
navigation and the note box come first (nothing heavy imported yet), then torch and the model load,
with the sidebar's progress, then the page the user picked runs. Pages are thin views in pages/; the
logic is in cbert_core.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Several sessions share two cores: OpenMP threads that spin while waiting starve the others
# (torch ran 7-100x slower under load with the default policy). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

from ui.audit import set_run  # noqa: E402
from ui.auth import account_sidebar, sign_in_gate  # noqa: E402
from ui.icon import tab_icon  # noqa: E402
from ui.note_inputs import note_inputs  # noqa: E402

# .streamlit/config.toml hides the sidebar navigation: with a pages/ folder, Streamlit would otherwise show
# that folder's file listing on the first run after a start, until this script's own navigation arrives.
st.set_option("client.showSidebarNavigation", True)
# The tab icon is drawn here rather than named (":material/..." or an emoji), which the browser would
# fetch from a CDN: nothing may leave the machine.
st.set_page_config(page_title="Clinical BERT explorer", page_icon=tab_icon(), layout="wide",
                   initial_sidebar_state="expanded")
identity = sign_in_gate()  # stops here unless sign-in is off, or the user is signed in and allowed

PAGES_FOLDER = Path(__file__).resolve().parent / "pages"
# The sidebar's order, which is also the order the pages' imports are warmed up in (the pages most people open
# first are ready first): file in pages/, title, icon
PAGE_TABLE = (
    ("note.py", "Note", ":material/description:"),
    ("inside.py", "Inside the model", ":material/biotech:"),
    ("tokenization.py", "Tokenization", ":material/extension:"),
    ("attention.py", "Attention", ":material/visibility:"),
    ("embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("predictions.py", "Predictions", ":material/target:"),
    ("attribution.py", "Attribution", ":material/balance:"),
    ("mechanisms.py", "Mechanisms", ":material/science:"),
    ("corpus.py", "Corpus", ":material/library_books:"),
    ("evaluate.py", "Evaluate", ":material/fact_check:"),
    ("compare.py", "Compare", ":material/compare_arrows:"),
    ("finetune.py", "Fine-tune", ":material/model_training:"),
)
PAGES = [st.Page(f"pages/{file}", title=title, icon=icon, default=index == 0)
         for index, (file, title, icon) in enumerate(PAGE_TABLE)]

navigation = st.navigation(PAGES)
set_run(user=identity.user, page=navigation.title)  # for the audit log's lines
account_sidebar(identity)
model_box = st.sidebar.container()  # filled once the model is loaded, drawn above the note box
note = note_inputs()

# Now the heavy part: torch, transformers and the model (the note box is already on screen).
from cbert_core.views.look import make_light_template_default  # noqa: E402
from ui.context import begin_run  # noqa: E402
from ui.sidebar import model_sidebar  # noqa: E402
from ui.warm_up import warm_up_pages  # noqa: E402

# After 'import streamlit' (which makes its own template plotly's default): figures then get the light template
# as they are created, not as a validated copy each (cbert_core/views/look.py)
make_light_template_default()
begin_run()
# Once per server, while the model loads: every page's imports in the background, in the sidebar's order, so no
# first visit pays for them
warm_up_pages(tuple(PAGES_FOLDER / file for file, _, _ in PAGE_TABLE))
model_sidebar(model_box, note)
navigation.run()
