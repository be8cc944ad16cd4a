"""The video guide (issue 20, item 13): per language a WebM and an MP4 of 60 to 120 seconds with a spoken
narration whose sentences are the captions and the transcript, paced for reading; the guide page offers both
files, the captions and the transcript; and each screen of the committed videos is the portal of today.

`make guide` (devstack.guide) makes them against a dev stack of its own. These tests read the committed files
(ffprobe, and ffmpeg to decode: nothing is encoded here) and walk the patient's way once per language on the
test stack with the same code that recorded them.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import subprocess
from array import array
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from access_portal.guide_script import SCRIPT, narration
from devstack.guide import FPS, HEIGHT, OUT, WIDTH, capture, code_minutes
from devstack.stack import http
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
LANGUAGES = ("fr", "de", "it", "en")
MAX_BYTES = 3_000_000  # per file: small enough for a patient's phone plan
CUE_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")
CODECS = {"webm": ("vp9", "opus"), "mp4": ("h264", "aac")}
RERECORD = (
    "The video guide no longer shows the portal of today: run `make guide` and commit "
    "services/access-portal/access_portal/static/guide/ (it re-records every language)."
)


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def cues_of(lang: str, directory: Path = OUT) -> list[tuple[str, float, float, str]]:
    """(id, start, end, text) of every caption of the committed WebVTT file."""
    blocks = (directory / f"guide-{lang}.vtt").read_text(encoding="utf-8").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in filter(None, blocks[1:]):
        ident, times, *text = block.strip("\n").split("\n")
        found = CUE_TIME.match(times)
        assert found, times
        cues.append((ident, seconds(*found.groups()[:4]), seconds(*found.groups()[4:]), "\n".join(text)))
    return cues


def screen_times(cues) -> dict[str, float]:
    """When each screen is fully shown: the middle of its sentences (the cross-fades are between them)."""
    spans: dict[str, list[float]] = {}
    for ident, start, end, _ in cues:
        span = spans.setdefault(ident.rsplit("-", 1)[0], [start, end])
        span[1] = end
    return {screen: (start + end) / 2 for screen, (start, end) in spans.items()}


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return json.loads(out)


def top_level_boxes(mp4: bytes) -> list[str]:
    boxes, at = [], 0
    while at + 8 <= len(mp4):
        size, kind = struct.unpack(">I4s", mp4[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", mp4[at + 8 : at + 16])[0]
        boxes.append(kind.decode("latin-1"))
        at += size if size else len(mp4)
    return boxes


def loudness(path: Path, rate: int = 8000) -> array:
    """The narration decoded (mono, 16 bit), as RMS per tenth of a second."""
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    samples = array("h", pcm)
    step = rate // 10
    return array(
        "d",
        ((sum(s * s for s in samples[i : i + step]) / step) ** 0.5 for i in range(0, len(samples) - step + 1, step)),
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_has_a_webm_and_an_mp4_of_60_to_120_s_with_a_voice(lang):
    for ext, (video, audio) in CODECS.items():
        path = OUT / f"guide-{lang}.{ext}"
        assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
        info = probe(path)
        kinds = {s["codec_type"]: s for s in info["streams"]}
        assert kinds["video"]["codec_name"] == video and kinds["audio"]["codec_name"] == audio
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (WIDTH, HEIGHT)
        assert 60 <= float(info["format"]["duration"]) <= 120
    boxes = top_level_boxes((OUT / f"guide-{lang}.mp4").read_bytes())
    assert boxes.index("moov") < boxes.index("mdat"), "moov first: Safari plays it while it downloads"
    voiced = [rms > 300 for rms in loudness(OUT / f"guide-{lang}.webm")]
    assert sum(voiced) > 0.4 * len(voiced), "the narration is (almost) silent"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_captions_are_the_spoken_script_paced_for_reading(lang):
    cues = cues_of(lang)
    script = narration(lang, minutes=code_minutes())
    assert [text for *_, text in cues] == [line for _, lines in script for line in lines]
    assert [ident for ident, *_ in cues] == [
        f"{screen}-{n}" for screen, lines in SCRIPT for n in range(1, len(lines) + 1)
    ]
    for ident, start, end, text in cues:
        assert end - start >= 1.5, f"{ident} is shown {end - start:.2f} s"
        assert len(text) / (end - start) <= 17, f"{ident}: {len(text) / (end - start):.1f} characters a second"
    assert all(a[2] <= b[1] for a, b in zip(cues, cues[1:], strict=False)), "one caption at a time, in order"
    # The voice speaks while each caption is shown.
    rms = loudness(OUT / f"guide-{lang}.webm")
    for ident, start, end, _ in cues:
        assert max(rms[int(start * 10) : int(end * 10)]) > 1000, f"nothing is said during {ident}"
    transcript = (OUT / f"guide-{lang}.txt").read_text(encoding="utf-8")
    assert all(text in transcript for *_, text in cues)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_guide_page_offers_both_videos_captions_and_the_transcript(stack, lang):
    base = stack.url("access-portal")
    page = http("GET", f"{base}/guide?lang={lang}").text
    assert re.search(r"<video controls[^>]*>", page)
    sources = re.findall(r'<source src="([^"]+)" type="([^"]+)">', page)
    assert sources == [
        (f"/static/guide/guide-{lang}.webm", "video/webm"),
        (f"/static/guide/guide-{lang}.mp4", "video/mp4"),
    ]  # Safari takes the second
    assert re.search(rf'<track kind="captions" src="/static/guide/guide-{lang}.vtt" srclang="{lang}"', page)
    assert f'href="/static/guide/guide-{lang}.txt"' in page
    for ext, media in (("webm", "video/webm"), ("mp4", "video/mp4"), ("vtt", "text/vtt"), ("txt", "text/plain")):
        served = http("GET", f"{base}/static/guide/guide-{lang}.{ext}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(media)
        assert served.content == (OUT / f"guide-{lang}.{ext}").read_bytes()


def frames_at(video: Path, times: dict[str, float], scratch: Path) -> dict[str, Image.Image]:
    """The frames shown at these times, decoded in one ffmpeg run."""
    numbers = {screen: int(t * FPS) for screen, t in times.items()}
    select = "+".join(f"eq(n\\,{n})" for n in numbers.values())
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(video),
            "-vf",
            f"select={select}",
            "-vsync",
            "0",
            str(scratch / "%02d.png"),
        ],
        check=True,
    )
    ordered = sorted(numbers, key=numbers.__getitem__)
    return {screen: Image.open(scratch / f"{i:02d}.png").convert("RGB") for i, screen in enumerate(ordered, 1)}


def changed_share(a: Image.Image, b: Image.Image) -> float:
    """The share of the screen whose brightness differs visibly, past the codec's blur of edges: 0.0 for the
    same screen, 0.5 % when a page's title lost a word (measured when this test was written)."""
    small = (WIDTH // 2, HEIGHT // 2)
    diff = ImageChops.difference(a.convert("L").resize(small, Image.BOX), b.convert("L").resize(small, Image.BOX))
    return sum(diff.histogram()[40:]) / (small[0] * small[1])


async def test_each_screen_of_the_video_is_the_portal_of_today(chain, guide_browser, tmp_path):
    """A page, an e-mail or an SMS changed since the videos were made: they must be made again. The screens are
    taken with the browser that recorded the videos (the full chromium, not the tests' headless shell)."""
    fresh = await asyncio.gather(*(capture(guide_browser, chain.publish, chain.inbox, lang) for lang in LANGUAGES))
    stale = []
    for lang, screens in zip(LANGUAGES, fresh, strict=True):
        times = screen_times(cues_of(lang))
        assert set(times) == set(screens) == {screen for screen, _ in SCRIPT}
        (tmp_path / lang).mkdir()
        shown = frames_at(OUT / f"guide-{lang}.webm", times, tmp_path / lang)
        for screen, png in screens.items():
            share = changed_share(Image.open(io.BytesIO(png)), shown[screen])
            if share > 0.001:
                stale.append(f"{lang} {screen} at {times[screen]:.1f} s: {share:.1%} of the screen differs")
    assert not stale, RERECORD + "\n" + "\n".join(stale)


async def test_chromium_plays_the_guide_video_and_loads_its_captions_under_the_portal_csp(stack, browser):
    context = await browser.new_context(locale="de-CH")
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    cues = len(cues_of("de"))
    try:
        await page.goto(f"{stack.url('access-portal').replace('127.0.0.1', 'localhost')}/guide?lang=de")
        await page.evaluate("document.querySelector('video').load()")  # preload="none": the patient presses play
        # Polled from outside: the page's CSP forbids the eval that wait_for_function would need.
        await eventually(
            lambda: page.evaluate(
                f"(v => v.readyState >= 1 && v.textTracks[0].cues?.length === {cues})(document.querySelector('video'))"
            ),
            what="the video's metadata and captions",
        )
        assert (await page.evaluate("document.querySelector('video').currentSrc")).endswith("/guide-de.webm")
        assert await page.evaluate("document.querySelector('video').duration") > 60
        assert await page.evaluate("document.querySelector('video').textTracks[0].cues?.length") == cues
    finally:
        await context.close()
    assert not [c for c in console if "Content Security Policy" in c]
