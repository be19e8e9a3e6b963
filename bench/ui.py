"""What the browser receives for the Attention page, and how fast it draws, beside plain bertviz.

Starts the app as `make run` does on the real-size (Bio_ClinicalBERT-shaped) checkpoint, drives it in
headless Chromium and prints:
  * cold starts (a fresh server each, a browser opened the moment its health endpoint answers):
    whether the sidebar ever showed the pages/ folder's listing, and the seconds from health to the
    note box and to the model loaded (the note box's share of that wait is the ratio reported);
and at 64, 256 and 512 tokens:
  * bytes the app sends (websocket) when opening the Attention page, for its default view and for
    the bertviz head and model views;
  * seconds from the click to a drawn page, first visit and again after visiting another page
    (nothing recomputed), and after switching the layer;
  * the size of the page plain bertviz (html_action="return", every layer) would send.

    .venv/bin/python bench/ui.py [--quick]

``--quick``: the bundled model (6 layers, a bare encoder) at 48 tokens, one cold start.
"""

from __future__ import annotations

import time

import numpy as np

from common import announce, bench_parser, note_with_tokens, shaped_checkpoint

# isort: split
# after common, which puts the repository and tests/ on the path
from browser_support import browser, drawn_after, open_page, running_app, set_note, settle, watch, watch_cold_start
from cbert_core.model.loading import load_model
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace

SIZES = (64, 256, 512)
QUICK_SIZES = (48,)
GOALS = {"payload_mb": 5.0, "first_draw_s": 2.0, "cached_draw_s": 1.0, "note_box_s": 3.0}
COLD_STARTS = 3
FOLDER_LISTING = {"app", "attention", "attribution", "compare", "corpus", "embeddings", "finetune", "inside", "note",
                  "predictions", "tokenization"}  # Streamlit's own listing of pages/ (file names)


def cold_starts(model: str, count: int) -> None:
    """Start a fresh server ``count`` times and print what a browser opened at once saw, and when."""
    servers = f"{count} fresh server{'s' if count > 1 else ''}"
    checkpoint = "bundled" if model == "bundled" else "the checkpoint"
    print(f"\ncold start ({servers}, CBERT_MODEL={checkpoint}): seconds after the health endpoint answered")
    with browser() as chromium:
        for attempt in range(1, count + 1):
            with running_app(env={"CBERT_MODEL": model, "HF_HUB_OFFLINE": "1"}) as server:
                seen = watch_cold_start(chromium, server)
            listing = sorted(seen.navigation_seen & FOLDER_LISTING)
            note_box = f"{seen.note_box_s:.2f}" if seen.note_box_s is not None else "never"
            ready = f"{seen.model_ready_s:.2f}" if seen.model_ready_s is not None else "never"
            share = (f"{seen.note_box_s / seen.model_ready_s:.2f}" if seen.note_box_s and seen.model_ready_s
                     else "-")
            print(f"  start {attempt}: folder listing {'SEEN ' + str(listing) if listing else 'never shown'}; "
                  f"note box {note_box} s (goal < {GOALS['note_box_s']} s), model loaded {ready} s, "
                  f"note box / model {share}")


def plain_bertviz_bytes(attention: np.ndarray, tokens: list[str], exact: bool) -> tuple[int, str]:
    """Size of bertviz's head_view page for every layer: exact, or one layer times the layer count."""
    import torch
    from bertviz import head_view

    if exact:
        layers = [torch.from_numpy(attention[layer][None].astype(np.float32)) for layer in range(len(attention))]
        return len(head_view(layers, tokens, html_action="return").data.encode()), "exact"
    one = head_view([torch.from_numpy(attention[0][None].astype(np.float32))], tokens, html_action="return")
    return len(one.data.encode()) * len(attention), "one layer x layers"


def choose_view(tab: object, name: str) -> None:
    tab.locator('[data-testid="stSelectbox"]', has_text="View").first.click()
    tab.get_by_role("option", name=name).click()


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    announce(args.quick)
    sizes = QUICK_SIZES if args.quick else SIZES
    model = "bundled" if args.quick else str(shaped_checkpoint())  # CBERT_MODEL for the server
    loaded = load_model(model)
    tokenizer = loaded.tokenizer()
    print(f"model: {'the bundled ' + loaded.info.name if args.quick else 'Bio_ClinicalBERT-shaped checkpoint'} "
          f"({loaded.info.num_layers} layers x {loaded.info.num_heads} heads), app started with make run")
    cold_starts(model, 1 if args.quick else COLD_STARTS)
    rows = []
    with running_app(env={"CBERT_MODEL": model, "HF_HUB_OFFLINE": "1"}) as server, browser() as chromium:
        context = chromium.new_context(viewport={"width": 1500, "height": 1400})
        tab = context.new_page()
        traffic = watch(tab)
        tab.goto(server.url)
        settle(tab)
        for round_, size in enumerate(sizes):
            text = note_with_tokens(tokenizer, size - 2, quick=args.quick)
            set_note(tab, text)
            reference = trace(loaded, plan_note(loaded, text))
            traffic.reset()
            first = open_page(tab, "Attention", plots=2)
            heads_bytes = traffic.websocket_bytes  # plotly.js itself arrives once over HTTP and is cached
            open_page(tab, "Note")
            cached = open_page(tab, "Attention", plots=2)
            layer_input = tab.locator('[data-testid="stMain"] input[aria-label="Layer"]')
            head = tab.locator('[data-testid="stMain"] input[aria-label="Head"]').input_value()
            new_layer = int(layer_input.input_value()) % loaded.info.num_layers + 1  # the next layer
            layer_input.fill(str(new_layer))
            started = time.perf_counter()
            layer_input.press("Enter")
            # drawn when the heatmap's title names the new layer (the page opens on the most structured head)
            layer_switch = drawn_after(tab, started, plots=2, text=f"L{new_layer} H{head}")
            traffic.reset()
            choose_view(tab, "bertviz head view")
            settle(tab)
            head_bytes = traffic.websocket_bytes
            traffic.reset()
            choose_view(tab, "bertviz model view")
            settle(tab)
            model_bytes = traffic.websocket_bytes
            choose_view(tab, "Heads")
            settle(tab)
            plain, how = plain_bertviz_bytes(reference.attentions[0], list(reference.tokens), exact=size <= 64)
            rows.append((size, len(reference.tokens), heads_bytes, head_bytes, model_bytes, first, cached,
                         layer_switch, plain, how))
            open_page(tab, "Note")
        context.close()
        assert not traffic.outside_requests, traffic.outside_requests

    print("\n tokens | Attention page MB (heads / bertviz head / model view) | draw s (first / again / layer)"
          " | plain bertviz MB | ratio")
    for size, positions, heads, head, model, first, cached, layer, plain, how in rows:
        biggest = max(heads, head, model)
        print(f" {size:6d} | {heads / 1e6:6.2f} / {head / 1e6:6.2f} / {model / 1e6:6.2f}"
              f"                       | {first:5.2f} / {cached:5.2f} / {layer:5.2f}"
              f"             | {plain / 1e6:10.1f} ({how}) | {plain / biggest:7.0f}x smaller")
    last = rows[-1]
    print(f"\n{last[0]} tokens: largest Attention-page payload {max(last[2:5]) / 1e6:.2f} MB (goal <= "
          f"{GOALS['payload_mb']} MB); first draw {last[5]:.2f} s (goal < {GOALS['first_draw_s']} s); "
          f"drawn again {last[6]:.2f} s, after a layer switch {last[7]:.2f} s (goal <= {GOALS['cached_draw_s']} s)")


if __name__ == "__main__":
    main()
