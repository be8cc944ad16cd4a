"""``make guide``: the video guide, the real portal's screens per language with a spoken narration.

For each language, a patient's whole way is walked in a phone-sized Chromium against a dev stack of this
command's own (its own RabbitMQ node, database and inbox), with fixed sample data: the e-mail (the mailer's
template), the link's page with the number typed, the SMS on a phone (the SMS gateway's text), the code page,
the appointment, the download and where to find help. Each screen is a still; espeak-ng speaks the script
(access_portal/guide_script.py, in the portal's catalogs), whose sentences are also the captions (WebVTT)
and the transcript; ffmpeg makes a WebM (VP9/Opus) and an MP4 (H.264/AAC, moov first, for Safari) at two
frames a second, with a cross-fade between screens.

``capture`` is also what tests/browser/test_video_guide.py runs against the test stack: it compares each
screen of the committed videos with the portal of today, and tells to run ``make guide`` again when a page
changed. Nothing on these screens depends on the day or the run (sample numbers and code, a fixed
appointment, the code page's clock set to sample times), and the browser draws with DejaVu only (guide-fonts.conf).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import math
import os
import re
import subprocess
import tempfile
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from access_portal.guide_script import narration
from access_portal.i18n import LANGUAGES, gettext
from access_portal.settings import PortalSettings
from devstack.stack import ROOT
from mailer.emails import render_email
from sms_gateway.settings import SmsSettings
from sms_gateway.text import otp_text

OUT = ROOT / "services/access-portal/access_portal/static/guide"
CHROMIUM = "/usr/bin/chromium"
# The browser tests' chromium: Debian's build of Chromium's headless shell (package chromium-headless-shell, the
# same source and version as chromium), which Playwright itself runs for headless tests. The same pages, the
# same engine, without the windowing a headless full browser still carries: the browser step used about 60
# CPU seconds less of chromium with it (94 to 36). The guide's video is recorded with, and compared against,
# the full browser: the two draw a few pixels of text differently.
HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--font-render-hinting=none",
]
FONTS_CONF = Path(__file__).with_name("guide-fonts.conf")
WIDTH, HEIGHT = 360, 640  # a phone, in CSS pixels, drawn at one device pixel each
FPS = 2  # stills: two frames a second are enough, and cost next to nothing
FADE = 1.0  # seconds of cross-fade between two screens, in the pause between their sentences
MAX_CPS = 15.0  # characters a second a caption is given at most (WCAG-minded captioning asks <= 17)
MIN_CUE, GAP, LEAD_IN, TAIL = 1.5, 0.35, 0.5, 1.0  # seconds
VOICES = {"fr": "fr-ch", "de": "de", "it": "it", "en": "en-gb"}  # espeak-ng voices
WORDS_PER_MINUTE = 145  # slower than espeak-ng's 175: a patient listens while looking

# Fixed sample data, so that every run draws the same screens.
HOST = "convocations.hug.example"
SAMPLE_CODE = "123456"
# The code page's clock (until when the code works, the time left, counted down by portal.js) shows these
# sample times, as the SMS shows the sample code, from the top of the page: the video is the same whenever
# and wherever it is recorded.
SAMPLE_CLOCK = """() => {
  document.querySelectorAll("[data-clock=until]").forEach(e => { e.textContent = "10:40"; });
  const left = document.getElementById("code-left");
  const still = left.cloneNode();
  still.textContent = "10:00";
  left.replaceWith(still);
  window.scrollTo(0, 0);  // the top of the page, whether or not typing the code scrolled it into view
}"""
APPOINTMENT = datetime(2036, 3, 13, 8, 30, tzinfo=timezone.utc)  # Thursday, 09:30 in Geneva
SENT_AT = datetime(2036, 2, 27, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Sample:
    mobile: str  # the number on file (national form), one per language: recorded side by side
    department: tuple[str, str]
    instructions: str


SAMPLES = {
    "fr": Sample("079 600 10 11", ("cardiology", "Cardiologie"), "Venez à jeun. Apportez la liste de vos médicaments."),
    "de": Sample(
        "079 600 20 22",
        ("cardiology", "Kardiologie"),
        "Kommen Sie nüchtern. Bringen Sie die Liste Ihrer Medikamente mit.",
    ),
    "it": Sample(
        "079 600 30 33", ("cardiology", "Cardiologia"), "Venga a digiuno. Porti l’elenco dei Suoi medicamenti."
    ),
    "en": Sample("079 600 40 44", ("cardiology", "Cardiology"), "Come fasting. Bring the list of your medicines."),
}
SAMPLE_LINK = f"https://{HOST}/m/6f1c2a9e-5b1d-4c8e-9a57-2d3b6e1f8c40#yQ3vJ0c8WmT1pXh5Rk2sLd9aFb7uGz4NiE6oCw3Mq1AjHr4s"


@contextlib.asynccontextmanager
async def launched(executable: str = CHROMIUM) -> AsyncIterator[Any]:
    """Debian's chromium (``executable``: the full browser or its headless shell) through Playwright, as every
    browser of the guide and the tests starts: headless, ``CHROMIUM_ARGS``, DejaVu fonts only."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, env=chromium_env()
        )
        try:
            yield browser
        finally:
            await browser.close()


