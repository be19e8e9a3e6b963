"""The browser tab's icon: a teal cross drawn in memory (no file, no CDN). Light: no torch."""

from __future__ import annotations

import streamlit as st
from PIL import Image, ImageDraw


@st.cache_resource(show_spinner=False)
def tab_icon() -> Image.Image:
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 62, 62), radius=14, fill=(31, 111, 139, 255))
    draw.rectangle((26, 12, 38, 52), fill="white")
    draw.rectangle((12, 26, 52, 38), fill="white")
    return icon
