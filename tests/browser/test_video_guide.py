"""The video guide: a screencast per language with captions and transcript, served and embedded by the
portal, and `make guide` (devstack.guide) records it again against a dev stack of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devstack.guide import OUT, caption_texts
from devstack.stack import ROOT, python_path

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
LANGUAGES = ("fr", "de", "it", "en")
MAX_BYTES = 1_000_000
CUE_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def check_guide(directory: Path, lang: str) -> None:
    video = (directory / f"guide-{lang}.webm").read_bytes()
    assert video[:4] == bytes.fromhex("1A45DFA3"), "not a webm (EBML) file"
    assert 10_000 < len(video) < MAX_BYTES
    vtt = (directory / f"guide-{lang}.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n")
    times = [CUE_TIME.match(line).groups() for line in vtt.splitlines() if "-->" in line]
    cues = [(seconds(*t[:4]), seconds(*t[4:])) for t in times]
    assert len(cues) == 4
    assert all(start < end for start, end in cues)
    assert all(a[0] < b[0] and a[1] <= b[0] + 0.001 for a, b in zip(cues, cues[1:], strict=False)), "timestamps must increase"
    texts = caption_texts(lang)
    assert all(t in vtt for t in texts), "every step is captioned in the page's language"
    transcript = (directory / f"guide-{lang}.txt").read_text(encoding="utf-8")
    assert all(t in transcript for t in texts)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_committed_video_guide_is_a_small_webm_with_captions_and_transcript(lang):
    check_guide(OUT, lang)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_guide_page_embeds_the_video_with_captions_and_links_the_transcript(stack, lang):
    base = stack.url("access-portal")
    page = httpx.get(f"{base}/guide?lang={lang}").text
    assert re.search(r"<video controls[^>]*>", page)
    assert f'<source src="/static/guide/guide-{lang}.webm" type="video/webm">' in page
    assert re.search(rf'<track kind="captions" src="/static/guide/guide-{lang}.vtt" srclang="{lang}"', page)
    assert f'href="/static/guide/guide-{lang}.txt"' in page
    for ext, media in (("webm", "video/webm"), ("vtt", "text/vtt"), ("txt", "text/plain")):
        served = httpx.get(f"{base}/static/guide/guide-{lang}.{ext}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(media)
        assert served.content == (OUT / f"guide-{lang}.{ext}").read_bytes()


def test_make_guide_records_a_language_again_against_its_own_stack(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([python_path(), str(ROOT / "tools"),
                                                          str(ROOT / "tools/devinbox")])}
    done = subprocess.run([sys.executable, "-m", "devstack.guide", "--languages", "it", "--out", str(tmp_path)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    check_guide(tmp_path, "it")


async def test_chromium_plays_the_guide_video_and_loads_its_captions_under_the_portal_csp(stack, browser):
    context = await browser.new_context(locale="de-CH")
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    try:
        await page.goto(f"{stack.url('access-portal').replace('127.0.0.1', 'localhost')}/guide?lang=de")
        await page.evaluate("document.querySelector('video').load()")  # preload="none": the patient presses play
        # Polled from outside: the page's CSP forbids the eval that wait_for_function would need.
        for _ in range(100):
            if await page.evaluate("(v => v.readyState >= 1 && v.textTracks[0].cues?.length === 4)"
                                   "(document.querySelector('video'))"):
                break
            await page.wait_for_timeout(100)
        assert await page.evaluate("document.querySelector('video').duration") > 2
        assert await page.evaluate("document.querySelector('video').textTracks[0].cues?.length") == 4
    finally:
        await context.close()
    assert not [c for c in console if "Content Security Policy" in c]