def chromium_env() -> dict[str, str | float | bool]:
    """The environment of the browsers that record and check the guide: DejaVu fonts only."""
    return {**os.environ, "FONTCONFIG_FILE": str(FONTS_CONF)}


def code_minutes() -> int:
    return PortalSettings.model_fields["otp_ttl_seconds"].default // 60


def e164(national: str) -> str:
    return "+41" + national.replace(" ", "")[1:]


def email_screen(language: str) -> str:
    """The link e-mail as a phone's mail app shows it: sender, subject, then the mailer's own HTML."""
    hospital = PortalSettings.model_fields["hospital_name"].default
    mail = render_email(
        language=language,
        patient_name="Marie Dupont",
        link=SAMPLE_LINK,
        hospital_name=hospital,
        contact_phone=PortalSettings.model_fields["hospital_phone"].default,
    )
    return f"""<!doctype html><html lang="{language}"><head><meta charset="utf-8"><style>
body {{ margin: 0; font-family: "DejaVu Sans", sans-serif; background: #fff; }}
.bar {{ background: #eef1f4; border-bottom: 1px solid #c8ced6; padding: 10px 14px; }}
.from {{ font-weight: bold; font-size: 14px; }} .subject {{ font-size: 15px; margin-top: 4px; }}
iframe {{ border: 0; width: {WIDTH}px; height: {HEIGHT - 64}px; display: block; }}
</style></head><body><div class="bar"><div class="from">{html.escape(hospital)}</div>
<div class="subject">{html.escape(mail.subject)}</div></div>
<iframe title="e-mail" srcdoc="{html.escape(mail.html)}"></iframe></body></html>"""


def sms_screen(language: str) -> str:
    """The code's SMS as a phone's messages app shows it (the SMS gateway's text, with the sample code)."""
    sender = SmsSettings.model_fields["sms_hospital_name"].default
    text = otp_text(
        language,
        SAMPLE_CODE,
        HOST,
        hospital=sender,
        expires_at=SENT_AT + timedelta(minutes=code_minutes()),
        now=SENT_AT,
    )
    return f"""<!doctype html><html lang="{language}"><head><meta charset="utf-8"><style>
body {{ margin: 0; font-family: "DejaVu Sans", sans-serif; background: #fff; }}
.bar {{ background: #eef1f4; border-bottom: 1px solid #c8ced6; padding: 14px; text-align: center; }}
.sender {{ font-weight: bold; font-size: 18px; }} .kind {{ color: #555; font-size: 13px; margin-top: 2px; }}
.bubble {{ margin: 24px 60px 0 14px; padding: 12px 14px; background: #e4e7eb; border-radius: 18px;
          font-size: 17px; line-height: 1.4; white-space: pre-wrap; }}
</style></head><body><div class="bar"><div class="sender">{html.escape(sender)}</div><div class="kind">SMS</div></div>
<div class="bubble">{html.escape(text)}</div></body></html>"""


async def shot(page) -> bytes:
    await page.wait_for_load_state("networkidle")
    await page.evaluate("document.fonts.ready.then(() => true)")
    return await page.screenshot(type="png", animations="disabled", caret="hide")


async def scroll_to(page, selector: str) -> None:
    """The element at the top of the screen (or the page's end, when it is near it)."""
    await page.locator(selector).first.evaluate(
        "e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 12)"
    )


async def capture(browser, publish: Callable[[dict], Awaitable[None]], inbox, language: str) -> dict[str, bytes]:
    """Walk the patient's way in ``language`` on the stack ``publish`` reaches; each screen of the script as PNG.
    ``inbox`` is the development inbox the stack's mailer and SMS gateway send to."""
    from devstack.sample import convocation_event, sample_pdf

    sample = SAMPLES[language]
    email = f"guide-{language}-{uuid.uuid4().hex[:8]}@example.ch"
    event = convocation_event(
        email=email,
        mobile=sample.mobile,
        language=language,
        pdf=sample_pdf("Convocation"),
        starts_at=APPOINTMENT,
        department=sample.department,
    )
    event["data"]["appointment"]["instructions"] = sample.instructions
    known_sms = {s["id"] for s in inbox.sms()}
    await publish(event)
    mail = await inbox.await_email(lambda m: email in m["rcpt_tos"], timeout=60)
    # Chromium keeps Secure cookies from http://localhost (a secure context).
    link = next(u for u in mail["links"] if "/m/" in u).replace("://127.0.0.1:", "://localhost:")
    context = await browser.new_context(
        viewport={"width": WIDTH, "height": HEIGHT},
        device_scale_factor=1,
        locale=language,
        accept_downloads=True,
        reduced_motion="reduce",
    )
    screens: dict[str, bytes] = {}
    try:
        page = await context.new_page()
        await page.set_content(email_screen(language))
        screens["email"] = await shot(page)

        await page.goto(link)
        await page.get_by_label(gettext(language, "Mobile number")).fill(sample.mobile)
        screens["link"] = await shot(page)
        await page.get_by_role("button", name=gettext(language, "Send me a code by SMS")).click()
        await page.wait_for_url(re.compile(r".*/code$"))
        sms = await inbox.await_sms(lambda s: s["to"] == e164(sample.mobile) and s["id"] not in known_sms, timeout=60)
        found = re.search(r"#(\d{6})\b", sms["body"])
        assert found, "the SMS carries no code"

        phone = await context.new_page()
        await phone.set_content(sms_screen(language))
        screens["sms"] = await shot(phone)
        await phone.close()

        field = page.get_by_label(gettext(language, "Code received by SMS"))
        await field.fill(SAMPLE_CODE)  # the code of the SMS shown above
        await page.evaluate(SAMPLE_CLOCK)
        screens["code"] = await shot(page)
        await field.fill(found.group(1))
        await page.get_by_role("button", name=gettext(language, "Open my message")).click()
        await page.locator("#appointment-title").wait_for()  # the page opens the appointment by itself
        screens["document"] = await shot(page)

        async with page.expect_download():
            await page.get_by_role("button", name=gettext(language, "Download the convocation (PDF)")).click()
        await page.locator("#download-done:not(:empty)").wait_for()
        await scroll_to(page, "form[data-download]")
        screens["download"] = await shot(page)
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        screens["help"] = await shot(page)
    finally:
        await context.close()
    return screens


# --- narration, captions, encoding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cue:
    ident: str  # "<screen>-<n>": the test finds each screen's time by it
    start: float
    end: float
    text: str


def speak(language: str, text: str, path: Path) -> float:
    """``text`` spoken by espeak-ng into a WAV file (22 050 Hz mono); its length in seconds."""
    subprocess.run(
        ["espeak-ng", "-v", VOICES[language], "-s", str(WORDS_PER_MINUTE), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def timeline(script: list[tuple[str, list[str]]], spoken: list[list[float]]) -> tuple[list[Cue], float]:
    """One cue per sentence, long enough to speak it and to read it (MAX_CPS, MIN_CUE); a pause of FADE
    seconds between screens, where the picture fades. Returns the cues and the video's length."""
    cues, t = [], LEAD_IN
    for (screen, lines), lengths in zip(script, spoken, strict=True):
        for n, (text, speech) in enumerate(zip(lines, lengths, strict=True), 1):
            length = max(MIN_CUE, speech + GAP, len(text) / MAX_CPS)
            cues.append(Cue(f"{screen}-{n}", round(t, 3), round(t + length, 3), text))
            t += length
        t += FADE
    return cues, round(t - FADE + TAIL, 3)


def screen_spans(cues: list[Cue], end: float) -> list[tuple[str, float, float]]:
    """(screen, from, to): each screen from the middle of the pause before its first sentence to the middle
    of the pause after its last one."""
    firsts: dict[str, float] = {}
    for cue in cues:
        firsts.setdefault(cue.ident.rsplit("-", 1)[0], cue.start)
    names, starts = list(firsts), [0.0] + [s - FADE / 2 for s in list(firsts.values())[1:]]
    return [(name, start, stop) for name, start, stop in zip(names, starts, [*starts[1:], end], strict=True)]


def timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def webvtt(cues: list[Cue]) -> str:
    lines = ["WEBVTT", ""]
    for cue in cues:
        lines += [cue.ident, f"{timestamp(cue.start)} --> {timestamp(cue.end)}", cue.text, ""]
    return "\n".join(lines)


def transcript(language: str, script: list[tuple[str, list[str]]]) -> str:
    title = gettext(language, "How to open your convocation")
    return "\n".join([title, "", *(" ".join(lines) + "\n" for _, lines in script)])


def narration_wav(cues: list[Cue], clips: list[Path], end: float, out: Path) -> None:
    """Every sentence's clip at its cue's start, silence between, as long as the video."""
    with wave.open(str(clips[0])) as w:
        rate, width = w.getframerate(), w.getsampwidth()
    pcm = bytearray(int(end * rate) * width)
    for cue, clip in zip(cues, clips, strict=True):
        with wave.open(str(clip)) as w:
            frames = w.readframes(w.getnframes())
        at = int(cue.start * rate) * width
        pcm[at : at + len(frames)] = frames[: len(pcm) - at]
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(pcm))


def frames(screens: dict[str, bytes], spans: list[tuple[str, float, float]], end: float):
    """The video's frames (RGB bytes), FPS a second: each screen still, cross-faded into the next."""
    import io

    from PIL import Image

    images = {name: Image.open(io.BytesIO(png)).convert("RGB") for name, png in screens.items()}
    for k in range(math.ceil(end * FPS)):
        t = (k + 0.5) / FPS
        i = next(i for i, (_, _, stop) in enumerate(spans) if t < stop or i == len(spans) - 1)
        image = images[spans[i][0]]
        if i + 1 < len(spans) and t > spans[i][2] - FADE / 2:  # fading into the next screen
            image = Image.blend(image, images[spans[i + 1][0]], (t - spans[i][2] + FADE / 2) / FADE)
        elif i > 0 and t < spans[i][1] + FADE / 2:  # fading in from the previous one
            image = Image.blend(images[spans[i - 1][0]], image, (t - spans[i][1] + FADE / 2) / FADE)
        yield image.tobytes()


ISO_639_2 = {"fr": "fra", "de": "deu", "it": "ita", "en": "eng"}


def encode(
    screens: dict[str, bytes], cues: list[Cue], end: float, audio: Path, vtt: Path, out: Path, language: str
) -> None:
    """guide-<lang>.webm (VP9, Opus, WebVTT) and guide-<lang>.mp4 (H.264, AAC, mov_text, moov first) in one
    ffmpeg run that reads the frames once."""
    tag = ISO_639_2[language]
    common = [
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:s",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(10 * FPS),
        "-ac",
        "1",
        "-metadata:s:a:0",
        f"language={tag}",
        "-metadata:s:s:0",
        f"language={tag}",
        "-t",
        f"{end:.3f}",
    ]
    command = [
        "ffmpeg",
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{WIDTH}x{HEIGHT}",
        "-r",
        str(FPS),
        "-i",
        "-",
        "-i",
        str(audio),
        "-i",
        str(vtt),
        *common,
        "-c:v",
        "libvpx-vp9",
        "-crf",
        "30",
        "-b:v",
        "0",
        "-deadline",
        "good",
        "-cpu-used",
        "4",
        "-row-mt",
        "1",
        "-threads",
        "2",
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-c:s",
        "webvtt",
        str(out / f"guide-{language}.webm"),
        *common,
        "-c:v",
        "libx264",
        "-preset",
        "slow",
        "-tune",
        "stillimage",
        "-crf",
        "24",
        "-threads",
        "2",
        "-c:a",
        "aac",
        "-b:a",
        "48k",
        "-c:s",
        "mov_text",
        "-movflags",
        "+faststart",
        str(out / f"guide-{language}.mp4"),
    ]
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert process.stdin is not None
    for frame in frames(screens, screen_spans(cues, end), end):
        process.stdin.write(frame)
    process.stdin.close()
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed for guide-{language}")


def make_video(language: str, screens: dict[str, bytes], out: Path) -> float:
    """Narrate, caption and encode one language's guide into ``out``; its length in seconds."""
    script = narration(language, minutes=code_minutes())
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        clips: list[Path] = []
        spoken: list[list[float]] = []
        for s, (_, lines) in enumerate(script):
            spoken.append([])
            for n, text in enumerate(lines):
                clips.append(work / f"{s:02d}-{n:02d}.wav")
                spoken[-1].append(speak(language, text, clips[-1]))
        cues, end = timeline(script, spoken)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"guide-{language}.vtt").write_text(webvtt(cues), encoding="utf-8")
        (out / f"guide-{language}.txt").write_text(transcript(language, script), encoding="utf-8")
        narration_wav(cues, clips, end, work / "narration.wav")
        encode(screens, cues, end, work / "narration.wav", out / f"guide-{language}.vtt", out, language)
    return end


async def capture_all(amqp_url: str, exchange: str, inbox, languages: list[str]) -> dict[str, dict[str, bytes]]:
    from devstack.sample import publish

    async with launched(CHROMIUM) as browser:
        shots = await asyncio.gather(
            *(capture(browser, lambda e: publish(amqp_url, exchange, e), inbox, lang) for lang in languages)
        )
    return dict(zip(languages, shots, strict=True))


def main(argv: list[str] | None = None) -> int:
    from devinbox import DevInbox
    from devstack.broker import PrivateBroker
    from devstack.stack import Stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=list(LANGUAGES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    database, exchange = f"convocations_guide_{uuid.uuid4().hex[:8]}", "guide"
    psql = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"]
    broker = PrivateBroker("convocations-guide").start()  # its own RabbitMQ node, removed at the end
    inbox = DevInbox().start()
    try:
        subprocess.run([str(ROOT / "scripts/db-setup.sh"), database], check=True, capture_output=True)
        with tempfile.TemporaryDirectory() as logs:
            stack = Stack(
                database=database,
                exchange=exchange,
                smtp_port=inbox.smtp_port,
                sms_provider_url=inbox.twilio_base_url,
                sms_account_sid=inbox.account_sid,
                sms_auth_token=inbox.auth_token,
                log_dir=Path(logs),
                amqp_url=broker.amqp_url(),
                extra_env={"*": {"OUTBOX_POLL_SECONDS": "0.2"}},
            )
            try:
                stack.start(["issuer", "mailer", "sms-gateway", "access-portal"])
                screens = asyncio.run(capture_all(broker.amqp_url(), exchange, inbox.inbox, args.languages))
            finally:
                stack.stop()
    finally:
        inbox.stop()
        subprocess.run([*psql, f'drop database if exists "{database}" with (force)'], capture_output=True)
        broker.stop()
    for language in args.languages:
        length = make_video(language, screens[language], args.out)
        sizes = ", ".join(
            f"{ext} {(args.out / f'guide-{language}.{ext}').stat().st_size // 1024} KB" for ext in ("webm", "mp4")
        )
        print(f"guide-{language}: {length:.1f} s; {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
